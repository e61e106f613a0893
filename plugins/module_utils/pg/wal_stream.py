# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``drkit wal-stream``: a streaming WAL archiver.

PostgreSQL's own ``pg_receivewal`` receives the WAL over the replication
protocol, from another host or from outside a container, into a local spool
directory, holding a physical replication slot so that the server keeps what
the archiver has not received yet. drkit supervises it and:

* pushes every completed segment (and timeline history file) through the
  same path as ``wal-push`` (pg/wal_archive.push_file: the cluster check,
  compression, a create-only write, the read-back), oldest first, then
  removes it from the spool;
* every ``partial_interval`` seconds uploads the segment being written as a
  streamed partial, ``wal/<tli>/<segment>.<end>.stream.zst`` (the end of what
  it holds, in bytes; repo/wal_layout.py), each create-only under its own
  key, so the archive is at most that many seconds behind the server; once a
  newer partial or the full segment is stored, the older partials of that
  segment are removed (the storage contract lets the streamer delete its own
  partials and nothing else);
* restarts pg_receivewal when it fails (backoff up to 30 s), and on SIGTERM
  stops it, pushes what it received and uploads the last partial.

Recovery (``wal-fetch``, ``pitr``) answers a segment of which only streamed
partials exist with the newest one (pg/wal_archive.fetch_file).

The slot: created when missing (``pg_receivewal --create-slot
--if-not-exists``). A slot that had to be created while the archive already
holds WAL of this cluster means the server may have recycled WAL that nobody
received: the first segment streamed is compared with the archive's newest
one on its timeline, and a gap is reported (error in the log, the
``drkit_wal_stream_gap`` metric) and never papered over. The WAL the slot
holds back on the server is in the metrics (``slot_retained_bytes``), so a
stopped archiver cannot fill the server's disk unnoticed.

RPO made visible (``RpoWatch``): how far the archive is behind the server,
in bytes and in seconds. The archive's position is only advanced by what is
proven stored: a full segment's end, or, for a streamed partial, the write
position pg_receivewal had reported to the server (pg_stat_replication's
write_lsn, sampled before the spool file was read, so the file held at
least that much). The trailing zeros of the file cannot tell where the last
record ends, the server's own report can.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import threading
import time

from ..core import crypto, metrics
from ..core.errors import ConfigError, DrkitError, StorageError, Terminated, ToolError
from ..core.options import Option, Options, resolve
from ..core.stream import COMPRESSION_LEVEL
from ..repo.wal_layout import (
    HISTORY_RE,
    SEGMENT_RE,
    classify,
    DEFAULT_SEGMENT_SIZE as SEGMENT_SIZE,
    segment_number,
    stream_name,
    timeline_of,
)
from ..storage.base import DELETE_DENIED
from ..storage.factory import STORAGE, open_storage, storage_options
from .client import (CONNECTION, MAINTENANCE_DB, STREAM_APP_NAME, ToolEnv, conn_params, connect, describe, find_tool,
                     server_facts)
from .wal_archive import push_file
from .wal_segments import list_timeline, stream_partials

PARTIAL_SUFFIX = ".partial"
POLL = 0.2
MAX_BACKOFF = 30.0
METRICS_INTERVAL = 5.0

OPTIONS = Options(
    CONNECTION, STORAGE, COMPRESSION_LEVEL, crypto.ENCRYPTION, metrics.METRICS, MAINTENANCE_DB,
    Option("slot_name", "str", default="drkit_wal_stream", flags=("--slot",),
           help="physical replication slot (created if missing; default drkit_wal_stream)"),
    Option("spool_dir", "path", flags=("--spool-dir",),
           help="local directory pg_receivewal writes into (required; the archiver's own)"),
    Option("partial_interval", "float", default=10.0, min=0.2, flags=("--partial-interval",),
           help="seconds between uploads of the segment in progress (default 10): the RPO"),
    Option("synchronous", "bool", default=False, flags=("--synchronous",),
           help="pg_receivewal --synchronous: flush and confirm every write (for synchronous_standby_names)"),
    Option("stop_after", "float", min=0, flags=("--stop-after",), module=False,
           help="stop (as on SIGTERM) after this many seconds; for tests and one-off catch-ups"),
)


def _end_of_data(data):
    """Offset just past the last non-zero byte: pg_receivewal pads the segment
    in progress with zeros, and what lies before them is the WAL received."""
    end = len(data)
    while end > 0:
        start = max(0, end - 65536)
        block = data[start:end]
        stripped = block.rstrip(b"\0")
        if stripped:
            return start + len(stripped)
        end = start
    return 0


def push_partial(storage, segment, data, level, recipients=None):
    """Store the first bytes of ``segment`` (``data``: a snapshot of the
    spool's .partial file) as a streamed partial, through wal-push's
    contract (cluster check, create-only, read-back); returns its end
    offset, or None when there is nothing to store."""
    end = _end_of_data(data)
    if end == 0:
        return None
    push_file(storage, segment + PARTIAL_SUFFIX, stream_name(segment, end), level, content=data,
              recipients=recipients)
    return end


def prune_partials(storage, segment, keep_end=None):
    """Remove the streamed partials of ``segment`` other than ``keep_end``."""
    stale = [k for end, k in sorted(stream_partials(storage, segment).items()) if end != keep_end]
    if stale:
        storage.delete(stale)
    return stale


class Receiver(object):
    """pg_receivewal as a child process; its stderr lines go to ``progress``."""

    def __init__(self, tool, cp, spool, slot, synchronous, progress):
        self.tool, self.cp, self.spool, self.slot = tool, cp, spool, slot
        self.synchronous, self.progress = synchronous, progress
        self.proc = None
        self.tail = []
        self._env = None
        self._reader = None
        self.from_spool = False

    def argv(self):
        argv = [self.tool, "--directory", self.spool, "--slot", self.slot, "--no-loop", "--no-password",
                "--verbose", "--status-interval", "1"]
        if self.synchronous:
            argv.append("--synchronous")
        return argv

    def create_slot(self):
        with ToolEnv(self.cp, "postgres") as env:
            res = subprocess.run([self.tool, "--create-slot", "--if-not-exists", "--slot", self.slot,
                                  "--no-password"], env=dict(os.environ, **env.env), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, check=False, timeout=120)
        if res.returncode != 0:
            raise ToolError("pg_receivewal could not create the replication slot %s on %s: %s" % (
                self.slot, describe(self.cp), res.stderr.decode("utf-8", "replace").strip()[-1000:]),
                "The role needs the REPLICATION attribute and a 'replication' line in pg_hba.conf; "
                "max_replication_slots must leave a slot free")

    def start(self):
        self._env = ToolEnv(self.cp, "postgres").__enter__()
        self.tail = []
        # pg_receivewal starts where the spool ends or, with nothing there, at the slot's restart_lsn
        self.from_spool = any(SEGMENT_RE.match(n[:24]) for n in os.listdir(self.spool))
        # the name physical backups look for (pg/backup_physical.py)
        env = dict(os.environ, **self._env.env)
        env["PGAPPNAME"] = STREAM_APP_NAME
        self.proc = subprocess.Popen(self.argv(), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, name="pg_receivewal-stderr", daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail = (self.tail + [line])[-20:]
            self.progress(line)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM: pg_receivewal flushes what it received and exits."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self._env.__exit__(None, None, None)
        rc, self.proc = self.proc.returncode, None
        return rc


class Streamer(object):
    def __init__(self, storage, spool, level, progress, rpo=None, recipients=None):
        self.storage, self.spool, self.level, self.progress = storage, spool, level, progress
        self.recipients = recipients  # age (core.crypto): segments and partials encrypted as wal-push does
        self.rpo = rpo or RpoWatch()
        self.pushed = 0
        self.reported = 0  # of pushed, how many the metrics counted
        self.partials = 0
        self.prune_refused = False
        self.last_segment = None
        self.last_segment_time = None
        self.last_partial = None  # (segment, end)
        self.last_partial_time = None
        self.gap = None
        # set when the stream may not follow the archive (a new slot, WAL the
        # server recycled): the next segment received is checked, then cleared
        self.check_gap_next = False

    def completed(self):
        names = []
        for n in os.listdir(self.spool):
            if SEGMENT_RE.match(n) or HISTORY_RE.match(n):
                names.append(n)
        # history files first: a segment of a new timeline needs its history
        return sorted(names, key=lambda n: (not HISTORY_RE.match(n), n))

    def check_gap(self, first):
        """The first segment received after the slot was created must follow
        the archive's newest one on its timeline."""
        self.check_gap_next = False
        archived = list_timeline(self.storage, timeline_of(first), streamed=True)
        if not archived:
            return
        newest = archived[-1]
        first_no, newest_no = segment_number(first), segment_number(newest)
        if first_no > newest_no + 1:
            self.gap = (newest, first)
            self.progress("ERROR: WAL gap in the archive %s: it ends with %s, the stream starts at %s; the server "
                          "recycled WAL nobody received (the replication slot was new). Take a new base backup: "
                          "recovery cannot cross the gap" % (self.storage.describe(), newest, first))

    def prune(self, segment, keep_end=None):
        """prune_partials, unless the credentials may not delete (a backup
        host's, the storage contract): then said once and not tried again;
        the superseded partials stay, ignored by wal-fetch once a newer one
        or the full segment is stored, until rotation prunes the WAL."""
        if self.prune_refused:
            return
        try:
            prune_partials(self.storage, segment, keep_end=keep_end)
        except StorageError as e:
            if (e.details or {}).get("reason") != DELETE_DENIED:
                raise
            self.prune_refused = True
            self.progress("WARNING: %s; superseded streamed partials stay in the archive until rotation prunes the "
                          "WAL (give wal-stream credentials that may delete under wal/ to remove them now)" % e.message)

    def push_completed(self):
        for name in self.completed():
            path = os.path.join(self.spool, name)
            if self.check_gap_next and classify(name) == "segment":
                self.check_gap(name)
            result = push_file(self.storage, path, name, self.level, recipients=self.recipients)
            if classify(name) == "segment":
                self.prune(name)
                self.last_segment, self.last_segment_time = name, time.time()
                self.rpo.segment_stored(name)
            os.unlink(path)
            self.pushed += 1
            self.progress("archived %s (%s)" % (name, result["status"]))

    def upload_partial(self):
        partial = [n for n in os.listdir(self.spool) if n.endswith(PARTIAL_SUFFIX)]
        for n in sorted(partial):
            segment = n[:-len(PARTIAL_SUFFIX)]
            if not SEGMENT_RE.match(segment):
                continue
            try:
                with open(os.path.join(self.spool, n), "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                continue  # completed meanwhile: pushed on the next round
            end = _end_of_data(data)
            if self.last_partial == (segment, end):
                self.rpo.partial_covered(segment)  # what is stored is what the file holds
                continue
            stored = push_partial(self.storage, segment, data, self.level, self.recipients)
            if stored is None:
                continue
            self.prune(segment, keep_end=stored)
            self.last_partial, self.last_partial_time = (segment, stored), time.time()
            self.partials += 1
            self.rpo.partial_covered(segment)


class RpoWatch(object):
    """The archive's position against the server's: ``lag_bytes`` and
    ``unarchived_seconds`` (how long the oldest WAL not yet in the archive
    has been flushed on the server, to the resolution of the samples)."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.archived = None  # LSN up to which the archive is proven to hold WAL
        self.receiver_written = None  # pg_receivewal's write position, last sample
        self.server = None  # the server's flushed WAL, last sample
        self.pending = []  # (time first seen, server LSN) not archived yet, oldest first

    def sample(self, server_lsn, receiver_written):
        """A reading of the server: its flushed position and what the
        archiver's pg_receivewal reported written (None: not connected)."""
        now = self.clock()
        if server_lsn is not None:
            self.server = server_lsn
            if self.archived is not None and server_lsn > self.archived and (
                    not self.pending or server_lsn > self.pending[-1][1]):
                self.pending.append((now, server_lsn))
        if receiver_written is not None:
            self.receiver_written = receiver_written

    def stored(self, lsn):
        """The archive holds WAL up to ``lsn``."""
        if self.archived is None or lsn > self.archived:
            self.archived = lsn
            if self.server is not None and self.server > lsn and not self.pending:
                # the server was ahead already when the archive first knew its place
                self.pending.append((self.clock(), self.server))
        self.pending = [(t, s) for t, s in self.pending if s > self.archived]

    def partial_covered(self, segment):
        """A streamed partial of ``segment`` was stored (or already was) from a
        spool file read after the last sample: it holds at least what
        pg_receivewal had reported written, within that segment."""
        if self.receiver_written is None:
            return
        start = segment_number(segment) * SEGMENT_SIZE
        end = start + SEGMENT_SIZE
        if self.receiver_written > start:
            self.stored(min(self.receiver_written, end))

    def segment_stored(self, segment):
        self.stored((segment_number(segment) + 1) * SEGMENT_SIZE)

    def values(self):
        if self.archived is None or self.server is None:
            return {}
        age = self.clock() - self.pending[0][0] if self.pending else 0.0
        return {"drkit_wal_stream_archive_lag_bytes": max(0, self.server - self.archived),
                "drkit_wal_stream_unarchived_seconds": round(max(0.0, age), 3)}


def _slot_facts(cp, dbname, slot):
    """(exists, retained bytes, server's flushed LSN, the slot's receiver's
    write LSN) of the slot; what is unknown is None."""
    try:
        with connect(cp, dbname, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() - s.restart_lsn END, "
                        "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn() - '0/0' END, "
                        "r.write_lsn - '0/0' FROM pg_replication_slots s "
                        "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = %s", (slot,))
            row = cur.fetchone()
    except DrkitError:
        return None, None, None, None
    if row is None:
        return False, None, None, None
    return (True,) + tuple(None if v is None else int(v) for v in row)


def _advance_slot(cp, dbname, slot, progress):
    try:
        with connect(cp, dbname, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_flush_lsn())", (slot,))
            progress("warning: the WAL at the replication slot %s's position is gone from the server; moved the "
                     "slot to the server's position %s" % (slot, cur.fetchone()[1]))
    except Exception as e:  # pylint: disable=broad-except
        # the next restart tries again; an error here must not stop the archiver
        progress("warning: could not move the replication slot %s: %s" % (slot, e))


def _server_version(cp, dbname):
    with connect(cp, dbname, autocommit=True) as conn:
        return server_facts(conn)["server_version_num"]


def write_metrics(p, streamer, up, retained):
    if not p["metrics_dir"]:
        return
    # a counter is added to in the file: only what is new since the last write
    values = {"drkit_wal_stream_up": 1 if up else 0, "drkit_wal_stream_gap": 1 if streamer.gap else 0,
              "drkit_wal_stream_segments_archived_total": streamer.pushed - streamer.reported}
    if streamer.last_segment_time:
        values["drkit_wal_stream_last_segment_timestamp_seconds"] = streamer.last_segment_time
    newest = max(t for t in (streamer.last_segment_time, streamer.last_partial_time, 0) if t is not None)
    if newest:
        values["drkit_wal_stream_last_archived_timestamp_seconds"] = newest
    if retained is not None:
        values["drkit_wal_stream_slot_retained_bytes"] = retained
    values.update(streamer.rpo.values())
    values["drkit_wal_stream_updated_timestamp_seconds"] = time.time()
    try:
        metrics.update_textfile(p["metrics_dir"], p["job_name"] or "wal_stream", values,
                                labels={"kind": "pg_wal", "slot": p["slot_name"]})
        streamer.reported = streamer.pushed
    except DrkitError as e:
        streamer.progress("warning: %s" % e)


def wal_stream(params, progress=None):
    """Engine entry point of ``drkit wal-stream``: runs until SIGTERM (or
    ``stop_after``); returns (changed, result)."""
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    spool = p["spool_dir"]
    if not spool:
        raise ConfigError("spool_dir is required", "Give the archiver a directory of its own (--spool-dir), on a "
                          "disk with room for the WAL of an outage of the storage")
    recipients = crypto.load_recipients(p["encryption_recipients"])
    storage = open_storage(p["storage_url"], **storage_options(p))
    storage.check_writable()
    os.makedirs(spool, 0o700, exist_ok=True)
    cp = conn_params(p)
    dbname = p["maintenance_db"]
    tool = find_tool("pg_receivewal", _server_version(cp, dbname), p["pg_bin_dir"])
    receiver = Receiver(tool, cp, spool, p["slot_name"], p["synchronous"], progress)
    existed = _slot_facts(cp, dbname, p["slot_name"])[0]
    if not existed:
        receiver.create_slot()
        progress("created the replication slot %s on %s" % (p["slot_name"], describe(cp)))
    streamer = Streamer(storage, spool, p["compression_level"], progress, recipients=recipients)

    def observe():
        """Read the slot and the server's positions; returns the retained bytes."""
        _exists, retained, server_lsn, written = _slot_facts(cp, dbname, p["slot_name"])
        streamer.rpo.sample(server_lsn, written)
        return retained
    streamer.check_gap_next = not existed and not streamer.completed()
    deadline = time.time() + p["stop_after"] if p["stop_after"] is not None else None
    backoff = 1.0
    next_partial = time.time() + p["partial_interval"]
    next_metrics = 0.0
    restarts = 0
    stopped_by = "stop_after"
    t0 = time.time()
    try:
        while deadline is None or time.time() < deadline:
            if not receiver.alive():
                if receiver.proc is not None:
                    rc = receiver.stop()
                    restarts += 1
                    progress("pg_receivewal exited (%s): %s; restarting in %.0f s" % (
                        rc, "; ".join(receiver.tail[-3:]) or "no message", backoff))
                    if any("has already been removed" in line for line in receiver.tail):
                        # The server recycled WAL the spool's position needs (the
                        # slot was dropped or lost): what the spool holds goes to
                        # the archive, then streaming starts where the server is,
                        # and the gap check says what is missing.
                        streamer.push_completed()
                        streamer.upload_partial()
                        for n in os.listdir(spool):
                            if n.endswith(PARTIAL_SUFFIX):
                                os.unlink(os.path.join(spool, n))
                        streamer.check_gap_next = True
                        if not receiver.from_spool:
                            # It started at the slot's restart_lsn, and the server no longer
                            # has that WAL: every restart would ask for it again. Moving the
                            # slot to where the server is loses nothing more (the WAL is gone);
                            # the gap check reports what the archive lacks.
                            _advance_slot(cp, dbname, p["slot_name"], progress)
                    write_metrics(p, streamer, False, None)
                    time.sleep(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
                receiver.start()
            elif backoff > 1.0 and streamer.pushed:
                backoff = 1.0
            streamer.push_completed()
            now = time.time()
            if now >= next_partial:
                observe()  # sampled before the spool is read: what it proves stored (RpoWatch)
                streamer.upload_partial()
                next_partial = now + p["partial_interval"]
            if now >= next_metrics:
                retained = observe()
                write_metrics(p, streamer, receiver.alive(), retained)
                next_metrics = now + METRICS_INTERVAL
            time.sleep(POLL)
    except Terminated:
        stopped_by = "SIGTERM"
    finally:
        receiver.stop()
    # what pg_receivewal flushed before it stopped
    retained = observe()
    streamer.push_completed()
    streamer.upload_partial()
    write_metrics(p, streamer, False, retained)
    result = {"changed": streamer.pushed > 0 or streamer.partials > 0, "segments_archived": streamer.pushed,
              "partials_uploaded": streamer.partials, "last_segment": streamer.last_segment,
              "last_partial": None if streamer.last_partial is None else list(streamer.last_partial),
              "restarts": restarts, "stopped_by": stopped_by, "slot": p["slot_name"],
              "gap": None if streamer.gap is None else list(streamer.gap),
              "seconds": round(time.time() - t0, 3), "storage": storage.describe()}
    result["msg"] = "streamed %d segment(s) and %d partial upload(s) into %s; stopped by %s" % (
        streamer.pushed, streamer.partials, storage.describe(), stopped_by)
    if streamer.gap:
        raise ToolError("WAL gap in the archive %s between %s and %s" % (
            storage.describe(), streamer.gap[0], streamer.gap[1]),
            "Recovery cannot cross it: take a new base backup now", details=result)
    return result["changed"], result
