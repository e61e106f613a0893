# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3:// storage: streamed multipart uploads with a SHA-256 per part,
aborted on failure; listing, reading and deleting through boto3 or s3lite.

A create-only writer (``writer(key, create=True)``) keeps the object in
memory and stores it with one PUT carrying ``If-None-Match: *``: the server
stores it only where no object exists, atomically, and answers 412
Precondition Failed otherwise (AWS S3 since August 2024, and the SeaweedFS
of the tests). A server that ignores the header would replace silently:
docs/storage-layout.md says how to check yours. 409 (ConditionalRequestConflict: another conditional write of
the key is in flight) is treated the same way: ObjectExists, and
base.create_or_match reads what is there.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import threading
import time

from ..core.errors import ConfigError, DrkitError, NotFoundError, StorageError
from .base import READ_CHUNK, IncompleteUpload, ObjectExists, ObjectInfo, ObjectWriter, Storage, check_key
from .s3_boto import boto3_client

# --------------------------------------------------------------------------
# s3://

MIN_PART = 8 << 20
MAX_PARTS = 10000


def part_size_for(part_number, base=MIN_PART):
    """Part size grows with the part number so that 10,000 parts reach ~480 GiB
    while small streams keep small, memory-friendly parts."""
    return base << min(max(part_number - 1, 0) // 2000, 5)


class _S3Writer(ObjectWriter):
    """Buffers up to one part, uploads parts from a small thread pool.

    Memory is bounded by (max_inflight + 1) * part size; a create-only
    writer holds the whole object (one conditional PUT)."""

    def __init__(self, backend, key, max_inflight=3, create=False):
        super(_S3Writer, self).__init__()
        self._b = backend
        self._create = create
        self._key = key
        self._full_key = backend._full(key)
        self._buf = bytearray()
        self._upload_id = None
        self._parts = {}
        self._part_no = 0
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_inflight)
        self._threads = []
        self._error = None

    def write(self, data):
        if self._error:
            self._fail()
        self._buf += data
        self.size += len(data)
        while not self._create and len(self._buf) >= part_size_for(self._part_no + 1):
            n = part_size_for(self._part_no + 1)
            chunk = bytes(self._buf[:n])
            del self._buf[:n]
            self._send_part(chunk)

    def _send_part(self, chunk):
        if self._upload_id is None:
            try:
                resp = self._b.client.create_multipart_upload(
                    Bucket=self._b.bucket, Key=self._full_key, ChecksumAlgorithm="SHA256")
            except Exception as e:  # pylint: disable=broad-except
                raise self._b._error("start an upload of %s" % self._key, e)
            self._upload_id = resp["UploadId"]
        self._part_no += 1
        if self._part_no > MAX_PARTS:
            self.abort()
            raise StorageError("Object %s is larger than S3 allows in one upload" % self._key)
        self._slots.acquire()
        if self._error:
            self._slots.release()
            self._fail()
        t = threading.Thread(target=self._upload_part, args=(self._part_no, chunk))
        t.daemon = True
        t.start()
        self._threads.append(t)

    def _upload_part(self, number, chunk):
        try:
            digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")
            resp = self._b.client.upload_part(
                Bucket=self._b.bucket, Key=self._full_key, UploadId=self._upload_id,
                PartNumber=number, Body=chunk, ChecksumAlgorithm="SHA256",
                ChecksumSHA256=digest)
            with self._lock:
                part = {"PartNumber": number, "ETag": resp["ETag"]}
                if resp.get("ChecksumSHA256"):
                    part["ChecksumSHA256"] = resp["ChecksumSHA256"]
                self._parts[number] = part
        except Exception as e:  # pylint: disable=broad-except
            with self._lock:
                if self._error is None:
                    self._error = e
        finally:
            self._slots.release()

    def _join(self):
        for t in self._threads:
            t.join()
        self._threads = []

    def _fail(self):
        err = self._error
        self.abort()
        raise self._b._error("upload %s" % self._key, err)

    def commit(self):
        if self._done:
            return
        try:
            if self._upload_id is None:
                # Small or create-only object: one PUT with a whole-object checksum.
                body = bytes(self._buf)
                digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
                condition = {"IfNoneMatch": "*"} if self._create else {}
                self._b.client.put_object(Bucket=self._b.bucket, Key=self._full_key, Body=body,
                                          ChecksumAlgorithm="SHA256", ChecksumSHA256=digest, **condition)
            else:
                if self._buf:
                    self._send_part(bytes(self._buf))
                    self._buf = bytearray()
                self._join()
                if self._error:
                    self._fail()
                parts = [self._parts[n] for n in sorted(self._parts)]
                self._b.client.complete_multipart_upload(
                    Bucket=self._b.bucket, Key=self._full_key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts})
        except StorageError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            self.abort()
            if self._create and _s3_status(e) in (409, 412):
                raise ObjectExists("%s already exists in %s (%s)" % (self._key, self._b.describe(), _s3_code(e)),
                                   "It was left untouched")
            raise self._b._error("upload %s" % self._key, e)
        self._done = True
        self._buf = bytearray()

    def abort(self):
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        self._join()
        if self._upload_id is not None:
            try:
                self._b.client.abort_multipart_upload(
                    Bucket=self._b.bucket, Key=self._full_key, UploadId=self._upload_id)
            except Exception:  # pylint: disable=broad-except
                # Best effort; rotation aborts stale uploads after the grace period.
                pass


class S3Storage(Storage):
    scheme = "s3"

    def __init__(self, bucket, prefix, endpoint_url=None, region=None, access_key=None,
                 secret_key=None, session_token=None, profile=None, ca_bundle=None,
                 validate_certs=True, client=None):
        if not bucket:
            raise ConfigError("s3:// storage_url has no bucket name",
                              "Write it as s3://bucket/optional/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is not None:
            self.client = client
            return
        self.client = boto3_client(endpoint_url=endpoint_url, region=region, access_key=access_key,
                                   secret_key=secret_key, session_token=session_token, profile=profile,
                                   ca_bundle=ca_bundle, validate_certs=validate_certs)

    def describe(self):
        url = "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://%s" % self.bucket
        if self.endpoint_url:
            url += " (endpoint %s)" % self.endpoint_url
        return url

    def _full(self, key):
        check_key(key)
        return "%s/%s" % (self.prefix, key) if self.prefix else key

    def _rel(self, full_key):
        if self.prefix:
            return full_key[len(self.prefix) + 1:]
        return full_key

    def _list_prefix(self, prefix):
        if self.prefix:
            return "%s/%s" % (self.prefix, prefix)
        return prefix

    def _error(self, action, exc):
        if isinstance(exc, DrkitError):
            return exc  # already ours, or an interrupt (Terminated): pass it on unchanged
        code = _s3_code(exc)
        where = self.describe()
        if code == "NoSuchBucket":
            return StorageError("Could not %s: bucket %r does not exist at %s" % (action, self.bucket, where),
                                "Create the bucket first or fix storage_url")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageError("Could not %s: access denied by %s (%s)" % (action, where, code),
                                "Check access_key/secret_key (or AWS_* variables) and the bucket policy")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFoundError("Could not %s: it does not exist in %s" % (action, where),
                                 "Check the backup id and storage_url")
        name = type(exc).__name__
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
            return StorageError("Could not %s: cannot connect to %s (%s)" % (action, where, exc),
                                "Check endpoint_url, the network and that the S3 service is up")
        if name == "SSLError":
            return StorageError("Could not %s: TLS error talking to %s (%s)" % (action, where, exc),
                                "Set ca_bundle to the CA that signed the endpoint's certificate")
        if name == "NoCredentialsError":
            return StorageError("Could not %s: no S3 credentials found" % action,
                                "Set access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        return StorageError("Could not %s at %s: %s" % (action, where, exc))

    def writer(self, key, create=False):
        return _S3Writer(self, key, create=create)

    def iter_read(self, key, chunk_size=READ_CHUNK):
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("read %s" % key, e)
        return self._iter_body(key, resp["Body"], chunk_size)

    def _iter_body(self, key, body, chunk_size):
        try:
            yield from body.iter_chunks(chunk_size)
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("read %s" % key, e)
        finally:
            body.close()

    def stat(self, key):
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as e:  # pylint: disable=broad-except
            if _s3_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("look up %s" % key, e)
        return ObjectInfo(key, resp["ContentLength"], _epoch(resp.get("LastModified")))

    def list(self, prefix=""):
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix(prefix)):
                for obj in page.get("Contents", ()):
                    rel = self._rel(obj["Key"])
                    if rel:
                        yield ObjectInfo(rel, obj["Size"], _epoch(obj.get("LastModified")))
        except StorageError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("list %s" % (prefix or "/"), e)

    def list_dirs(self, prefix):
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._list_prefix(prefix)
        out = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for cp in page.get("CommonPrefixes", ()):
                    out.append(cp["Prefix"][len(full):].rstrip("/"))
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("list %s" % prefix, e)
        return sorted(out)

    def delete(self, keys):
        keys = list(keys)
        deleted = []
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._full(k)} for k in batch], "Quiet": False})
            except Exception as e:  # pylint: disable=broad-except
                raise self._error("delete %d objects" % len(batch), e)
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError("Could not delete %s: %s %s" % (
                    self._rel(first.get("Key", "?")), first.get("Code"), first.get("Message")),
                    "Check that the credentials may delete objects in this bucket")
            deleted.extend(self._rel(d["Key"]) for d in resp.get("Deleted", ()))
        return deleted

    def list_incomplete(self, prefix=""):
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix(prefix)):
                for up in page.get("Uploads", ()):
                    yield IncompleteUpload(self._rel(up["Key"]), up["UploadId"],
                                           _epoch(up.get("Initiated")))
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("list incomplete uploads", e)

    def abort_incomplete(self, upload):
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._full(upload.key),
                                               UploadId=upload.upload_id)
        except Exception as e:  # pylint: disable=broad-except
            if _s3_code(e) != "NoSuchUpload":
                raise self._error("abort upload of %s" % upload.key, e)

    def check_writable(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # pylint: disable=broad-except
            code = _s3_code(e)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError("Bucket %r does not exist at %s" % (self.bucket, self.describe()),
                                   "Create the bucket first or fix storage_url")
            raise self._error("reach bucket %s" % self.bucket, e)


def _s3_code(exc):
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", ""))
    return ""


def _s3_status(exc):
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return None


def _epoch(dt):
    if dt is None:
        return None
    try:
        return dt.timestamp()
    except AttributeError:
        return time.mktime(dt.timetuple())
