# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""storage.py: the file backend on a real file system, key validation, URL
parsing, and the S3 writer's multipart logic against a fake client (the
real-server side is tests/integration/test_storage_s3.py)."""

import base64
import errno
import hashlib
import os
import stat
import threading
import time

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.storage import s3 as s3_module
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import TEMP_MARKER, put_new
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage, storage_options
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3 import (MAX_PARTS, MIN_PART, S3Storage,
                                                                              part_size_for)
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, ConflictError,
                                                                               NotFoundError, StorageError)


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


@pytest.fixture
def fs(tmp_path):
    return FileStorage(str(tmp_path / "root"))


# --------------------------------------------------------------------------
# keys


@pytest.mark.parametrize("key", ["", "/abs/key", "a//b", "a/./b", "a/../b", "..", ".", "a/", "a\\b",
                                 "backups/%sx/f" % TEMP_MARKER, TEMP_MARKER + "1"])
def test_invalid_keys_are_refused_by_every_operation(fs, key):
    for op in (lambda: fs.writer(key), lambda: fs.stat(key), lambda: fs.iter_read(key),
               lambda: fs.delete([key])):
        with pytest.raises(ConfigError) as e:
            op()
        assert "Invalid storage key" in str(e.value)


@pytest.mark.parametrize("key", ["a", "backups/x/manifest.json", "a.b/c-d_e/f.g"])
def test_valid_keys(fs, key):
    fs.put_bytes(key, b"x")
    assert fs.get_bytes(key) == b"x"


# --------------------------------------------------------------------------
# file:// writes


def test_nothing_visible_before_commit(fs):
    w = fs.writer("backups/b1/data")
    w.write(b"hello ")
    w.write(b"world")
    final = os.path.join(fs.root, "backups", "b1", "data")
    assert not os.path.exists(final)
    assert fs.stat("backups/b1/data") is None
    assert list(fs.list("")) == []
    # The bytes are in a hidden temp file in the target directory, which
    # list_incomplete reports (so rotation can clean a crashed run's leftovers).
    temps = os.listdir(os.path.dirname(final))
    assert len(temps) == 1 and temps[0].startswith(TEMP_MARKER)
    assert [u.key for u in fs.list_incomplete("")] == ["backups/b1/" + temps[0]]
    w.commit()
    assert os.listdir(os.path.dirname(final)) == ["data"]
    assert fs.get_bytes("backups/b1/data") == b"hello world"
    assert w.size == 11


def test_modes_are_0600_and_0700(fs, tmp_path):
    old = os.umask(0o022)
    try:
        fs.put_bytes("backups/b1/deep/data", b"x")
    finally:
        os.umask(old)
    assert mode(os.path.join(fs.root, "backups", "b1", "deep", "data")) == 0o600
    for d in ("", "backups", "backups/b1", "backups/b1/deep"):
        assert mode(os.path.join(fs.root, d)) == 0o700, d


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files for another user")
def test_root_writing_into_another_users_root_hands_new_files_to_that_user(tmp_path):
    # A base backup run by root into the archive that postgres's archive_command
    # writes: what root creates must stay readable and writable for postgres.
    root = tmp_path / "archive"
    root.mkdir()
    os.chown(str(root), 12345, 23456)
    fs = FileStorage(str(root))
    fs.put_bytes("wal/SYSTEM_IDENTIFIER", b"7311")
    with fs.writer("backups/b1/manifest.json") as w:
        w.write(b"{}")
    for rel in ("wal", "wal/SYSTEM_IDENTIFIER", "backups", "backups/b1", "backups/b1/manifest.json"):
        info = os.stat(str(root / rel))
        assert (info.st_uid, info.st_gid) == (12345, 23456), rel
    assert mode(root / "wal" / "SYSTEM_IDENTIFIER") == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_in_its_own_root_keeps_root_ownership(fs):
    fs.put_bytes("a/b", b"x")
    assert os.stat(os.path.join(fs.root, "a", "b")).st_uid == 0
    assert os.stat(os.path.join(fs.root, "a")).st_uid == 0


def test_exception_in_block_removes_temp_and_stores_nothing(fs):
    with pytest.raises(RuntimeError):
        with fs.writer("backups/b1/data") as w:
            w.write(b"partial")
            raise RuntimeError("producer died")
    assert list(fs.list("")) == []
    assert list(fs.list_incomplete("")) == []
    # not even an empty backups/b1/ that looks like a backup to a human
    assert os.listdir(fs.root) == []


def test_abort_keeps_directories_that_hold_other_objects(fs):
    fs.put_bytes("backups/b1/other", b"x")
    w = fs.writer("backups/b1/data")
    w.abort()
    assert os.listdir(os.path.join(fs.root, "backups", "b1")) == ["other"]


def test_explicit_abort_removes_temp(fs):
    w = fs.writer("k")
    w.write(b"data")
    w.abort()
    w.abort()  # idempotent
    assert os.listdir(fs.root) == []
    w.commit()  # after abort: a no-op, never resurrects the object
    assert fs.stat("k") is None


def test_write_error_aborts_and_says_disk_full(fs, monkeypatch):
    w = fs.writer("backups/b1/data")

    class Full(object):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    real = w._fh
    w._fh = Full()
    with pytest.raises(StorageError) as e:
        w.write(b"x" * 10)
    real.close()
    assert "file system is full" in str(e.value)
    assert "backups" in str(e.value)
    assert list(fs.list_incomplete("")) == [] and list(fs.list("")) == []


def test_fsync_file_before_rename_then_directory(fs, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        target = os.readlink("/proc/self/fd/%d" % fd)
        events.append(("fsync", target))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", b))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    fs.put_bytes("backups/b1/data", b"x")
    final = os.path.join(fs.root, "backups", "b1", "data")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "rename", "fsync"], events
    assert os.path.basename(events[0][1]).startswith(TEMP_MARKER)  # the data file itself
    assert events[1][1] == final
    assert events[2][1] == os.path.dirname(final)  # the directory entry made durable


def test_failed_rename_aborts(fs, monkeypatch):
    def rename(a, b):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(StorageError) as e:
        fs.put_bytes("k", b"x")
    assert "Permission denied" in str(e.value)
    assert os.listdir(fs.root) == []


def test_read_missing_is_not_found(fs):
    with pytest.raises(NotFoundError) as e:
        fs.get_bytes("backups/x/manifest.json")
    assert "backups/x/manifest.json" in str(e.value)
    assert fs.stat("backups/x/manifest.json") is None
    assert fs.exists("backups/x/manifest.json") is False


def test_list_list_dirs_and_prefix(fs):
    for k in ("backups/a/1", "backups/a/2", "backups/b/1", "backupsX/z", "other"):
        fs.put_bytes(k, k.encode())
    assert sorted(i.key for i in fs.list("backups/")) == ["backups/a/1", "backups/a/2", "backups/b/1"]
    assert sorted(i.key for i in fs.list("backups/a")) == ["backups/a/1", "backups/a/2"]
    assert sorted(i.key for i in fs.list("")) == ["backups/a/1", "backups/a/2", "backups/b/1",
                                                  "backupsX/z", "other"]
    assert fs.list_dirs("backups/") == ["a", "b"]
    assert fs.list_dirs("nothing/") == []
    info = fs.stat("backups/a/1")
    assert info.size == len(b"backups/a/1") and info.mtime > 0


def test_list_on_missing_root_is_empty(tmp_path):
    fs = FileStorage(str(tmp_path / "does-not-exist"))
    assert list(fs.list("")) == [] and list(fs.list_incomplete("")) == []


def test_delete_prunes_empty_dirs_and_ignores_missing(fs):
    fs.put_bytes("backups/a/1", b"1")
    fs.put_bytes("backups/a/2", b"2")
    fs.put_bytes("backups/b/1", b"3")
    assert fs.delete(["backups/a/1", "backups/a/2", "backups/a/missing"]) == ["backups/a/1", "backups/a/2"]
    assert not os.path.exists(os.path.join(fs.root, "backups", "a"))
    assert os.path.isdir(os.path.join(fs.root, "backups", "b"))
    assert os.path.isdir(fs.root)  # the root itself is never removed
    fs.delete(["backups/b/1"])
    assert os.path.isdir(fs.root)


def test_abort_incomplete_removes_leftover(fs):
    w = fs.writer("backups/a/1")
    w.write(b"x")
    (up,) = list(fs.list_incomplete("backups/"))
    fs.abort_incomplete(up)
    fs.abort_incomplete(up)  # already gone: fine
    assert list(fs.list_incomplete("")) == []


def test_put_new_store_if_absent(fs):
    assert put_new(fs, "wal/000000010000000000000001", b"segment") is True
    assert put_new(fs, "wal/000000010000000000000001", b"segment") is False  # identical: ok
    with pytest.raises(ConflictError) as e:
        put_new(fs, "wal/000000010000000000000001", b"different")
    assert "left untouched" in str(e.value)
    assert fs.get_bytes("wal/000000010000000000000001") == b"segment"


def test_iter_read_chunks(fs):
    data = os.urandom(300000)
    fs.put_bytes("k", data)
    chunks = list(fs.iter_read("k", chunk_size=100000))
    assert [len(c) for c in chunks] == [100000, 100000, 100000]
    assert b"".join(chunks) == data


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
])
def test_bad_urls(url, fragment):
    with pytest.raises(ConfigError) as e:
        open_storage(url)
    assert fragment in str(e.value)
    assert "file:///" in str(e.value) or "s3://" in str(e.value) or "access_key" in str(e.value)


def test_file_urls(tmp_path):
    s = open_storage("file://" + str(tmp_path) + "/a/../b")
    assert isinstance(s, FileStorage) and s.root == str(tmp_path / "b")
    assert open_storage("file://localhost" + str(tmp_path)).root == str(tmp_path)
    assert open_storage("file://" + str(tmp_path) + "/with%20space").root == str(tmp_path / "with space")
    assert s.describe() == "file://" + str(tmp_path / "b")


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
# S3 writer against a fake client


class FakeS3(object):
    """Records calls; optionally fails or blocks in upload_part."""

    def __init__(self, fail_part=None, fail_complete=False, block=None):
        self.calls = []
        self.parts = {}
        self.objects = {}
        self.fail_part = fail_part
        self.fail_complete = fail_complete
        self.block = block
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0

    def _call(self, name, **kw):
        with self.lock:
            self.calls.append((name, kw))

    def names(self):
        return [c[0] for c in self.calls]

    def put_object(self, **kw):
        self._call("put_object", **kw)
        self.objects[kw["Key"]] = kw["Body"]
        return {}

    def create_multipart_upload(self, **kw):
        self._call("create_multipart_upload", **kw)
        return {"UploadId": "up-1"}

    def upload_part(self, **kw):
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            self._call("upload_part", **kw)
            if self.block is not None:
                self.block.wait(10)
            if self.fail_part == kw["PartNumber"]:
                raise RuntimeError("connection reset while sending part %d" % kw["PartNumber"])
            with self.lock:
                self.parts[kw["PartNumber"]] = kw["Body"]
            return {"ETag": '"etag-%d"' % kw["PartNumber"], "ChecksumSHA256": kw["ChecksumSHA256"]}
        finally:
            with self.lock:
                self.inflight -= 1

    def complete_multipart_upload(self, **kw):
        self._call("complete_multipart_upload", **kw)
        if self.fail_complete:
            raise RuntimeError("InvalidPart")
        parts = kw["MultipartUpload"]["Parts"]
        self.objects[kw["Key"]] = b"".join(self.parts[p["PartNumber"]] for p in parts)
        return {}

    def abort_multipart_upload(self, **kw):
        self._call("abort_multipart_upload", **kw)
        return {}


PART = 1000


@pytest.fixture
def small_parts(monkeypatch):
    # Real parts are 8 MiB; 1000 bytes keeps the test fast and the logic the same.
    monkeypatch.setattr(s3_module, "part_size_for", lambda n: PART)


def s3_with(client, prefix="pre"):
    return S3Storage("bucket", prefix, client=client)


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def test_small_object_is_one_put_with_checksum(small_parts):
    c = FakeS3()
    s = s3_with(c)
    s.put_bytes("backups/x/manifest.json", b"{}")
    assert c.names() == ["put_object"]
    kw = c.calls[0][1]
    assert kw["Key"] == "pre/backups/x/manifest.json" and kw["Bucket"] == "bucket"
    assert kw["ChecksumAlgorithm"] == "SHA256" and kw["ChecksumSHA256"] == b64sha(b"{}")


def test_empty_object_is_one_put(small_parts):
    c = FakeS3()
    s3_with(c).put_bytes("k", b"")
    assert c.names() == ["put_object"] and c.objects["pre/k"] == b""


def test_multipart_parts_sized_ordered_and_checksummed(small_parts):
    c = FakeS3()
    data = os.urandom(PART * 5 + 123)
    with s3_with(c).writer("backups/x/db") as w:
        for i in range(0, len(data), 777):  # writes not aligned with parts
            w.write(data[i:i + 777])
    names = c.names()
    assert names[0] == "create_multipart_upload" and names[-1] == "complete_multipart_upload"
    assert "abort_multipart_upload" not in names and "put_object" not in names
    assert c.calls[0][1]["ChecksumAlgorithm"] == "SHA256"
    uploads = [kw for n, kw in c.calls if n == "upload_part"]
    assert sorted(u["PartNumber"] for u in uploads) == [1, 2, 3, 4, 5, 6]
    for u in uploads:
        assert u["UploadId"] == "up-1" and u["Key"] == "pre/backups/x/db"
        assert u["ChecksumSHA256"] == b64sha(u["Body"])  # the server checks each part
        assert len(u["Body"]) == (123 if u["PartNumber"] == 6 else PART)
    parts = c.calls[-1][1]["MultipartUpload"]["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2, 3, 4, 5, 6]
    assert all(p["ChecksumSHA256"] == b64sha(c.parts[p["PartNumber"]]) for p in parts)
    assert c.objects["pre/backups/x/db"] == data
    assert w.size == len(data)


def test_exactly_one_part_boundary(small_parts):
    c = FakeS3()
    data = os.urandom(PART * 2)
    s3_with(c).put_bytes("k", data)
    assert sorted(kw["PartNumber"] for n, kw in c.calls if n == "upload_part") == [1, 2]
    assert c.objects["pre/k"] == data


def test_failed_part_aborts_upload(small_parts):
    c = FakeS3(fail_part=2)
    with pytest.raises(StorageError) as e:
        with s3_with(c).writer("backups/x/db") as w:
            for _i in range(6):
                w.write(os.urandom(PART))
                time.sleep(0.01)  # let the failing part finish so write() sees it
    assert "connection reset" in str(e.value) and "backups/x/db" in str(e.value)
    assert "abort_multipart_upload" in c.names()
    assert "complete_multipart_upload" not in c.names()
    assert c.calls[-1][0] == "abort_multipart_upload"  # nothing sent after the abort
    assert c.calls[-1][1]["UploadId"] == "up-1"
    assert not c.objects


def test_failed_last_part_detected_at_commit(small_parts):
    c = FakeS3(fail_part=3)
    w = s3_with(c).writer("k")
    w.write(os.urandom(PART * 2 + 10))
    with pytest.raises(StorageError):
        w.commit()
    assert "complete_multipart_upload" not in c.names()
    assert c.names()[-1] == "abort_multipart_upload"


def test_failed_complete_aborts(small_parts):
    c = FakeS3(fail_complete=True)
    with pytest.raises(StorageError) as e:
        s3_with(c).put_bytes("k", os.urandom(PART * 2 + 1))
    assert "InvalidPart" in str(e.value)
    assert c.names()[-1] == "abort_multipart_upload"


def test_exception_in_block_aborts(small_parts):
    c = FakeS3()
    with pytest.raises(ValueError):
        with s3_with(c).writer("k") as w:
            w.write(os.urandom(PART * 3))
            raise ValueError("pg_dump exited 1")
    assert c.names()[-1] == "abort_multipart_upload"
    assert "complete_multipart_upload" not in c.names()


def test_exception_before_first_part_sends_nothing(small_parts):
    c = FakeS3()
    with pytest.raises(ValueError):
        with s3_with(c).writer("k") as w:
            w.write(b"x" * 10)
            raise ValueError("boom")
    assert c.calls == []  # no upload was started, nothing to abort, no PUT


def test_inflight_parts_are_bounded(small_parts):
    """Memory bound: with parts blocked on the network, write() stops
    accepting data after max_inflight parts plus one buffered part."""
    gate = threading.Event()
    c = FakeS3(block=gate)
    w = s3_with(c).writer("k")
    accepted = []

    def produce():
        for _i in range(20):
            w.write(os.urandom(PART))
            accepted.append(1)

    t = threading.Thread(target=produce)
    t.daemon = True
    t.start()
    time.sleep(0.5)
    try:
        assert c.max_inflight == 3
        # 3 parts in flight, the 4th blocks in write(): at most 4 parts of data held.
        assert len(accepted) <= 4
        assert len(w._buf) < PART
    finally:
        gate.set()
    t.join(10)
    w.commit()
    assert len(accepted) == 20 and c.max_inflight == 3
    assert len(c.objects["pre/k"]) == 20 * PART


def test_part_size_growth_is_bounded():
    assert part_size_for(1) == MIN_PART == 8 << 20
    assert part_size_for(2000) == MIN_PART
    assert part_size_for(2001) == 2 * MIN_PART
    assert part_size_for(MAX_PARTS) <= 32 * MIN_PART  # memory stays bounded
    total = sum(part_size_for(n) for n in range(1, MAX_PARTS + 1))
    assert total > 400 << 30  # hundreds of GiB fit in one upload


def test_s3_delete_is_batched_by_1000():
    class C(FakeS3):
        def delete_objects(self, **kw):
            self._call("delete_objects", **kw)
            return {"Deleted": [{"Key": o["Key"]} for o in kw["Delete"]["Objects"]]}

    c = C()
    keys = ["backups/x/%04d" % i for i in range(2500)]
    assert s3_with(c).delete(keys) == keys
    sizes = [len(kw["Delete"]["Objects"]) for n, kw in c.calls]
    assert sizes == [1000, 1000, 500]
    assert c.calls[0][1]["Delete"]["Objects"][0]["Key"] == "pre/backups/x/0000"


def test_s3_delete_reports_errors():
    class C(FakeS3):
        def delete_objects(self, **kw):
            return {"Deleted": [], "Errors": [{"Key": "pre/k", "Code": "AccessDenied", "Message": "no"}]}

    with pytest.raises(StorageError) as e:
        s3_with(C()).delete(["k"])
    assert "Could not delete k: AccessDenied" in str(e.value)


def test_s3_error_messages_name_the_cause():
    from botocore.exceptions import ClientError, EndpointConnectionError

    s = s3_with(FakeS3())

    def client_error(code):
        return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")

    e = s._error("upload k", client_error("NoSuchBucket"))
    assert "bucket 'bucket' does not exist" in str(e) and "Create the bucket" in str(e)
    e = s._error("upload k", client_error("InvalidAccessKeyId"))
    assert "access denied" in str(e) and "access_key" in str(e)
    e = s._error("read k", client_error("NoSuchKey"))
    assert isinstance(e, NotFoundError)
    e = s._error("upload k", EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert "cannot connect" in str(e) and "endpoint_url" in str(e)
