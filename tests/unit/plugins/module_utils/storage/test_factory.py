# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""factory.py: storage_url parsing (file://, s3://) with its error messages,
the storage options picked from module parameters, endpoint URLs checked
before obstore sees them, and the S3 settings built from drkit's options
only (no stray AWS_* variable)."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage, storage_options
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage
from ansible_collections.drkit.backup.plugins.module_utils.storage import s3_client

# --------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize("url,fragment", [
    ("", "storage_url is empty"),
    (None, "storage_url is empty"),
    ("relative/path", "Unsupported storage_url"),
    ("file://relative/path", "names a host"),
    ("file:relative", "absolute path"),
    ("ftp://host/path", "Unsupported storage_url"),
    ("gs://bucket/x", "Unsupported storage_url"),
    ("s3://", "no bucket"),
    ("s3:///prefix", "no bucket"),
    ("s3://key:secret@bucket/x", "must not contain credentials"),
    ("s3://bucket/x?region=eu", "query"),
    # read strictly: nothing dropped, nothing normalised into another place
    ("s3://bucket/../x", "the segment '..'"),
    ("s3://bucket/a/./x", "the segment '.'"),
    ("s3://bucket/a/%2e%2e/x", "the segment '%2e%2e'"),
    ("s3://bucket/a//x", "an empty segment"),
    ("s3://bucket/a%2Fb", "the segment 'a%2Fb'"),
    ("s3://bucket/x#frag", "query or fragment"),
    ("s3://bucket/x?", "query or fragment"),
    ("s3://bucket:9000/x", "names a port"),
    ("s3://Prod_Backups/x", "invalid bucket name 'Prod_Backups'"),
    ("s3://ab/x", "invalid bucket name 'ab'"),
    ("s3://-bucket/x", "invalid bucket name '-bucket'"),
    ("s3://bucket-/x", "invalid bucket name 'bucket-'"),
    ("s3://my..bucket/x", "invalid bucket name 'my..bucket'"),
    ("s3://192.168.1.10/x", "invalid bucket name '192.168.1.10'"),
    ("s3://%s/x" % ("b" * 64), "invalid bucket name"),
    ("file:///var/backups/../etc", "the segment '..'"),
    ("file:///var/./backups", "the segment '.'"),
    ("file:///var//backups", "an empty segment"),
    ("file:///var/backups?x=1", "query or fragment"),
    ("file:///var/backups#old", "query or fragment"),
    ("file:///var/backups%00x", "the segment 'backups%00x'"),
])
def test_bad_urls(url, fragment):
    with pytest.raises(ConfigError) as e:
        open_storage(url)
    assert fragment in str(e.value)
    assert "file:///" in str(e.value) or "s3://" in str(e.value) or "access_key" in str(e.value)


def test_file_urls(tmp_path):
    s = open_storage("file://" + str(tmp_path) + "/b")
    assert isinstance(s, FileStorage) and s.root == str(tmp_path / "b")
    assert open_storage("file://localhost" + str(tmp_path)).root == str(tmp_path)
    assert open_storage("file://" + str(tmp_path) + "/with%20space").root == str(tmp_path / "with space")
    assert open_storage("file://" + str(tmp_path) + "/b/").root == str(tmp_path / "b")  # one trailing '/'
    assert open_storage("file://" + str(tmp_path) + "/a%3Fb%23c").root == str(tmp_path / "a?b#c")
    assert s.describe() == "file://" + str(tmp_path / "b")


def test_reading_commands_refuse_a_file_root_that_does_not_exist(tmp_path):
    """must_exist (list, rotate, restore, verify, wal-fetch): a missing root
    is a ConfigError (exit 2) naming it, never an empty storage and never a
    NotFoundError (wal-fetch would say "not archived")."""
    missing = "file://%s/typo" % tmp_path
    assert open_storage(missing).root == str(tmp_path / "typo")  # writers create it
    with pytest.raises(ConfigError) as e:
        open_storage(missing, must_exist=True)
    assert str(e.value).startswith("The storage root %s does not exist. Check storage_url" % missing)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError) as e:
        open_storage("file://%s/afile" % tmp_path, must_exist=True)
    assert "is not a directory" in str(e.value)
    assert open_storage("file://%s" % tmp_path, must_exist=True).root == str(tmp_path)


@pytest.mark.parametrize("bucket", ["abc", "prod-backups", "a.b.c", "b" * 63, "1bucket9"])
def test_good_bucket_names(bucket):
    s = open_storage("s3://%s/p" % bucket, access_key="a", secret_key="b", region="us-east-1",
                     endpoint_url="http://127.0.0.1:1")
    assert (s.bucket, s.prefix) == (bucket, "p")


def test_s3_url_prefix_and_env_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    s = open_storage("s3://bucket/some/prefix/", access_key="a", secret_key="b", region="us-east-1")
    assert (s.bucket, s.prefix, s.endpoint_url) == ("bucket", "some/prefix", "http://127.0.0.1:1")
    assert s._full("backups/x") == "some/prefix/backups/x"
    assert s.describe() == "s3://bucket/some/prefix (endpoint http://127.0.0.1:1)"
    assert "b" not in s.describe().replace("bucket", "").replace("endpoint", "")  # no secret


def test_s3_needs_both_keys():
    with pytest.raises(ConfigError) as e:
        open_storage("s3://bucket", access_key="a")
    assert "Only one of access_key and secret_key" in str(e.value)


def test_storage_options_picks_only_set_storage_keys():
    params = {"storage_url": "s3://b", "endpoint_url": "http://x", "secret_key": "s", "region": None,
              "database": "db", "validate_certs": False}
    assert storage_options(params) == {"endpoint_url": "http://x", "secret_key": "s", "validate_certs": False}


# --------------------------------------------------------------------------
# S3 settings: explicit, checked, nothing from stray AWS_* variables


@pytest.mark.parametrize("url,fragment", [
    ("127.0.0.1:8333", "does not start with http"),
    ("localhost", "does not start with http"),
    ("ftp://127.0.0.1", "does not start with http"),
    ("http://", "names no host"),
    ("http://:9000", "names no host"),
    ("http://127.0.0.1:99999", "not a valid URL"),
    ("http://127.0.0.1:port", "not a valid URL"),
    ("http://127.0.0.1:", "empty or zero port"),
    ("http://127.0.0.1:0", "empty or zero port"),
    ("http://[::1", "not a valid URL"),
    ("http://user:pw@127.0.0.1:9000", "user name or password"),
    ("http://127.0.0.1:9000/bucket", "path, query or fragment"),
    ("http://127.0.0.1:9000?x=1", "path, query or fragment"),
    ("http://s3 .example.com", "invalid host name"),
    ("http://exa_mple.com", "invalid host name"),
])
def test_a_bad_endpoint_url_is_a_clear_error_before_obstore_sees_it(url, fragment):
    with pytest.raises(ConfigError) as e:
        open_storage("s3://bucket/x", endpoint_url=url, access_key="a", secret_key="b")
    assert fragment in str(e.value) and "endpoint_url" in str(e.value) and "http://127.0.0.1:8333" in str(e.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", "https://s3.example.internal/", "http://[::1]:9000",
                                 "https://s3.eu-west-1.amazonaws.com"])
def test_good_endpoint_urls(url):
    assert s3_client.check_endpoint_url(url) == url.rstrip("/")


def test_a_session_token_from_the_environment_goes_only_with_its_own_keys():
    env = {"AWS_ACCESS_KEY_ID": "envkey", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_SESSION_TOKEN": "envtoken"}
    # keys from the config file: the environment's token is a leftover
    assert s3_client.resolve_credentials("cfgkey", "cfgsecret", None, env) == ("cfgkey", "cfgsecret", None)
    want = ("cfgkey", "cfgsecret", "cfgtoken")
    assert s3_client.resolve_credentials("cfgkey", "cfgsecret", "cfgtoken", env) == want
    # the environment's keys: its token with them
    assert s3_client.resolve_credentials(None, None, None, env) == ("envkey", "envsecret", "envtoken")
    assert s3_client.resolve_credentials("envkey", "envsecret", None, env) == ("envkey", "envsecret", "envtoken")
    # none at all: boto3's chain
    assert s3_client.resolve_credentials(None, None, None, {"AWS_SESSION_TOKEN": "t"}) == (None, None, None)
    with pytest.raises(ConfigError):
        s3_client.resolve_credentials("a", None, None, env)


def test_store_settings_are_explicit():
    config, client, retry = s3_client.store_settings("bkt", endpoint_url="http://127.0.0.1:9000", region=None,
                                                     access_key="a", secret_key="b")
    assert config["skip_signature"] is False and "token" not in config
    assert config["region"] == "us-east-1" and config["endpoint"] == "http://127.0.0.1:9000"
    assert config["checksum_algorithm"] == "sha256" and config["conditional_put"] == "etag"
    assert client["allow_http"] is True and "allow_invalid_certificates" not in client
    assert client["timeout"] == s3_client.REQUEST_TIMEOUT  # not obstore's 30 s, which would cut long downloads
    assert retry["max_retries"] == s3_client.MAX_RETRIES


def test_the_store_is_built_without_aws_variables_and_they_come_back(clean_env):
    seen = {}

    class Store(object):
        def __init__(self, **kw):
            import os
            seen["env"] = sorted(k for k in os.environ if k.startswith("AWS_"))
            seen["kw"] = kw

    clean_env.setenv("AWS_SESSION_TOKEN", "leftover")
    clean_env.setenv("AWS_SKIP_SIGNATURE", "true")
    clean_env.setattr(s3_client, "obstore_module", lambda: (None, Store))
    s3_client.make_store("bkt", endpoint_url="http://127.0.0.1:9000", access_key="a", secret_key="b")
    assert seen["env"] == []
    assert "token" not in seen["kw"]["config"] and seen["kw"]["config"]["skip_signature"] is False
    assert seen["kw"]["credential_provider"] is None
    import os
    assert os.environ["AWS_SESSION_TOKEN"] == "leftover" and os.environ["AWS_SKIP_SIGNATURE"] == "true"


# --------------------------------------------------------------------------
# server-side encryption and the CA bundle


@pytest.mark.parametrize("mode,key,expected", [
    (None, None, {}),
    ("AES256", None, {"server_side_encryption": "AES256"}),
    ("aws:kms", None, {"server_side_encryption": "aws:kms"}),
    (None, "alias/backups", {"server_side_encryption": "aws:kms", "sse_kms_key_id": "alias/backups"}),
    ("aws:kms:dsse", "arn:aws:kms:eu-west-1:1:key/k",
     {"server_side_encryption": "aws:kms:dsse", "sse_kms_key_id": "arn:aws:kms:eu-west-1:1:key/k"}),
])
def test_server_side_encryption_settings_reach_the_s3_config(mode, key, expected):
    from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import (
        server_side_encryption_settings)
    sse = server_side_encryption_settings(mode, key)
    assert sse == expected
    config = s3_client.store_settings("b", access_key="a", secret_key="s", sse=sse)[0]
    assert dict((k, config[k]) for k in expected) == expected
    assert not set(("server_side_encryption", "sse_kms_key_id")) - set(expected) & set(config)


@pytest.mark.parametrize("opts,fragment", [
    ({"server_side_encryption": "AES256", "sse_kms_key_id": "k"}, "sse_kms_key_id is set but"),
    ({"server_side_encryption": "aes256"}, "is not one of AES256"),
])
def test_server_side_encryption_combinations_s3_would_refuse(opts, fragment):
    with pytest.raises(ConfigError) as e:
        open_storage("s3://bucket/x", endpoint_url="http://127.0.0.1:1", access_key="a", secret_key="s", **opts)
    assert fragment in str(e.value)


def test_server_side_encryption_is_refused_for_azure():
    with pytest.raises(ConfigError) as e:
        open_storage("az://backups/x", azure_account_name="acct", azure_account_key="a2V5",
                     server_side_encryption="AES256")
    assert "S3 settings" in str(e.value) and "encryption scope" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"garbage\n",
                                     b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_a_ca_bundle_without_a_certificate_is_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        s3_client.client_options("https://127.0.0.1:1", str(path))
    assert "ca_bundle %s holds no PEM certificate" % path in str(e.value)
