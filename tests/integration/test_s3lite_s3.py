# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""storage/s3lite.py's client against a real S3-compatible server (SeaweedFS on
loopback): the storage operations give the same answers as through boto3
on the same bucket, errors map the same way, big writes go through boto3
(multipart), and ``drkit wal-push`` / ``wal-fetch`` of a real WAL segment
run without importing boto3 at all (``-X importtime``)."""

import base64
import hashlib
import os
import shutil
import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3lite import LiteS3Client, PROXY_VARS
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3 import MIN_PART
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import NotFoundError, StorageError
from helpers import open_multipart_uploads, run_drkit

MiB = 1 << 20


def s3_opts(s3, **kw):
    opts = dict(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key,
                region=s3.region)
    opts.update(kw)
    return opts


@pytest.fixture
def pair(s3, bucket, monkeypatch):
    """(lite-backed, boto3-backed) S3Storage on the same bucket and prefix."""
    monkeypatch.delenv("DRKIT_S3_CLIENT", raising=False)
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    url = "s3://%s/pre/fix" % bucket
    lite = open_storage(url, light=True, **s3_opts(s3))
    assert isinstance(lite.client, LiteS3Client)
    heavy = open_storage(url, **s3_opts(s3))
    assert not isinstance(heavy.client, LiteS3Client)
    return lite, heavy


def test_round_trips_match_boto3(pair, s3, bucket):
    lite, heavy = pair
    lite.check_writable()
    data = {"a/one": b"1", "a/two words ü+~.zst": os.urandom(70000), "a/sub/x": b"", "b/y": b"y" * 5}
    for k, v in data.items():
        lite.put_bytes(k, v)
    heavy.put_bytes("a/from-boto3", b"written by boto3")
    for k, v in data.items():
        assert heavy.get_bytes(k) == v
        assert lite.get_bytes(k) == v
        assert b"".join(lite.iter_read(k, chunk_size=4096)) == v
        assert lite.stat(k).size == len(v) == heavy.stat(k).size
        assert abs(lite.stat(k).mtime - heavy.stat(k).mtime) < 1e-6
    assert lite.get_bytes("a/from-boto3") == b"written by boto3"
    for prefix in ("", "a/", "a/sub/", "nothing/"):
        assert list(lite.list(prefix)) == list(heavy.list(prefix))
    assert sorted(i.key for i in lite.list("a/")) == ["a/from-boto3", "a/one", "a/sub/x", "a/two words ü+~.zst"]
    assert lite.list_dirs("") == heavy.list_dirs("") == ["a", "b"]
    assert lite.list_dirs("a/") == heavy.list_dirs("a/") == ["sub"]
    # the single PUT carried the whole-object SHA-256 and the server kept it
    head = s3.client().head_object(Bucket=bucket, Key="pre/fix/a/one", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"1").digest()).decode()
    assert sorted(lite.delete(["a/one", "a/two words ü+~.zst"])) == ["a/one", "a/two words ü+~.zst"]
    assert lite.stat("a/one") is None and heavy.stat("a/two words ü+~.zst") is None
    assert [i.key for i in heavy.list("a/")] == ["a/from-boto3", "a/sub/x"]


def test_missing_key(pair):
    lite, dummy = pair
    assert lite.stat("no/such/key") is None
    with pytest.raises(NotFoundError):
        lite.iter_read("no/such/key")
    with pytest.raises(NotFoundError):
        lite.get_bytes("no/such/key")
    assert list(lite.list("no/such/")) == []


def test_wrong_secret_is_access_denied_and_not_echoed(s3, bucket):
    secret = "not-the-secret-%d" % os.getpid()
    lite = open_storage("s3://%s" % bucket, light=True, **s3_opts(s3, secret_key=secret))
    assert isinstance(lite.client, LiteS3Client)
    for op in (lite.check_writable, lambda: lite.put_bytes("k", b"v"), lambda: lite.iter_read("k"),
               lambda: list(lite.list(""))):
        with pytest.raises(StorageError) as e:
            op()
        assert "access denied" in str(e.value), str(e.value)
        assert secret not in str(e.value) and "Signature=" not in str(e.value)


def test_missing_bucket(s3):
    lite = open_storage("s3://drkit-no-such-bucket", light=True, **s3_opts(s3))
    with pytest.raises(StorageError) as e:
        lite.check_writable()
    assert "does not exist" in str(e.value)


def test_big_write_goes_multipart_through_boto3(pair, s3, bucket):
    lite, heavy = pair
    assert MIN_PART == 8 * MiB
    data = os.urandom(MIN_PART + 3 * MiB)
    with lite.writer("big/object") as w:
        for i in range(0, len(data), MiB):
            w.write(data[i:i + MiB])
    assert lite.client._delegate is not None  # multipart calls went to boto3
    attrs = s3.client().get_object_attributes(Bucket=bucket, Key="pre/fix/big/object",
                                              ObjectAttributes=["ObjectParts"])
    assert [p["Size"] for p in attrs["ObjectParts"]["Parts"]] == [8 * MiB, 3 * MiB]
    assert lite.get_bytes("big/object") == data
    assert lite.stat("big/object").size == len(data)
    assert open_multipart_uploads(s3, bucket) == []


def test_listing_over_1000_keys(pair):
    """ListObjectsV2 continuation: 1005 keys, written from 4 threads through
    one client (its connection pool)."""
    lite, heavy = pair
    keys = ["many/k%04d" % i for i in range(1005)]
    errors = []

    def put(part):
        try:
            for k in part:
                lite.put_bytes(k, k.encode())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=put, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = list(lite.list("many/"))
    assert [i.key for i in listed] == keys
    assert listed == list(heavy.list("many/"))
    assert lite.list_dirs("") == ["many"]
    assert sorted(lite.delete(keys)) == keys
    assert list(heavy.list("many/")) == []


# --------------------------------------------------------------------------
# the command line, as PostgreSQL runs it


def one_segment(pg, tmp_path):
    pg.psql("SELECT pg_logical_emit_message(false, 'drkit-test', repeat('x', 200000))")
    name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    dst = tmp_path / "pg_wal" / name
    dst.parent.mkdir()
    shutil.copyfile(os.path.join(pg.data_dir, "pg_wal", name), str(dst))
    return name, str(dst)


def imported(stderr):
    """Top-level module names in ``-X importtime`` output."""
    mods = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return mods


def test_cli_push_and_fetch_without_boto3(pg, s3, bucket, tmp_path):
    name, path = one_segment(pg, tmp_path)
    url = "s3://%s/cluster" % bucket
    cfg = s3_opts(s3)
    env = {"PYTHONPROFILEIMPORTTIME": "1", "DRKIT_S3_CLIENT": ""}
    for var in PROXY_VARS:
        env[var] = ""
    r = run_drkit(["wal-push", "--storage-url", url, path, name], config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    mods = imported(r.stderr)
    assert "drkit_engine" in mods and "http" in mods  # the importtime output is there...
    assert "boto3" not in mods and "botocore" not in mods  # ...and boto3 never came

    out = tmp_path / "restored"
    out.mkdir()
    r = run_drkit(["wal-fetch", "--storage-url", url, name, str(out / "RECOVERYXLOG")], config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "boto3" not in imported(r.stderr) and "botocore" not in imported(r.stderr)
    with open(path, "rb") as a, open(str(out / "RECOVERYXLOG"), "rb") as b:
        assert a.read() == b.read()
    assert os.path.getsize(path) == 16 * MiB

    # a missing file: exit 1 (the end of the archive), still without boto3
    missing = wal.segment_name(int(name[:8], 16), wal.segment_number(name) + 50)
    r = run_drkit(["wal-fetch", "--storage-url", url, missing, str(out / "RECOVERYXLOG2")], config=cfg, env=env)
    assert r.returncode == 1 and "not in the archive" in r.stderr
    assert "boto3" not in imported(r.stderr)

    # DRKIT_S3_CLIENT=boto3: the same fetch through boto3 (so the check above can fail)
    env["DRKIT_S3_CLIENT"] = "boto3"
    r = run_drkit(["wal-fetch", "--storage-url", url, name, str(out / "RECOVERYXLOG3")], config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "boto3" in imported(r.stderr)
    with open(path, "rb") as a, open(str(out / "RECOVERYXLOG3"), "rb") as b:
        assert a.read() == b.read()


def test_cli_restore_and_verify_read_s3_without_boto3(pg, pg_database, s3, bucket):
    # The restore path is the RTO: boto3's import (0.2 s) is not paid there either.
    pg.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 3000) g", dbname=pg_database)
    url = "s3://%s/pg" % bucket
    cfg = dict(s3_opts(s3), login_password=pg.password)
    login = ["--host", pg.host, "--port", str(pg.port), "--user", pg.superuser]
    r = run_drkit(["pg-backup", "-q", "-d", pg_database, "--storage-url", url] + login, config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {"PYTHONPROFILEIMPORTTIME": "1", "DRKIT_S3_CLIENT": ""}
    for var in PROXY_VARS:
        env[var] = ""
    target = pg_database + "_r"
    try:
        r = run_drkit(["restore", "-q", "--storage-url", url, "--target-database", target, "-j", "2"] + login,
                      config=cfg, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        mods = imported(r.stderr)
        assert "psycopg" in mods and "http" in mods
        assert "boto3" not in mods and "botocore" not in mods
        assert pg.psql("SELECT count(*) FROM t", dbname=target) == "3000"
    finally:
        pg.psql('DROP DATABASE IF EXISTS "%s"' % target)
    r = run_drkit(["verify", "-q", "--level", "restore", "--storage-url", url] + login, config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "boto3" not in imported(r.stderr)
