# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification: the one skeleton every verifier (logical, physical, Redis)
fills in, and its records (backups/<id>/verify-<time>-<rand>.json, written
create-only, never rewritten; docs/verification-records.md), written at the end of every run and
read back by rotation.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import json
import os
import socket
import time
from contextlib import contextmanager

from ..core import metrics
from ..core.errors import ConfigError, DrkitError, IntegrityError, NotFoundError, ToolError, WaitTimeout
from ..core.options import Option
from ..core.signals import signals_raise
from ..core.stream import read_stored
from ..core.version import VERSION
from ..storage.base import ObjectExists
from . import manifest as mf

LEVELS = ("checksum", "structure", "restore")
DEFAULT_LEVEL = "structure"
LEVEL = Option("level", "str", default=DEFAULT_LEVEL, choices=LEVELS, flags=("--level",),
               help="checksum, structure (default) or restore")
RECORD_FORMAT = "drkit.backup/verification"

# What makes a verification FAIL (and be recorded as failed): the backup, or
# what it needs, is not what the manifest promised (IntegrityError), a tool
# refused it (ToolError), or it could not be brought up in time (WaitTimeout).
# Anything else (bad input, unreachable storage or server, a signal) stops
# the run without a record: it says nothing about the backup.
FAILURES = (IntegrityError, ToolError, WaitTimeout)


def check_level(level):
    """The verification level asked for (default structure), or ConfigError."""
    return LEVEL.check(level) or LEVEL.default


def planned(entry, level, what=None):
    """The check-mode answer of every verifier: what would be verified."""
    return True, {"backup_id": entry.backup_id, "level": level, "passed": None,
                  "passed_over": list(entry.passed_over),
                  "msg": "Would verify %s%s at level %s" % (what + " " if what else "", entry.backup_id, level)}


class Verification(object):
    """One verifier run.  The verifier does the checks of its kind; this
    owns the rest, the same for every kind::

        v = Verification(storage, params, entry, level, job)
        with v:                                   # SIGTERM/SIGHUP raise Terminated inside
            v.check_artifacts(skip=[main])        # every other artifact: present, size, sha256
            with v.timed("download_seconds"):
                ...
            v.cleanup(server.destroy)              # on every path, the last registered first
            v.finding("...")                      # fails the verification
        return v.finish(tables=..., checks=...)   # record, metrics; VerificationFailed if it failed

    An IntegrityError, ToolError or WaitTimeout raised in the block is a
    finding (the run is recorded as failed); any other exception propagates
    after the clean-ups, and nothing is recorded.
    """

    def __init__(self, storage, params, entry, level, job, progress=None):
        self.storage = storage
        self.params = params
        self.entry = entry
        self.manifest = entry.manifest
        self.level = level
        self.job = job
        self.progress = progress or (lambda msg: None)
        self.started = mf.utcnow()
        self.t0 = time.time()
        self.findings = []
        self.timings = {}
        self._hard = 0
        self._cleanups = []
        self._signals = None

    def __enter__(self):
        self._signals = signals_raise()
        self._signals.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._run_cleanups(exc_type is None)
        finally:
            self._signals.__exit__(None, None, None)  # the old handlers back
        if exc_type is not None and issubclass(exc_type, FAILURES):
            self.finding(str(exc))
            return True
        return False

    def cleanup(self, func, *args):
        """Call ``func(*args)`` when the block ends, whatever happens (the
        last registered first): scratch databases, servers, directories."""
        self._cleanups.append((func, args))

    def _run_cleanups(self, raise_errors):
        first = None
        while self._cleanups:
            func, args = self._cleanups.pop()
            try:
                func(*args)
            except BaseException as e:  # pylint: disable=broad-except
                first = first or e  # the other clean-ups still run, also after a second SIGTERM
        if first is not None and (raise_errors or not isinstance(first, Exception)):
            raise first

    @contextmanager
    def timed(self, name):
        """Record the seconds the block takes as timings[name] (also when it fails)."""
        t = time.time()
        try:
            yield
        finally:
            self.timings[name] = round(time.time() - t, 3)

    def finding(self, text, fails=True):
        """Something found; ``fails=False`` for a note that does not fail it."""
        self.findings.append(text)
        if fails:
            self._hard += 1

    def check_artifacts(self, skip=()):
        """Every artifact of the backup but those in ``skip`` (read by the
        level's own pass): present, with the recorded size and sha256."""
        for art in self.manifest["artifacts"]:
            if art["name"] in skip:
                continue
            key = mf.artifact_key(self.entry.backup_id, art["name"])
            if self.storage.stat(key) is None:
                raise IntegrityError("Artifact %s of backup %s is missing from %s" % (
                    art["name"], self.entry.backup_id, self.storage.describe()),
                    "The backup is damaged; use another backup")
            read_stored(self.storage, key, art["size"], art["sha256"])

    @property
    def passed(self):
        return self._hard == 0

    def finish(self, **extra):
        """Write the record and the metrics; (True, result) or VerificationFailed."""
        return finish_verification(self.storage, self.params, self.entry, self.job, self.level, self.passed,
                                   self.started, self.t0, self.timings, self.findings, extra)


def record_key(backup_id, when):
    return mf.backup_prefix(backup_id) + "verify-%s-%s.json" % (
        when.strftime("%Y%m%dT%H%M%SZ"), binascii.hexlify(os.urandom(2)).decode("ascii"))


RECORD_ATTEMPTS = 5


def write_record(storage, backup_id, finished, record):
    """Store a verification record under a new key, create-only (records are
    never replaced: docs/storage-layout.md); a key taken by a concurrent
    verification of the same second gets another random part. Returns the key."""
    data = (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    for attempt in range(RECORD_ATTEMPTS):
        key = record_key(backup_id, finished)
        try:
            storage.put_bytes(key, data, create=True)
            return key
        except ObjectExists:
            if attempt == RECORD_ATTEMPTS - 1:
                raise


def finish_verification(storage, params, entry, job, level, passed, started, t0, timings, findings, extra):
    """Shared end of every verifier (logical, physical, Redis): write the
    record next to the manifest (never rewriting it), update the metrics, and
    return (True, result) or raise VerificationFailed carrying the result."""
    manifest = entry.manifest
    finished = mf.utcnow()
    duration = round(time.time() - t0, 3)
    age = (started - manifest.finished).total_seconds()
    record = {
        "format": RECORD_FORMAT, "version": 1, "backup_id": entry.backup_id, "level": level,
        "result": "pass" if passed else "fail", "started_at": mf.isoformat(started),
        "finished_at": mf.isoformat(finished), "duration_seconds": duration, "timings": timings,
        "backup_age_seconds": round(age, 3), "findings": findings,
        "verifier": {"host": socket.gethostname(), "drkit": VERSION},
    }
    record.update(extra)
    key = write_record(storage, entry.backup_id, finished, record)
    _record_metrics(params.get("metrics_dir"), job, manifest["kind"], passed, duration, timings, age)
    result = dict(record)
    result.update({"passed": passed, "record_key": key, "duration": duration,
                   "passed_over": list(entry.passed_over),
                   "msg": "%s %s at level %s in %.1f s" % (
                       entry.backup_id, "passed" if passed else "FAILED", level, duration)})
    if not passed:
        raise VerificationFailed("Backup %s failed verification at level %s: %s" % (
            entry.backup_id, level, "; ".join(findings[:10])),
            "Do not rely on this backup; see the verification record %s" % key, details=result)
    return True, result


class VerificationFailed(IntegrityError):
    pass


def _record_metrics(directory, job, kind, passed, duration, timings, age):
    if not directory:
        return
    now = time.time()
    values = {"drkit_verify_last_attempt_timestamp_seconds": now,
              "drkit_verify_last_status": 1 if passed else 0,
              "drkit_verify_duration_seconds": duration,
              "drkit_backup_age_at_verify_seconds": round(age, 3)}
    if passed:
        values["drkit_verify_last_success_timestamp_seconds"] = now
    if "restore_seconds" in timings:
        values["drkit_restore_duration_seconds"] = timings["restore_seconds"]
    try:
        metrics.update_textfile(directory, job, values, labels={"kind": kind})
    except DrkitError:
        pass


RECORD_VERSION = 1
RECORD_RESULTS = ("pass", "fail")


# --------------------------------------------------------------------------
# Verification records (schema: docs/verification-records.md)


def parse_record(data, key, backup_id):
    """A verification record as a dict; IntegrityError when it is not one."""
    hint = "Fix or move this record by hand; rotation does not guess which backups were verified"
    try:
        rec = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except ValueError as e:
        raise IntegrityError("Verification record %s is not valid JSON: %s" % (key, e), hint)
    if not isinstance(rec, dict):
        raise IntegrityError("Verification record %s is not a JSON object" % key, hint)
    if rec.get("format") != RECORD_FORMAT:
        raise IntegrityError("Verification record %s has format %r, expected %r" % (
            key, rec.get("format"), RECORD_FORMAT), hint)
    version = rec.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > RECORD_VERSION:
        raise IntegrityError("Verification record %s has version %r; this drkit reads up to %d" % (
            key, version, RECORD_VERSION), "Upgrade drkit")
    if rec.get("backup_id") != backup_id:
        raise IntegrityError("Verification record %s claims backup %r" % (key, rec.get("backup_id")), hint)
    if rec.get("result") not in RECORD_RESULTS:
        raise IntegrityError("Verification record %s has result %r, expected pass or fail" % (
            key, rec.get("result")), hint)
    try:
        rec["_finished"] = mf.parse_time(rec.get("finished_at"))
    except ConfigError:
        raise IntegrityError("Verification record %s has no valid finished_at" % key, hint)
    return rec


def latest_verification(storage, entry):
    """The newest verification record of a backup (by its finished_at, then
    key), or None when it has none."""
    best = None
    for key in entry.verification_keys:
        try:
            data = storage.get_bytes(key)
        except NotFoundError:
            continue  # removed since the listing: it no longer counts
        rec = parse_record(data, key, entry.backup_id)
        rec["_key"] = key
        if best is None or (rec["_finished"], key) > (best["_finished"], best["_key"]):
            best = rec
    return best


def newest_verified(storage, entries):
    """The first of ``entries`` (newest first) whose latest verification
    passed, and that record; (None, None) when none did.  Reads records
    only until it finds one: cheap however many backups there are."""
    for entry in entries:
        if not entry.verification_keys:
            continue
        rec = latest_verification(storage, entry)
        if rec is not None and rec["result"] == "pass":
            return entry, rec
    return None, None
