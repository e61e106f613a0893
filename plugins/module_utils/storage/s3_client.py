# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The obstore S3 client for S3Storage, built from drkit's storage options
and nothing else.

obstore's ``S3Store`` starts from ``AmazonS3Builder::from_env()``: every
``AWS_*`` variable of the process that names one of its settings is taken,
before and beneath what is passed. A stray ``AWS_SESSION_TOKEN`` then rides
along with keys from the config file (and breaks their signature), and
``AWS_SKIP_SIGNATURE=true`` sends every request unsigned. So drkit decides
each setting here from its own options (the environment variables they
document are read by the option resolution or below, by name), and builds
the store while the process has no ``AWS_*`` variable at all.

An endpoint URL is checked here first: obstore's Rust side panics on some
malformed ones instead of raising an error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import threading
from contextlib import contextmanager

try:  # Python 3
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    from urlparse import urlsplit  # type: ignore

from ..core.errors import ConfigError

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = "10s"
# No data at all for this long ends a request (obstore retries it). Its
# overall "timeout" (default 30 s) would also cut a long download's body:
# set to a day, downloads are bounded by the read timeout instead.
READ_TIMEOUT = "120s"
REQUEST_TIMEOUT = "24h"
MAX_RETRIES = 5

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_ENV_LOCK = threading.Lock()
ENDPOINT_HINT = ("Write it as http(s)://host[:port] with nothing after the port, e.g. http://127.0.0.1:8333 "
                 "or https://s3.example.internal")


def check_endpoint_url(url):
    """``url`` without a trailing '/', or ConfigError naming what is wrong:
    http or https, a host name or IP address, an optional port in range,
    no user, path, query or fragment."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("endpoint_url is empty", ENDPOINT_HINT)
    problem = None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError("endpoint_url %r is not a valid URL (%s)" % (url, e), ENDPOINT_HINT)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        problem = "does not start with http:// or https://"
    elif not host:
        problem = "names no host"
    elif "@" in parts.netloc:
        problem = "holds a user name or password (credentials go in access_key/secret_key)"
    elif parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith("?") or "#" in url:
        problem = "has a path, query or fragment"
    elif port == 0 or (parts.netloc.endswith(":") and port is None):
        problem = "has an empty or zero port"
    elif not (_HOST.match(host) or (":" in host and re.match(r"^[0-9A-Fa-f:.]+$", host))):
        problem = "has an invalid host name %r" % host
    elif any(c.isspace() for c in url):
        problem = "contains white space"
    if problem:
        raise ConfigError("endpoint_url %r %s" % (url, problem), ENDPOINT_HINT)
    return url.rstrip("/")


def obstore_module():
    try:
        import obstore  # pylint: disable=import-outside-toplevel
        from obstore.store import S3Store  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("s3:// storage needs the Python library obstore (Python 3.11 or later)",
                          "Install drkit's runtime requirements (pip install -r requirements/runtime.txt) in the "
                          "Python that runs drkit")
    return obstore, S3Store


def resolve_credentials(access_key=None, secret_key=None, session_token=None, environ=None):
    """(access key, secret key, session token) to sign with, or (None,
    None, None) for boto3's credential chain (profiles, SSO, roles...).

    Keys from the options win; keys from AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY otherwise. A session token from the environment
    goes only with the environment's own keys: paired with keys from a
    config file it is a leftover that makes every signature wrong."""
    environ = os.environ if environ is None else environ
    if bool(access_key) != bool(secret_key):
        raise ConfigError("Only one of access_key and secret_key was given",
                          "Give both, or neither to use the AWS environment/profile chain")
    env_key = environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_ACCESS_KEY")
    env_secret = environ.get("AWS_SECRET_ACCESS_KEY") or environ.get("AWS_SECRET_KEY")
    if not access_key and env_key and env_secret:
        access_key, secret_key = env_key, env_secret
    if not access_key:
        return None, None, None
    if not session_token and access_key == env_key and secret_key == env_secret:
        session_token = environ.get("AWS_SESSION_TOKEN") or environ.get("AWS_SECURITY_TOKEN")
    return access_key, secret_key, session_token or None


def store_settings(bucket, endpoint_url=None, region=None, access_key=None, secret_key=None,
                   session_token=None, ca_bundle=None, validate_certs=True, sse=None):
    """(config, client_options, retry_config) for obstore's S3Store: every
    setting explicit, none left to the environment. ``sse``: the
    server-side encryption settings (server_side_encryption,
    sse_kms_key_id), sent with every PUT and CreateMultipartUpload."""
    config = {
        "bucket": bucket,
        "region": region or DEFAULT_REGION,
        # the SHA-256 of every PUT and part, checked by the server
        "checksum_algorithm": "sha256",
        # mode="create" as one PUT with If-None-Match: *
        "conditional_put": "etag",
        "virtual_hosted_style_request": False,
        "skip_signature": False,
    }
    if endpoint_url:
        config["endpoint"] = endpoint_url
    if access_key:
        config["access_key_id"] = access_key
        config["secret_access_key"] = secret_key
        if session_token:
            config["token"] = session_token
    config.update(sse or {})
    return config, client_options(endpoint_url, ca_bundle, validate_certs), {"max_retries": MAX_RETRIES}


def client_options(endpoint_url=None, ca_bundle=None, validate_certs=True):
    """obstore's HTTP client options (timeouts, TLS) of every backend."""
    client = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT, "read_timeout": READ_TIMEOUT,
              "allow_http": bool(endpoint_url and endpoint_url.startswith("http://"))}
    if validate_certs is False:
        client["allow_invalid_certificates"] = True
    elif ca_bundle and not client["allow_http"]:
        try:
            with open(ca_bundle, "rb") as fh:
                client["root_certificate"] = fh.read()
        except OSError as e:
            raise ConfigError("ca_bundle %s cannot be read: %s" % (ca_bundle, e.strerror or e),
                              "Point ca_bundle (or AWS_CA_BUNDLE) at a PEM file with the endpoint's CA")
        if b"-----BEGIN CERTIFICATE-----" not in client["root_certificate"]:
            raise ConfigError("ca_bundle %s holds no PEM certificate" % ca_bundle,
                              "Point ca_bundle (or AWS_CA_BUNDLE) at a PEM file with the endpoint's CA "
                              "certificate(s) (-----BEGIN CERTIFICATE-----), not a key or a DER file")
    return client


def without_aws_environment():
    """No AWS_* variable in the process environment for the duration (see
    the module doc); restored afterwards."""
    return without_environment(("AWS_",))


@contextmanager
def without_environment(prefixes):
    """No variable whose name starts with one of ``prefixes`` in the process
    environment for the duration; restored afterwards. One lock for every
    backend: two stores built at once must not restore each other's."""
    with _ENV_LOCK:
        saved = dict((k, v) for k, v in os.environ.items() if k.upper().startswith(tuple(prefixes)))
        for k in saved:
            del os.environ[k]
        try:
            yield
        finally:
            os.environ.update(saved)


def make_store(bucket, endpoint_url=None, region=None, access_key=None, secret_key=None, session_token=None,
               profile=None, ca_bundle=None, validate_certs=True, sse=None):
    """obstore's S3Store for these storage options. Static keys (options
    or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) sign directly; without
    them boto3's credential chain (the named profile, SSO, an assumed or
    instance role) provides them through obstore's Boto3CredentialProvider."""
    dummy, s3store = obstore_module()
    if endpoint_url:
        endpoint_url = check_endpoint_url(endpoint_url)
    access_key, secret_key, session_token = resolve_credentials(access_key, secret_key, session_token)
    provider = None
    if not access_key:
        provider = boto3_credentials(profile)
        access_key = secret_key = session_token = None
        region = region or provider.config.get("region")
    config, client, retry = store_settings(bucket, endpoint_url=endpoint_url, region=region, access_key=access_key,
                                           secret_key=secret_key, session_token=session_token, ca_bundle=ca_bundle,
                                           validate_certs=validate_certs, sse=sse)
    try:
        with without_aws_environment():
            return s3store(config=config, client_options=client, retry_config=retry, credential_provider=provider)
    except Exception as e:  # pylint: disable=broad-except
        raise ConfigError("Cannot set up the S3 client: %s" % e,
                          "Check endpoint_url, region, ca_bundle and the credentials")


def boto3_credentials(profile=None):
    """obstore's Boto3CredentialProvider on a boto3 session (named profile,
    SSO, assumed role, instance or container role: boto3's chain)."""
    try:
        import boto3  # pylint: disable=import-outside-toplevel
        from obstore.auth.boto3 import Boto3CredentialProvider  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("S3 credentials from a profile or the AWS credential chain need the Python library boto3",
                          "Install drkit's runtime requirements, or give access_key and secret_key")
    try:
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
        return Boto3CredentialProvider(session)
    except ValueError:
        raise ConfigError("No S3 credentials found%s" % (" in profile %r" % profile if profile else ""),
                          "Set access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile")
    except Exception as e:  # pylint: disable=broad-except
        raise ConfigError("Cannot read S3 credentials%s: %s" % (" of profile %r" % profile if profile else "", e),
                          "Check the profile name and ~/.aws/config")
