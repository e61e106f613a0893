# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3:// storage on obstore (the Rust ``object_store`` crate): no request
is signed by hand here.

* Streams (backup artifacts) go through obstore's buffered writer: one PUT
  below PART_SIZE, otherwise a multipart upload in PART_SIZE parts, at most
  MAX_INFLIGHT in flight, the SHA-256 of each part sent and checked by the
  server; leaving the writer with an exception aborts the upload.
* A create-only writer (``writer(key, create=True)``: WAL files, manifests,
  verification records, probes) keeps the object in memory and stores it
  with one PUT carrying ``If-None-Match: *`` (obstore's ``mode="create"``):
  the server stores it only where no object exists, atomically, and answers
  412 otherwise (AWS S3 since August 2024, and the SeaweedFS of the tests).
  409 (another conditional write of the key in flight) counts the same:
  ObjectExists, and base.create_or_match reads what is there.
* Reads resume: a body cut mid-way is asked again from the byte reached (a
  ranged GET, If-Match on the first answer's ETag), DOWNLOAD_RETRIES times
  with backoff; then the error says how far it got. obstore itself retries
  requests that fail before their body (connection refused, 5xx).
* boto3 only for what obstore has no call for: listing and aborting
  stale multipart uploads (the rotation job), and the credential chain
  behind profiles/SSO (storage.s3_client).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import random
import threading
import time

from ..core.errors import ConfigError, DrkitError, NotFoundError, StorageError
from ..core.osutil import current_user
from .base import (
    DELETE_DENIED,
    PROBE_PREFIX,
    READ_CHUNK,
    IncompleteUpload,
    ObjectExists,
    ObjectInfo,
    ObjectWriter,
    Storage,
    check_key,
    write_probe,
)
from .s3_boto import boto3_client
from .s3_client import MAX_RETRIES, make_store, obstore_module, resolve_credentials

PART_SIZE = 8 << 20
MIN_PART = PART_SIZE  # the name older tests and docs use
MAX_PARTS = 10000
MAX_OBJECT = PART_SIZE * MAX_PARTS  # about 78 GiB in one upload
MAX_INFLIGHT = 3
DELETE_BATCH = 1000
DOWNLOAD_RETRIES = 5
BACKOFF = 0.2
TLS_HINT = ("Set ca_bundle (or AWS_CA_BUNDLE) to a PEM file with the CA that signed the endpoint's certificate; "
            "validate_certs: false (--no-validate-certs) turns the check off, for tests only")


class _S3Writer(ObjectWriter):
    """Memory: at most (MAX_INFLIGHT + 1) parts; a create-only writer holds
    the whole object (one conditional PUT)."""

    def __init__(self, backend, key, create=False):
        super(_S3Writer, self).__init__()
        self._b = backend
        self._key = key
        self._path = backend._full(key)
        self._create = create
        self._buf = bytearray()
        self._file = None

    def write(self, data):
        if self._done:
            raise StorageError("Upload of %s was already ended" % self._key)
        if not data:
            return
        self.size += len(data)
        if self._create:
            self._buf += data
            return
        if self.size > self._b.max_object():
            self.abort()
            raise StorageError("Object %s is larger than one upload may be (%d parts of %d MiB)" % (
                self._key, self._b.max_parts, PART_SIZE >> 20), "Split the backup (e.g. one dump per database)")
        try:
            if self._file is None:
                self._file = self._b.obstore.open_writer(self._b.store, self._path, buffer_size=PART_SIZE,
                                                         max_concurrency=MAX_INFLIGHT)
            self._file.write(bytes(data))
        except Exception as e:  # pylint: disable=broad-except
            self.abort()
            raise self._b._error("upload %s" % self._key, e)

    def commit(self):
        if self._done:
            return
        self._done = True
        try:
            if self._file is not None:
                self._file.close()  # the last part and CompleteMultipartUpload, or the one PUT
            else:
                mode = "create" if self._create else "overwrite"
                self._b.obstore.put(self._b.store, self._path, bytes(self._buf), mode=mode, use_multipart=False)
        except Exception as e:  # pylint: disable=broad-except
            if self._create and _kind(e) in self._b.exists_kinds:
                raise ObjectExists("%s already exists in %s (%s)" % (self._key, self._b.describe(), _brief(e)),
                                   "It was left untouched")
            raise self._b._error("upload %s" % self._key, e)
        finally:
            self._buf = bytearray()

    def abort(self):
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        if self._file is not None:
            try:
                # obstore aborts the multipart upload when its writer is left with an exception
                self._file.__exit__(StorageError, StorageError("aborted"), None)
            except Exception:  # pylint: disable=broad-except
                pass  # best effort; rotation aborts stale uploads after the grace period


class S3Storage(Storage):
    scheme = "s3"
    max_parts = MAX_PARTS
    # what a refused create-only PUT raises (see _kind): 412, or 409 while
    # another conditional write of the key is in flight
    exists_kinds = ("exists", "conflict")
    # the words of the error messages (storage.azure says them its way)
    service = "S3"
    container = "bucket"
    credentials_hint = "Check access_key/secret_key (or AWS_* variables) and the bucket policy"
    endpoint_option = "endpoint_url"

    def __init__(self, bucket, prefix, endpoint_url=None, region=None, access_key=None,
                 secret_key=None, session_token=None, profile=None, ca_bundle=None,
                 validate_certs=True, sse=None, store=None):
        if not bucket:
            raise ConfigError("s3:// storage_url has no bucket name",
                              "Write it as s3://bucket/optional/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else endpoint_url
        self._opts = dict(endpoint_url=self.endpoint_url, region=region, access_key=access_key,
                          secret_key=secret_key, session_token=session_token, profile=profile,
                          ca_bundle=ca_bundle, validate_certs=validate_certs)
        # server-side encryption (storage.factory.server_side_encryption_settings): obstore only
        self.sse = dict(sse or {})
        self._admin = None
        self._lock = threading.Lock()
        self._sleep = time.sleep
        self.obstore = obstore_module()[0]
        self.store = store if store is not None else make_store(bucket, sse=self.sse, **self._opts)

    @property
    def client(self):
        """boto3's S3 client, made on first use: only for the bucket
        administration obstore has no call for (stale multipart uploads)."""
        with self._lock:
            if self._admin is None:
                opts = dict(self._opts)
                if not opts["profile"]:
                    key, secret, token = resolve_credentials(opts["access_key"], opts["secret_key"],
                                                             opts["session_token"])
                    opts.update(access_key=key, secret_key=secret, session_token=token)
                self._admin = boto3_client(**opts)
            return self._admin

    def max_object(self):
        return MAX_OBJECT  # read at call time: a test lowers it

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
            return exc  # already ours: pass it on unchanged
        kind = _kind(exc)
        where = self.describe()
        if kind == "nobucket":
            return StorageError("Could not %s: %s %r does not exist at %s" % (
                action, self.container, self.bucket, where), "Create the %s first or fix storage_url" % self.container)
        if kind == "denied":
            return StorageError("Could not %s: access denied by %s (%s)" % (action, where, _brief(exc)),
                                self.credentials_hint)
        if kind == "notfound":
            return NotFoundError("Could not %s: it does not exist in %s" % (action, where),
                                 "Check the backup id and storage_url")
        if kind == "tls":
            reason = _certificate_problem(exc)
            if reason:
                return StorageError("Could not %s: certificate verification failed for %s: %s" % (
                    action, where, reason), TLS_HINT)
            return StorageError("Could not %s: the TLS handshake with %s failed (%s)" % (action, where, _brief(exc)),
                                "Check that the endpoint serves HTTPS on that port (write %s as http:// for a "
                                "plain-HTTP server); for a certificate problem: %s" % (
                                    self.endpoint_option, TLS_HINT[0].lower() + TLS_HINT[1:]))
        if kind == "plainhttp":
            return StorageError("Could not %s: %s answers HTTPS, not plain HTTP" % (action, where),
                                "Write %s with https://, and set ca_bundle if a private CA signed its "
                                "certificate" % self.endpoint_option)
        if kind == "connect":
            return StorageError("Could not %s: cannot connect to %s (%s)" % (action, where, _brief(exc)),
                                "Check %s, the network and that the %s service is up" % (
                                    self.endpoint_option, self.service))
        return StorageError("Could not %s at %s: %s" % (action, where, _brief(exc)))

    def writer(self, key, create=False):
        return _S3Writer(self, key, create=create)

    # -- reading, resumed where a transfer breaks

    def iter_read(self, key, chunk_size=READ_CHUNK):
        path = self._full(key)
        try:
            result = self.obstore.get(self.store, path)
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("read %s" % key, e)
        return self._iter_body(key, path, result, chunk_size)

    def _iter_body(self, key, path, result, chunk_size):
        meta = result.meta
        size, etag = meta["size"], meta.get("e_tag")
        got, retries, failure = 0, 0, None
        while True:
            try:
                for chunk in result.stream(min_chunk_size=chunk_size):
                    got += len(chunk)
                    yield chunk
                break
            except Exception as e:  # pylint: disable=broad-except
                if isinstance(e, DrkitError) or _kind(e) not in ("transfer", "connect", "other"):
                    raise self._error("read %s" % key, e)
                failure = e
            if got >= size:
                break
            result = None
            while result is None:
                if retries >= DOWNLOAD_RETRIES:
                    raise self._transfer_error(key, got, size, retries, failure)
                retries += 1
                self._sleep(BACKOFF * (2 ** (retries - 1)) + random.uniform(0, BACKOFF / 2))
                options = {"range": {"offset": got}}
                if etag:
                    options["if_match"] = etag
                try:
                    result = self.obstore.get(self.store, path, options=options)
                except Exception as e:  # pylint: disable=broad-except
                    if _kind(e) == "precondition":
                        raise StorageError("Could not read %s: it was replaced in %s while being read" % (
                            key, self.describe()), "Try again; if it keeps happening, find who rewrites it")
                    if _kind(e) not in ("transfer", "connect", "other"):
                        raise self._error("read %s" % key, e)
                    failure = e
        if got != size:
            raise self._transfer_error(key, got, size, retries, None)

    def _transfer_error(self, key, got, size, retries, exc):
        cause = " (%s)" % _brief(exc) if exc is not None else ""
        return StorageError("Could not read from %s: connection lost after %d of %d bytes of %s, retried %d times%s"
                            % (self.describe(), got, size, key, retries, cause),
                            "A transfer error, not a corrupt object (each try includes the %s client's own %d "
                            "retries): check the network to the %s endpoint and run the command again" % (
                                self.service, MAX_RETRIES, self.service))

    def get_bytes(self, key):
        return b"".join(self.iter_read(key))

    def stat(self, key):
        try:
            meta = self.obstore.head(self.store, self._full(key))
        except Exception as e:  # pylint: disable=broad-except
            if _kind(e) == "notfound":
                return None
            raise self._error("look up %s" % key, e)
        return ObjectInfo(key, meta["size"], _epoch(meta.get("last_modified")))

    def list(self, prefix=""):
        """obstore lists whole path segments: a prefix that ends inside a
        name ("wal/00000001/0000000100000000000000A3.") lists from that
        name on (S3 lists in key order) and stops at the first key past it."""
        full = self._list_prefix(prefix)
        directory, partial = full.rpartition("/")[0], full.rpartition("/")[2]
        kwargs = {"prefix": directory or None}
        if partial:
            kwargs["offset"] = full
        try:
            for batch in self.obstore.list(self.store, chunk_size=1000, **kwargs):
                for meta in batch:
                    path = meta["path"]
                    if not path.startswith(full):
                        if partial and path > full:
                            return
                        continue
                    rel = self._rel(path)
                    if rel:
                        yield ObjectInfo(rel, meta["size"], _epoch(meta.get("last_modified")))
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("list %s" % (prefix or "/"), e)

    def list_dirs(self, prefix):
        full = self._list_prefix(prefix).rstrip("/")
        try:
            found = self.obstore.list_with_delimiter(self.store, full or None)
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("list %s" % prefix, e)
        start = len(full) + 1 if full else 0
        return sorted(p[start:].rstrip("/") for p in found["common_prefixes"])

    def delete(self, keys):
        keys = list(keys)
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            try:
                self.obstore.delete(self.store, [self._full(k) for k in batch])
            except Exception as e:  # pylint: disable=broad-except
                if _kind(e) == "notfound":
                    continue  # a missing key is fine
                what = "%d objects (%s first)" % (len(batch), batch[0]) if len(batch) > 1 else batch[0]
                if _kind(e) == "denied":
                    # The storage contract: backup credentials may not delete.
                    raise StorageError("Could not delete %s: access denied by %s (%s)" % (
                        what, self.describe(), _brief(e)),
                        "These credentials may not delete objects (a backup host's should not): run rotation "
                        "with credentials that may delete, e.g. the rotation job's",
                        details={"reason": DELETE_DENIED})
                err = self._error("delete %s" % what, e)
                err.hint = err.hint or "Check that the credentials may delete objects in this %s" % self.container
                raise err
        return keys

    # -- bucket administration: boto3 (obstore has no call for it)

    def list_incomplete(self, prefix=""):
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._list_prefix(prefix)):
                for up in page.get("Uploads", ()):
                    yield IncompleteUpload(self._rel(up["Key"]), up["UploadId"], _epoch(up.get("Initiated")))
        except DrkitError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            raise self._error("list incomplete uploads", e)

    def abort_incomplete(self, upload):
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._full(upload.key),
                                               UploadId=upload.upload_id)
        except DrkitError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            code = str((getattr(e, "response", None) or {}).get("Error", {}).get("Code", ""))
            if code != "NoSuchUpload":
                raise self._error("abort the upload of %s" % upload.key, e)

    def versioning(self):
        """{"status": Enabled|Suspended|Off, "object_lock": {"mode", "days",
        "years"} or None, "noncurrent_expiration_days": the smallest of the
        enabled lifecycle rules covering the prefix, or None} from boto3;
        {"status": "unknown", "error": ...} when these credentials may not
        read the bucket's configuration (s3:GetBucketVersioning,
        s3:GetLifecycleConfiguration, s3:GetBucketObjectLockConfiguration)."""
        client = self.client
        try:
            status = client.get_bucket_versioning(Bucket=self.bucket).get("Status") or "Off"
        except Exception as e:  # pylint: disable=broad-except
            return {"status": "unknown", "error": _brief(e)}
        info = {"status": status, "object_lock": None, "noncurrent_expiration_days": None}
        if status == "Off":
            return info
        try:
            cfg = client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration") or {}
            retention = (cfg.get("Rule") or {}).get("DefaultRetention") or {}
            if cfg.get("ObjectLockEnabled") == "Enabled":
                info["object_lock"] = {"mode": retention.get("Mode"), "days": retention.get("Days"),
                                       "years": retention.get("Years")}
        except Exception as e:  # pylint: disable=broad-except
            if "ObjectLockConfigurationNotFound" not in str(e):
                info["object_lock_error"] = _brief(e)
        try:
            rules = client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules") or []
        except Exception as e:  # pylint: disable=broad-except
            if "NoSuchLifecycleConfiguration" not in str(e):
                info["lifecycle_error"] = _brief(e)
            rules = []
        days = [r["NoncurrentVersionExpiration"].get("NoncurrentDays") for r in rules
                if r.get("Status") == "Enabled" and (r.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
                and self._list_prefix("").startswith(_rule_prefix(r))]
        info["noncurrent_expiration_days"] = min(days) if days else None
        return info

    def check_writable(self):
        try:
            self.obstore.list_with_delimiter(self.store, self.prefix or None)
        except Exception as e:  # pylint: disable=broad-except
            if _kind(e) in ("nobucket", "notfound"):
                raise StorageError("%s %r does not exist at %s" % (self.container.capitalize(), self.bucket,
                                                                   self.describe()),
                                   "Create the %s first or fix storage_url" % self.container)
            raise self._error("reach %s %s" % (self.container, self.bucket), e)

    def probe(self, user=None):
        """Reach the bucket first (check_writable: a PUT alone would pass
        where a missing bucket is created on the fly, as SeaweedFS does),
        create the probe object with one conditional PUT and read its size
        back. Never deletes it: backup
        credentials may not; a lifecycle rule on the probe prefix does."""
        user = user or current_user()
        try:
            self.check_writable()
            key = write_probe(self, user)
            if self.stat(key) is None:
                raise StorageError("%s was stored but cannot be found" % key,
                                   "The endpoint does not keep what it accepts; check the %s service" % self.service)
        except StorageError as e:
            where = "under %s/" % self.prefix if self.prefix else "in the %s" % self.container
            raise type(e)("Cannot write to %s with the %s credentials of user %s: %s" % (
                self.describe(), self.service, user, e.message),
                "%s. Backup credentials need put, get and list %s, %s "
                "included (the storage contract, docs/storage-layout.md)" % (
                    (e.hint or "Check the storage options").rstrip("."), where, PROBE_PREFIX))
        return key


def _rule_prefix(rule):
    """The key prefix a lifecycle rule applies to ('' for the whole bucket)."""
    flt = rule.get("Filter") or {}
    return flt.get("Prefix") or (flt.get("And") or {}).get("Prefix") or rule.get("Prefix") or ""


def _kind(exc):
    """What an obstore exception means for drkit: exists, conflict,
    precondition, notfound, nobucket, denied, tls, connect (nothing got
    through: refused, unresolvable, timed out connecting), transfer (a
    connection that broke or timed out mid-way), or other."""
    name = type(exc).__name__
    text = str(exc)
    if "NoSuchBucket" in text or "ContainerNotFound" in text:  # S3's and Azure's error codes
        return "nobucket"
    if name == "AlreadyExistsError" or isinstance(exc, FileExistsError) or "BlobAlreadyExists" in text:
        return "exists"
    if "ConditionalRequestConflict" in text or "status: 409" in text.replace("409 Conflict", "status: 409"):
        return "conflict"
    if name == "PreconditionError" or "PreconditionFailed" in text:
        return "precondition"
    if name == "NotFoundError" or isinstance(exc, FileNotFoundError) or "NoSuchKey" in text:
        return "notfound"
    if name in ("PermissionDeniedError", "UnauthenticatedError") or isinstance(exc, PermissionError) or any(
            s in text for s in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403 Forbidden",
                                "AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch")):
        return "denied"
    low = text.lower()
    if name == "SSLError" or "certificate" in low or any(s in low for s in _TLS_WORDS):
        return "tls"
    if "http request to an https server" in low:
        return "plainhttp"
    if any(s in low for s in ("connection refused", "tcp connect error", "dns error", "failed to lookup",
                              "error trying to connect", "client error (connect)")):
        return "connect"
    if any(s in low for s in ("error decoding response body", "connection reset", "broken pipe", "unexpected eof",
                              "connection closed", "timed out", "timeout", "error reading a body",
                              "incompletemessage", "end of file before message length")):
        return "transfer"
    return "other"


# a TLS failure that is not about the certificate: rustls' words (obstore)
# and OpenSSL's (boto3), e.g. https:// to a plain-HTTP port
_TLS_WORDS = ("tls handshake", "invalidcontenttype", "invalidmessage", "corruptmessage", "wrong version number",
              "ssl routines", "record layer failure")

# What a refused certificate means, in words: rustls' error names (in
# obstore's "Debug source" dump) and OpenSSL's messages (boto3).
_CERTIFICATE_PROBLEMS = (
    (("UnknownIssuer", "unable to get local issuer certificate", "self-signed certificate",
      "self signed certificate"),
     "it is signed by a CA that is not trusted here (neither in ca_bundle nor in the system's CAs)"),
    (("NotValidForName", "Hostname mismatch", "doesn't match", "not valid for name"),
     "it is not valid for the endpoint's host name"),
    (("Expired", "certificate has expired"), "it has expired"),
    (("NotValidYet", "certificate is not yet valid"), "it is not valid yet (check the clock)"),
    (("Revoked", "certificate revoked"), "it was revoked"),
    (("BadSignature", "certificate signature failure"), "its signature is wrong"),
)


def _certificate_problem(exc):
    """'<what is wrong> (<the library's word>)' when ``exc`` is a refused
    server certificate, else None."""
    text = str(exc)
    for words, meaning in _CERTIFICATE_PROBLEMS:
        for word in words:
            if word in text:
                return "%s (%s)" % (meaning, word)
    if "InvalidCertificate" in text or "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "the certificate was refused (%s)" % _brief(exc)
    return None


def _brief(exc):
    # obstore appends a multi-line Rust "Debug source:" dump: the first part says it
    text = " ".join(str(exc).split("Debug source:", maxsplit=1)[0].split()) or type(exc).__name__
    return text if len(text) < 400 else text[:400] + "..."


def _epoch(dt):
    if dt is None:
        return None
    try:
        return dt.timestamp()
    except AttributeError:
        return time.mktime(dt.timetuple())
