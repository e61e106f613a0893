# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage interface every backend implements (``Storage``,
``ObjectWriter``), and the helpers built on it.

Keys are relative, '/'-separated paths under the storage root
(``backups/<id>/manifest.json``).  The backends (storage.factory opens one
from a URL):

* ``file:///abs/path`` (storage.file): writes go to a hidden temp name in the
  target directory, are fsynced, renamed into place and the directory is
  fsynced.  Files are 0600, directories 0700.
* ``s3://bucket/prefix`` (storage.s3): obstore; streams are uploaded as
  multipart uploads with a SHA-256 checksum per part, and a failed upload is
  aborted; downloads cut mid-way resume by range.

Every writer is used as ``with storage.writer(key) as w: w.write(...)``;
leaving the block with an exception aborts the write and leaves nothing
behind under ``key``.

``storage.writer(key, create=True)`` is a create-only write (the storage
contract in docs/storage-layout.md says which objects need it): it either
makes the object visible where no object was, or raises ObjectExists and
changes nothing. It is atomic against every other writer of the key: on
file:// the temp file is fsynced and hard-linked to the key (link() fails
when the name exists; renameat2(RENAME_NOREPLACE) where the file system has
no hard links), on S3 it is one PUT with ``If-None-Match: *`` (the whole
object in memory: meant for WAL files, manifests and records, not for large
artifacts, which rely on unique keys instead). ``put_new`` and
``create_or_match`` build "store once; identical is fine, different is
refused" on it.

``storage.probe()`` is the pre-flight of every writing job's check mode
(and of ``drkit probe``): it writes a create-only probe object
``probe/<host>-<UTC time>`` as the job would write a manifest, so a check
passes only where the real run can write. On file:// the probe removes it
again (and any directory it had to create); on object stores it stays:
backup credentials may not delete, and the storage contract leaves the
``probe/`` prefix to a lifecycle rule.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import re
import socket
from collections import namedtuple

from ..core.errors import ConfigError, ConflictError, NotFoundError, StorageError
from ..core.version import VERSION

ObjectInfo = namedtuple("ObjectInfo", ["key", "size", "mtime"])
"""One stored object: key relative to the root, size in bytes, mtime (epoch)."""

IncompleteUpload = namedtuple("IncompleteUpload", ["key", "upload_id", "started"])
"""A leftover partial write: an S3 multipart upload or a file backend temp file."""

TEMP_MARKER = ".drkit-tmp-"
READ_CHUNK = 1 << 20
PROBE_PREFIX = "probe/"
# a probe key taken already (two probes of one host in one microsecond) is
# tried again under a new time this often
PROBE_ATTEMPTS = 3


# StorageError.details["reason"] of a delete the credentials may not do (a
# backup host's, by the storage contract): callers that delete only to tidy
# up carry on, rotation fails.
DELETE_DENIED = "delete denied"


def check_key(key):
    if not key or key.startswith("/") or "\\" in key:
        raise ConfigError("Invalid storage key %r" % (key,),
                          "Keys are relative '/'-separated paths; this is a bug, please report it")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ConfigError("Invalid storage key %r" % (key,),
                          "Keys may not contain empty, '.' or '..' components")
    if any(p.startswith(TEMP_MARKER) for p in parts):
        raise ConfigError("Invalid storage key %r" % (key,), "The prefix %s is reserved" % TEMP_MARKER)


class ObjectExists(ConflictError):
    """A create-only write found its key taken; nothing was changed. Callers
    compare what is there and decide (create_or_match), so this is a result
    more than a failure; exit code 5 if it escapes."""


class ObjectWriter(object):
    """Write one object. Use as a context manager: an exception aborts.
    With ``create`` (see the module doc) commit() raises ObjectExists
    when the key is taken, and the write is aborted."""

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

    def writer(self, key, create=False):
        raise NotImplementedError

    def put_bytes(self, key, data, create=False):
        with self.writer(key, create=create) as w:
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

    def versioning(self):
        """What keeps deleted data (S3 versioning, Object Lock, the lifecycle
        rule that expires old versions) as a dict, for rotation's report;
        None where a delete frees the space (file://) or nothing is known."""
        return None

    def probe(self, user=None):
        """Write a create-only probe object as the real run would write (see
        the module doc) and return its key; StorageError naming the storage,
        ``user`` (the OS user, for the message) and the fix when it cannot."""
        raise NotImplementedError


def probe_key(host=None, now=None):
    """``probe/<host>-<UTC time>`` (the storage contract): the host name
    reduced to letters, digits, '.', '_' and '-', the time to the
    microsecond."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", host or socket.gethostname() or "host").strip("._") or "host"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return "%s%s-%s" % (PROBE_PREFIX, host, now.strftime("%Y%m%dT%H%M%S.%fZ"))


def probe_body(key, user):
    """What a probe object holds: enough for a person who finds one."""
    return (json.dumps({"probe": key, "user": user, "drkit": VERSION,
                        "note": "drkit's pre-flight write check; safe to delete"}, sort_keys=True)
            + "\n").encode("utf-8")


def write_probe(storage, user, attempts=PROBE_ATTEMPTS):
    """Create a probe object in ``storage`` (create-only) and return its
    key; a key taken already gets a new time."""
    for _attempt in range(attempts):
        key = probe_key()
        try:
            storage.put_bytes(key, probe_body(key, user), create=True)
            return key
        except ObjectExists:
            continue
    raise StorageError("Could not create a probe object in %s: %d keys in a row were taken" % (
        storage.describe(), attempts), "Another process writes the same probe keys; try again")


CREATE_ATTEMPTS = 3


def create_or_match(storage, key, write, matches, attempts=CREATE_ATTEMPTS):
    """Store an object once: True when this call created ``key`` (``write(w)``
    fills a create-only writer), False when the key already holds an object
    for which ``matches(storage, key)`` is true (identical content).
    ObjectExists, the stored object untouched, when it holds a different
    one. Never replaces and never deletes anything.

    An object reported as existing that cannot be read a moment later (a
    concurrent create that failed: S3 answers 409 while one is in flight,
    or the rotation job deleted it meanwhile) is tried again, ``attempts``
    times in all."""
    for _attempt in range(attempts):
        try:
            with storage.writer(key, create=True) as w:
                write(w)
            return True
        except ObjectExists as e:
            taken = e
        try:
            if matches(storage, key):
                return False
        except NotFoundError:
            continue
        raise taken
    raise StorageError("%s in %s was reported as existing %d times but could not be read" % (
        key, storage.describe(), attempts), "Another writer of the same key keeps failing; try again later")


def put_new(storage, key, data):
    """Store data under key unless an object is there already; an identical
    object is accepted (False), a different one raises ConflictError and is
    left untouched. Atomic: of several concurrent callers exactly one stores."""
    try:
        return create_or_match(storage, key, lambda w: w.write(data),
                               lambda st, k: st.get_bytes(k) == data)
    except ObjectExists:
        raise ConflictError("%s already exists in %s with different content" % (key, storage.describe()),
                            "It was left untouched; investigate before removing it by hand")
