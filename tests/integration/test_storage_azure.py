# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What only the az:// backend has, against Azurite on loopback: the three
kinds of credentials (account key, SAS token, connection string), from the
config file or the environment; no stray AZURE_* variable reaching the
client; error messages (wrong key, missing container, a SAS that may not
write, no server) that never echo a secret; what a failed large upload
leaves (nothing visible, nothing to abort). The storage contract itself is
test_storage_contract.py, for every backend."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from helpers import run_drkit

MiB = 1 << 20


def open_az(azurite, container, prefix="pre/fix", **opts):
    return open_storage("az://%s/%s" % (container, prefix), **(opts or azurite.options()))


def test_account_key_sas_token_and_connection_string_all_work(azurite, container):
    by_key = open_az(azurite, container)
    by_key.put_bytes("k1", b"by key", create=True)
    by_sas = open_az(azurite, container, azure_account_name=azurite.account, azure_endpoint=azurite.endpoint,
                     azure_sas_token="?" + azurite.sas_token(container))
    by_sas.put_bytes("k2", b"by sas", create=True)
    by_string = open_az(azurite, container, azure_connection_string=azurite.connection_string)
    by_string.put_bytes("k3", b"by connection string", create=True)
    c = azurite.service().get_container_client(container)
    assert sorted(b.name for b in c.list_blobs()) == ["pre/fix/k1", "pre/fix/k2", "pre/fix/k3"]
    assert c.download_blob("pre/fix/k2").readall() == b"by sas"
    assert by_sas.get_bytes("k3") == by_key.get_bytes("k3") == b"by connection string"


def test_credentials_from_the_environment(azurite, container, monkeypatch):
    for k, v in azurite.env().items():
        monkeypatch.setenv(k, v)
    s = open_storage("az://%s/env" % container)
    s.put_bytes("k", b"from env", create=True)
    assert s.get_bytes("k") == b"from env"
    monkeypatch.delenv("AZURE_STORAGE_KEY")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    assert open_storage("az://%s/env" % container).get_bytes("k") == b"from env"


STRAY = {
    # each would break or redirect the client if obstore read it
    "AZURE_STORAGE_TOKEN": "not-a-token",  # a bearer token wins over the account key
    "AZURE_SKIP_SIGNATURE": "true",  # unsigned requests: refused
    "AZURE_STORAGE_USE_EMULATOR": "true",  # 127.0.0.1:10000 with the well-known key
    "AZURE_ENDPOINT": "http://127.0.0.1:9/nowhere",
    "AZURE_CONTAINER_NAME": "another-container",
    "AZURE_STORAGE_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
    "AZURITE_BLOB_STORAGE_URL": "http://127.0.0.1:9",
}


def test_stray_azure_variables_do_not_reach_the_client(azurite, container, monkeypatch):
    """drkit sets skip_signature, the credential type, the endpoint and the
    container explicitly and builds the store with no AZURE_* variable in
    the environment (the unit test shows that part on its own)."""
    for k, v in STRAY.items():
        monkeypatch.setenv(k, v)
    s = open_az(azurite, container)
    s.put_bytes("k", b"isolated", create=True)
    assert s.get_bytes("k") == b"isolated" and [i.key for i in s.list("")] == ["k"]
    assert all(os.environ[k] == v for k, v in STRAY.items())  # restored after the client was built


def test_the_server_refuses_what_the_stray_variables_would_do(azurite, container, monkeypatch):
    """The control: obstore left to itself does take them from the
    environment, and the requests fail."""
    import obstore
    from obstore.store import AzureStore

    for var, value in (("AZURE_SKIP_SIGNATURE", "true"), ("AZURE_STORAGE_TOKEN", "not-a-token")):
        monkeypatch.setenv(var, value)
        store = AzureStore(container, account_name=azurite.account, account_key=azurite.account_key,
                           endpoint=azurite.endpoint, client_options={"allow_http": True},
                           retry_config={"max_retries": 0})
        with pytest.raises(Exception) as e:
            obstore.put(store, "k", b"x")
        assert "40" in str(e.value), (var, str(e.value)[:500])  # 401/403 from Azurite
        monkeypatch.delenv(var)
    assert open_az(azurite, container).stat("k") is None


def test_a_wrong_key_is_access_denied_everywhere_and_never_echoed(azurite, container):
    import base64

    wrong = base64.b64encode(os.urandom(64)).decode("ascii")
    s = open_az(azurite, container, azure_account_name=azurite.account, azure_account_key=wrong,
                azure_endpoint=azurite.endpoint)
    for op in (s.check_writable, lambda: s.put_bytes("k", b"v"), lambda: s.put_bytes("k", b"v", create=True),
               lambda: s.iter_read("k"), lambda: list(s.list(""))):
        with pytest.raises(StorageError) as e:
            op()
        assert "access denied" in str(e.value), str(e.value)
        assert wrong not in str(e.value) and azurite.account_key not in str(e.value)


def test_a_read_only_sas_fails_the_probe_clearly(azurite, container):
    sas = azurite.sas_token(container, permission="rl")
    s = open_az(azurite, container, azure_account_name=azurite.account, azure_endpoint=azurite.endpoint,
                azure_sas_token=sas)
    with pytest.raises(StorageError) as e:
        s.probe(user="backup")
    msg = str(e.value)
    assert "Cannot write to az://%s/pre/fix" % container in msg and "Azure Blob credentials of user backup" in msg
    assert "put, get and list under pre/fix/, probe/ included" in msg, msg
    assert sas not in msg and sas.split("sig=")[-1] not in msg


def test_a_missing_container_and_no_server(azurite):
    s = open_az(azurite, "drkit-no-such-container")
    with pytest.raises(StorageError) as e:
        s.check_writable()
    assert "Container 'drkit-no-such-container' does not exist" in str(e.value)
    with pytest.raises(StorageError) as e:
        s.put_bytes("k", b"v")
    assert "container 'drkit-no-such-container' does not exist" in str(e.value), str(e.value)
    gone = open_az(azurite, "drkit-x", azure_account_name=azurite.account, azure_account_key=azurite.account_key,
                   azure_endpoint="http://127.0.0.1:9/%s" % azurite.account)
    gone._sleep = lambda seconds: None
    with pytest.raises(StorageError) as e:
        gone.check_writable()
    assert "cannot connect" in str(e.value) and "azure_endpoint" in e.value.hint, str(e.value)


def test_a_failed_large_upload_leaves_nothing_visible_and_nothing_to_abort(azurite, container):
    s = open_az(azurite, container)
    with pytest.raises(RuntimeError):
        with s.writer("backups/b1/db.zst") as w:
            w.write(os.urandom(20 * MiB))  # two blocks staged
            raise RuntimeError("the dump failed")
    assert list(s.list("")) == [] and s.stat("backups/b1/db.zst") is None
    assert list(s.list_incomplete("")) == []  # Azure discards uncommitted blocks itself (7 days)
    blobs = azurite.service().get_container_client(container).list_blobs()
    assert [b.name for b in blobs] == []


def test_bad_options_fail_before_any_request():
    with pytest.raises(ConfigError) as e:
        open_storage("az://drkit-x/p", azure_account_name="acct")
    assert "No Azure credentials" in str(e.value) and "azure_account_key" in e.value.hint


def test_cli_keeps_azure_secrets_out_of_argv_and_output(azurite, container, tmp_path):
    url = "az://%s/cli" % container
    r = run_drkit(["probe", "--storage-url", url, "--json"], config=azurite.options(), tmp_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert azurite.account_key not in r.stdout + r.stderr
    r = run_drkit(["probe", "--storage-url", url, "--azure-account-key", "x"], tmp_dir=tmp_path)
    assert r.returncode == 2 and "unrecognized arguments: --azure-account-key" in r.stderr
