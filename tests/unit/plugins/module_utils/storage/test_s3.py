# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3.py: the S3 writer's multipart logic, create-only writes (one
conditional PUT), batched deletes and error messages against a fake client (the real-server side is
tests/integration/test_storage_s3.py)."""

import base64
import hashlib
import os
import threading
import time

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import NotFoundError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage import s3 as s3_module
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists, put_new
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3 import (
    MAX_PARTS,
    MIN_PART,
    S3Storage,
    part_size_for,
)


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


# --------------------------------------------------------------------------
# writer


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


# --------------------------------------------------------------------------
# create-only writes: one PUT with If-None-Match: *


class ConditionalS3(FakeS3):
    """put_object honours If-None-Match like S3: 412 PreconditionFailed
    when the key exists (or ``answer``: another status and code)."""

    def __init__(self, answer=None, **kw):
        super(ConditionalS3, self).__init__(**kw)
        self.answer = answer

    def put_object(self, **kw):
        from botocore.exceptions import ClientError

        if kw.get("IfNoneMatch") == "*" and (kw["Key"] in self.objects or self.answer):
            self._call("put_object", **kw)
            status, code = self.answer or (412, "PreconditionFailed")
            raise ClientError({"Error": {"Code": code, "Message": code},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
        return super(ConditionalS3, self).put_object(**kw)

    def get_object(self, **kw):
        data = self.objects[kw["Key"]]

        class Body(object):
            def iter_chunks(self, size):
                yield data

            def close(self):
                pass
        return {"Body": Body()}


def test_create_only_is_one_conditional_put_however_large(small_parts):
    c = ConditionalS3()
    s = s3_with(c)
    data = os.urandom(PART * 5 + 17)  # five parts' worth: still no multipart upload
    with s.writer("wal/00000001/seg.zst", create=True) as w:
        for i in range(0, len(data), 300):
            w.write(data[i:i + 300])
    assert c.names() == ["put_object"]
    kw = c.calls[0][1]
    assert kw["IfNoneMatch"] == "*" and kw["Body"] == data and kw["ChecksumSHA256"] == b64sha(data)
    # a plain write of the same size is still streamed in parts, unconditionally
    c2 = ConditionalS3()
    s3_with(c2).put_bytes("backups/x/data", data)
    assert "put_object" not in c2.names() and "IfNoneMatch" not in str(c2.calls)


@pytest.mark.parametrize("status,code", [(412, "PreconditionFailed"), (409, "ConditionalRequestConflict")])
def test_a_taken_key_is_object_exists_not_a_storage_failure(small_parts, status, code):
    c = ConditionalS3()
    s = s3_with(c)
    s.put_bytes("backups/x/manifest.json", b"first", create=True)
    c.answer = (status, code)
    with pytest.raises(ObjectExists) as e:
        s.put_bytes("backups/x/manifest.json", b"second", create=True)
    assert e.value.exit_code == 5 and code in str(e.value)
    assert c.objects["pre/backups/x/manifest.json"] == b"first"
    assert put_new(s, "backups/x/manifest.json", b"first") is False  # identical: accepted


def test_other_errors_of_a_conditional_put_stay_errors(small_parts):
    c = ConditionalS3(answer=(403, "AccessDenied"))
    with pytest.raises(StorageError) as e:
        s3_with(c).put_bytes("k", b"x", create=True)
    assert not isinstance(e.value, ObjectExists) and "access denied" in str(e.value)


# --------------------------------------------------------------------------
# delete and errors


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
