# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A storage backend from a URL (file:///path, s3://bucket/prefix) and the
storage options every command takes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

try:  # Python 3
    from urllib.parse import unquote, urlsplit
except ImportError:  # pragma: no cover
    from urllib import unquote  # type: ignore

    from urlparse import urlsplit  # type: ignore

from ..core.errors import ConfigError
from .file import FileStorage
from .s3 import S3Storage

STORAGE_OPTION_NAMES = (
    "endpoint_url", "region", "access_key", "secret_key", "session_token",
    "profile", "ca_bundle", "validate_certs",
)


# --------------------------------------------------------------------------


def open_storage(url, endpoint_url=None, region=None, access_key=None, secret_key=None,
                 session_token=None, profile=None, ca_bundle=None, validate_certs=True, light=False,
                 **_ignored):
    """Storage for a storage_url. S3 options fall back to the AWS environment
    (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, ...) as boto3 does.

    ``light``: use the standard-library S3 client of s3lite.py when it can
    stand in for boto3 (static credentials, no proxy, ...; see
    ``s3lite.lite_client_for``): for the per-WAL-file commands and for
    restores and verifications, where boto3's import is 0.2 s of the RTO."""
    if not url or not isinstance(url, str):
        raise ConfigError("storage_url is empty",
                          "Set it to file:///absolute/path or s3://bucket/prefix")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError("file:// storage_url %r names a host (%s)" % (url, parts.netloc),
                              "Use three slashes for a local path: file:///var/backups/drkit")
        return FileStorage(unquote(parts.path))
    if parts.scheme == "s3":
        if parts.query or parts.fragment:
            raise ConfigError("s3:// storage_url %r has a query or fragment" % url,
                              "Pass endpoint and credentials as options, not in the URL")
        if "@" in parts.netloc:
            raise ConfigError("s3:// storage_url must not contain credentials",
                              "Use access_key/secret_key options or AWS_* environment variables")
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client = None
        if light:
            client = _lite_client_for(endpoint_url=endpoint_url, region=region, access_key=access_key,
                                      secret_key=secret_key, session_token=session_token, profile=profile,
                                      ca_bundle=ca_bundle, validate_certs=validate_certs)
        return S3Storage(parts.netloc, unquote(parts.path), endpoint_url=endpoint_url, region=region,
                         access_key=access_key, secret_key=secret_key, session_token=session_token,
                         profile=profile, ca_bundle=ca_bundle, validate_certs=validate_certs, client=client)
    raise ConfigError("Unsupported storage_url %r" % url,
                      "Use file:///absolute/path or s3://bucket/prefix")


def storage_options(params):
    """Pick the storage options out of a dict of module or CLI parameters."""
    return dict((k, params.get(k)) for k in STORAGE_OPTION_NAMES if params.get(k) is not None)


def _lite_client_for(*args, **kwargs):
    # Imported here: ssl, http.client and xml cost a file:// wal-push (one
    # process per WAL segment) for nothing.
    from .s3lite import lite_client_for  # pylint: disable=import-outside-toplevel
    return lite_client_for(*args, **kwargs)
