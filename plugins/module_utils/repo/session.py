# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every backup kind shares.

A BackupJob is one run of a backup entry point: storage checked for writing
first, resources closed on every path, a failure anywhere (connecting, the
session, after it) recorded once in the job's metrics, and the check-mode
answer.  Inside it a BackupSession stores artifacts through the pipeline,
reads them back to check them, writes the manifest LAST and updates the
job's metrics.  If anything fails, the artifacts written so far are deleted
(best effort; without a manifest they never count anyway).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..core import crypto, metrics
from ..core.errors import DrkitError, StorageError
from ..core.options import Option
from ..core.progress import meter
from ..core.stream import PipelineSink, compressor_for, decompressor_for, pump, read_stored
from ..core.version import VERSION
from ..storage.base import ObjectExists
from . import manifest as mf

LABELS = Option("labels", "dict")  # free-form, recorded in the manifest


class BackupSession(object):
    def __init__(self, storage, kind, source, tools=None, compression=None, recipients=None,
                 options=None, labels=None, metrics_dir=None, job=None, progress=None, signer=None):
        self.storage = storage
        # core.signing.Signer (signing_key_file) or None: signs the manifest
        self.signer = signer
        self.started = mf.utcnow()
        self._t0 = time.time()
        self.backup_id = mf.new_backup_id(kind, self.started)
        tools = dict(tools or {})
        tools.setdefault("drkit", VERSION)
        self.compression = compression
        # age recipients (core.crypto.load_recipients): every artifact is
        # encrypted after compression; the manifest names their fingerprints
        self.recipients = list(recipients or [])
        self.manifest = mf.Manifest.new(
            self.backup_id, kind, self.started, source, tools=tools,
            compression=_public_compression(compression), encryption=crypto.describe(self.recipients),
            options=options, labels=labels)
        self.metrics_dir = metrics_dir
        self.job = job or kind
        self.kind = kind
        self._written = []
        self.committed = False
        self.failure_recorded = False
        self.progress = progress or (lambda msg: None)
        self._sink_meter = None

    # -- writing

    def key(self, name):
        return mf.artifact_key(self.backup_id, name)

    @property
    def encrypted(self):
        return bool(self.recipients)

    def _transforms(self, compress):
        # compress -> encrypt (DESIGN.md's data path); the digest after them is of the stored bytes
        return ([compressor_for(self.compression)] if compress else []) + [crypto.encryptor_for(self.recipients)]

    def _add(self, name, sink, compress, extra):
        res = sink.result()
        if self.encrypted:
            extra["encrypted"] = True
        return self.manifest.add_artifact(name, res["size"], res["sha256"], raw_size=res["raw_size"],
                                          compressed=bool(compress), **extra)

    def store_stream(self, name, fileobj, compress=True, before_commit=None, total=None, estimate=False, **extra):
        """Stream fileobj into artifact ``name``. ``before_commit()`` runs once
        the stream ended and before the object is committed: raise there (e.g.
        the producer exited non-zero) and nothing is stored. ``total``: the
        bytes the producer will write, if known (``estimate``: a guess), for
        the progress meter."""
        key = self.key(name)
        self._written.append(key)
        with meter(self.progress, "upload", name, total, estimate) as m:
            with self.storage.writer(key) as w:
                sink = PipelineSink(w, self._transforms(compress), meter=m)
                pump(fileobj, sink)
                sink.close()
                if before_commit is not None:
                    before_commit()
        return self._add(name, sink, compress, extra)

    def open_sink(self, name, compress=True, total=None, estimate=False):
        """For producers that write (tarfile, a callback): returns
        (writer, sink). Close the sink, then call finish_sink (or abort the
        writer). ``total``/``estimate``: as for store_stream."""
        key = self.key(name)
        self._written.append(key)
        w = self.storage.writer(key)
        self._sink_meter = meter(self.progress, "upload", name, total, estimate)
        return w, PipelineSink(w, self._transforms(compress), meter=self._sink_meter)

    def finish_sink(self, name, writer, sink, compress=True, **extra):
        sink.close()
        writer.commit()
        if self._sink_meter is not None:
            self._sink_meter.close()
            self._sink_meter = None
        return self._add(name, sink, compress, extra)

    def store_bytes(self, name, data, compress=False, **extra):
        key = self.key(name)
        self._written.append(key)
        with self.storage.writer(key) as w:
            sink = PipelineSink(w, self._transforms(compress))
            sink.write(data)
            sink.close()
        return self._add(name, sink, compress, extra)

    # -- checking

    def reread(self, name, consumer=None):
        """Read an artifact back from storage and check size and sha256;
        decompressed content goes to consumer (structure checks). An
        encrypted artifact cannot be decoded here (a backup host holds no
        identity): only its stored bytes are checked, and a consumer is
        refused."""
        art = self.manifest.artifact(name)
        if art.get("encrypted"):
            if consumer is not None:
                raise ValueError("encrypted artifacts cannot be decoded without an identity")
            transforms = []
        else:
            transforms = [decompressor_for(self.manifest["compression"])] if art.get("compressed") else []
        with meter(self.progress, "re-read", name, art["size"]) as m:
            return read_stored(self.storage, self.key(name), art["size"], art["sha256"],
                               transforms=transforms, consumer=consumer, meter=m)

    # -- finishing

    def commit(self, data=None):
        if data:
            self.manifest["data"].update(data)
        self.manifest.finish(mf.utcnow())
        try:
            mf.write_manifest(self.storage, self.manifest, self.signer)
        except ObjectExists:
            # Another backup with the same id wrote its manifest first: the
            # artifact keys are its keys too, so nothing is deleted.
            self._written = []
            raise
        self.committed = True
        self._record(True)
        return self.manifest

    def result(self):
        m = self.manifest
        return {
            "backup_id": self.backup_id,
            "manifest": dict(m),
            "manifest_key": mf.manifest_key(self.backup_id),
            "size": sum(a["size"] for a in m["artifacts"]),
            "sha256": m["artifacts"][0]["sha256"] if m["artifacts"] else None,
            "duration": m["duration_seconds"],
            "storage": self.storage.describe(),
            "signed_by": m.signed_by,
        }

    def _record(self, ok):
        if not self.metrics_dir:
            return
        now = time.time()
        values = {"drkit_backup_last_attempt_timestamp_seconds": now,
                  "drkit_backup_last_status": 1 if ok else 0,
                  "drkit_backup_duration_seconds": round(now - self._t0, 3)}
        if ok:
            values["drkit_backup_last_success_timestamp_seconds"] = now
            values["drkit_backup_size_bytes"] = sum(a["size"] for a in self.manifest["artifacts"])
            values["drkit_backup_raw_size_bytes"] = sum(a.get("raw_size", a["size"])
                                                        for a in self.manifest["artifacts"])
        metrics.update_textfile(self.metrics_dir, self.job, values, labels={"kind": self.kind})

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        if self._sink_meter is not None:
            self._sink_meter.close(failed=True)  # an open_sink whose producer failed
            self._sink_meter = None
        if not self.committed:
            try:
                self.storage.delete(list(self._written))
            except (DrkitError, StorageError, OSError) as e:
                # Without a manifest they are ignored and rotation removes them
                # later; the backup's own error stays the error (backup
                # credentials may well not delete: the storage contract).
                note = ("could not remove the %d objects this failed backup wrote (%s); without a manifest they "
                        "are ignored, and rotation removes them after its grace period" % (
                            len(self._written), getattr(e, "message", None) or e))
                self.progress(note)
                if isinstance(exc, DrkitError):
                    exc.details = dict(exc.details or {})
                    exc.details["cleanup"] = note
            try:
                self._record(False)
                self.failure_recorded = True
            except DrkitError:
                pass
        return False


class BackupJob(object):
    """One run of a backup entry point around its BackupSession::

        job = BackupJob(storage, KIND, params.get("metrics_dir"), job_name, progress)
        if check_mode:
            ...                                   # read-only checks of the source
            job.check_storage()
            return job.planned("Would back up ...")
        with job:                                 # storage.check_writable() first
            conn = connect(...)
            job.closing(conn)                     # closed on every path
            session = job.session(source, tools=..., compression=..., options=...)
            with session:
                ...
                session.commit(data)
        return True, session.result()

    Any exception in the block is recorded once as a failed attempt in the
    job's metrics (the session records its own with the duration) and then
    propagates.
    """

    def __init__(self, storage, kind, metrics_dir=None, job=None, progress=None, signer=None):
        self.storage = storage
        self.signer = signer  # core.signing.Signer for every session of the job, or None
        self.kind = kind
        self.metrics_dir = metrics_dir
        self.job = job or kind
        self.progress = progress or (lambda msg: None)
        self._session = None
        self._cleanups = []
        self._probe = None

    def check_storage(self):
        """Check mode: this user can write where the real run will, proven
        by the storage contract's probe object (storage.probe: created and
        removed again on file://, left to the lifecycle rule on S3). A
        read-only look passed where the first real run then failed."""
        self._probe = self.storage.probe()

    def planned(self, msg):
        """The check-mode result of every backup entry point."""
        return True, {"changed": True, "backup_id": None, "storage": self.storage.describe(), "msg": msg,
                      "probe": self._probe}

    def session(self, source, **kwargs):
        kwargs.setdefault("signer", self.signer)
        self._session = BackupSession(self.storage, self.kind, source, metrics_dir=self.metrics_dir,
                                      job=self.job, progress=self.progress, **kwargs)
        return self._session

    def closing(self, resource):
        """Close ``resource`` when the job ends, whatever happens."""
        self._cleanups.append((_close_quietly, (resource,)))
        return resource

    def cleanup(self, func, *args):
        """Call ``func(*args)`` when the job ends, whatever happens (last registered first)."""
        self._cleanups.append((func, args))

    def __enter__(self):
        try:
            self.storage.check_writable()
        except BaseException:
            record_failure(self.metrics_dir, self.job, self.kind)  # __exit__ does not run for it
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            while self._cleanups:
                func, args = self._cleanups.pop()
                func(*args)
        finally:
            if exc_type is not None and not (self._session is not None and self._session.failure_recorded):
                record_failure(self.metrics_dir, self.job, self.kind)
        return False


def _close_quietly(resource):
    try:
        resource.close()
    except Exception:  # pylint: disable=broad-except
        pass  # a connection the server already closed


def _public_compression(compression):
    if not compression or compression.get("algorithm") == "none":
        return {"algorithm": "none"}
    return {"algorithm": compression.get("algorithm", "zstd"), "level": compression.get("level", 3)}


def record_failure(metrics_dir, job, kind):
    """A failed attempt in the job's metrics, for failures outside a session
    (bad credentials, storage not writable...)."""
    if not metrics_dir:
        return
    now = time.time()
    try:
        metrics.update_textfile(metrics_dir, job or kind,
                                {"drkit_backup_last_attempt_timestamp_seconds": now,
                                 "drkit_backup_last_status": 0}, labels={"kind": kind})
    except DrkitError:
        pass
