# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What only the s3:// backend (obstore) has, against a real S3-compatible
server (SeaweedFS on loopback): multipart uploads with per-part SHA-256
checked by the server, aborts that leave no upload open, a create-only write
that is one PUT, error messages, no stray AWS_* variable reaching the
client, and the per-file commands (wal-push, wal-fetch) without boto3. The
storage contract (create-only races, listing, deletes, read-back) is
test_storage_contract.py, for every backend."""

import base64
import hashlib
import os
import shutil

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import stream as pl
from ansible_collections.drkit.backup.plugins.module_utils.core import scratch as sandbox
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (IntegrityError,
                                                                               ConfigError, StorageError)
from helpers import open_multipart_uploads, run_drkit

MiB = 1 << 20


def open_s3(s3, bucket, prefix="pre/fix", **kw):
    opts = dict(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key,
                region=s3.region)
    opts.update(kw)
    return open_storage("s3://%s/%s" % (bucket, prefix), **opts)


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def test_multipart_upload_with_per_part_checksums(s3, bucket):
    s = open_s3(s3, bucket)
    data = os.urandom(20 * MiB)
    with s.writer("backups/b1/db.zst") as w:
        for i in range(0, len(data), 3 * MiB + 17):  # unaligned writes
            w.write(data[i:i + 3 * MiB + 17])
    c = s3.client()
    attrs = c.get_object_attributes(Bucket=bucket, Key="pre/fix/backups/b1/db.zst",
                                    ObjectAttributes=["ObjectParts"])
    assert [p["Size"] for p in attrs["ObjectParts"]["Parts"]] == [8 * MiB, 8 * MiB, 4 * MiB]
    head = c.head_object(Bucket=bucket, Key="pre/fix/backups/b1/db.zst", ChecksumMode="ENABLED")
    # The server kept the SHA-256 of every part: its composite checksum is
    # the SHA-256 of the parts' SHA-256 digests, computed here by hand.
    parts = [data[0:8 * MiB], data[8 * MiB:16 * MiB], data[16 * MiB:]]
    composite = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts))
                                 .digest()).decode()
    assert head["ChecksumSHA256"] == composite + "-3"
    assert s.get_bytes("backups/b1/db.zst") == data
    assert s.stat("backups/b1/db.zst").size == len(data)
    assert open_multipart_uploads(s3, bucket) == []


def test_server_rejects_a_wrong_part_checksum(s3, bucket):
    """The per-part checksums we send are really checked by this server
    (otherwise the test above would prove little)."""
    c = s3.client()
    up = c.create_multipart_upload(Bucket=bucket, Key="x", ChecksumAlgorithm="SHA256")
    try:
        with pytest.raises(Exception) as e:
            c.upload_part(Bucket=bucket, Key="x", UploadId=up["UploadId"], PartNumber=1, Body=b"data",
                          ChecksumAlgorithm="SHA256", ChecksumSHA256=b64sha(b"other"))
        assert "BadDigest" in str(e.value)
    finally:
        c.abort_multipart_upload(Bucket=bucket, Key="x", UploadId=up["UploadId"])


def test_small_object_single_put_with_checksum(s3, bucket):
    s = open_s3(s3, bucket)
    s.put_bytes("backups/b1/manifest.json", b"{}\n")
    head = s3.client().head_object(Bucket=bucket, Key="pre/fix/backups/b1/manifest.json", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64sha(b"{}\n")
    assert "-" not in head["ETag"]  # not a multipart object


def test_exception_aborts_multipart_upload(s3, bucket):
    s = open_s3(s3, bucket)
    with pytest.raises(RuntimeError):
        with s.writer("backups/b1/db.zst") as w:
            w.write(os.urandom(17 * MiB))  # two parts sent, upload open
            assert len(open_multipart_uploads(s3, bucket)) == 1
            raise RuntimeError("pg_dump died")
    assert open_multipart_uploads(s3, bucket) == []
    assert s.stat("backups/b1/db.zst") is None
    assert list(s.list("")) == []


def test_incomplete_uploads_listed_and_aborted(s3, bucket):
    s = open_s3(s3, bucket)
    c = s3.client()
    c.create_multipart_upload(Bucket=bucket, Key="pre/fix/backups/b9/db.zst")
    c.create_multipart_upload(Bucket=bucket, Key="elsewhere/db.zst")  # outside our prefix
    (up,) = list(s.list_incomplete("backups/"))
    assert up.key == "backups/b9/db.zst" and up.upload_id and up.started > 0
    s.abort_incomplete(up)
    s.abort_incomplete(up)  # already gone: fine
    assert [key for key, _upload in open_multipart_uploads(s3, bucket)] == ["elsewhere/db.zst"]


# --------------------------------------------------------------------------
# create-only writes: one PUT with If-None-Match: *, honoured by the server


def test_create_only_write_is_refused_by_the_server_when_the_key_exists(s3, bucket):
    s = open_s3(s3, bucket)
    data = os.urandom(20 * MiB)  # larger than a part: still one conditional PUT
    with s.writer("wal/00000001/seg.zst", create=True) as w:
        for i in range(0, len(data), 3 * MiB):
            w.write(data[i:i + 3 * MiB])
    head = s3.client().head_object(Bucket=bucket, Key="pre/fix/wal/00000001/seg.zst")
    assert "-" not in head["ETag"]  # not a multipart upload
    with pytest.raises(ObjectExists) as e:
        s.put_bytes("wal/00000001/seg.zst", b"other content", create=True)
    assert "already exists" in str(e.value)
    assert s.get_bytes("wal/00000001/seg.zst") == data
    assert open_multipart_uploads(s3, bucket) == []


def test_read_stored_detects_a_modified_object(s3, bucket):
    s = open_s3(s3, bucket)
    data = os.urandom(3 * MiB)
    with s.writer("backups/b1/db.zst") as w:
        sink = pl.PipelineSink(w, [pl.ZstdCompress()])
        sink.write(data)
        sink.close()
    res = sink.result()
    out = bytearray()
    pl.read_stored(s, "backups/b1/db.zst", res["size"], res["sha256"], [pl.ZstdDecompress()], out.extend)
    assert bytes(out) == data
    stored = bytearray(s.get_bytes("backups/b1/db.zst"))
    stored[len(stored) // 2] ^= 0x40
    s3.client().put_object(Bucket=bucket, Key="pre/fix/backups/b1/db.zst", Body=bytes(stored))
    with pytest.raises(IntegrityError) as e:
        pl.read_stored(s, "backups/b1/db.zst", res["size"], res["sha256"], [pl.ZstdDecompress()],
                       lambda d: None)
    assert "backups/b1/db.zst" in str(e.value) and "sha256" in str(e.value)


def test_missing_bucket(s3):
    s = open_s3(s3, "drkit-no-such-bucket")
    with pytest.raises(StorageError) as e:
        s.check_writable()
    assert "does not exist" in str(e.value) and "Create the bucket" in str(e.value)
    # (No PUT here: SeaweedFS creates a missing bucket on PutObject, so the
    # up-front check_writable is what catches a mistyped bucket name.)


def test_wrong_secret_is_access_denied_and_not_echoed(s3, bucket):
    s = open_s3(s3, bucket, secret_key="not-the-secret-%s" % os.getpid())
    with pytest.raises(StorageError) as e:
        s.check_writable()
    assert "access denied" in str(e.value) and "access_key/secret_key" in str(e.value)
    assert "not-the-secret" not in str(e.value)
    with pytest.raises(StorageError):
        list(s.list(""))


def test_unreachable_endpoint(bucket):
    s = open_storage("s3://%s" % bucket, endpoint_url="http://127.0.0.1:%d" % sandbox.free_port(),
                     access_key="a", secret_key="b", region="us-east-1")
    with pytest.raises(StorageError) as e:
        s.check_writable()
    assert "cannot connect" in str(e.value) and "endpoint_url" in str(e.value)


def test_credentials_from_aws_environment(s3, bucket, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    s = open_storage("s3://%s/envtest" % bucket)
    s.put_bytes("k", b"v")
    assert s.endpoint_url == s3.endpoint_url
    assert s3.client().get_object(Bucket=bucket, Key="envtest/k")["Body"].read() == b"v"


# --------------------------------------------------------------------------
# moved from the s3lite tests: odd keys, missing keys, secrets, many keys


def test_round_trips_with_odd_keys(s3, bucket):
    s = open_s3(s3, bucket)
    s.check_writable()
    data = {"a/one": b"1", "a/two words \u00fc+~.zst": os.urandom(70000), "a/sub/x": b"", "b/y": b"y" * 5}
    for k, v in data.items():
        s.put_bytes(k, v)
    c = s3.client()
    for k, v in data.items():
        assert c.get_object(Bucket=bucket, Key="pre/fix/" + k)["Body"].read() == v  # stored under that very name
        assert s.get_bytes(k) == v
        assert b"".join(s.iter_read(k, chunk_size=4096)) == v
        assert s.stat(k).size == len(v)
    assert sorted(i.key for i in s.list("a/")) == ["a/one", "a/sub/x", "a/two words \u00fc+~.zst"]
    assert s.list_dirs("") == ["a", "b"] and s.list_dirs("a/") == ["sub"]
    assert sorted(s.delete(["a/one", "a/two words \u00fc+~.zst"])) == ["a/one", "a/two words \u00fc+~.zst"]
    assert s.stat("a/one") is None
    assert [i.key for i in s.list("a/")] == ["a/sub/x"]


def test_a_wrong_secret_is_access_denied_in_every_operation_and_never_echoed(s3, bucket):
    secret = "not-the-secret-%d" % os.getpid()
    s = open_s3(s3, bucket, secret_key=secret)
    for op in (s.check_writable, lambda: s.put_bytes("k", b"v"), lambda: s.put_bytes("k", b"v", create=True),
               lambda: s.iter_read("k"), lambda: list(s.list(""))):
        with pytest.raises(StorageError) as e:
            op()
        assert "access denied" in str(e.value), str(e.value)
        assert secret not in str(e.value) and "Signature=" not in str(e.value)


# --------------------------------------------------------------------------
# the client is built from drkit's options only


def test_stray_aws_variables_do_not_reach_the_client(s3, bucket, monkeypatch):
    """A leftover AWS_SESSION_TOKEN would be sent with the config's keys
    (SeaweedFS refuses the request), AWS_SKIP_SIGNATURE would send requests
    unsigned (refused as anonymous), a stray AWS_ENDPOINT or region would
    send them elsewhere."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "leftover-token-of-another-job")
    monkeypatch.setenv("AWS_SKIP_SIGNATURE", "true")
    monkeypatch.setenv("AWS_ENDPOINT", "http://127.0.0.1:%d" % sandbox.free_port())
    monkeypatch.setenv("AWS_UNSIGNED_PAYLOAD", "true")
    s = open_s3(s3, bucket)
    s.check_writable()
    s.put_bytes("wal/seg", b"segment", create=True)
    with s.writer("backups/b/db") as w:
        w.write(os.urandom(9 * MiB))  # multipart
    assert s.get_bytes("wal/seg") == b"segment"
    assert s.stat("backups/b/db").size == 9 * MiB
    assert os.environ["AWS_SESSION_TOKEN"] == "leftover-token-of-another-job"  # put back afterwards


def test_the_server_refuses_what_the_stray_variables_would_do(s3, bucket, monkeypatch):
    """The test above can fail: the same leftovers, given as drkit's own
    settings, are refused by this server."""
    s = open_s3(s3, bucket, session_token="leftover-token-of-another-job")
    with pytest.raises(StorageError) as e:
        s.put_bytes("k", b"v")
    assert "access denied" in str(e.value) or "InvalidAccessKeyId" in str(e.value) or "403" in str(e.value)
    from ansible_collections.drkit.backup.plugins.module_utils.storage import s3_client

    real = s3_client.store_settings

    def unsigned(*args, **kwargs):
        config, client, retry = real(*args, **kwargs)
        config["skip_signature"] = True
        return config, client, retry

    monkeypatch.setattr(s3_client, "store_settings", unsigned)
    with pytest.raises(StorageError):
        open_s3(s3, bucket).put_bytes("k", b"v")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://[::1", "http://", "127.0.0.1:8333",
                                 "http://127.0.0.1:9000/x y"])
def test_a_bad_endpoint_url_fails_clearly_from_the_command_line(bucket, url):
    r = run_drkit(["list", "--storage-url", "s3://%s/x" % bucket, "--endpoint-url", url],
                  config={"access_key": "a", "secret_key": "b"})
    assert r.returncode == ConfigError.exit_code, r.stderr
    assert "endpoint_url" in r.stderr and "panicked" not in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# the command line, as PostgreSQL runs it: no boto3 on the WAL and restore paths


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


def s3_opts(s3):
    return dict(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key,
                region=s3.region)


def test_cli_push_and_fetch_through_obstore_without_boto3(pg, s3, bucket, tmp_path):
    name, path = one_segment(pg, tmp_path)
    url = "s3://%s/cluster" % bucket
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    r = run_drkit(["wal-push", "--storage-url", url, path, name], config=s3_opts(s3), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    mods = imported(r.stderr)
    assert "drkit_engine" in mods and "obstore" in mods  # the importtime output is there...
    assert "boto3" not in mods and "botocore" not in mods  # ...and boto3 never came
    r = run_drkit(["wal-push", "--storage-url", url, path, name], config=s3_opts(s3))
    assert r.returncode == 0, r.stderr[-3000:]  # an identical re-push is success
    out = tmp_path / "restored"
    out.mkdir()
    r = run_drkit(["wal-fetch", "--storage-url", url, name, str(out / "RECOVERYXLOG")], config=s3_opts(s3), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "boto3" not in imported(r.stderr) and "obstore" in imported(r.stderr)
    with open(path, "rb") as a, open(str(out / "RECOVERYXLOG"), "rb") as b:
        assert a.read() == b.read()
    missing = wal.segment_name(int(name[:8], 16), wal.segment_number(name) + 50)
    r = run_drkit(["wal-fetch", "--storage-url", url, missing, str(out / "RECOVERYXLOG2")], config=s3_opts(s3))
    assert r.returncode == 1 and "not in the archive" in r.stderr


def test_a_profile_goes_through_boto3s_credential_chain(s3, bucket, tmp_path, monkeypatch):
    """Named profiles: obstore's Boto3CredentialProvider, the only place
    boto3 signs nothing but still provides the keys."""
    creds = tmp_path / "credentials"
    creds.write_text("[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n" % (
        s3.access_key, s3.secret_key))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    s = open_storage("s3://%s/prof" % bucket, endpoint_url=s3.endpoint_url, region=s3.region, profile="backup")
    s.put_bytes("k", b"via profile", create=True)
    assert s3.client().get_object(Bucket=bucket, Key="prof/k")["Body"].read() == b"via profile"
    with pytest.raises(ConfigError) as e:
        open_storage("s3://%s/prof" % bucket, endpoint_url=s3.endpoint_url, profile="no-such-profile")
    assert "no-such-profile" in str(e.value)
