# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a stored pg_dump artifact back for a restore: streamed into
pg_restore, or downloaded in the background for a parallel restore while the
schema is restored from the head of the file, its sha256 checked behind.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile
import threading
import time

from ..core.crypto import Keyring
from ..core.errors import ConfigError, IntegrityError
from ..core.osutil import local_write_error
from ..core.janitor import private_dir
from ..core.process import tool_version
from ..core.progress import meter
from ..core.stream import Digest, check_digest, decompressor_for, read_stored
from ..core.tar import TarStreamExtractor
from ..repo import manifest as mf
from .client import PG_DUMP_ZSTD_MAJOR, tool_major
from .dump import dump_format


class _Cancelled(Exception):
    pass


class ArtifactFetch(object):
    """Reads the dump artifact of a pg_logical backup once, checking size and
    sha256, and lands it where pg_restore can read it.

    A custom-format dump can be fetched in the background (``start``) while
    the caller connects and creates the database; ``follow`` hands the bytes
    that have arrived so far to a consumer (pg_restore --section=pre-data
    reads the table of contents at the head of the file), ``wait`` gives the
    path once every byte is there, and ``finish`` once its size and sha256
    are checked too (for a plain archive the hashing runs behind the writes).
    Each read of the artifact goes through a progress meter (core.progress)
    of ``progress``: step "download" unless the caller names another."""

    def __init__(self, storage, manifest, work_dir=None, progress=None, keyring=None):
        self.storage = storage
        self.keyring = keyring or Keyring()  # core.crypto: the reader's age identities, if any
        self.progress = progress
        self.manifest = manifest
        self.fmt = dump_format(manifest)
        names = [a["name"] for a in manifest["artifacts"]]
        if not names:
            raise IntegrityError("Backup %s lists no artifacts" % manifest.backup_id)
        self.artifact = manifest["artifacts"][0]
        self.key = mf.artifact_key(manifest.backup_id, self.artifact["name"])
        self.work_dir = work_dir
        self.tmp = None
        self.seconds = 0.0
        self._thread = None
        self._cond = threading.Condition()
        self._written = 0
        self._done = False
        self._complete = False  # every byte written (plain artifacts; sha256 may still run)
        self._writing = True
        self._error = None
        self._cancel = False
        self._path = None
        self.start_time = None

    def require_reader(self, runner, pg_restore):
        """An archive compressed by pg_dump itself (zstd, PostgreSQL 16+)
        can only be read by pg_restore 16+, an encrypted one only with the
        identity of one of its recipients: say so before downloading (and
        before any database is created)."""
        self.require_key()
        method = self.artifact.get("dump_compression")
        if not method:
            return
        version = tool_version(runner, pg_restore, default="unknown")
        if tool_major(version) < PG_DUMP_ZSTD_MAJOR:
            raise ConfigError("Backup %s was compressed by pg_dump (%s); %s (%s) cannot read it" % (
                self.manifest.backup_id, method, pg_restore, version),
                "Use pg_restore %d or later: install that client package or set pg_bin_dir"
                % PG_DUMP_ZSTD_MAJOR)

    def require_key(self):
        """ConfigError naming the recipients' fingerprints when the artifact
        is encrypted and this reader holds none of their identities."""
        if self.artifact.get("encrypted"):
            self.keyring.check(self.manifest.get("encryption") or {}, self._what())

    def _what(self):
        return "Artifact %s of backup %s" % (self.artifact["name"], self.manifest.backup_id)

    def _transforms(self):
        # stored = encrypt(compress(dump)): decrypt first, then decompress
        out = []
        if self.artifact.get("encrypted"):
            out.append(self.keyring.decryptor(self.manifest.get("encryption"), self._what()))
        if self.artifact.get("compressed", True):
            out.append(decompressor_for(self.manifest.get("compression")))
        return out

    @property
    def _plain(self):
        return not self.artifact.get("encrypted") and not self.artifact.get("compressed", True)

    def _require_present(self):
        if self.storage.stat(self.key) is None:
            raise IntegrityError("Artifact %s of backup %s is missing from %s" % (
                self.artifact["name"], self.manifest.backup_id, self.storage.describe()),
                "The backup is damaged; use another backup")

    def _meter(self, step):
        return meter(self.progress, step, self.artifact["name"], self.artifact["size"])

    def check_only(self, consumer=None, step="download"):
        t0 = time.time()
        self._require_present()
        with self._meter(step) as m:
            res = read_stored(self.storage, self.key, self.artifact["size"], self.artifact["sha256"],
                              transforms=self._transforms() if consumer else (), consumer=consumer, meter=m)
        self.seconds = time.time() - t0
        return res

    def _copy_hash_behind(self, write):
        """Nothing to decode: write each chunk as it arrives and hash the file
        in a second thread behind the writes (reading it back from the page
        cache: memory stays flat however far behind it is), so that the file
        is complete, and pg_restore -j can start, without waiting for sha256;
        finish() gives the verdict, before anything is renamed into place."""
        t0 = time.time()
        self._require_present()
        digest = Digest()
        hasher = threading.Thread(target=self.follow, args=(digest.update,), name="drkit-fetch-sha256")
        hasher.daemon = True
        hasher.start()
        try:
            with self._meter("download") as m:
                for chunk in self.storage.iter_read(self.key):
                    write(chunk)
                    m.update(len(chunk))
            self.seconds = time.time() - t0
        finally:
            self._end_writing()
            hasher.join()
        check_digest(self.storage, self.key, digest, self.artifact["size"], self.artifact["sha256"])

    def _end_writing(self):
        with self._cond:
            self._writing = False
            self._cond.notify_all()

    def _local_error(self, exc=None):
        """The StorageError of a local write that failed (a full work_dir)."""
        return local_write_error(exc, self.work_dir or tempfile.gettempdir(),
                                 "the local copy of %s that pg_restore -j reads" % self.artifact["name"],
                                 "work_dir", need=self.artifact.get("raw_size") or self.artifact["size"],
                                 alternative="run with jobs: 1 (streamed into pg_restore, no local copy)")

    def _make_tmp(self):
        try:
            self.tmp = private_dir("restore", self.work_dir)
        except OSError as e:
            raise self._local_error(e)

    def to_local(self):
        """Custom format -> <tmp>/database.pgdump; directory format -> <tmp>/dump/.
        Returns the path to give pg_restore."""
        if self.fmt == "custom":
            self.start()
            return self.finish()
        self._make_tmp()
        extractor = TarStreamExtractor(os.path.join(self.tmp, "dump"), "dump/")
        extractor.start()
        try:
            self.check_only(consumer=extractor.feed)
        finally:
            extractor.close()
            extractor.join()
        if isinstance(extractor.error, OSError):
            raise self._local_error(extractor.error)  # writing failed here, the backup is fine
        if extractor.error:
            raise IntegrityError("Cannot unpack %s: %s" % (self.artifact["name"], extractor.error),
                                 "The backup is damaged; use another backup")
        path = os.path.join(self.tmp, "dump")
        if not os.path.isfile(os.path.join(path, "toc.dat")):
            raise IntegrityError("%s holds no dump/toc.dat" % self.artifact["name"])
        return path

    def describe_download(self):
        return "downloading %s (%d bytes) to %s" % (self.artifact["name"], self.artifact["size"],
                                                    self.work_dir or tempfile.gettempdir())

    @property
    def started(self):
        return self._thread is not None

    def start(self):
        """Custom format only: download into <tmp>/database.pgdump in a thread."""
        if self._thread is not None:
            return
        self._make_tmp()
        self._path = os.path.join(self.tmp, "database.pgdump")
        try:
            out = open(self._path, "wb")
        except OSError as e:
            raise self._local_error(e)
        plain = self._plain

        def write(data):
            if self._cancel:
                raise _Cancelled()
            try:
                out.write(data)
                out.flush()  # follow() reads the file: what is counted must be in it
            except OSError as e:
                raise self._local_error(e)
            with self._cond:
                self._written += len(data)
                if plain and self._written == self.artifact["size"]:
                    self._complete = True
                self._cond.notify_all()

        def run():
            try:
                if plain:
                    self._copy_hash_behind(write)
                else:
                    self.check_only(consumer=write)
            except BaseException as e:  # pylint: disable=broad-except
                self._error = e  # raised by wait() or finish()
            try:
                out.close()  # flushed after every write: nothing new to write
            except OSError as e:
                self._error = self._error or self._local_error(e)
            self._end_writing()
            with self._cond:
                self._done = True
                self._cond.notify_all()

        self.start_time = time.time()
        self._thread = threading.Thread(target=run, name="drkit-fetch")
        self._thread.daemon = True  # a SIGTERM exit is not held by a stuck download
        self._thread.start()

    def follow(self, consumer, chunk=1 << 20):
        """Hand the file's bytes to consumer(bytes) as they arrive, until it
        returns False or the download stops writing (failed or not)."""
        with open(self._path, "rb") as src:
            while True:
                with self._cond:
                    while src.tell() >= self._written and self._writing:
                        self._cond.wait(0.5)
                    available = self._written - src.tell()
                    if available <= 0:
                        return
                data = src.read(min(chunk, available))
                if consumer(data) is False:
                    return

    def raise_failure(self):
        """Raise the download's error if it has stopped writing and failed
        (waiting for its end then); nothing while it is still writing."""
        with self._cond:
            writing = self._writing
        if not writing:
            self._thread.join()
            if self._error is not None:
                raise self._error

    def wait(self):
        """The local path, once every byte is there. The sha256 may still be
        being computed: finish() says whether it matched."""
        with self._cond:
            while not (self._complete or self._done):
                self._cond.wait(0.5)
            if self._done and self._error is not None:
                raise self._error
        return self._path

    def finish(self):
        """The local path once the whole artifact is there and its size and
        sha256 match the manifest; raises what the download found otherwise."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._path

    def cleanup(self):
        if self._thread is not None and self._thread.is_alive():
            self._cancel = True
            self._thread.join(5.0)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
