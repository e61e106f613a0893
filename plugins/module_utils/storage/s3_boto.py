# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""boto3's S3 client, for the bucket administration obstore has no call
for: listing and aborting stale multipart uploads (the rotation job). Data
goes through obstore (storage.s3); this client is made only when rotation
needs it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import warnings

from ..core.errors import ConfigError


def boto3_client(endpoint_url=None, region=None, access_key=None, secret_key=None, session_token=None,
                 profile=None, ca_bundle=None, validate_certs=True):
    """The boto3 S3 client for these storage options."""
    try:
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("s3:// storage needs the Python library boto3",
                          "Install it (pip install boto3) in the Python that runs drkit")
    if bool(access_key) != bool(secret_key):
        raise ConfigError("Only one of access_key and secret_key was given",
                          "Give both, or neither to use the AWS environment/profile chain")
    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    s3cfg = {"addressing_style": "path"} if endpoint_url else {}
    cfg = Config(s3=s3cfg, retries={"max_attempts": 5, "mode": "standard"},
                 connect_timeout=10, read_timeout=120,
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required",
                 max_pool_connections=16)
    verify = True
    if ca_bundle:
        verify = ca_bundle
    if validate_certs is False:
        verify = False
        # asked for (tests only): not a warning per request on stderr
        try:
            from urllib3.exceptions import InsecureRequestWarning  # pylint: disable=import-outside-toplevel
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        except ImportError:  # pragma: no cover - botocore depends on urllib3
            pass
    return session.client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None,
        aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
        aws_session_token=session_token or None, verify=verify, config=cfg)
