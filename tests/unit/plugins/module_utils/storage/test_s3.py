# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3.py against a fake obstore module: which obstore call each write
makes (create-only: one conditional PUT; streams: the buffered writer,
aborted on failure), batched deletes, listing by partial prefix, error
messages, and downloads resumed by range after a cut (the real-server side
is tests/integration/test_storage_s3.py and test_network_faults.py)."""

import datetime

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import NotFoundError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage import s3 as s3_module
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists, put_new
from ansible_collections.drkit.backup.plugins.module_utils.storage.s3 import S3Storage


# obstore's exception classes are matched by name (storage.s3._kind)
class AlreadyExistsError(Exception):
    pass


class PreconditionError(Exception):
    pass


class PermissionDeniedError(Exception):
    pass


class GenericError(Exception):
    pass


class FakeWritable(object):
    def __init__(self, fake, path, buffer_size, max_concurrency):
        self.fake, self.path, self.data = fake, path, bytearray()
        fake.calls.append(("open_writer", path, buffer_size, max_concurrency))

    def write(self, data):
        if self.fake.fail_write:
            raise GenericError("Generic S3 error: error sending request: connection reset by peer")
        self.data += data
        return len(data)

    def close(self):
        self.fake.calls.append(("close", self.path))
        self.fake.objects[self.path] = bytes(self.data)

    def __exit__(self, exc_type, exc, tb):
        self.fake.calls.append(("abort", self.path, exc_type is not None))


class FakeResult(object):
    def __init__(self, data, start, cut_at):
        self.data, self.start, self.cut_at = data, start, cut_at
        self.meta = {"size": len(data), "e_tag": '"etag-1"', "path": "x"}

    def stream(self, min_chunk_size):
        pos = self.start
        while pos < len(self.data):
            end = min(pos + min_chunk_size, len(self.data))
            if self.cut_at is not None and end > self.cut_at:
                raise GenericError("Generic S3 error: error decoding response body: connection reset by peer")
            yield self.data[pos:end]
            pos = end


class FakeObstore(object):
    def __init__(self):
        self.calls = []
        self.objects = {}
        self.fail_write = False
        self.put_error = None
        self.cuts = []  # per GET, body offset at which the answer is cut (None: whole)
        self.get_error = None

    def put(self, store, path, data, mode=None, use_multipart=None):
        self.calls.append(("put", path, mode, use_multipart, len(data)))
        if self.put_error:
            raise self.put_error  # pylint: disable=raising-bad-type
        if mode == "create" and path in self.objects:
            raise AlreadyExistsError("Object at location %s already exists: PreconditionFailed" % path)
        self.objects[path] = bytes(data)

    def open_writer(self, store, path, buffer_size, max_concurrency):
        return FakeWritable(self, path, buffer_size, max_concurrency)

    def get(self, store, path, options=None):
        self.calls.append(("get", path, options))
        if self.get_error:
            raise self.get_error  # pylint: disable=raising-bad-type
        data = self.objects[path]
        start = (options or {}).get("range", {}).get("offset", 0)
        cut = self.cuts.pop(0) if self.cuts else None
        return FakeResult(data, start, cut)

    def head(self, store, path):
        if path not in self.objects:
            raise type("NotFoundError", (Exception,), {})("not found")
        return {"size": len(self.objects[path]), "last_modified": datetime.datetime(2026, 1, 1)}

    def list(self, store, prefix=None, offset=None, chunk_size=50):
        self.calls.append(("list", prefix, offset))
        keys = sorted(k for k in self.objects if not prefix or k.startswith(prefix + "/"))
        if offset:
            keys = [k for k in keys if k > offset]
        yield [{"path": k, "size": len(self.objects[k]), "last_modified": None} for k in keys]

    def list_with_delimiter(self, store, prefix=None):
        base = prefix + "/" if prefix else ""
        dirs = sorted(set(base + k[len(base):].split("/")[0] for k in self.objects
                          if k.startswith(base) and "/" in k[len(base):]))
        return {"common_prefixes": dirs, "objects": []}

    def delete(self, store, paths):
        self.calls.append(("delete", list(paths)))
        for p in paths:
            self.objects.pop(p, None)


@pytest.fixture
def fake():
    return FakeObstore()


def s3_with(fake, prefix="pre"):
    s = S3Storage("bucket", prefix, store=object())
    s.obstore = fake
    s._sleep = lambda seconds: None
    return s


def names(fake):
    return [c[0] for c in fake.calls]


# --------------------------------------------------------------------------
# writes


def test_create_only_is_one_conditional_put_however_large(fake):
    s = s3_with(fake)
    data = b"x" * (3 * s3_module.PART_SIZE + 17)  # several parts' worth: still one PUT
    with s.writer("wal/00000001/seg.zst", create=True) as w:
        for i in range(0, len(data), 1 << 20):
            w.write(data[i:i + (1 << 20)])
    assert fake.calls == [("put", "pre/wal/00000001/seg.zst", "create", False, len(data))]
    assert fake.objects["pre/wal/00000001/seg.zst"] == data


def test_a_stream_goes_through_the_buffered_writer_in_parts(fake):
    s = s3_with(fake)
    with s.writer("backups/x/db") as w:
        w.write(b"a" * 10)
        w.write(b"b" * 10)
    assert fake.calls == [("open_writer", "pre/backups/x/db", s3_module.PART_SIZE, s3_module.MAX_INFLIGHT),
                          ("close", "pre/backups/x/db")]
    assert fake.objects["pre/backups/x/db"] == b"a" * 10 + b"b" * 10 and w.size == 20


def test_empty_object_is_one_put(fake):
    s3_with(fake).put_bytes("k", b"")
    assert names(fake) == ["put"] and fake.objects["pre/k"] == b""


def test_exception_in_block_aborts_the_upload(fake):
    with pytest.raises(ValueError):
        with s3_with(fake).writer("k") as w:
            w.write(b"x" * 100)
            raise ValueError("pg_dump exited 1")
    assert fake.calls[-1] == ("abort", "pre/k", True)
    assert "close" not in names(fake) and "pre/k" not in fake.objects


def test_exception_before_any_write_sends_nothing(fake):
    with pytest.raises(ValueError):
        with s3_with(fake).writer("k", create=True) as w:
            w.write(b"x" * 10)
            raise ValueError("boom")
    assert fake.calls == []


def test_failed_part_aborts_and_names_the_key(fake):
    fake.fail_write = True
    with pytest.raises(StorageError) as e:
        with s3_with(fake).writer("backups/x/db") as w:
            w.write(b"x")
    assert "backups/x/db" in str(e.value) and "connection reset" in str(e.value)
    assert fake.calls[-1][0] == "abort"


def test_an_object_past_the_upload_limit_is_refused(fake, monkeypatch):
    monkeypatch.setattr(s3_module, "MAX_OBJECT", 100)
    with pytest.raises(StorageError) as e:
        with s3_with(fake).writer("backups/x/db") as w:
            w.write(b"x" * 60)
            w.write(b"x" * 60)
    assert "larger than one upload may be" in str(e.value)
    assert fake.calls[-1][0] == "abort"


@pytest.mark.parametrize("error", [
    AlreadyExistsError("Object at location pre/k already exists: PreconditionFailed"),
    GenericError("Generic S3 error: Client error with status 409 Conflict: ConditionalRequestConflict"),
])
def test_a_taken_key_is_object_exists_not_a_storage_failure(fake, error):
    s = s3_with(fake)
    s.put_bytes("backups/x/manifest.json", b"first", create=True)
    fake.put_error = error
    with pytest.raises(ObjectExists) as e:
        s.put_bytes("backups/x/manifest.json", b"second", create=True)
    assert e.value.exit_code == 5
    assert fake.objects["pre/backups/x/manifest.json"] == b"first"
    fake.put_error = None
    assert put_new(s, "backups/x/manifest.json", b"first") is False  # identical: accepted


def test_other_errors_of_a_conditional_put_stay_errors(fake):
    fake.put_error = PermissionDeniedError("The operation lacked the necessary privileges: AccessDenied")
    with pytest.raises(StorageError) as e:
        s3_with(fake).put_bytes("k", b"x", create=True)
    assert not isinstance(e.value, ObjectExists) and "access denied" in str(e.value)


# --------------------------------------------------------------------------
# downloads: resumed by range after a cut


def test_a_download_cut_once_is_resumed_from_the_byte_reached(fake):
    s = s3_with(fake)
    data = bytes(range(256)) * 4096  # 1 MiB
    fake.objects["pre/k"] = data
    fake.cuts = [300000]
    out = b"".join(s.iter_read("k", chunk_size=65536))
    assert out == data
    gets = [c for c in fake.calls if c[0] == "get"]
    assert gets[0][2] is None
    assert gets[1][2] == {"range": {"offset": 4 * 65536}, "if_match": '"etag-1"'}


def test_a_download_cut_every_time_is_a_transfer_error(fake):
    s = s3_with(fake)
    fake.objects["pre/k"] = b"x" * 1000
    fake.cuts = [0] * 100
    with pytest.raises(StorageError) as e:
        b"".join(s.iter_read("k", chunk_size=100))
    msg = str(e.value)
    assert "connection lost after 0 of 1000 bytes of k" in msg
    assert "retried %d times" % s3_module.DOWNLOAD_RETRIES in msg
    assert "not a corrupt object" in msg and not isinstance(e.value, NotFoundError)
    assert len([c for c in fake.calls if c[0] == "get"]) == s3_module.DOWNLOAD_RETRIES + 1


def test_an_object_replaced_while_being_read_is_not_stitched_together(fake):
    s = s3_with(fake)
    fake.objects["pre/k"] = b"x" * 1000
    fake.cuts = [500]
    chunks = s.iter_read("k", chunk_size=100)
    got = [next(chunks) for _i in range(5)]
    fake.get_error = PreconditionError("Request precondition failure for path pre/k: PreconditionFailed")
    with pytest.raises(StorageError) as e:
        list(chunks)
    assert "replaced" in str(e.value) and b"".join(got) == b"x" * 500


def test_a_missing_object_is_not_found_at_once(fake):
    fake.get_error = type("NotFoundError", (Exception,), {})("Object at location pre/k not found")
    with pytest.raises(NotFoundError):
        s3_with(fake).iter_read("k")
    assert len(fake.calls) == 1


# --------------------------------------------------------------------------
# listing, delete, errors


def test_listing_by_a_partial_name_starts_there_and_stops_after(fake):
    s = s3_with(fake)
    for k in ("wal/1/A.0", "wal/1/A.partial.1", "wal/1/AB", "wal/1/B", "wal/2/A.x"):
        fake.objects["pre/" + k] = b"."
    assert [i.key for i in s.list("wal/1/A.")] == ["wal/1/A.0", "wal/1/A.partial.1"]
    assert ("list", "pre/wal/1", "pre/wal/1/A.") in fake.calls
    assert [i.key for i in s.list("wal/")] == ["wal/1/A.0", "wal/1/A.partial.1", "wal/1/AB", "wal/1/B", "wal/2/A.x"]
    assert s.list_dirs("wal/") == ["1", "2"]


def test_s3_delete_is_batched_by_1000(fake):
    keys = ["backups/x/%04d" % i for i in range(2500)]
    assert s3_with(fake).delete(keys) == keys
    sizes = [len(c[1]) for c in fake.calls if c[0] == "delete"]
    assert sizes == [1000, 1000, 500]
    assert fake.calls[0][1][0] == "pre/backups/x/0000"


@pytest.mark.parametrize("exc,fragment,hint", [
    (GenericError("Generic S3 error: NoSuchBucket: The specified bucket does not exist"),
     "bucket 'bucket' does not exist", "Create the bucket"),
    (PermissionDeniedError("InvalidAccessKeyId"), "access denied", "access_key"),
    (GenericError("Generic S3 error: error sending request for url (http://127.0.0.1:1/b/k): client error "
                  "(Connect): tcp connect error: Connection refused (os error 111)"), "cannot connect",
     "endpoint_url"),
    (GenericError("error sending request: invalid peer certificate: UnknownIssuer"),
     "certificate verification failed for s3://bucket/pre: it is signed by a CA that is not trusted", "ca_bundle"),
    # obstore's own text hides the cause in its Rust "Debug source" dump
    (GenericError("Generic S3 error: Error performing PUT https://127.0.0.1:1/b/k - HTTP error: error sending "
                  "request\n\nDebug source:\nGeneric {\n error: InvalidCertificate(\n NotValidForName,\n ),\n}"),
     "certificate verification failed for s3://bucket/pre: it is not valid for the endpoint's host name "
     "(NotValidForName)", "validate_certs: false"),
    (GenericError("... InvalidCertificate(\n Expired,\n) ..."), "it has expired (Expired)", "ca_bundle"),
    # boto3 (rotation's stale uploads): botocore's SSLError, OpenSSL's words
    (type("SSLError", (Exception,), {})("SSL validation failed for https://127.0.0.1:1/b [SSL: "
                                        "CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
                                        "issuer certificate (_ssl.c:992)"),
     "certificate verification failed for s3://bucket/pre: it is signed by a CA that is not trusted", "ca_bundle"),
    (GenericError("Server returned non-2xx status code: 400 Bad Request: Client sent an HTTP request to an HTTPS "
                  "server."), "answers HTTPS, not plain HTTP", "https://"),
    (GenericError("HTTP error: error sending request ... InvalidContentType ..."), "TLS handshake with s3://bucket/pre "
     "failed", "serves HTTPS"),
])
def test_s3_error_messages_name_the_cause(fake, exc, fragment, hint):
    e = s3_with(fake)._error("upload k", exc)
    assert fragment in str(e) and hint in str(e)


def test_a_missing_key_is_not_found():
    s = s3_with(FakeObstore())
    e = s._error("read k", type("NotFoundError", (Exception,), {})("Object at location k not found"))
    assert isinstance(e, NotFoundError)


def test_a_delete_refused_for_lack_of_permission_says_to_use_the_rotation_credentials(fake):
    def denied(store, paths):
        raise PermissionDeniedError("Generic S3 error: AccessDenied: Access Denied.")
    fake.delete = denied
    with pytest.raises(StorageError) as e:
        s3_with(fake).delete(["backups/x/manifest.json", "backups/x/db.zst"])
    assert ("Could not delete 2 objects (backups/x/manifest.json first): access denied by s3://bucket/pre"
            in str(e.value))
    assert "run rotation with credentials that may delete" in e.value.hint
    assert e.value.details["reason"] == s3_module.DELETE_DENIED  # what tidy-up deletes may carry on after
