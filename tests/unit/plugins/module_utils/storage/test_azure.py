# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""az:// URLs and the Azure settings, without a server: which credentials
are used, connection strings, endpoints, names, and that no secret reaches
a message (the server side is tests/integration/test_storage_azure.py and
test_storage_contract.py)."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils import cli
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.storage import azure_client as ac
from ansible_collections.drkit.backup.plugins.module_utils.storage.azure import AzureStorage
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import AZURE, STORAGE, open_storage

KEY = "c2VjcmV0LWtleS1ub3QtcmVhbA=="
SAS = "sv=2025-01-05&sr=c&sp=racwl&sig=c2lnbmF0dXJl%3D"


@pytest.fixture(autouse=True)
def no_azure_environment(monkeypatch):
    import os

    for var in list(os.environ):
        if var.startswith(("AZURE_", "AZURITE_")):
            monkeypatch.delenv(var)


def test_an_account_key_with_the_default_endpoint():
    config, client, retry = ac.store_settings("backups", account_name="acct", account_key=KEY)
    assert config == {"container_name": "backups", "account_name": "acct",
                      "endpoint": "https://acct.blob.core.windows.net", "credential_type": "access_key",
                      "account_key": KEY, "skip_signature": False, "use_emulator": False, "use_azure_cli": False,
                      "use_fabric_endpoint": False}
    assert client["allow_http"] is False and retry == {"max_retries": ac.MAX_RETRIES}


def test_a_sas_token_loses_its_question_mark():
    config = ac.store_settings("backups", account_name="acct", sas_token="?" + SAS)[0]
    assert config["credential_type"] == "sas_token" and config["sas_key"] == SAS and "account_key" not in config


def test_a_connection_string_stands_for_everything():
    text = ("DefaultEndpointsProtocol=http;AccountName=devacct;AccountKey=%s;"
            "BlobEndpoint=http://127.0.0.1:10000/devacct;" % KEY)
    config, client = ac.store_settings("c1", account_name="other", account_key="b3RoZXI=",
                                       endpoint="https://x.example", connection_string=text)[:2]
    assert (config["account_name"], config["account_key"], config["endpoint"]) == (
        "devacct", KEY, "http://127.0.0.1:10000/devacct")
    assert client["allow_http"] is True
    cloud = "DefaultEndpointsProtocol=https;AccountName=prod1;AccountKey=%s;EndpointSuffix=core.chinacloudapi.cn" % KEY
    assert ac.resolve_settings(connection_string=cloud) == (
        "prod1", "https://prod1.blob.core.chinacloudapi.cn", ("access_key", KEY))
    sas_only = "BlobEndpoint=https://prod2.blob.core.windows.net/;SharedAccessSignature=%s" % SAS
    assert ac.resolve_settings(connection_string=sas_only) == (
        "prod2", "https://prod2.blob.core.windows.net", ("sas_token", SAS))


@pytest.mark.parametrize("kwargs, message", [
    ({"account_name": "acct"}, "No Azure credentials"),
    ({"account_key": KEY}, "No Azure storage account name"),
    ({"account_name": "acct", "account_key": KEY, "sas_token": SAS}, "Both azure_account_key and azure_sas_token"),
    ({"account_name": "Not_An_Account", "account_key": KEY}, "is not a storage account name"),
    ({"account_name": "acct", "account_key": KEY, "endpoint": "ftp://host"}, "azure_endpoint"),
    ({"account_name": "acct", "account_key": KEY, "endpoint": "https://host/a/b"}, "a path other than one account"),
    ({"connection_string": "AccountName=acct"}, "neither AccountKey nor SharedAccessSignature"),
    ({"connection_string": "UseDevelopmentStorage=true"}, "UseDevelopmentStorage"),
    ({"connection_string": "not a connection string %s" % KEY}, "is not a connection string"),
])
def test_bad_settings_are_refused_naming_the_option_and_never_the_secret(kwargs, message):
    with pytest.raises(ConfigError) as e:
        ac.resolve_settings(**kwargs)
    assert message in str(e.value)
    assert KEY not in str(e.value) + str(e.value.hint) and "sig=" not in str(e.value)


@pytest.mark.parametrize("url, expected", [
    ("https://acct.blob.core.usgovcloudapi.net/", "https://acct.blob.core.usgovcloudapi.net"),
    ("http://127.0.0.1:10000/devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1"),
    ("http://127.0.0.1:10000/devstoreaccount1/", "http://127.0.0.1:10000/devstoreaccount1"),
])
def test_endpoints(url, expected):
    assert ac.check_azure_endpoint(url) == expected


@pytest.mark.parametrize("url, message", [
    ("az://Backups/x", "invalid container name 'Backups'"),
    ("az://a--b/x", "invalid container name"),
    ("az://ab/x", "invalid container name"),
    ("az://backups:10000/x", "names a port"),
    ("az://key@backups/x", "must not contain credentials"),
    ("az://backups/../x", "segment '..'"),
    ("az://backups/x?sv=1", "query or fragment"),
    ("az:///x", "no container name"),
])
def test_az_urls_are_read_strictly(url, message):
    with pytest.raises(ConfigError) as e:
        open_storage(url, azure_account_name="acct", azure_account_key=KEY)
    assert message in str(e.value)


def test_az_and_azure_urls_open_an_azure_storage_without_touching_the_network():
    for url in ("az://backups/pg/main", "azure://backups/pg/main/"):
        s = open_storage(url, azure_account_name="acct", azure_account_key=KEY)
        assert isinstance(s, AzureStorage) and s.scheme == "az"
        assert (s.bucket, s.prefix) == ("backups", "pg/main")
        assert s.describe() == "az://backups/pg/main (endpoint https://acct.blob.core.windows.net)"
        assert KEY not in s.describe()


def test_the_s3_options_do_not_reach_an_azure_storage(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s = open_storage("az://backups/pg", azure_account_name="acct", azure_account_key=KEY,
                     endpoint_url="http://127.0.0.1:8333", access_key="a", secret_key="b")
    assert s.endpoint_url == "https://acct.blob.core.windows.net"


def test_azure_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "envacct")
    monkeypatch.setenv("AZURE_STORAGE_KEY", KEY)
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:10000/envacct")
    s = open_storage("az://backups/pg")
    assert s.endpoint_url == "http://127.0.0.1:10000/envacct"
    assert s.store.config["account_name"] == "envacct"


def test_explicit_settings_leave_no_room_for_stray_variables(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_TOKEN", "stray-bearer-token")
    monkeypatch.setenv("AZURE_SKIP_SIGNATURE", "true")
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")
    s = open_storage("az://backups/pg", azure_account_name="acct", azure_account_key=KEY)
    config = s.store.config
    assert "token" not in config and config.get("skip_signature") in (False, "false")
    assert config["credential_type"] == "access_key"
    import os

    assert os.environ["AZURE_STORAGE_TOKEN"] == "stray-bearer-token"  # restored


def test_no_azure_variable_is_in_the_environment_while_the_store_is_built(monkeypatch):
    """obstore reads every AZURE_* variable it knows while AzureStore is
    built (test_storage_azure.py shows AZURE_SKIP_SIGNATURE and
    AZURE_STORAGE_TOKEN taking effect): drkit sets the dangerous ones
    explicitly and builds the store with none in the environment, so one it
    does not set (a customer-provided AZURE_ENCRYPTION_KEY, a future
    setting) cannot ride along either."""
    import os

    import obstore

    seen = {}

    class FakeStore(object):
        def __init__(self, **kwargs):
            seen["env"] = sorted(k for k in os.environ if k.startswith(("AZURE_", "AZURITE_")))
            self.config = kwargs["config"]

    monkeypatch.setenv("AZURE_ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(ac, "obstore_module", lambda: (obstore, FakeStore))
    store = ac.make_store("backups", account_name="acct", account_key=KEY)
    assert seen["env"] == [] and store.config["account_name"] == "acct"
    assert os.environ["AZURE_ENCRYPTION_KEY"].startswith("AAAA")  # restored


def test_azure_secrets_are_secrets_without_flags_and_refused_in_readable_config_files():
    secrets = [o for o in AZURE if o.secret]
    assert sorted(o.name for o in secrets) == ["azure_account_key", "azure_connection_string", "azure_sas_token"]
    assert all(not o.flags for o in secrets) and all(o in STORAGE for o in AZURE)
    assert set(o.name for o in secrets) <= set(cli.SECRET_KEYS)
    assert set("to_" + o.name for o in secrets) <= set(cli.SECRET_KEYS)


def test_nothing_to_list_or_abort_on_azure():
    s = open_storage("az://backups/pg", azure_account_name="acct", azure_account_key=KEY)
    assert list(s.list_incomplete("")) == [] and s.abort_incomplete(None) is None
    assert s.max_object() == 8 * 1024 * 1024 * 50000
