# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A storage backend from a URL (file:///path, s3://bucket/prefix,
az://container/prefix) and the storage options every command takes.

URLs are read strictly (docs/storage-layout.md, "Storage URLs"): no query
or fragment, no empty, '.' or '..' path segment (one trailing '/' is fine),
an S3 bucket name as AWS allows it, nothing silently dropped or normalised
into another place. ``azure://`` is read as ``az://`` (obstore knows
both); the docs name ``az://`` only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re


try:  # Python 3
    from urllib.parse import unquote, urlsplit
except ImportError:  # pragma: no cover
    from urllib import unquote  # type: ignore

    from urlparse import urlsplit  # type: ignore

from ..core.errors import ConfigError
from ..core.options import Option, from_environment
from .file import FileStorage
from .s3_client import check_endpoint_url

# The storage options of every command (doc fragment drkit.backup.storage).
# The module requires storage_url; the engine says itself when it is missing.
STORAGE_URL = Option("storage_url", "str", required=True, flags=("--storage-url",),
                     help="file:///abs/path, s3://bucket/prefix or az://container/prefix")
ENDPOINT_URL = Option("endpoint_url", "str", env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), flags=("--endpoint-url",),
                      help="S3-compatible endpoint (or AWS_ENDPOINT_URL)")
REGION = Option("region", "str", env=("AWS_REGION", "AWS_DEFAULT_REGION"), flags=("--region",),
                help="S3 region (or AWS_DEFAULT_REGION)")
PROFILE = Option("profile", "str", env=("AWS_PROFILE",), flags=("--profile",), help="AWS profile name")
CA_BUNDLE = Option("ca_bundle", "path", env=("AWS_CA_BUNDLE",), flags=("--ca-bundle",),
                   help="CA bundle for the S3 or Azure endpoint")
# S3 server-side encryption: obstore sends the headers on every PUT and
# CreateMultipartUpload. Azure has no per-request setting in obstore (its
# encryption scopes are set on the container).
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
SERVER_SIDE_ENCRYPTION = Option("server_side_encryption", "str", choices=SSE_MODES,
                                flags=("--server-side-encryption",),
                                help="S3 server-side encryption of every object written: AES256 (SSE-S3), aws:kms "
                                     "or aws:kms:dsse (SSE-KMS)")
SSE_KMS_KEY_ID = Option("sse_kms_key_id", "str", flags=("--sse-kms-key-id",),
                        help="KMS key id or ARN for aws:kms (implies it when server_side_encryption is unset)")
# Azure Blob (az://). The secrets have no flag (core.options) and are in cli.SECRET_KEYS.
AZURE_ACCOUNT_NAME = Option("azure_account_name", "str", env=("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"),
                            flags=("--azure-account-name",), help="Azure storage account (az://)")
AZURE_ACCOUNT_KEY = Option("azure_account_key", "str", env=("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"),
                           secret=True)
AZURE_SAS_TOKEN = Option("azure_sas_token", "str", env=("AZURE_STORAGE_SAS_TOKEN",), secret=True)
AZURE_CONNECTION_STRING = Option("azure_connection_string", "str", env=("AZURE_STORAGE_CONNECTION_STRING",),
                                 secret=True)
AZURE_ENDPOINT = Option("azure_endpoint", "str", env=("AZURE_STORAGE_ENDPOINT",), flags=("--azure-endpoint",),
                        help="Azure Blob endpoint (Azurite, sovereign clouds)")
AZURE = (AZURE_ACCOUNT_NAME, AZURE_ACCOUNT_KEY, AZURE_SAS_TOKEN, AZURE_CONNECTION_STRING, AZURE_ENDPOINT)
STORAGE = (
    STORAGE_URL,
    ENDPOINT_URL,
    REGION,
    # An access key id is not secret enough to refuse a readable config file
    # for it, but Ansible hides it like AWS modules do.
    Option("access_key", "str", aliases=("aws_access_key",), env=("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"),
           no_log=True),
    Option("secret_key", "str", aliases=("aws_secret_key",), env=("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"),
           secret=True),
    # No env fallback here: AWS_SESSION_TOKEN only goes with the environment's
    # own keys (storage.s3_client.resolve_credentials), never with a config file's.
    Option("session_token", "str", secret=True),
    PROFILE,
    CA_BUNDLE,
    Option("validate_certs", "bool", default=True, off_flags=("--no-validate-certs",),
           help="do not validate the S3 or Azure endpoint's TLS certificate (tests only)"),
    SERVER_SIDE_ENCRYPTION,
    SSE_KMS_KEY_ID,
) + AZURE
STORAGE_OPTION_NAMES = tuple(o.name for o in STORAGE if o is not STORAGE_URL)


# --------------------------------------------------------------------------


def open_storage(url, endpoint_url=None, region=None, access_key=None, secret_key=None,
                 session_token=None, profile=None, ca_bundle=None, validate_certs=True,
                 azure_account_name=None, azure_account_key=None, azure_sas_token=None,
                 azure_connection_string=None, azure_endpoint=None, server_side_encryption=None,
                 sse_kms_key_id=None, must_exist=False, **_ignored):
    """Storage for a storage_url. S3 options fall back to the AWS variables
    their options name (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION,
    AWS_ACCESS_KEY_ID, ...); no other AWS_* variable reaches the S3 client
    (storage.s3_client). The same for Azure (az://) with its AZURE_STORAGE_*
    variables (storage.azure_client); each backend ignores the other's
    options.

    ``must_exist``: the commands that only read (list, rotate, restore,
    verify, wal-fetch) refuse a file:// root that does not exist instead of
    reading it as an empty storage; writing commands create it."""
    if not url or not isinstance(url, str):
        raise ConfigError("storage_url is empty",
                          "Set it to file:///absolute/path, s3://bucket/prefix or az://container/prefix")
    parts = urlsplit(url)
    if parts.scheme in ("file", "s3", "az", "azure") and ("?" in url or "#" in url):
        raise ConfigError("storage_url %r has a query or fragment ('?' or '#'), which drkit would drop" % url,
                          "Remove it; options go in options, not in the URL (write a '?' or '#' that is part of "
                          "a path as %3F or %23), e.g. file:///var/backups/drkit or s3://bucket/prefix")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError("file:// storage_url %r names a host (%s)" % (url, parts.netloc),
                              "Use three slashes for a local path: file:///var/backups/drkit")
        _check_segments(url, parts.path, "file:///var/backups/drkit")
        storage = FileStorage(unquote(parts.path))
        if must_exist:
            storage.require_root()
        return storage
    if parts.scheme == "s3":
        if "@" in parts.netloc:
            raise ConfigError("s3:// storage_url must not contain credentials",
                              "Use access_key/secret_key options or AWS_* environment variables")
        _check_bucket(url, parts.netloc)
        _check_segments(url, parts.path, "s3://bucket/prefix")
        endpoint_url = endpoint_url or from_environment(ENDPOINT_URL)
        if endpoint_url:
            endpoint_url = check_endpoint_url(endpoint_url)
        region = region or from_environment(REGION)
        ca_bundle = ca_bundle or from_environment(CA_BUNDLE)
        # Imported here: a file:// wal-push (one process per WAL segment) needs none of it.
        from .s3 import S3Storage  # pylint: disable=import-outside-toplevel
        return S3Storage(parts.netloc, unquote(parts.path), endpoint_url=endpoint_url, region=region,
                         access_key=access_key, secret_key=secret_key, session_token=session_token,
                         profile=profile or from_environment(PROFILE), ca_bundle=ca_bundle,
                         validate_certs=validate_certs,
                         sse=server_side_encryption_settings(server_side_encryption, sse_kms_key_id))
    if parts.scheme in ("az", "azure"):
        if server_side_encryption or sse_kms_key_id:
            raise ConfigError("server_side_encryption and sse_kms_key_id are S3 settings; az:// storage_url %r "
                              "cannot take them" % url,
                              "Azure encrypts every blob at rest; for your own key set a default encryption scope "
                              "on the container (docs/storage-security.md) and remove these options")
        if "@" in parts.netloc:
            raise ConfigError("az:// storage_url must not contain credentials",
                              "Use azure_account_key, azure_sas_token or azure_connection_string (config file "
                              "or AZURE_STORAGE_* variables)")
        _check_container(url, parts.netloc)
        _check_segments(url, parts.path, "az://container/prefix")
        from .azure import AzureStorage  # pylint: disable=import-outside-toplevel
        env = dict((o.name, from_environment(o)) for o in AZURE)
        return AzureStorage(parts.netloc, unquote(parts.path),
                            account_name=azure_account_name or env["azure_account_name"],
                            account_key=azure_account_key or env["azure_account_key"],
                            sas_token=azure_sas_token or env["azure_sas_token"],
                            connection_string=azure_connection_string or env["azure_connection_string"],
                            endpoint=azure_endpoint or env["azure_endpoint"],
                            ca_bundle=ca_bundle or from_environment(CA_BUNDLE), validate_certs=validate_certs)
    raise ConfigError("Unsupported storage_url %r" % url,
                      "Use file:///absolute/path, s3://bucket/prefix or az://container/prefix")


def server_side_encryption_settings(mode=None, kms_key_id=None):
    """obstore's S3 settings for SSE-S3 / SSE-KMS (a dict, empty for none),
    or ConfigError for a combination S3 would refuse."""
    if kms_key_id and not mode:
        mode = "aws:kms"
    if not mode:
        return {}
    if mode not in SSE_MODES:
        raise ConfigError("server_side_encryption %r is not one of %s" % (mode, ", ".join(SSE_MODES)),
                          "Use AES256 for SSE-S3, aws:kms (with sse_kms_key_id for your own key) for SSE-KMS")
    settings = {"server_side_encryption": mode}
    if kms_key_id:
        if not mode.startswith("aws:kms"):
            raise ConfigError("sse_kms_key_id is set but server_side_encryption is %s" % mode,
                              "A KMS key goes with server_side_encryption aws:kms or aws:kms:dsse; remove "
                              "sse_kms_key_id for SSE-S3 (AES256)")
        settings["sse_kms_key_id"] = kms_key_id
    return settings


# An S3 general purpose bucket name, as AWS allows it today: 3-63 lower-case
# letters, digits, '.' and '-', beginning and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^[0-9]+(\.[0-9]+){3}$")


def _check_bucket(url, bucket):
    if not bucket:
        return  # S3Storage says "no bucket name"
    problem = None
    if ":" in bucket:
        problem = "names a port (%s)" % bucket
        hint = "Give the endpoint (with its port) as endpoint_url, e.g. --endpoint-url http://127.0.0.1:8333"
    elif not _BUCKET.match(bucket) or ".." in bucket or _IPV4.match(bucket):
        problem = "has an invalid bucket name %r" % bucket
        hint = ("S3 bucket names are 3-63 characters: lower-case letters, digits, '.' and '-', beginning and "
                "ending with a letter or digit, no '..', not an IP address, e.g. s3://prod-backups/postgresql")
    if problem:
        raise ConfigError("s3:// storage_url %r %s" % (url, problem), hint)


# An Azure container name: 3-63 lower-case letters, digits and single '-',
# beginning and ending with a letter or digit.
_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def _check_container(url, container):
    if not container:
        return  # AzureStorage says "no container name"
    if ":" in container:
        raise ConfigError("az:// storage_url %r names a port (%s)" % (url, container),
                          "Give the endpoint (with its port) as azure_endpoint, e.g. "
                          "--azure-endpoint http://127.0.0.1:10000/devstoreaccount1")
    if not _CONTAINER.match(container):
        raise ConfigError("az:// storage_url %r has an invalid container name %r" % (url, container),
                          "Azure container names are 3-63 characters: lower-case letters, digits and single "
                          "'-', beginning and ending with a letter or digit, e.g. az://prod-backups/postgresql")


def _check_segments(url, path, example):
    """Refuse a path with an empty, '.' or '..' segment (also percent-encoded)
    or an encoded '/' or NUL: it would name another place than it reads as,
    or the same place under two names. One trailing '/' is allowed."""
    body = path[1:] if path.startswith("/") else path
    body = body[:-1] if body.endswith("/") else body
    if not body:
        return
    for raw in body.split("/"):
        segment = unquote(raw)
        if segment in ("", ".", "..") or "/" in segment or "\x00" in segment:
            what = "an empty segment ('//')" if segment == "" else "the segment %r" % raw
            raise ConfigError("storage_url %r has %s in its path" % (url, what),
                              "Write the path without empty, '.' or '..' segments, e.g. %s" % example)


def probe_storage(params, progress=None):
    """``drkit probe``: prove, as the user running it, that the storage can
    be written the way a backup or wal-push writes it (Storage.probe).
    The WAL archive role runs it as the server's OS user."""
    say = progress or (lambda msg: None)
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    say("probing %s" % storage.describe())
    key = storage.probe()
    kept = "" if storage.scheme == "file" else " (kept for the lifecycle rule on probe/)"
    return False, {"changed": False, "storage": storage.describe(), "probe": key,
                   "msg": "%s is writable: %s created%s" % (
                       storage.describe(), key, " and removed" if storage.scheme == "file" else kept)}


def storage_options(params):
    """Pick the storage options out of a dict of module or CLI parameters."""
    return dict((k, params.get(k)) for k in STORAGE_OPTION_NAMES if params.get(k) is not None)
