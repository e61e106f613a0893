# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The obstore Azure Blob client for AzureStorage, built from drkit's
storage options and nothing else.

Like its S3 builder, obstore's ``AzureStore`` starts from the environment:
every ``AZURE_*`` variable that names one of its settings is taken beneath
what is passed. A stray ``AZURE_STORAGE_TOKEN`` (a bearer token) wins over
an account key, ``AZURE_SKIP_SIGNATURE`` sends requests unsigned,
``AZURE_STORAGE_USE_EMULATOR`` sends them to 127.0.0.1:10000. So every
setting is decided here from drkit's options (the variables they document,
AZURE_STORAGE_ACCOUNT_NAME, ..._KEY, ..._SAS_TOKEN, ..._CONNECTION_STRING,
are read by the option resolution, by name), and the store is built while
the process has no ``AZURE_*`` (nor ``AZURITE_*``) variable at all.

Credentials are static: an account key, a SAS token, or a connection
string holding one of them. Nothing falls back to Entra ID, managed
identity (a request to 169.254.169.254) or the Azure CLI: without a key or
SAS drkit refuses to start, naming the options.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

try:  # Python 3
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    from urlparse import urlsplit  # type: ignore

from ..core.errors import ConfigError
from .s3_client import MAX_RETRIES, check_endpoint_url, client_options, without_environment

ENV_PREFIXES = ("AZURE_", "AZURITE_")
# An Azure storage account name: 3-24 lower-case letters and digits.
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
ENDPOINT_HINT = ("Write it as http(s)://host[:port] or, for Azurite and other path-style endpoints, "
                 "http(s)://host[:port]/ACCOUNT, e.g. https://ACCOUNT.blob.core.usgovcloudapi.net or "
                 "http://127.0.0.1:10000/devstoreaccount1")
CREDENTIALS_HINT = ("Set azure_account_name and azure_account_key (or AZURE_STORAGE_ACCOUNT_NAME and "
                    "AZURE_STORAGE_KEY), or azure_sas_token (AZURE_STORAGE_SAS_TOKEN), or "
                    "azure_connection_string (AZURE_STORAGE_CONNECTION_STRING), in the config file or the "
                    "environment, never on the command line")


def obstore_module():
    try:
        import obstore  # pylint: disable=import-outside-toplevel
        from obstore.store import AzureStore  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("az:// storage needs the Python library obstore (Python 3.11 or later)",
                          "Install drkit's runtime requirements (pip install -r requirements/runtime.txt) in the "
                          "Python that runs drkit")
    return obstore, AzureStore


def parse_connection_string(text):
    """The fields of an Azure Storage connection string
    (``Key=value;Key=value``; keys case-insensitive) as a dict with
    lower-case keys. Never echoes the string: it holds a secret."""
    fields = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not re.match(r"^[A-Za-z]+$", name.strip()):
            raise ConfigError("azure_connection_string is not a connection string (a part has no 'Name=value')",
                              "Copy it as the portal or `az storage account show-connection-string` gives it: "
                              "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=...")
        fields[name.strip().lower()] = value.strip()
    return fields


def check_azure_endpoint(url):
    """``url`` without a trailing '/', or ConfigError: what check_endpoint_url
    allows, plus one path segment, the account, for path-style endpoints
    (Azurite: http://127.0.0.1:10000/devstoreaccount1)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("azure_endpoint is empty", ENDPOINT_HINT)
    parts = urlsplit(url.strip())
    path = parts.path.strip("/")
    if path and (not _ACCOUNT.match(path) or parts.path.startswith("//")):
        raise ConfigError("azure_endpoint %r has a path other than one account name" % url, ENDPOINT_HINT)
    base = url.strip()
    if path:
        base = base[:base.rindex("/" + path)]
    try:
        check_endpoint_url(base)
    except ConfigError as e:
        raise ConfigError(e.message.replace("endpoint_url", "azure_endpoint", 1), ENDPOINT_HINT)
    return base.rstrip("/") + ("/" + path if path else "")


def _account_of_endpoint(endpoint):
    """The account an endpoint names: its path (path-style) or the first
    label of ACCOUNT.blob.SUFFIX; None when it names none."""
    parts = urlsplit(endpoint)
    path = parts.path.strip("/")
    if path:
        return path
    host = (parts.hostname or "").split(".")
    if len(host) > 2 and host[1] == "blob":
        return host[0]
    return None


def resolve_settings(account_name=None, account_key=None, sas_token=None, connection_string=None, endpoint=None):
    """(account, endpoint, credential) from the options, where credential
    is ("access_key", key) or ("sas_token", token). A connection string
    stands for all of them and wins; otherwise the account name with an
    account key or a SAS token (not both). ConfigError naming the options
    when something is missing or contradictory; no secret in a message."""
    if connection_string:
        fields = parse_connection_string(connection_string)
        if fields.get("usedevelopmentstorage", "").lower() == "true":
            raise ConfigError("azure_connection_string says UseDevelopmentStorage=true",
                              "Give Azurite's full connection string instead (AccountName, AccountKey and "
                              "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1)")
        account_name = fields.get("accountname") or None
        endpoint = fields.get("blobendpoint") or None
        if not endpoint and account_name:
            endpoint = "%s://%s.blob.%s" % (fields.get("defaultendpointsprotocol") or "https", account_name,
                                            fields.get("endpointsuffix") or "core.windows.net")
        account_key = fields.get("accountkey") or None
        sas_token = fields.get("sharedaccesssignature") or None
        if not (account_key or sas_token):
            raise ConfigError("azure_connection_string holds neither AccountKey nor SharedAccessSignature",
                              CREDENTIALS_HINT)
        if account_key and sas_token:
            sas_token = None  # the key can do everything the signature can
        what = "azure_connection_string"
    else:
        what = "azure_endpoint"
        if account_key and sas_token:
            raise ConfigError("Both azure_account_key and azure_sas_token are set",
                              "Give one of them (check AZURE_STORAGE_KEY and AZURE_STORAGE_SAS_TOKEN in the "
                              "environment too)")
        if not (account_key or sas_token):
            raise ConfigError("No Azure credentials: neither an account key, nor a SAS token, nor a connection "
                              "string is set", CREDENTIALS_HINT)
    if endpoint:
        endpoint = check_azure_endpoint(endpoint)
        account_name = account_name or _account_of_endpoint(endpoint)
    if not account_name:
        raise ConfigError("No Azure storage account name is set", "Set azure_account_name (or "
                          "AZURE_STORAGE_ACCOUNT_NAME), or give a connection string with AccountName")
    if not _ACCOUNT.match(account_name):
        raise ConfigError("azure_account_name %r is not a storage account name" % account_name,
                          "Account names are 3-24 lower-case letters and digits")
    if not endpoint:
        endpoint = "https://%s.blob.core.windows.net" % account_name
    elif what == "azure_connection_string" and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError("azure_connection_string has an invalid BlobEndpoint", ENDPOINT_HINT)
    if account_key:
        return account_name, endpoint, ("access_key", account_key)
    return account_name, endpoint, ("sas_token", sas_token.lstrip("?"))


def store_settings(container, account_name=None, account_key=None, sas_token=None, connection_string=None,
                   endpoint=None, ca_bundle=None, validate_certs=True):
    """(config, client_options, retry_config) for obstore's AzureStore:
    every setting explicit, none left to the environment."""
    account, endpoint, (kind, secret) = resolve_settings(account_name, account_key, sas_token, connection_string,
                                                         endpoint)
    config = {
        "container_name": container,
        "account_name": account,
        "endpoint": endpoint,
        "credential_type": kind,
        "skip_signature": False,
        "use_emulator": False,
        "use_azure_cli": False,
        "use_fabric_endpoint": False,
    }
    config["account_key" if kind == "access_key" else "sas_key"] = secret
    return config, client_options(endpoint, ca_bundle, validate_certs), {"max_retries": MAX_RETRIES}


def make_store(container, **options):
    """obstore's AzureStore for these storage options (store_settings)."""
    dummy, azure_store = obstore_module()
    config, client, retry = store_settings(container, **options)
    try:
        with without_environment(ENV_PREFIXES):
            return azure_store(config=config, client_options=client, retry_config=retry)
    except Exception as e:  # pylint: disable=broad-except
        # obstore's message, never the config (it holds the secret), and the secret masked should it quote it
        text = str(e).split("Debug source:", maxsplit=1)[0].strip()
        secret = config.get("account_key") or config.get("sas_key")
        raise ConfigError("Cannot set up the Azure Blob client: %s" % text.replace(secret, "***"),
                          "Check azure_endpoint, ca_bundle and the Azure credentials")
