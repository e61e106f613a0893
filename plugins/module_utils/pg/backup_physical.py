# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical PostgreSQL backups (base backups for point-in-time recovery).

``pg_basebackup --pgdata=- --format=tar --wal-method=none`` writes the
cluster as one tar stream on stdout (with PostgreSQL's own backup_manifest
injected at its end); the stream goes through the pipeline (zstd, sha256)
straight into storage, so no full-size local copy is ever made.

The WAL that makes the copy consistent is not in the tar: it comes from the
WAL archive (``drkit wal-push`` as archive_command, see wal.py).  So the
backup is complete -- and its manifest written -- only once every segment
from the start to the stop LSN is in the archive, within ``wal_wait_timeout``
seconds (WaitTimeout otherwise, and no manifest).

While the stream passes, a small tar follower (TarTap) captures
backup_label, backup_manifest, global/pg_control and PG_VERSION, so the
facts recorded in the manifest (start/stop LSN, timeline, WAL segments,
system identifier) are read from the backup itself.

Tablespaces: pg_basebackup can write only one tablespace to stdout, so a
cluster with user tablespaces is refused with a clear message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import json
import os
import re
import socket
import struct
import threading
import time

from ..core.crypto import load_recipients
from ..core.errors import ConfigError, IntegrityError, WaitTimeout
from ..core.process import LocalRunner, tool_version
from ..core.signing import signer_for
from ..core.stream import compression_settings
from ..core.tar import TarTap, _TapReader
from ..repo import manifest as mf
from ..repo.session import BackupJob
from ..repo.wal_layout import archive_system_identifier, backup_segments, claim_archive, lsn_segment
from ..storage.factory import open_storage, storage_options
from .client import (
    STREAM_APP_NAME,
    ToolEnv,
    check_tool_result,
    conn_params,
    connect,
    find_tool,
    server_facts,
    size_estimate,
)
from .wal_segments import wait_for_segments

KIND = "pg_physical"
ARTIFACT = "base.tar.zst"
PG_MANIFEST_ARTIFACT = "backup_manifest.zst"
CAPTURE = ("backup_label", "backup_manifest", "global/pg_control", "PG_VERSION", "tablespace_map")

FACTS_SQL = """
SELECT current_setting('wal_level'), current_setting('archive_mode'), current_setting('archive_command'),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))
"""
# An active slot of drkit's streaming archiver (pg/wal_stream.py sets this
# application_name): WAL reaches the archive without archive_command.
STREAM_SQL = """
SELECT s.slot_name FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_type = 'physical' AND r.application_name = %s ORDER BY 1 LIMIT 1
"""


# --------------------------------------------------------------------------
# facts from the backup itself


def parse_backup_label(text):
    facts = {}
    m = re.search(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", text, re.M)
    if not m:
        raise IntegrityError("backup_label has no START WAL LOCATION: %r" % text[:200])
    facts["start_lsn"], facts["wal_start_segment"] = m.group(1), m.group(2)
    m = re.search(r"^CHECKPOINT LOCATION: ([0-9A-F]+/[0-9A-F]+)", text, re.M)
    if m:
        facts["checkpoint_lsn"] = m.group(1)
    m = re.search(r"^START TIMELINE: (\d+)", text, re.M)
    facts["timeline"] = int(m.group(1)) if m else int(facts["wal_start_segment"][:8], 16)
    m = re.search(r"^START TIME: (.+)$", text, re.M)
    if m:
        facts["label_start_time"] = m.group(1).strip()
    return facts


def parse_pg_manifest(data):
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError("PostgreSQL's backup_manifest in the stream is not valid JSON: %s" % e)
    ranges = obj.get("WAL-Ranges") or []
    if not ranges:
        raise IntegrityError("PostgreSQL's backup_manifest has no WAL-Ranges")
    return {"wal_ranges": ranges, "checksum": obj.get("Manifest-Checksum"),
            "files": len(obj.get("Files") or []), "version": obj.get("PostgreSQL-Backup-Manifest-Version")}


def system_identifier_of_control(data):
    if len(data) < 8:
        raise IntegrityError("global/pg_control in the backup is too short")
    return str(struct.unpack_from("<Q", data)[0])


# --------------------------------------------------------------------------
# watching the server's wait for the archive


class _ArchiveWatch(threading.Thread):
    """pg_basebackup --wal-method=none makes the server wait, without a time
    limit, until the backup's last WAL segment is archived.  This thread
    watches pg_stat_progress_basebackup (visible to the backup's own role)
    for our walsender; once it has been "waiting for wal archiving to
    finish" for ``timeout`` seconds it cancels the backup (the walsender
    through pg_terminate_backend, and pg_basebackup) and records why, with
    pg_stat_archiver's view.  If the view cannot be read, the end of the data
    part of the stream (global/pg_control is sent last) starts the clock."""

    PHASE = "waiting for wal archiving to finish"

    def __init__(self, cp, handle, app_name, timeout):
        super(_ArchiveWatch, self).__init__()
        self.daemon = True
        self.cp, self.handle, self.app_name, self.timeout = cp, handle, app_name, float(timeout)
        self.waiting_since = None
        self.timed_out = None
        self._stop_event = threading.Event()

    def data_done(self, name):
        if name == "global/pg_control" and self.waiting_since is None:
            self.waiting_since = time.time()

    def stop(self):
        self._stop_event.set()

    def _cancel(self, cur):
        # timed_out is set before anything is cancelled: pg_basebackup exits
        # the moment its walsender does, and finished() must see why.
        self.timed_out = ""
        try:
            cur.execute("SELECT last_archived_wal, last_failed_wal, last_failed_time, failed_count "
                        "FROM pg_stat_archiver")
            row = cur.fetchone()
            if row:
                self.timed_out = " (pg_stat_archiver: last archived %s, last failed %s at %s, %s failures)" % row
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s AND backend_type = 'walsender'", (self.app_name,))
        except Exception:  # pylint: disable=broad-except
            pass
        self.handle.terminate()

    def run(self):
        conn = None
        try:
            conn = connect(self.cp, "postgres", autocommit=True)
            cur = conn.cursor()
        except Exception:  # pylint: disable=broad-except
            cur = None
        try:
            while not self._stop_event.wait(0.25):
                if self.handle.poll() is not None:
                    return
                if cur is not None and self.waiting_since is None:
                    try:
                        cur.execute("SELECT p.phase FROM pg_stat_progress_basebackup p "
                                    "JOIN pg_stat_activity a ON a.pid = p.pid WHERE a.application_name = %s",
                                    (self.app_name,))
                        row = cur.fetchone()
                        if row and row[0] == self.PHASE:
                            self.waiting_since = time.time()
                    except Exception:  # pylint: disable=broad-except
                        cur = None
                if self.waiting_since is not None and time.time() - self.waiting_since >= self.timeout:
                    if cur is None:
                        try:
                            conn = conn or connect(self.cp, "postgres", autocommit=True)
                            cur = conn.cursor()
                        except Exception:  # pylint: disable=broad-except
                            self.timed_out = ""
                            self.handle.terminate()
                            return
                    self._cancel(cur)
                    return
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass


# --------------------------------------------------------------------------
# the backup


def _server_state(conn):
    facts = server_facts(conn)
    with conn.cursor() as cur:
        cur.execute(FACTS_SQL)
        wal_level, archive_mode, archive_command, seg_size, tablespaces = cur.fetchone()
    conn.rollback()
    sysid = None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT system_identifier::text FROM pg_control_system()")
            sysid = cur.fetchone()[0]
    except Exception:  # pylint: disable=broad-except
        conn.rollback()  # not allowed for this role: read it from the backup's pg_control instead
    stream_slot = None
    try:
        with conn.cursor() as cur:
            cur.execute(STREAM_SQL, (STREAM_APP_NAME,))
            row = cur.fetchone()
            stream_slot = row[0] if row else None
    except Exception:  # pylint: disable=broad-except
        conn.rollback()  # pg_stat_replication hides other roles' sessions from unprivileged ones
    facts.update(wal_level=wal_level, archive_mode=archive_mode, archive_command=archive_command,
                 wal_segment_size=int(seg_size), tablespaces=int(tablespaces), system_identifier=sysid,
                 stream_slot=stream_slot)
    return facts


def preflight(facts):
    if facts["wal_level"] == "minimal":
        raise ConfigError("wal_level is minimal on the server: base backups and point-in-time recovery need "
                          "replica (or logical)",
                          "Apply the drkit.backup.postgresql_wal_archive role (sets wal_level=replica; restart)")
    if facts["archive_mode"] not in ("on", "always") and not facts.get("stream_slot"):
        raise ConfigError("archive_mode is %s on the server: a physical backup is only complete with its WAL "
                          "in the archive" % facts["archive_mode"],
                          "Apply the drkit.backup.postgresql_wal_archive role (archive_mode=on, archive_command "
                          "= drkit wal-push to the same storage_url), or run drkit wal-stream into it")
    if facts["in_recovery"] and facts["archive_mode"] != "always":
        raise ConfigError("The server is a standby with archive_mode=%s: its WAL is not archived from here"
                          % facts["archive_mode"], "Back up the primary, or set archive_mode=always on the standby")
    if facts["tablespaces"]:
        raise ConfigError("The cluster has %d user tablespace(s): pg_basebackup can stream only one tablespace "
                          "to stdout" % facts["tablespaces"],
                          "Move the tables to pg_default, or back it up with mode: logical")


def pg_backup_physical(p, check_mode=False, runner=None, progress=None):
    """pg_backup with mode: physical; ``p``: the options resolved by
    pg.backup.pg_backup. Returns (changed, result dict)."""
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    wal_timeout, checkpoint = p["wal_wait_timeout"], p["checkpoint"]
    cp = conn_params(p)
    storage = open_storage(p["storage_url"], **storage_options(p))
    signer = signer_for(p.get("signing_key_file"))  # a bad key fails check mode too
    job = BackupJob(storage, KIND, p["metrics_dir"], p["job_name"] or "pg_physical_%s" % cp["port"], progress,
                    signer=signer)
    compression = compression_settings(p)
    recipients = load_recipients(p.get("encryption_recipients"))  # a bad key fails check mode too
    dbname = p["database"] or p["maintenance_db"]

    if check_mode:
        conn = connect(cp, dbname)
        try:
            facts = _server_state(conn)
        finally:
            conn.close()
        preflight(facts)
        find_tool("pg_basebackup", facts["server_version_num"], p["pg_bin_dir"])
        archive_sysid = archive_system_identifier(storage)
        if facts["system_identifier"] and archive_sysid and archive_sysid != facts["system_identifier"]:
            claim_archive(storage, facts["system_identifier"], "This cluster")  # raises the clear error
        job.check_storage()
        return job.planned("Would take a base backup of PostgreSQL %s at %s:%s to %s" % (
            facts["server_version"], cp["login_host"], cp["port"], storage.describe()))

    with job:
        conn = job.closing(connect(cp, dbname, autocommit=True))
        facts = _server_state(conn)
        preflight(facts)
        if facts["system_identifier"]:
            claim_archive(storage, facts["system_identifier"], "This cluster")
        pg_basebackup = find_tool("pg_basebackup", facts["server_version_num"], p["pg_bin_dir"])
        cluster_size = size_estimate(conn, "cluster")  # pg_basebackup to stdout gives no total
        seg_size = facts["wal_segment_size"]
        source = {"type": "postgresql", "host": cp["login_host"], "port": cp["port"],
                  "server_version": facts["server_version"], "server_version_num": facts["server_version_num"],
                  "system_identifier": facts["system_identifier"], "client_host": socket.gethostname()}
        tools = {"pg_basebackup": tool_version(runner, pg_basebackup, default="unknown")}
        options = {"mode": "physical", "wal_method": "archive", "checkpoint": checkpoint,
                   "wal_wait_timeout": wal_timeout}
        session = job.session(source, tools=tools, compression=compression, options=options,
                              labels=p["labels"], recipients=recipients)
        with session:
            app_name = "drkit-basebackup-%s" % binascii.hexlify(os.urandom(4)).decode("ascii")
            t0 = time.time()
            with ToolEnv(cp, "postgres") as tenv:
                env = dict(tenv.env, PGAPPNAME=app_name)
                argv = [pg_basebackup, "--no-password", "--pgdata=-", "--format=tar", "--wal-method=none",
                        "--checkpoint=%s" % checkpoint, "--label=drkit %s" % session.backup_id]
                progress("pg_basebackup of %s:%s streaming to %s" % (cp["login_host"], cp["port"],
                                                                     storage.describe()))
                handle = runner.spawn(argv, env=env)
                with handle:
                    watch = _ArchiveWatch(cp, handle, app_name, wal_timeout)
                    tap = TarTap(CAPTURE, on_member=watch.data_done)
                    watch.start()

                    def finished():
                        rc = handle.wait()
                        watch.stop()
                        watch.join(30)  # a cancel in progress finishes (and says so) first
                        if watch.timed_out is not None:
                            raise WaitTimeout(
                                "The server waited more than %s s for the WAL of this base backup to be archived%s"
                                % (wal_timeout, watch.timed_out),
                                "archive_command is failing or too slow: check the server log and "
                                "pg_stat_archiver; nothing was recorded as a backup")
                        check_tool_result("pg_basebackup", rc, handle.stderr_text(), "taking the base backup")
                        if not tap.ended:
                            raise IntegrityError("pg_basebackup's tar stream ended without an end-of-archive marker")
                    try:
                        session.store_stream(ARTIFACT, _TapReader(handle.stdout, tap), before_commit=finished,
                                             total=cluster_size, estimate=True,
                                             content="pg_basebackup tar (base.tar, backup_manifest included)")
                    finally:
                        watch.stop()
            stop_time = mf.utcnow()
            stream_seconds = time.time() - t0
            facts.update(_facts_from_stream(tap, seg_size))
            if facts["system_identifier"] and facts["system_identifier"] != facts["backup_system_identifier"]:
                raise IntegrityError("The backup's pg_control names cluster %s, the server said %s" % (
                    facts["backup_system_identifier"], facts["system_identifier"]))
            claim_archive(storage, facts["backup_system_identifier"], "This cluster")
            with conn.cursor() as cur:
                cur.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
                next_xid = int(cur.fetchone()[0])
            session.store_bytes(PG_MANIFEST_ARTIFACT, tap.captured["backup_manifest"], compress=True,
                                content="PostgreSQL backup_manifest (also inside the tar)")

            needed = backup_segments({"pg_manifest": parse_pg_manifest(tap.captured["backup_manifest"]),
                                      "wal_segment_size": seg_size})
            remaining = max(0.0, wal_timeout - max(0.0, time.time() - (t0 + stream_seconds)))
            progress("waiting for WAL %s..%s in the archive" % (
                facts["wal_start_segment"], facts["wal_stop_segment"]))
            wait_for_segments(storage, needed, remaining, progress=progress,
                              what="base backup %s" % session.backup_id)

            if session.encrypted:
                # no identity on this host: the stored bytes are checked here, the tar
                # by a verify at level structure or restore where the identity is
                progress("re-reading %s (encrypted: size and sha256 only)" % ARTIFACT)
                session.reread(ARTIFACT)
                check_tap = tap
            else:
                progress("re-reading %s and checking the tar structure" % ARTIFACT)
                check_tap = TarTap(CAPTURE)
                session.reread(ARTIFACT, consumer=check_tap.feed)
            if (not check_tap.ended or check_tap.members != tap.members
                    or check_tap.captured.get("backup_label") != tap.captured.get("backup_label")):
                raise IntegrityError("The stored %s does not read back as the tar that was streamed "
                                     "(%d members, end marker %s)" % (ARTIFACT, check_tap.members, check_tap.ended))
            pgm = parse_pg_manifest(tap.captured["backup_manifest"])
            data = {
                "start_lsn": facts["start_lsn"], "stop_lsn": facts["stop_lsn"],
                "timeline": facts["timeline"], "stop_timeline": facts["stop_timeline"],
                "wal_start_segment": facts["wal_start_segment"], "wal_stop_segment": facts["wal_stop_segment"],
                "wal_segments": len(needed), "wal_segment_size": seg_size,
                "system_identifier": facts["backup_system_identifier"],
                "server_version": facts["server_version"], "server_version_num": facts["server_version_num"],
                "pg_version": tap.captured.get("PG_VERSION", b"").decode("ascii", "replace").strip(),
                "checkpoint_lsn": facts.get("checkpoint_lsn"),
                "backup_label": tap.captured["backup_label"].decode("utf-8", "replace"),
                "stop_time": mf.isoformat(stop_time), "next_xid": next_xid,
                "stream_seconds": round(stream_seconds, 3),
                "tar": {"members": tap.members, "data_size": tap.data_size},
                "pg_manifest": {"artifact": PG_MANIFEST_ARTIFACT, "checksum": pgm["checksum"],
                                "files": pgm["files"], "wal_ranges": pgm["wal_ranges"]},
            }
            session.commit(data)
    result = session.result()
    result["msg"] = "Base backup of %s:%s stored in %s as %s (WAL %s..%s archived)" % (
        cp["login_host"], cp["port"], storage.describe(), session.backup_id,
        data["wal_start_segment"], data["wal_stop_segment"])
    return True, result


def _facts_from_stream(tap, seg_size):
    for name in ("backup_label", "backup_manifest", "global/pg_control"):
        if name not in tap.captured:
            raise IntegrityError("The base backup stream holds no %s" % name,
                                 "pg_basebackup's output is incomplete; nothing was recorded as a backup")
    facts = parse_backup_label(tap.captured["backup_label"].decode("utf-8", "replace"))
    pgm = parse_pg_manifest(tap.captured["backup_manifest"])
    last = max(pgm["wal_ranges"], key=lambda r: int(r["Timeline"]))  # PostgreSQL lists the newest first
    facts["stop_lsn"] = last["End-LSN"]
    facts["stop_timeline"] = int(last["Timeline"])
    facts["wal_stop_segment"] = lsn_segment(facts["stop_lsn"], facts["stop_timeline"], seg_size, previous=True)
    facts["backup_system_identifier"] = system_identifier_of_control(tap.captured["global/pg_control"])
    return facts
