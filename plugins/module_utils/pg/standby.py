# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hot standby built from the repository (``drkit standby`` /
drkit.backup.pg_standby).

1. The newest physical base backup of the repository (or ``backup_id``) is
   streamed into a NEW data directory (the checks and the interrupted-run
   marker are pitr's: pitr_guard.py, base_restore.py).
2. The standby's settings go into a drkit block of postgresql.auto.conf,
   with standby.signal: ``restore_command = drkit wal-fetch`` (the archive
   fills the gap between the backup and the primary's oldest WAL),
   ``primary_conninfo`` and ``primary_slot_name`` (a physical slot on the
   primary, created when missing), ``recovery_target_timeline = latest``
   (it follows a promotion upstream). They must last across restarts, so
   they are in the configuration, unlike pitr's one-off recovery settings.
3. The replication password is in a passfile (``passfile``, default
   ``<data_directory>.pgpass``: beside the data directory, never in it,
   so no base backup of the standby carries it; 0600, owned by the
   server's OS user). primary_conninfo names the file, never the password.
4. It starts the server and waits until it has replayed from the archive
   and streams (pg_stat_wal_receiver.status = streaming) and its replay
   caught up with what the primary had flushed when streaming began.

The result reports replication lag (``lag``: bytes behind the primary's
flush position, replay_lag from pg_stat_replication, last replayed
transaction time). Re-running against a running standby built by drkit
changes nothing and reports the lag again.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import time

from ..core.crypto import Keyring
from ..core.errors import ConfigError, DrkitError, SafetyError, SourceError, ToolError, WaitTimeout
from ..core.options import Option, Options, resolve
from ..core.osutil import atomic_write, check_traversable
from ..repo import manifest as mf
from ..repo.wal_layout import parse_lsn
from ..storage.factory import STORAGE, open_storage, storage_options
from .base_restore import empty_dir, require_base_key, restore_base_backup
from .client import CONNECTION, _psycopg, conn_params, connect, pgpass_escape
from .cluster import (
    RECOVERY_PARAMS,
    control_facts,
    default_os_user,
    os_user_ids,
    pidfile_live,
    read_pidfile,
    start_server,
    stop_server,
)
from .fencing import fence, is_fenced, unfence
from .pitr import (
    OPTIONS as PITR_OPTIONS,
    _bin_dir_of,
    _check_port,
    check_identity_readable,
    choose_backup,
    configure_recovery,
    inspect_directory,
    restore_command,
    take_over,
)
from .pitr_guard import MARKER, new_marker, remove_marker, write_marker
from .recovery_target import newest_archive_timeline
from .rewind import check_rewindable, checkpoint_source, run_pg_rewind
from .wal_segments import list_history

LOG_NAME = "drkit-standby.log"
DEFAULT_SLOT = "drkit_standby"
DEFAULT_APP_NAME = "drkit_standby"
STANDBY_MARK = "drkit pg_standby"
_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
_FATAL = re.compile(r"(?:FATAL|PANIC):\s+(.+)$", re.M)
_RESTORED = re.compile(r'LOG:\s+restored log file "([0-9A-F]{24}[^"]*)" from archive')

OPTIONS = Options(
    STORAGE,
    CONNECTION,
    PITR_OPTIONS["backup_id"].but(help="default: the newest complete physical base backup"),
    PITR_OPTIONS["data_directory"],
    Option("standby_port", "int", required=True, min=1, max=65535, flags=("--standby-port",),
           help="port of the standby server"),
    Option("slot_name", "str", default=DEFAULT_SLOT, flags=("--slot-name",),
           help="physical replication slot on the primary (created when missing)"),
    Option("create_slot", "bool", default=True, off_flags=("--no-create-slot",),
           help="create the slot on the primary when it is missing"),
    Option("application_name", "str", default=DEFAULT_APP_NAME, flags=("--application-name",),
           help="the standby's name in the primary's pg_stat_replication"),
    Option("passfile", "path", flags=("--passfile",),
           help="where the replication password goes (0600, the server's OS user); default "
                "<data_directory>.pgpass"),
    PITR_OPTIONS["settings"],
    PITR_OPTIONS["os_user"],
    PITR_OPTIONS["drkit_command"],
    PITR_OPTIONS["wal_config"].but(help="drkit config file (0600, readable by the server's OS user) for "
                                        "restore_command; required with storage options (S3, Azure)"),
    PITR_OPTIONS["prefetch"],
    PITR_OPTIONS["fetch_async"],
    PITR_OPTIONS["encryption_identity_file"],
    Option("timeout", "float", default=900, above=0, flags=("--timeout",),
           help="seconds to wait until the standby streams and has caught up (default 900)"),
    Option("rewind", "bool", default=False, flags=("--rewind",),
           help="data_directory holds the old primary (stopped, fenced by drkit failover): rejoin it as a "
                "standby with pg_rewind (needs wal_log_hints or data checksums) instead of restoring a backup"),
)


def standby_conninfo(params, passfile, dbname=None):
    """libpq's connection string to the primary: the password only through
    ``passfile``."""
    cp = conn_params(params)
    conninfo = "host=%s port=%d user=%s passfile=%s application_name=%s sslmode=%s connect_timeout=%d" % (
        _conninfo_quote(cp["login_host"]), cp["port"], _conninfo_quote(cp["login_user"]),
        _conninfo_quote(passfile), _conninfo_quote(params["application_name"]), cp["ssl_mode"],
        cp["connect_timeout"])
    return conninfo + (" dbname=%s" % _conninfo_quote(dbname) if dbname else "")


def standby_settings(params, passfile, restore_cmd):
    """What keeps the server a standby of this primary, in the order written."""
    conninfo = standby_conninfo(params, passfile)
    return {"primary_conninfo": conninfo, "primary_slot_name": params["slot_name"],
            "restore_command": restore_cmd, "recovery_target_timeline": "latest", "hot_standby": True}


def _conninfo_quote(value):
    value = str(value)
    if value and re.match(r"^[A-Za-z0-9_./-]+$", value):
        return value
    return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")


def write_passfile(path, cp, ids):
    """host:port:replication:user:password, 0600, owned by the server's user."""
    line = "%s:%d:*:%s:%s\n" % (pgpass_escape(cp["login_host"]), cp["port"], pgpass_escape(cp["login_user"]),
                                pgpass_escape(cp.get("login_password") or ""))
    return atomic_write(path, line, mode=0o600, owner=ids and (ids[0], ids[1]))


# --------------------------------------------------------------------------
# the primary's and the standby's view of replication


def ensure_slot(cp, slot, create):
    """(created, facts) of the physical slot on the primary."""
    with connect(cp, "postgres", autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_type, active, restart_lsn::text, wal_status FROM pg_replication_slots "
                        "WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if row:
                if row[0] != "physical":
                    raise ConfigError("Slot %s on the primary is a %s slot, not a physical one" % (slot, row[0]),
                                      "Choose another slot_name")
                if row[1]:
                    raise SafetyError("Slot %s on the primary is in use by another standby or pg_receivewal" % slot,
                                      "Give this standby its own slot_name")
                return False, {"slot": slot, "restart_lsn": row[2], "wal_status": row[3]}
            if not create:
                raise ConfigError("There is no replication slot %s on the primary" % slot,
                                  "Create it (SELECT pg_create_physical_replication_slot('%s', true)) or set "
                                  "create_slot: true" % slot)
            # reserved now: the archive serves what the primary no longer holds
            cur.execute("SELECT lsn::text FROM pg_create_physical_replication_slot(%s, true)", (slot,))
            return True, {"slot": slot, "restart_lsn": cur.fetchone()[0], "wal_status": "reserved"}


def slot_facts(cp, slot):
    """The slot on the primary as standby-check watches it: wal_status,
    retained bytes, safe_wal_size (None when max_slot_wal_keep_size = -1,
    the default: unbounded); None when there is no such slot."""
    with connect(cp, "postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, safe_wal_size, "
            "current_setting('max_slot_wal_keep_size') FROM pg_replication_slots WHERE slot_name = %s",
            (slot,)).fetchone()
    if row is None:
        return None
    return {"slot": slot, "wal_status": row[0], "retained_bytes": max(0, row[1] or 0), "safe_wal_bytes": row[2],
            "max_slot_wal_keep_size": row[3], "bounded": row[3] != "-1"}


def drop_slot(cp, slot):
    """Best effort: the slot this run created, when the standby did not come up."""
    try:
        with connect(cp, "postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot,))
    except (DrkitError, _psycopg().Error):
        pass  # the original error is what the caller must see


def primary_position(cp, application_name=None):
    """The primary's flush LSN, and the replay lag it sees for the standby."""
    with connect(cp, "postgres", autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), pg_current_wal_flush_lsn()::text")
            in_recovery, flush = cur.fetchone()
            if in_recovery:
                raise SourceError("%s:%s is itself in recovery: not a primary" % (cp["login_host"], cp["port"]),
                                  "Point login_host/port at the primary")
            out = {"flush_lsn": flush}
            if application_name:
                cur.execute("SELECT state, sent_lsn::text, replay_lsn::text, "
                            "extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication "
                            "WHERE application_name = %s", (application_name,))
                row = cur.fetchone()
                if row:
                    out.update(state=row[0], sent_lsn=row[1], replay_lsn=row[2], replay_lag_seconds=row[3] or 0.0)
    return out


STANDBY_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
    "pg_last_xact_replay_timestamp(), "
    "(SELECT status FROM pg_stat_wal_receiver), (SELECT flushed_lsn::text FROM pg_stat_wal_receiver), "
    "(SELECT latest_end_lsn::text FROM pg_stat_wal_receiver), (SELECT latest_end_time FROM pg_stat_wal_receiver), "
    "(SELECT last_msg_send_time FROM pg_stat_wal_receiver), "
    "(SELECT last_msg_receipt_time FROM pg_stat_wal_receiver), (SELECT received_tli FROM pg_stat_wal_receiver)")


def standby_status(cp):
    """The standby's own view: receive/replay positions and its WAL receiver.
    Times as ISO 8601 (UTC); None where there is nothing yet."""
    with connect(cp, "postgres", autocommit=True) as conn:
        return standby_status_on(conn)


def standby_status_on(conn):
    """standby_status over an open connection (to poll without reconnecting)."""
    with conn.cursor() as cur:
        cur.execute(STANDBY_SQL)
        row = cur.fetchone()
    keys = ("in_recovery", "receive_lsn", "replay_lsn", "last_replayed_xact_time", "receiver_status",
            "receiver_flushed_lsn", "latest_end_lsn", "latest_end_time", "last_msg_send_time",
            "last_msg_receipt_time", "received_timeline")
    out = dict(zip(keys, row))
    for k in ("last_replayed_xact_time", "latest_end_time", "last_msg_send_time", "last_msg_receipt_time"):
        if out[k] is not None:
            out[k] = mf.isoformat(out[k])
    return out


def lsn_diff(a, b):
    """a - b in bytes for two LSN texts; None if either is missing."""
    if not a or not b:
        return None
    return parse_lsn(a) - parse_lsn(b)


def lag_report(primary, standby):
    """Replication lag in bytes (primary flush - standby replay), seconds
    (pg_stat_replication.replay_lag) and the last replayed commit's time."""
    out = {"replay_lsn": standby.get("replay_lsn"), "receive_lsn": standby.get("receive_lsn"),
           "last_replayed_xact_time": standby.get("last_replayed_xact_time"),
           "receiver_status": standby.get("receiver_status")}
    if primary:
        out["primary_flush_lsn"] = primary.get("flush_lsn")
        out["replay_lag_bytes"] = max(0, lsn_diff(primary.get("flush_lsn"), standby.get("replay_lsn")) or 0)
        out["replay_lag_seconds"] = primary.get("replay_lag_seconds")
    return out


def standby_cp(params):
    """How drkit talks to the local standby: the primary's role and password
    (the standby is a copy of it), on 127.0.0.1 and the standby's port."""
    cp = dict(conn_params(params))
    cp.update(login_host="127.0.0.1", port=params["standby_port"])
    return cp


def wait_streaming(params, deadline, progress, log_file=None):
    """Until the standby streams and has replayed what the primary had
    flushed when it first reported streaming. Returns (standby, primary)
    status. WaitTimeout with the last status otherwise."""
    scp, pcp = standby_cp(params), conn_params(params)
    goal = None
    last = {}
    t0 = time.time()
    said = None
    while True:
        try:
            last = standby_status(scp)
        except SourceError as e:
            last = {"error": str(e)}
        status = last.get("receiver_status")
        if status != said:
            progress("standby: %s" % (status or last.get("error") or "replaying from the archive"))
            said = status
        if status == "streaming":
            if goal is None:
                goal = primary_position(pcp)["flush_lsn"]
            behind = lsn_diff(goal, last.get("replay_lsn"))
            if behind is not None and behind <= 0:
                return last, primary_position(pcp, params["application_name"])
        if time.time() - t0 > 3 and not pidfile_live(params["data_directory"]):
            raise ToolError("The standby server stopped: %s" % (
                " / ".join(_FATAL.findall(_read(log_file))[-3:]) if log_file else "no log"),
                "See %s" % (log_file or "the server log"), details={"standby": last})
        if time.time() > deadline:
            raise WaitTimeout("The standby did not stream and catch up within %s s (last: %s)" % (
                params["timeout"], last), "See %s; raise timeout for a large WAL backlog" % log_file,
                details={"standby": last})
        time.sleep(0.3)


# --------------------------------------------------------------------------
# pg_standby


def _given_storage_options(params):
    """The storage options set to something else than their default: what
    restore_command would need from a config file (none for a directory)."""
    if str(params.get("storage_url") or "").startswith("file://"):
        return {}
    return dict((k, v) for k, v in storage_options(params).items() if v != OPTIONS[k].default)


def is_drkit_standby(data_dir):
    """A data directory drkit made a standby: standby.signal and our block."""
    try:
        with open(os.path.join(data_dir, "postgresql.auto.conf")) as fh:
            text = fh.read()
    except (IOError, OSError):
        return False
    return os.path.exists(os.path.join(data_dir, "standby.signal")) and STANDBY_MARK in text


def pg_standby(params, check_mode=False, runner=None, progress=None):
    """Engine entry point of drkit.backup.pg_standby / ``drkit standby``."""
    progress = progress or (lambda msg: None)
    t_all = time.time()
    params = resolve(OPTIONS, params)
    data_dir = params["data_directory"]
    if not data_dir:
        raise ConfigError("data_directory is required", "Name a new directory for the standby")
    data_dir = params["data_directory"] = os.path.abspath(data_dir)
    port = params["standby_port"]
    if not port:
        raise ConfigError("standby_port is required", "Give a free port for the standby server")
    if not _SLOT_RE.match(params["slot_name"] or ""):
        raise ConfigError("slot_name %r is not a valid slot name" % params["slot_name"],
                          "Use lower-case letters, digits and underscores (at most 63)")
    settings = dict(params["settings"] or {})
    steering = sorted(k for k in settings if k.lower() in RECOVERY_PARAMS)
    if steering:
        raise ConfigError("settings may not set %s: drkit sets the standby's recovery settings itself" % (
            ", ".join(steering)), "Use the login_*, slot_name and storage options")
    if _given_storage_options(params) and not params["wal_config"]:
        raise ConfigError("A standby's restore_command needs a lasting config file for the storage options",
                          "Give wal_config: the 0600 config of the postgresql_wal_archive role (e.g. "
                          "/etc/drkit/wal-archive.yml)")
    passfile = os.path.abspath(params["passfile"] or data_dir.rstrip("/") + ".pgpass")
    if passfile.startswith(data_dir + os.sep):
        raise ConfigError("passfile %s is inside the data directory: every base backup of the standby would "
                          "carry the password" % passfile, "Put it beside the data directory")
    cp = conn_params(params)

    if is_drkit_standby(data_dir):
        return _existing(params, data_dir, check_mode, progress, t_all)
    if params["rewind"]:
        return _rejoin(params, data_dir, passfile, settings, check_mode, progress, t_all)

    storage = open_storage(params["storage_url"], **storage_options(params))
    state, found, old_marker = inspect_directory(data_dir)
    histories = list_history(storage)
    entry = choose_backup(storage, params["backup_id"], "latest", None, newest_archive_timeline(histories),
                          histories)
    keyring = Keyring(params["encryption_identity_file"])
    require_base_key(entry, keyring)  # an encrypted base backup without its identity: before anything is done
    data = entry.manifest["data"]
    version_num = data.get("server_version_num") or entry.manifest["source"].get("server_version_num")
    plan = {"backup_id": entry.backup_id, "data_directory": data_dir, "standby_port": port,
            "primary": "%s:%s" % (cp["login_host"], cp["port"]), "slot_name": params["slot_name"],
            "passfile": passfile, "storage": storage.describe(), "backup_timeline": data["timeline"],
            "backup_stop_lsn": data["stop_lsn"]}
    if check_mode:
        plan.update(changed=True, msg="Would %srestore %s into %s, make it a standby of %s (slot %s, passfile %s, "
                    "restore_command drkit wal-fetch from %s), start it on port %d and wait until it streams" % (
                        "remove %s, then " % found if found else "", entry.backup_id, data_dir, plan["primary"],
                        params["slot_name"], passfile, storage.describe(), port))
        return True, plan

    _check_port(port)
    os_user = default_os_user(params)
    ids = os_user_ids(os_user)
    if ids and ids[0] != os.geteuid():
        check_traversable(data_dir, ids[0], set([ids[1]]))
    check_identity_readable(params["encryption_identity_file"], ids, os_user)
    bin_dir = _bin_dir_of(params, data_dir, version_num)
    slot_created, slot = ensure_slot(cp, params["slot_name"], params["create_slot"])
    if found:
        progress("found %s in %s: stopping and removing it" % (found, data_dir))
        take_over(data_dir, old_marker, bin_dir, ids, progress)
    created_dir = state == "absent"
    if created_dir:
        os.makedirs(data_dir, 0o700)
        if ids:
            os.chown(data_dir, ids[0], ids[1])
    marker = new_marker(tool="drkit standby", backup_id=entry.backup_id, target="standby")
    write_marker(data_dir, marker, ids)
    result = dict(plan, slot_created=slot_created, slot=slot)
    restored = False
    try:
        facts = restore_base_backup(storage, entry, data_dir, ids, progress, skip=[MARKER], keyring=keyring)
        restored = True
        result.update(restore_seconds=facts["seconds"], restored_bytes=facts["bytes"])
        write_passfile(passfile, cp, ids)
        result.update(become_standby(params, data_dir, passfile, settings, ids, bin_dir, "%s %s, %s" % (
            STANDBY_MARK, entry.backup_id, mf.isoformat(mf.utcnow())), progress))
        result.update(duration=round(time.time() - t_all, 3))
        result["msg"] = ("Standby of %s on port %d from %s: replayed %d WAL file(s) from the archive, streaming; "
                         "replay lag %s bytes (restore %.1f s, catch-up %.1f s)" % (
                             plan["primary"], port, entry.backup_id, result["archive_segments_replayed"],
                             result["lag"].get("replay_lag_bytes"), result["restore_seconds"],
                             result["catch_up_seconds"]))
        return True, result
    except BaseException:
        if not restored and created_dir:
            _rmtree(data_dir)
        elif not restored and os.path.isdir(data_dir):
            empty_dir(data_dir)
        elif pidfile_live(data_dir):
            # leave the files for a look, but never a half-made standby running
            stop_server(bin_dir, data_dir, ids, mode="fast", timeout=60)
        if slot_created:
            drop_slot(cp, params["slot_name"])  # an unused slot would hold the primary's WAL forever
        raise


def standby_config(params, data_dir, passfile, settings, ids, header):
    """The standby's settings in a drkit block of postgresql.auto.conf (the
    recovery settings it carried removed) and standby.signal. Returns the
    server settings and the standby settings written."""
    standby = standby_settings(params, passfile, restore_command(params, params["storage_url"],
                                                                 params["wal_config"]))
    server = {"port": params["standby_port"]}
    server.update(settings)
    configure_recovery(data_dir, server, ids, header=header, recovery=standby)
    # a standby, not a one-off recovery
    os.unlink(os.path.join(data_dir, "recovery.signal"))
    atomic_write(os.path.join(data_dir, "standby.signal"), "", owner=ids and (ids[0], ids[1]))
    return server, standby


def become_standby(params, data_dir, passfile, settings, ids, bin_dir, header, progress):
    """Configure ``data_dir`` as a standby of the primary, remove the
    interrupted-run marker, start it and wait until it streams and caught
    up. Returns the facts for the result."""
    server, standby = standby_config(params, data_dir, passfile, settings, ids, header)
    remove_marker(data_dir)
    log_file = _log_file(data_dir, ids)
    progress("starting the standby on port %d (log %s)" % (params["standby_port"], log_file))
    t_start = time.time()
    start_server(bin_dir, data_dir, log_file, ids)
    standby_now, primary = wait_streaming(params, time.time() + params["timeout"], progress, log_file)
    restored_wal = sorted(set(_RESTORED.findall(_read(log_file))))
    return {"settings": server, "standby_settings": dict(standby), "log_file": log_file, "changed": True,
            "started": True, "status": "streaming", "catch_up_seconds": round(time.time() - t_start, 3),
            "archive_segments_replayed": len(restored_wal), "lag": lag_report(primary, standby_now),
            "warnings": slot_warnings(slot_facts(conn_params(params), params["slot_name"]))}


def slot_warnings(facts):
    """What to say about the standby's slot on the primary."""
    if facts is None or facts["bounded"]:
        return []
    return ["max_slot_wal_keep_size is -1 on the primary: if the standby stops, its slot %s makes the primary keep "
            "WAL without limit until its disk is full; bound it (ALTER SYSTEM SET max_slot_wal_keep_size = '50GB', "
            "a reload) and watch drkit_standby_slot_retained_bytes (alert DrkitStandbySlotRetentionHigh)" %
            facts["slot"]]


def _rejoin(params, data_dir, passfile, settings, check_mode, progress, t_all):
    """The old primary in ``data_dir`` rewound with pg_rewind to the new
    primary's timeline and started as its standby (``rewind: true``)."""
    port = params["standby_port"]
    cp = conn_params(params)
    if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        raise ConfigError("%s holds no PostgreSQL data directory: there is no old primary to rewind" % data_dir,
                          "Build the standby from the repository (without rewind)")
    if os.path.exists(os.path.join(data_dir, MARKER)):
        raise SafetyError("%s was left by an interrupted or failed drkit run (%s): pg_rewind cannot be trusted "
                          "on it" % (data_dir, MARKER),
                          "Build the standby from the repository without rewind (it takes the directory over), "
                          "or into a new directory")
    if pidfile_live(data_dir):
        raise SafetyError("The old primary in %s is running: pg_rewind needs it stopped" % data_dir,
                          "Fail over first (drkit failover fences and stops it), or stop it yourself")
    bin_dir = _bin_dir_of(params, data_dir, None)
    facts = control_facts(bin_dir, data_dir)
    prerequisite = check_rewindable(facts, data_dir)
    primary = primary_position(cp)  # a primary, not a standby, answers there
    plan = {"data_directory": data_dir, "standby_port": port, "primary": "%s:%s" % (cp["login_host"], cp["port"]),
            "slot_name": params["slot_name"], "passfile": passfile, "rewind": True,
            "old_timeline": int(facts.get("Latest checkpoint's TimeLineID") or 0),
            "old_state": facts.get("Database cluster state"), "fenced": is_fenced(data_dir)}
    plan.update(prerequisite)
    if check_mode:
        plan.update(changed=True, msg="Would rewind the old primary in %s with pg_rewind from %s (primary flush "
                    "%s), make it a standby (slot %s, passfile %s), start it on port %d and wait until it "
                    "streams" % (data_dir, plan["primary"], primary["flush_lsn"], params["slot_name"], passfile,
                                 port))
        return True, plan

    _check_port(port)
    os_user = default_os_user(params)
    ids = os_user_ids(os_user)
    check_identity_readable(params["encryption_identity_file"], ids, os_user)  # an encrypted archive's WAL
    # before the data directory is touched: a role that may not CHECKPOINT
    # fails here and leaves the old primary as it was (fenced)
    t0 = time.time()
    checkpoint_source(cp)
    checkpoint_seconds = time.time() - t0
    slot_created, slot = ensure_slot(cp, params["slot_name"], params["create_slot"])
    result = dict(plan, slot_created=slot_created, slot=slot)
    header = "%s rewind of the old primary, %s" % (STANDBY_MARK, mf.isoformat(mf.utcnow()))
    try:
        write_marker(data_dir, new_marker(tool="drkit standby --rewind", target="standby"), ids)
        write_passfile(passfile, cp, ids)
        result["unfenced"] = unfence(data_dir, ids)
        # restore_command (drkit wal-fetch) for --restore-target-wal; pg_rewind
        # itself may run crash recovery in single-user mode: no signal file then
        standby_config(params, data_dir, passfile, settings, ids, header)
        os.unlink(os.path.join(data_dir, "standby.signal"))
        progress("rewinding %s from %s with pg_rewind" % (data_dir, plan["primary"]))
        t0 = time.time()
        result.update(run_pg_rewind(bin_dir, data_dir, standby_conninfo(params, passfile, "postgres"), ids,
                                    params["timeout"]))
        result["rewind_seconds"] = round(checkpoint_seconds + time.time() - t0, 3)
        # pg_rewind copied the new primary's configuration files over ours
        result.update(become_standby(params, data_dir, passfile, settings, ids, bin_dir, header, progress))
    except BaseException as e:
        if pidfile_live(data_dir):
            stop_server(bin_dir, data_dir, ids, mode="fast", timeout=60)
        if slot_created:
            drop_slot(cp, params["slot_name"])
        _refence_after_failed_rejoin(data_dir, bin_dir, ids, result.get("unfenced"), e, progress)
        raise
    result.update(duration=round(time.time() - t_all, 3))
    result["msg"] = ("Old primary in %s rejoined as a standby of %s on port %d: %s, replayed %d WAL file(s) from the "
                     "archive, streaming; replay lag %s bytes (pg_rewind %.1f s, catch-up %.1f s)" % (
                         data_dir, plan["primary"], port,
                         ("rewound from %s (diverged at %s)" % (result.get("rewound_from_checkpoint"),
                                                                result.get("diverged_at")))
                         if result["rewound"] else "no rewind was needed",
                         result["archive_segments_replayed"], result["lag"].get("replay_lag_bytes"),
                         result["rewind_seconds"], result["catch_up_seconds"]))
    return True, result


def _refence_after_failed_rejoin(data_dir, bin_dir, ids, unfenced, error, progress):
    """A rejoin that failed before the directory became a standby of the new
    primary (no standby.signal yet: during pg_rewind) would leave an old
    primary that, started, is a second primary: the fence this run removed
    goes back. The interrupted-run marker stays (pg_rewind may have begun
    copying). Once standby.signal is written it is a stopped standby of the
    new primary, which is safe to start."""
    if not unfenced or os.path.exists(os.path.join(data_dir, "standby.signal")):
        return
    try:
        fence(data_dir, bin_dir, ids, "drkit standby --rewind failed: %s" % str(error)[:200], progress)
        refenced = True
    except (DrkitError, OSError) as e:
        progress("could not put the fence back on %s: %s" % (data_dir, e))
        refenced = False
    if isinstance(error, DrkitError):
        error.details["fenced_again"] = refenced


def _existing(params, data_dir, check_mode, progress, t_all):
    """A standby drkit built is there: start it if stopped, report its lag."""
    port = params["standby_port"]
    pid, running_port, _status = read_pidfile(data_dir)
    live = pidfile_live(data_dir)
    if live and running_port != port:
        raise ConfigError("The standby in %s runs on port %s, not %d" % (data_dir, running_port, port),
                          "Give its port as standby_port")
    result = {"data_directory": data_dir, "standby_port": port, "existing": True}
    if check_mode and not live:
        result.update(changed=True, msg="Would start the standby in %s on port %d" % (data_dir, port))
        return True, result
    changed = False
    if not live:
        ids = os_user_ids(default_os_user(params))
        bin_dir = _bin_dir_of(params, data_dir, None)
        log_file = _log_file(data_dir, ids)
        progress("starting the existing standby in %s" % data_dir)
        start_server(bin_dir, data_dir, log_file, ids)
        changed = True
    if check_mode:
        standby_now, primary = standby_status(standby_cp(params)), None
    else:
        standby_now, primary = wait_streaming(params, time.time() + params["timeout"], progress,
                                              os.path.join(data_dir, "log", LOG_NAME))
    result.update(changed=changed, started=True, status=standby_now.get("receiver_status"),
                  lag=lag_report(primary, standby_now), duration=round(time.time() - t_all, 3))
    result["msg"] = "Standby in %s on port %d %s; replay lag %s bytes" % (
        data_dir, port, "started and streaming" if changed else "already streaming",
        result["lag"].get("replay_lag_bytes"))
    return changed, result


def _log_file(data_dir, ids):
    log_dir = os.path.join(data_dir, "log")
    if not os.path.isdir(log_dir):
        os.mkdir(log_dir, 0o700)
        if ids:
            os.chown(log_dir, ids[0], ids[1])
    return os.path.join(log_dir, LOG_NAME)


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def _rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
