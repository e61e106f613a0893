# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""factory.py: storage_url parsing (file://, s3://) with its error messages,
the storage options picked from module parameters, and light=True choosing
s3lite's client unless boto3 is asked for."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage, storage_options
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3lite import LiteS3Client

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
# light=True: s3lite where it can serve


def test_open_storage_light(clean_env):
    opts = dict(endpoint_url="http://127.0.0.1:9000", access_key="a", secret_key="b", region="us-east-1")
    s = open_storage("s3://bkt/pre", light=True, **opts)
    assert isinstance(s.client, LiteS3Client)
    assert s.describe() == "s3://bkt/pre (endpoint http://127.0.0.1:9000)"
    assert not isinstance(open_storage("s3://bkt/pre", **opts).client, LiteS3Client)
    clean_env.setenv("DRKIT_S3_CLIENT", "boto3")
    assert not isinstance(open_storage("s3://bkt/pre", light=True, **opts).client, LiteS3Client)
    assert isinstance(open_storage("file:///tmp/x", light=True), FileStorage)
