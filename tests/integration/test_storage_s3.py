# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The s3:// backend against a real S3-compatible server (SeaweedFS on
loopback): multipart uploads with per-part SHA-256 checked by the server,
aborts that leave nothing open, create-only writes (If-None-Match, with
both clients, concurrent writers), listing, deletes and error messages."""

import base64
import hashlib
import json
import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import stream as pl
from ansible_collections.drkit.backup.plugins.module_utils.core import scratch as sandbox
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo.verification import write_record
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists, put_new
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3lite import LiteS3Client
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConflictError, IntegrityError,
                                                                               NotFoundError, StorageError)
from helpers import open_multipart_uploads
from support.unit_helpers import create_only_race

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


def test_list_stat_dirs_delete_with_prefix(s3, bucket):
    s = open_s3(s3, bucket)
    other = open_s3(s3, bucket, prefix="pre/fixture")  # a prefix that starts like ours
    keys = ["backups/a/1", "backups/a/2", "backups/b/1", "wal/0001"]
    for k in keys:
        s.put_bytes(k, k.encode())
    other.put_bytes("backups/z/1", b"z")
    assert sorted(i.key for i in s.list("")) == keys
    assert sorted(i.key for i in s.list("backups/")) == keys[:3]
    assert s.list_dirs("backups/") == ["a", "b"]
    assert s.stat("backups/a/1").size == len(b"backups/a/1") and s.stat("backups/a/1").mtime > 0
    assert s.stat("backups/a/3") is None
    with pytest.raises(NotFoundError) as e:
        s.get_bytes("backups/a/3")
    assert "backups/a/3" in str(e.value)
    assert sorted(s.delete(["backups/a/1", "backups/a/2", "backups/a/missing"]))[:2] == ["backups/a/1",
                                                                                         "backups/a/2"]
    assert sorted(i.key for i in s.list("")) == ["backups/b/1", "wal/0001"]
    assert [i.key for i in other.list("")] == ["backups/z/1"]


def test_put_new_on_s3(s3, bucket):
    s = open_s3(s3, bucket)
    assert put_new(s, "wal/000000010000000000000001", b"seg") is True
    assert put_new(s, "wal/000000010000000000000001", b"seg") is False
    with pytest.raises(ConflictError):
        put_new(s, "wal/000000010000000000000001", b"other")
    assert s.get_bytes("wal/000000010000000000000001") == b"seg"


# --------------------------------------------------------------------------
# create-only writes: one PUT with If-None-Match: *, honoured by the server


def s3_pair(s3, bucket, light):
    st = open_s3(s3, bucket, light=light)
    assert isinstance(st.client, LiteS3Client) is light
    return st


@pytest.mark.parametrize("light", [True, False], ids=["s3lite", "boto3"])
def test_create_only_write_is_refused_by_the_server_when_the_key_exists(s3, bucket, light, monkeypatch):
    monkeypatch.delenv("DRKIT_S3_CLIENT", raising=False)
    s = s3_pair(s3, bucket, light)
    data = os.urandom(20 * MiB)  # larger than a part: still one conditional PUT
    with s.writer("wal/00000001/seg.zst", create=True) as w:
        for i in range(0, len(data), 3 * MiB):
            w.write(data[i:i + 3 * MiB])
    head = s3.client().head_object(Bucket=bucket, Key="pre/fix/wal/00000001/seg.zst")
    assert "-" not in head["ETag"]  # not a multipart upload
    with pytest.raises(ObjectExists) as e:
        s.put_bytes("wal/00000001/seg.zst", b"other content", create=True)
    assert "PreconditionFailed" in str(e.value)
    assert s.get_bytes("wal/00000001/seg.zst") == data
    assert open_multipart_uploads(s3, bucket) == []


@pytest.mark.parametrize("light", [True, False], ids=["s3lite", "boto3"])
def test_concurrent_create_only_writers_on_s3_exactly_one_wins(s3, bucket, light, monkeypatch):
    monkeypatch.delenv("DRKIT_S3_CLIENT", raising=False)
    s = s3_pair(s3, bucket, light)
    for rnd in range(5):
        key = "wal/00000001/race-%d.zst" % rnd
        payloads = [b"writer %d " % i * 100000 for i in range(6)]
        outcome = create_only_race(s, key, payloads)
        winners = [i for i, o in outcome.items() if o == "stored"]
        assert len(winners) == 1 and len(outcome) == len(payloads), outcome
        assert s.get_bytes(key) == payloads[winners[0]]


def test_manifest_and_verification_records_are_create_only_on_s3(s3, bucket):
    s = open_s3(s3, bucket)
    backup_id = mf.new_backup_id("pg_logical")
    m = mf.Manifest.new(backup_id, "pg_logical", mf.utcnow(), {"database": "app"})
    m.finish(mf.utcnow())
    mf.write_manifest(s, m)
    other = mf.Manifest(m, labels={"edited": "yes"})
    with pytest.raises(ObjectExists):
        mf.write_manifest(s, other)
    assert mf.load_manifest(s, backup_id) == m
    key = write_record(s, backup_id, mf.utcnow(), {"result": "pass"})
    with pytest.raises(ObjectExists):
        s.put_bytes(key, b"{}", create=True)
    assert json.loads(s.get_bytes(key)) == {"result": "pass"}


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
