# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage backends behind one small interface.

Keys are relative, '/'-separated paths under the storage root
(``backups/<id>/manifest.json``).  Two backends:

* ``file:///abs/path``: writes go to a hidden temp name in the target
  directory, are fsynced, renamed into place and the directory is fsynced.
  Files are 0600, directories 0700.
* ``s3://bucket/prefix``: boto3; streams are uploaded as multipart uploads
  with a SHA-256 checksum per part, and a failed upload is aborted.
  ``open_storage(..., light=True)`` (wal-push, wal-fetch, pg_restore,
  pg_verify) puts s3lite.py's standard-library client in front of boto3
  when it can.

Every writer is used as ``with storage.writer(key) as w: w.write(...)``;
leaving the block with an exception aborts the write and leaves nothing
behind under ``key``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import hashlib
import os
import stat
import threading
import time
import uuid
from collections import namedtuple

try:  # Python 3
    from urllib.parse import urlsplit, unquote
except ImportError:  # pragma: no cover
    from urlparse import urlsplit  # type: ignore
    from urllib import unquote  # type: ignore

from .errors import ConfigError, ConflictError, DrkitError, NotFoundError, StorageError

ObjectInfo = namedtuple("ObjectInfo", ["key", "size", "mtime"])
"""One stored object: key relative to the root, size in bytes, mtime (epoch)."""

IncompleteUpload = namedtuple("IncompleteUpload", ["key", "upload_id", "started"])
"""A leftover partial write: an S3 multipart upload or a file backend temp file."""

TEMP_MARKER = ".drkit-tmp-"
READ_CHUNK = 1 << 20

STORAGE_OPTION_NAMES = (
    "endpoint_url", "region", "access_key", "secret_key", "session_token",
    "profile", "ca_bundle", "validate_certs",
)


def _check_key(key):
    if not key or key.startswith("/") or "\\" in key:
        raise ConfigError("Invalid storage key %r" % (key,),
                          "Keys are relative '/'-separated paths; this is a bug, please report it")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ConfigError("Invalid storage key %r" % (key,),
                          "Keys may not contain empty, '.' or '..' components")
    if any(p.startswith(TEMP_MARKER) for p in parts):
        raise ConfigError("Invalid storage key %r" % (key,), "The prefix %s is reserved" % TEMP_MARKER)


class ObjectWriter(object):
    """Write one object. Use as a context manager: an exception aborts."""

    def __init__(self):
        self.size = 0
        self._done = False

    def write(self, data):
        raise NotImplementedError

    def commit(self):
        raise NotImplementedError

    def abort(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.commit()
        return False


class Storage(object):
    """Interface every backend implements."""

    scheme = None

    def describe(self):
        """The storage URL, safe to print (never holds a secret)."""
        raise NotImplementedError

    def writer(self, key):
        raise NotImplementedError

    def put_bytes(self, key, data):
        with self.writer(key) as w:
            w.write(data)
        return len(data)

    def iter_read(self, key, chunk_size=READ_CHUNK):
        raise NotImplementedError

    def get_bytes(self, key):
        return b"".join(self.iter_read(key))

    def stat(self, key):
        """ObjectInfo of key, or None when it does not exist."""
        raise NotImplementedError

    def exists(self, key):
        return self.stat(key) is not None

    def list(self, prefix=""):
        """Iterate ObjectInfo for every complete object under prefix, any order."""
        raise NotImplementedError

    def list_dirs(self, prefix):
        """Names of the immediate 'sub directories' of prefix (which ends in '/')."""
        raise NotImplementedError

    def delete(self, keys):
        """Delete keys (missing ones are fine). Returns the list deleted."""
        raise NotImplementedError

    def list_incomplete(self, prefix=""):
        """Leftover partial writes (IncompleteUpload) under prefix."""
        raise NotImplementedError

    def abort_incomplete(self, upload):
        raise NotImplementedError

    def check_writable(self):
        """Fail early, with a clear message, when the root cannot be written."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# file://


class _FileWriter(ObjectWriter):
    def __init__(self, backend, key):
        super(_FileWriter, self).__init__()
        self._backend = backend
        self._final = backend._path(key)
        self._key = key
        directory = os.path.dirname(self._final)
        self._tmp = os.path.join(directory, "%s%s" % (TEMP_MARKER, uuid.uuid4().hex))
        for attempt in (1, 2):
            backend._makedirs(directory)
            try:
                fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                backend._give_to_owner(fd=fd)
                break
            except OSError as e:
                # ENOENT: another writer's abort pruned the fresh directory; once more.
                if e.errno != errno.ENOENT or attempt == 2:
                    raise _file_error("create a temporary file in %s" % directory, e)
        self._fh = os.fdopen(fd, "wb", 0)

    def write(self, data):
        try:
            self._fh.write(data)
        except OSError as e:
            self.abort()
            raise _file_error("write %s" % self._final, e)
        self.size += len(data)

    def commit(self):
        if self._done:
            return
        try:
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.rename(self._tmp, self._final)
            _fsync_dir(os.path.dirname(self._final))
        except OSError as e:
            self.abort()
            raise _file_error("store %s" % self._final, e)
        self._done = True

    def abort(self):
        if self._done:
            return
        self._done = True
        try:
            self._fh.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
        # No empty backups/<id>/ directory left behind by a failed run.
        self._backend._prune_empty(os.path.dirname(self._final))


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_error(action, exc):
    hint = "Check the path, its permissions and free space"
    if getattr(exc, "errno", None) == errno.ENOSPC:
        hint = "The file system is full: free space or point storage_url elsewhere"
    elif getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        hint = "Permission denied: run as a user that owns the backup directory"
    elif getattr(exc, "errno", None) == errno.EROFS:
        hint = "The file system is read-only"
    return StorageError("Could not %s: %s" % (action, exc.strerror or exc), hint)


class FileStorage(Storage):
    scheme = "file"

    def __init__(self, root):
        if not os.path.isabs(root):
            raise ConfigError("file:// storage needs an absolute path, got %r" % root,
                              "Write it as file:///absolute/path (three slashes)")
        self.root = os.path.normpath(root)
        self._owner = None

    def describe(self):
        return "file://" + self.root

    def _give_to_owner(self, path=None, fd=None):
        """Run as root in a storage root that another user owns (a base
        backup by root into the archive that postgres's archive_command
        writes), new files and directories go to that user: a root-owned
        0600 wal/SYSTEM_IDENTIFIER would make every later wal-push fail."""
        if self._owner is None:
            self._owner = ()
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                try:
                    st = os.stat(self.root)
                except OSError:
                    st = None
                if st is not None and st.st_uid != 0:
                    self._owner = (st.st_uid, st.st_gid)
        if not self._owner:
            return
        try:
            if fd is not None:
                os.fchown(fd, *self._owner)
            else:
                os.chown(path, *self._owner)
        except OSError as e:
            raise _file_error("hand %s to the owner of %s" % (path or "a new file", self.root), e)

    def _path(self, key):
        _check_key(key)
        return os.path.join(self.root, *key.split("/"))

    def _makedirs(self, directory):
        if os.path.isdir(directory):
            return
        parent = os.path.dirname(directory)
        if parent and parent != directory:
            self._makedirs(parent)
        try:
            os.mkdir(directory, 0o700)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise _file_error("create directory %s" % directory, e)
            return
        if directory.startswith(self.root + os.sep):
            self._give_to_owner(path=directory)

    def writer(self, key):
        return _FileWriter(self, key)

    def iter_read(self, key, chunk_size=READ_CHUNK):
        path = self._path(key)
        try:
            fh = open(path, "rb")
        except (IOError, OSError) as e:
            if e.errno == errno.ENOENT:
                raise NotFoundError("%s does not exist in %s" % (key, self.describe()),
                                    "Check the backup id and storage_url")
            raise _file_error("read %s" % path, e)
        return _iter_file(fh, chunk_size)

    def stat(self, key):
        try:
            st = os.stat(self._path(key))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise _file_error("stat %s" % key, e)
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def _walk(self, prefix):
        base = self.root
        if not os.path.isdir(base):
            return
        # Walk only the part of the tree that can hold prefix.
        start_dir = base
        if "/" in prefix:
            start_dir = os.path.join(base, *prefix.rsplit("/", 1)[0].split("/"))
            if not os.path.isdir(start_dir):
                return

        def onerror(e):
            raise _file_error("list %s" % getattr(e, "filename", base), e)

        for dirpath, dirnames, filenames in os.walk(start_dir, onerror=onerror):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                yield dirpath, rel_dir + name, name

    def list(self, prefix=""):
        for dirpath, key, name in self._walk(prefix):
            if name.startswith(TEMP_MARKER) or not key.startswith(prefix):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # deleted while we listed
                raise _file_error("stat %s" % key, e)
            if stat.S_ISREG(st.st_mode):
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def list_dirs(self, prefix):
        path = os.path.join(self.root, *[p for p in prefix.split("/") if p])
        try:
            names = os.listdir(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return []
            raise _file_error("list %s" % path, e)
        return sorted(n for n in names if os.path.isdir(os.path.join(path, n))
                      and not n.startswith(TEMP_MARKER))

    def delete(self, keys):
        deleted = []
        dirs = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
                deleted.append(key)
                dirs.add(os.path.dirname(path))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise _file_error("delete %s" % path, e)
        for d in dirs:
            _fsync_dir(d)
            self._prune_empty(d)
        return deleted

    def _prune_empty(self, directory):
        while directory != self.root and directory.startswith(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def list_incomplete(self, prefix=""):
        for dirpath, key, name in self._walk(prefix):
            if name.startswith(TEMP_MARKER):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                yield IncompleteUpload(key, None, st.st_mtime)

    def abort_incomplete(self, upload):
        path = os.path.join(self.root, *upload.key.split("/"))
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise _file_error("remove %s" % path, e)

    def check_writable(self):
        try:
            self._makedirs(self.root)
        except StorageError:
            raise
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError("Backup directory %s is not writable by this user" % self.root,
                               "Fix its owner/permissions or run as the user that owns it")


def _iter_file(fh, chunk_size):
    with fh:
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                return
            yield chunk


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

    Memory is bounded by (max_inflight + 1) * part size."""

    def __init__(self, backend, key, max_inflight=3):
        super(_S3Writer, self).__init__()
        self._b = backend
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
        while len(self._buf) >= part_size_for(self._part_no + 1):
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
                # Small object: one PUT with a whole-object checksum.
                body = bytes(self._buf)
                digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
                self._b.client.put_object(Bucket=self._b.bucket, Key=self._full_key, Body=body,
                                          ChecksumAlgorithm="SHA256", ChecksumSHA256=digest)
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


def boto3_client(endpoint_url=None, region=None, access_key=None, secret_key=None, session_token=None,
                 profile=None, ca_bundle=None, validate_certs=True):
    """The boto3 S3 client for these storage options (also what s3lite
    hands the calls it does not make itself to)."""
    try:
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("s3:// storage needs the Python library boto3",
                          "Install it (pip install boto3) in the Python that runs drkit")
    if bool(access_key) != bool(secret_key):
        raise ConfigError("Only one of access_key and secret_key was given",
                          "Give both, or neither to use the AWS environment/profile chain")
    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    s3cfg = {"addressing_style": "path"} if endpoint_url else {}
    cfg = Config(s3=s3cfg, retries={"max_attempts": 5, "mode": "standard"},
                 connect_timeout=10, read_timeout=120,
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required",
                 max_pool_connections=16)
    verify = True
    if ca_bundle:
        verify = ca_bundle
    if validate_certs is False:
        verify = False
    return session.client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None,
        aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
        aws_session_token=session_token or None, verify=verify, config=cfg)


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
        _check_key(key)
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

    def writer(self, key):
        return _S3Writer(self, key)

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


def _epoch(dt):
    if dt is None:
        return None
    try:
        return dt.timestamp()
    except AttributeError:
        return time.mktime(dt.timetuple())


# --------------------------------------------------------------------------


def open_storage(url, endpoint_url=None, region=None, access_key=None, secret_key=None,
                 session_token=None, profile=None, ca_bundle=None, validate_certs=True, light=False,
                 **_ignored):
    """Storage for a storage_url. S3 options fall back to the AWS environment
    (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, ...) as boto3 does.

    ``light``: use the standard-library S3 client of s3lite.py when it can
    stand in for boto3 (static credentials, no proxy, ...; see
    ``s3lite.lite_client_for``): for the per-WAL-file commands and for
    restores and verifications, where boto3's import is 0.2 s of the RTO."""
    if not url or not isinstance(url, str):
        raise ConfigError("storage_url is empty",
                          "Set it to file:///absolute/path or s3://bucket/prefix")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError("file:// storage_url %r names a host (%s)" % (url, parts.netloc),
                              "Use three slashes for a local path: file:///var/backups/drkit")
        return FileStorage(unquote(parts.path))
    if parts.scheme == "s3":
        if parts.query or parts.fragment:
            raise ConfigError("s3:// storage_url %r has a query or fragment" % url,
                              "Pass endpoint and credentials as options, not in the URL")
        if "@" in parts.netloc:
            raise ConfigError("s3:// storage_url must not contain credentials",
                              "Use access_key/secret_key options or AWS_* environment variables")
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client = None
        if light:
            from .s3lite import lite_client_for  # pylint: disable=import-outside-toplevel
            client = lite_client_for(endpoint_url=endpoint_url, region=region, access_key=access_key,
                                     secret_key=secret_key, session_token=session_token, profile=profile,
                                     ca_bundle=ca_bundle, validate_certs=validate_certs)
        return S3Storage(parts.netloc, unquote(parts.path), endpoint_url=endpoint_url, region=region,
                         access_key=access_key, secret_key=secret_key, session_token=session_token,
                         profile=profile, ca_bundle=ca_bundle, validate_certs=validate_certs, client=client)
    raise ConfigError("Unsupported storage_url %r" % url,
                      "Use file:///absolute/path or s3://bucket/prefix")


def storage_options(params):
    """Pick the storage options out of a dict of module or CLI parameters."""
    return dict((k, params.get(k)) for k in STORAGE_OPTION_NAMES if params.get(k) is not None)


def put_new(storage, key, data):
    """Store data under key unless an object is there already; an identical
    object is accepted, a different one raises ConflictError (never overwritten)."""
    existing = storage.stat(key)
    if existing is not None:
        if existing.size == len(data) and storage.get_bytes(key) == data:
            return False
        raise ConflictError("%s already exists in %s with different content" % (key, storage.describe()),
                            "It was left untouched; investigate before removing it by hand")
    storage.put_bytes(key, data)
    return True
