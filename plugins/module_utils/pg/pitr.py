# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery from a physical base backup plus the WAL archive.

pg_pitr:

1. picks the base backup (``backup_id``, or the newest one that can reach
   the target: finished before a ``time``, stop LSN before an ``lsn``, next
   xid at its end before an ``xid``);
2. checks the WAL chain in the archive (a gap between the backup's start and
   stop makes it unusable; with ``target: latest`` any gap fails, since
   recovery would silently stop there);
3. streams the base backup from storage (sha256 checked) into a NEW data
   directory -- an existing non-empty directory, let alone a running
   server's, is refused;
4. writes recovery.signal and, into postgresql.auto.conf, restore_command
   (``drkit wal-fetch``, credentials in a 0600 config file, never on the
   command line), recovery_target_* and recovery_target_action=promote;
5. starts the server with pg_ctl, waits for the promotion and reads the
   server log: the FATAL "recovery ended before configured recovery target
   was reached", any wal-fetch error, or a stop before the end of the
   archive with ``latest`` fail the task; otherwise it reports where
   recovery stopped and how long each step took.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import shlex
import shutil
import stat
import sys
import time

from ..core.errors import ConfigError, IntegrityError, NotFoundError, WaitTimeout
from ..core.options import Option, Options, resolve
from ..core.osutil import atomic_write, check_traversable
from ..core.scratch import port_is_free
from ..repo import manifest as mf
from ..repo.wal_layout import DEFAULT_SEGMENT_SIZE, backup_segments, format_lsn, lsn_segment, parse_lsn, segment_number
from ..storage.factory import STORAGE, STORAGE_OPTION_NAMES, open_storage, storage_options
from .backup_physical import KIND
from .base_restore import check_data_directory, empty_dir, restore_base_backup
from .client import PG_BIN_DIR, find_tool
from .cluster import (
    conf_quote,
    default_os_user,
    os_user_ids,
    pid_alive,
    read_log,
    read_pidfile,
    start_server,
    stop_server,
)
from .wal_archive import PREFETCH_DIR
from .wal_segments import list_history, missing_segments, recovery_chain

TARGETS = ("latest", "immediate", "time", "xid", "lsn", "name")
DEFAULT_PREFETCH = 4
WAL_CONFIG_NAME = "drkit-restore.yml"
LOG_NAME = "drkit-pitr.log"
FATAL_TARGET = "recovery ended before configured recovery target was reached"
READY_LINE = re.compile(r"LOG:\s+database system is ready to accept connections\s*$", re.M)
_MARK = "# --- drkit pg_pitr"


# --------------------------------------------------------------------------
# choosing the base backup


def validate_target(target, value):
    target = target or "latest"
    if target not in TARGETS:
        raise ConfigError("target must be one of %s, got %r" % (", ".join(TARGETS), target))
    if target in ("latest", "immediate"):
        if value not in (None, ""):
            raise ConfigError("target %s takes no target_value (got %r)" % (target, value))
        return target, None
    if value in (None, ""):
        raise ConfigError("target %s needs target_value" % target,
                          {"time": "an ISO 8601 time, e.g. 2026-11-25T14:30:00Z",
                           "xid": "a transaction id", "lsn": "an LSN such as 0/3000060",
                           "name": "a restore point made with pg_create_restore_point()"}[target])
    if target == "time":
        return target, mf.parse_time(value)
    if target == "xid":
        try:
            xid = int(str(value).strip())
        except ValueError:
            raise ConfigError("target_value for xid must be a number, got %r" % (value,))
        if xid < 3:
            raise ConfigError("%d is not a normal transaction id" % xid)
        return target, xid
    if target == "lsn":
        return target, parse_lsn(value)
    return target, str(value)


def can_reach(manifest, target, value):
    """Whether replay from this backup can stop at the target (conservative)."""
    data = manifest.get("data") or {}
    if target == "time":
        stop = data.get("stop_time") or manifest["finished_at"]
        return mf.parse_time(stop) < value
    if target == "lsn":
        return parse_lsn(data["stop_lsn"]) <= value
    if target == "xid":
        nxt = data.get("next_xid")
        if nxt is None:
            return False
        # next_xid is a 64-bit xid8; compare within the epoch when given 32 bits.
        if value < (1 << 32):
            nxt &= 0xFFFFFFFF
        return nxt <= value
    return True


def choose_backup(storage, backup_id, target, value):
    if backup_id not in (None, "", "latest"):
        entry = mf.resolve(storage, backup_id, kind=KIND)
        if not can_reach(entry.manifest, target, value):
            raise ConfigError("Base backup %s ended after the %s target %s: recovery cannot stop there" % (
                entry.backup_id, target, _show(target, value)),
                "Pick an older base backup, or leave backup_id unset to let drkit choose")
        return entry
    entries = mf.list_backups(storage, kind=KIND, strict=False)[0]
    if not entries:
        raise NotFoundError("No complete physical base backup in %s" % storage.describe(),
                            "Take one with drkit.backup.pg_backup mode: physical")
    for e in entries:  # newest first
        if can_reach(e.manifest, target, value):
            return e
    raise NotFoundError("No base backup in %s ended before the %s target %s" % (
        storage.describe(), target, _show(target, value)),
        "The target is older than the oldest base backup; it cannot be recovered")


def _show(target, value):
    if target == "time":
        return mf.isoformat(value)
    if target == "lsn":
        return format_lsn(value)
    return str(value)


_SETTING_RE = re.compile(r"^[a-z][a-z0-9_.]*$")

# drkit.backup.pg_pitr / drkit pitr
OPTIONS = Options(
    STORAGE,
    Option("backup_id", "str", flags=("--backup-id",),
           help="default: the newest base backup that can reach the target"),
    Option("target", "str", default="latest", choices=TARGETS, flags=("--target",)),
    Option("target_value", "str", flags=("--target-value",), help="the time, xid, LSN or restore point name"),
    Option("target_inclusive", "bool", default=True, off_flags=("--exclusive",),
           help="stop just before the target instead of just after it"),
    Option("data_directory", "path", required=True, flags=("--data-directory",),
           help="new, empty (or absent) directory"),
    Option("port", "int", min=1, max=65535, flags=("--port",), help="port of the recovered server"),
    Option("start", "bool", default=True, off_flags=("--no-start",),
           help="only restore and configure; start it yourself later"),
    Option("timeout", "float", default=3600, above=0, flags=("--timeout",),
           help="seconds to wait for recovery to finish (default 3600)"),
    Option("settings", "dict"),
    Option("keep_archiving", "bool", default=False),
    Option("os_user", "str", flags=("--os-user",), help="owner of the restored cluster (default: postgres as root)"),
    PG_BIN_DIR,
    Option("drkit_command", "str", flags=("--drkit-command",),
           help="how the server's OS user runs drkit in restore_command"),
    Option("wal_config", "path", flags=("--wal-config",),
           help="drkit config file (0600, readable by the server's OS user) for restore_command"),
    Option("prefetch", "int", default=DEFAULT_PREFETCH, min=0,
           help="WAL segments restore_command downloads ahead (drkit wal-fetch --prefetch)"),
)


def drkit_command(params):
    """How the server's OS user runs drkit (archive_command/restore_command)."""
    cmd = params.get("drkit_command") or os.environ.get("DRKIT_COMMAND")
    if cmd:
        return cmd
    # the wrapper the drkit_runtime role installs (runs the /opt/drkit venv)
    if os.access("/usr/local/bin/drkit", os.X_OK):
        return "/usr/local/bin/drkit"
    here = os.path.dirname(os.path.realpath(__file__))
    checkout = os.path.realpath(os.path.join(here, "..", "..", "bin", "drkit"))
    if os.path.isfile(checkout):
        return "%s %s" % (shlex.quote(sys.executable), shlex.quote(checkout))
    raise ConfigError("Cannot tell how PostgreSQL should run drkit for restore_command",
                      "Set drkit_command (e.g. /usr/local/bin/drkit, as the drkit_runtime role installs it)")


def restore_command(params, storage_url, config_path):
    parts = [drkit_command(params), "wal-fetch"]
    if config_path:
        parts += ["--config", shlex.quote(config_path)]
    prefetch = resolve(OPTIONS, params)["prefetch"]
    if prefetch > 0:
        parts += ["--prefetch", str(prefetch)]
    parts += ["--storage-url", shlex.quote(storage_url), "%f", "%p"]
    return " ".join(parts)


def recovery_settings(target, value, inclusive=True):
    out = {"recovery_target_action": "promote", "recovery_target_timeline": "latest"}
    if target == "immediate":
        out["recovery_target"] = "immediate"
    elif target == "time":
        utc = value.astimezone(datetime.timezone.utc)
        out["recovery_target_time"] = utc.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    elif target == "xid":
        out["recovery_target_xid"] = str(value)
    elif target == "lsn":
        out["recovery_target_lsn"] = format_lsn(value)
    elif target == "name":
        out["recovery_target_name"] = value
    if target in ("time", "xid", "lsn"):
        out["recovery_target_inclusive"] = bool(inclusive)
    return out


def write_wal_config(path, params, ids):
    """The storage options restore_command needs, in a 0600 file owned by
    the server's OS user (secrets never go on a command line)."""
    opts = storage_options(params)
    lines = ["# written by drkit pg_pitr for restore_command; removed after a successful recovery"]
    lines += ["%s: %s" % (k, json.dumps(opts[k])) for k in STORAGE_OPTION_NAMES if k in opts]
    return atomic_write(path, "\n".join(lines) + "\n", owner=ids)


def configure_recovery(data_dir, settings, ids=None, header=""):
    """recovery.signal + our settings appended to postgresql.auto.conf (the
    last occurrence of a setting wins). Missing postgresql.conf/pg_hba.conf
    (Debian keeps them in /etc, so base backups lack them) are created."""
    for name in ("standby.signal", "postmaster.pid", "postmaster.opts"):
        try:
            os.unlink(os.path.join(data_dir, name))
        except OSError:
            pass
    created = []
    defaults = {
        "postgresql.conf": "# created by drkit pg_pitr: the base backup had none (e.g. Debian keeps it in /etc)\n",
        "pg_hba.conf": ("# created by drkit pg_pitr: the base backup had none\n"
                        "local   all   all                  peer\n"
                        "host    all   all   127.0.0.1/32   scram-sha-256\n"
                        "host    all   all   ::1/128        scram-sha-256\n"),
        "pg_ident.conf": "# created by drkit pg_pitr\n",
    }
    for name, text in defaults.items():
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            atomic_write(path, text, owner=ids)
            created.append(name)
    lines = ["", "%s %s ---" % (_MARK, header)]
    for k in sorted(settings):
        if not _SETTING_RE.match(k):
            raise ConfigError("%r is not a PostgreSQL setting name" % k)
        lines.append("%s = %s" % (k, conf_quote(settings[k])))
    auto = os.path.join(data_dir, "postgresql.auto.conf")
    try:
        with open(auto, "rb") as fh:
            old, mode = fh.read(), stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
    except FileNotFoundError:
        old, mode = b"", 0o600
    atomic_write(auto, old + ("\n".join(lines) + "\n").encode("utf-8"), mode=mode, owner=ids)
    atomic_write(os.path.join(data_dir, "recovery.signal"), "", owner=ids)
    return created


LOG_FACTS = (
    ("recovery_stop", re.compile(r"LOG:\s+(recovery stopping .+)$", re.M)),
    ("last_transaction_time", re.compile(r"LOG:\s+last completed transaction was at log time (.+)$", re.M)),
    ("redo_done_lsn", re.compile(r"LOG:\s+redo done at ([0-9A-F]+/[0-9A-F]+)", re.M)),
    ("consistent_lsn", re.compile(r"LOG:\s+consistent recovery state reached at ([0-9A-F]+/[0-9A-F]+)", re.M)),
    ("new_timeline", re.compile(r"LOG:\s+selected new timeline ID: (\d+)", re.M)),
)


def log_facts(text):
    out = {}
    for key, rx in LOG_FACTS:
        found = rx.findall(text)
        if found:
            out[key] = found[-1].strip()
    if "new_timeline" in out:
        out["new_timeline"] = int(out["new_timeline"])
    out["fatal"] = [m.strip() for m in re.findall(r"(?:FATAL|PANIC):\s+(.+)$", text, re.M)]
    out["wal_fetch_errors"] = [m.strip() for m in re.findall(r"drkit wal-fetch: error: (.+)$", text, re.M)]
    return out


def wait_for_promotion(data_dir, log_file, timeout, offset=0, progress=None):
    """Until postmaster.pid says 'ready' (recovery over, promoted) or the
    server exits. Returns (status, log facts)."""
    progress = progress or (lambda msg: None)
    deadline = time.time() + timeout
    seen_pid = None
    said = None
    while True:
        pid, _port, status = read_pidfile(data_dir)
        if pid:
            seen_pid = pid
        text = read_log(log_file, offset)
        facts = log_facts(text)
        # postmaster.pid says "ready" already in hot standby: the promotion
        # is the log line without "read-only" (messages are forced to C).
        if pid and pid_alive(pid) and READY_LINE.search(text):
            return "promoted", facts
        if status != said and status:
            progress("server status: %s" % status)
            said = status
        if (seen_pid and not pid_alive(seen_pid)) or (pid is None and seen_pid) or \
                (facts["fatal"] and (pid is None or not pid_alive(pid))):
            time.sleep(0.2)
            return "exited", log_facts(read_log(log_file, offset))
        if time.time() > deadline:
            return "timeout", facts
        time.sleep(0.2)


# --------------------------------------------------------------------------
# pg_pitr


def pg_pitr(params, check_mode=False, runner=None, progress=None):
    """Engine entry point of drkit.backup.pg_pitr / ``drkit pitr``."""
    progress = progress or (lambda msg: None)
    t_all = time.time()
    params = resolve(OPTIONS, params)
    target, value = validate_target(params["target"], params["target_value"])
    inclusive = params["target_inclusive"]
    data_dir = params["data_directory"]
    if not data_dir:
        raise ConfigError("data_directory is required", "Name a new directory to restore into")
    data_dir = os.path.abspath(data_dir)
    start = params["start"]
    port = params["port"]
    if start and not port:
        raise ConfigError("port is required to start the recovered server",
                          "Give a free port, or start: false to only restore")
    settings = dict(params["settings"] or {})
    timeout = params["timeout"]
    storage_url = params["storage_url"]
    storage = open_storage(storage_url, **storage_options(params))

    state = check_data_directory(data_dir)
    if start:
        if not port_is_free(port):
            raise ConfigError("port %d is in use on 127.0.0.1" % port,
                              "Pick a free port for the recovered server")
    entry = choose_backup(storage, params["backup_id"], target, value)
    manifest = entry.manifest
    data = manifest["data"]
    seg_size = int(data.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)

    # The WAL chain: the backup's own range must be complete; after it, a gap
    # is where recovery would stop.
    histories = list_history(storage)
    chain = recovery_chain(storage, int(data["timeline"]), data["wal_start_segment"], seg_size, histories)
    own = set(backup_segments(data, histories))
    own_missing = [n for n in chain["missing"] if n in own] + \
        [n for n in missing_segments(storage, sorted(own)) if n not in chain["missing"]]
    if own_missing:
        raise IntegrityError("Base backup %s cannot be made consistent: WAL %s missing from the archive %s" % (
            entry.backup_id, ", ".join(sorted(set(own_missing))[:10]), storage.describe()),
            "Use another base backup (backup_id) or restore the missing segments into the archive")
    later_missing = [n for n in chain["missing"] if n not in own]
    warnings = []
    if later_missing:
        msg = "WAL segment(s) missing from the archive after base backup %s: %s; replay stops at the first gap" % (
            entry.backup_id, ", ".join(later_missing[:10]))
        if target == "latest":
            raise IntegrityError(msg, "Recovery to latest would silently lose everything after the gap; "
                                 "restore the missing segments, or choose a time/LSN target before the gap")
        warnings.append(msg)

    shown = None if value is None else _show(target, value)
    plan = {"backup_id": entry.backup_id, "target": target, "target_value": shown,
            "data_directory": data_dir, "port": port, "timeline": data["timeline"],
            "wal_start_segment": data["wal_start_segment"], "wal_stop_segment": data["wal_stop_segment"],
            "archive_last_segment": chain["last"], "archive_timeline": chain["timeline"], "warnings": warnings,
            "storage": storage.describe()}
    if check_mode:
        plan.update(changed=True, msg="Would restore %s into %s and recover to %s%s" % (
            entry.backup_id, data_dir, target, (" " + plan["target_value"]) if value is not None else ""))
        return True, plan

    os_user = default_os_user(params)
    ids = os_user_ids(os_user)
    if ids and ids[0] != os.geteuid():
        check_traversable(data_dir, ids[0], set([ids[1]]))
    bin_dir = params["pg_bin_dir"] or os.path.dirname(
        find_tool("pg_ctl", data.get("server_version_num") or manifest["source"].get("server_version_num")))
    created_dir = state == "absent"
    restored = False
    result = dict(plan)
    try:
        restore_facts = restore_base_backup(storage, entry, data_dir, ids, progress)
        restored = True
        result["restore_seconds"] = restore_facts["seconds"]
        result["restored_bytes"] = restore_facts["bytes"]
        config_path = params["wal_config"]
        generated_config = None
        if not config_path and storage_options(params):
            generated_config = config_path = write_wal_config(os.path.join(data_dir, WAL_CONFIG_NAME), params, ids)
        rec = recovery_settings(target, value, inclusive)
        rec["restore_command"] = restore_command(params, storage_url, config_path)
        if port:
            rec["port"] = port
        if not params["keep_archiving"]:
            # A recovered copy must not push its new timeline into the archive
            # of the original until someone decides it is the new primary.
            rec["archive_mode"] = "off"
        for k, v in settings.items():
            rec[k] = v
        created = configure_recovery(data_dir, rec, ids, header="%s, %s %s, %s" % (
            entry.backup_id, target, plan["target_value"] or "", mf.isoformat(mf.utcnow())))
        result.update(settings=dict((k, v) for k, v in rec.items() if k != "restore_command"),
                      restore_command=rec["restore_command"], created_files=created)
        if not start:
            result.update(changed=True, started=False, duration=round(time.time() - t_all, 3),
                          msg="Restored %s into %s and configured recovery to %s; start it with pg_ctl" % (
                              entry.backup_id, data_dir, target))
            return True, result

        log_dir = os.path.join(data_dir, "log")
        if not os.path.isdir(log_dir):
            os.mkdir(log_dir, 0o700)
            if ids:
                os.chown(log_dir, ids[0], ids[1])
        log_file = os.path.join(log_dir, LOG_NAME)
        offset = os.path.getsize(log_file) if os.path.exists(log_file) else 0
        progress("starting the recovered server on port %d (log %s)" % (port, log_file))
        t_rec = time.time()
        start_server(bin_dir, data_dir, log_file, ids)
        status, facts = wait_for_promotion(data_dir, log_file, timeout, offset, progress)
        result["recovery_seconds"] = round(time.time() - t_rec, 3)
        result["log_file"] = log_file
        result.update(dict((k, v) for k, v in facts.items() if k not in ("fatal",)))
        if status == "timeout":
            raise WaitTimeout("Recovery did not finish within %s s; the server is still running and replaying "
                              "(log %s)" % (timeout, log_file),
                              "Watch the log; raise timeout for big WAL volumes", details=result)
        if status == "exited":
            fatal = facts["fatal"]
            hint = "See %s" % log_file
            if any(FATAL_TARGET in f for f in fatal):
                hint = ("The archive ends (or has a gap) before the target: the WAL up to it is missing. "
                        "Choose an earlier target, or restore the missing WAL; see %s" % log_file)
            said = "; ".join(fatal[-3:]) or "no FATAL line in the log"
            raise IntegrityError("Recovery FAILED, the server stopped: %s" % said, hint, details=result)
        if facts["wal_fetch_errors"]:
            stop_server(bin_dir, data_dir, ids)
            raise IntegrityError("Recovery ended after wal-fetch errors (not a clean end of the archive): %s" % (
                "; ".join(facts["wal_fetch_errors"][:3])),
                "Recovery may have stopped early; the server was stopped. Fix the storage access and restore "
                "again into a new directory", details=result)
        if target == "latest" and chain["last"] and facts.get("redo_done_lsn"):
            replayed = segment_number(lsn_segment(facts["redo_done_lsn"], 1, seg_size), seg_size)
            if replayed < segment_number(chain["last"], seg_size):
                stop_server(bin_dir, data_dir, ids)
                raise IntegrityError("Recovery stopped at %s but the archive holds WAL up to %s" % (
                    facts["redo_done_lsn"], chain["last"]),
                    "Some WAL could not be read; the server was stopped", details=result)
        if generated_config:
            os.unlink(generated_config)
        shutil.rmtree(os.path.join(data_dir, "pg_wal", PREFETCH_DIR), ignore_errors=True)
        result.update(changed=True, started=True, status="promoted", duration=round(time.time() - t_all, 3))
        point = facts.get("recovery_stop") or ("end of WAL, last transaction at %s" % facts.get(
            "last_transaction_time") if facts.get("last_transaction_time") else "end of WAL")
        result["recovered_to"] = point
        result["msg"] = ("Recovered %s into %s, promoted on port %d (timeline %s): %s; restore %.1f s, "
                         "replay %.1f s" % (entry.backup_id, data_dir, port, facts.get("new_timeline"), point,
                                            result["restore_seconds"], result["recovery_seconds"]))
        return True, result
    except BaseException:
        if not restored and created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif not restored and os.path.isdir(data_dir):
            empty_dir(data_dir)
        raise
