# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery from a physical base backup plus the WAL archive.

pg_pitr:

1. picks the base backup (``backup_id``, or the newest one that can reach
   the target on the chosen timeline: finished before a ``time``, stop LSN
   before an ``lsn``, next xid at its end before an ``xid``) and resolves
   ``recovery_target_timeline`` to a timeline number (recovery_target.py);
2. checks the WAL chain in the archive (a gap between the backup's start and
   stop makes it unusable; with ``target: latest`` any gap fails, since
   recovery would silently stop there), works out the exact end of the
   archive for ``latest`` (the last complete record, with pg_waldump) and
   refuses a target that lies on an older timeline's branch unless the
   timeline was chosen;
3. streams the base backup from storage (sha256 checked) into a NEW data
   directory -- an existing non-empty directory, let alone a running
   server's, is refused; one left by an interrupted or failed drkit
   recovery (its marker, pitr_guard.py) is taken over, saying so. The
   recovery settings the backup carries in postgresql.auto.conf (an older
   drkit left them in the clusters it promoted) are removed, and named;
4. writes recovery.signal and, into postgresql.auto.conf, only what the
   recovered server keeps (port, archive_mode=off, ``settings``); the
   recovery settings (restore_command = ``drkit wal-fetch``, credentials in
   a 0600 file in a private directory outside the data directory, an
   explicit target, the timeline number) go on the server's command line,
   so no file of the cluster ever holds them;
5. replays twice: first with recovery_target_action=shutdown -- PostgreSQL
   stops at the target and shuts down, or fails, and never promotes by
   itself -- and checks the stop (the LSN for ``latest`` and ``lsn``
   exactly, any wal-fetch error, PostgreSQL's FATAL); then again with
   ``pause``, checks that it paused at the same place, and promotes with
   ``pg_ctl promote``. Only then are the marker and the private directory
   removed. On every failure the server is stopped and the directory stays
   disabled (recovery.signal, no restore_command, the marker with the
   error), so ``pg_ctl start`` refuses it.

Why this file is over 600 lines: the five steps share one state (the chosen
backup, the resolved timeline, the data directory under its marker) and their
order is the safety argument; the parts that stand alone already live beside
it (recovery_target.py, pitr_guard.py, waldump.py, repo/wal_layout.py).
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

from ..core.crypto import DECRYPTION, Keyring
from ..core.errors import ConfigError, DrkitError, IntegrityError, NotFoundError, SafetyError, Terminated, WaitTimeout
from ..core.options import Option, Options, resolve
from ..core.osutil import atomic_write, check_traversable, owner_and_mode
from ..core.scratch import port_is_free
from ..core.signing import VERIFYING, Trust
from ..repo import manifest as mf
from ..repo.wal_layout import DEFAULT_SEGMENT_SIZE, backup_segments, format_lsn, parse_lsn
from ..storage.factory import STORAGE, STORAGE_OPTION_NAMES, open_storage, storage_options
from .backup_physical import KIND
from .base_restore import check_data_directory, empty_dir, require_base_key, restore_base_backup
from .client import PG_BIN_DIR, find_tool
from .cluster import (
    RECOVERY_PARAMS,
    conf_quote,
    control_state,
    default_os_user,
    find_pg_bindir,
    neutral_recovery_settings,
    os_user_ids,
    pid_alive,
    pidfile_live,
    promote_server,
    read_log,
    read_pidfile,
    start_server,
    stop_server,
    strip_recovery_settings,
)
from .pitr_guard import (
    MARKER,
    check_takeover,
    make_private_dir,
    new_marker,
    read_marker,
    remove_marker,
    remove_private_dir,
    write_marker,
)
from .recovery_target import (
    backup_end,
    branch_conflict,
    end_of_archive,
    newest_archive_timeline,
    reaches_timeline,
    resolve_timeline,
    timeline_choice,
)
from . import wal_fetcher
from .wal_archive import PREFETCH_DIR
from .wal_segments import list_history, missing_segments, recovery_chain

TARGETS = ("latest", "immediate", "time", "xid", "lsn", "name")
DEFAULT_PREFETCH = 4
WAL_CONFIG_NAME = "restore.yml"
LOG_NAME = "drkit-pitr.log"
FATAL_TARGET = "recovery ended before configured recovery target was reached"
READY_LINE = re.compile(r"LOG:\s+database system is ready to accept connections\s*$", re.M)
PAUSED_LINE = re.compile(r"LOG:\s+pausing at the end of recovery\s*$", re.M)
SHUTDOWN_AT_TARGET = re.compile(r"LOG:\s+shutdown at recovery target\s*$", re.M)
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


def can_reach(manifest, target, value, timeline=None, histories=None):
    """Whether replay from this backup can stop at the target (conservative),
    on ``timeline`` when a timeline number is given."""
    data = manifest.get("data") or {}
    if isinstance(timeline, int) and not reaches_timeline(data, timeline, histories or {}):
        return False
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


def choose_backup(storage, backup_id, target, value, timeline=None, histories=None, trust=None):
    on = " on timeline %d" % timeline if isinstance(timeline, int) else ""
    if backup_id not in (None, "", "latest"):
        entry = mf.resolve(storage, backup_id, kind=KIND, trust=trust)
        if not can_reach(entry.manifest, target, value, timeline, histories):
            raise ConfigError("Base backup %s cannot reach the %s target %s%s: it ended after it%s" % (
                entry.backup_id, target, _show(target, value), on, " or on another timeline" if on else ""),
                "Pick an older base backup, or leave backup_id unset to let drkit choose")
        return entry
    # with verify_keys, a base backup not signed by a trusted key is not among them
    entries = mf.list_backups(storage, kind=KIND, strict=False, trust=trust)[0]
    if not entries:
        raise NotFoundError("No complete physical base backup in %s" % storage.describe(),
                            "Take one with drkit.backup.pg_backup mode: physical")
    for e in entries:  # newest first
        if can_reach(e.manifest, target, value, timeline, histories):
            return e
    raise NotFoundError("No base backup in %s ended before the %s target %s%s" % (
        storage.describe(), target, _show(target, value), on),
        "The target is older than the oldest base backup%s; it cannot be recovered" % on)


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
    Option("recovery_target_timeline", "str", default="latest", flags=("--recovery-target-timeline",),
           metavar="TIMELINE",
           help="latest (default, as PostgreSQL), current (the backup's) or a timeline number; a target on an "
                "older timeline's branch is refused until one is named"),
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
    Option("fetch_async", "bool", default=True,
           help="a background fetcher keeps the prefetched segments ready between restore_command calls "
                "(drkit wal-fetch --async)"),
    VERIFYING,
    DECRYPTION,
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
    p = resolve(OPTIONS, params)
    if p["encryption_identity_file"]:
        # the path only: the server's OS user reads the key from it
        parts += ["--encryption-identity-file", shlex.quote(p["encryption_identity_file"])]
    if p["prefetch"] > 0:
        parts += ["--prefetch", str(p["prefetch"])]
        if p["fetch_async"]:
            parts.append("--async")
    parts += ["--storage-url", shlex.quote(storage_url), "%f", "%p"]
    return " ".join(parts)


def recovery_settings(target, value, inclusive=True, timeline="latest", end_lsn=None, action="pause"):
    """The recovery settings of one run: every target given explicitly (the
    unused ones empty, overriding whatever a restored backup's files say),
    the timeline, and what PostgreSQL does at the target. ``latest`` is the
    LSN ``end_lsn`` (the last record of the archive), or consistency when
    the archive ends with the backup."""
    out = {"recovery_target_action": action, "recovery_target_timeline": str(timeline), "hot_standby": True}
    if target in ("time", "xid", "lsn") or (target == "latest" and end_lsn is not None):
        out["recovery_target_inclusive"] = bool(inclusive) if target != "latest" else True
    if target == "latest":
        setting = ("recovery_target", "immediate") if end_lsn is None else ("recovery_target_lsn", format_lsn(end_lsn))
    elif target == "immediate":
        setting = ("recovery_target", "immediate")
    elif target == "time":
        utc = value.astimezone(datetime.timezone.utc)
        setting = ("recovery_target_time", utc.strftime("%Y-%m-%d %H:%M:%S.%f+00"))
    elif target == "xid":
        setting = ("recovery_target_xid", str(value))
    elif target == "lsn":
        setting = ("recovery_target_lsn", format_lsn(value))
    else:
        setting = ("recovery_target_name", value)
    out.update(neutral_recovery_settings(*setting))  # the target itself last
    return out


def check_identity_readable(path, ids, os_user):
    """restore_command runs as the server's OS user and reads the identity
    file itself: say so before anything is restored when it cannot (the
    classic permission bits; ACLs are not looked at)."""
    if not path or not ids or ids[0] == os.geteuid():
        return
    hint = ("Give the identity file to %s (chown %s %s, mode 0600) in a directory it can enter; it needs "
            "it as long as the server fetches WAL" % (os_user, os_user, path))
    try:
        check_traversable(path, ids[0], set([ids[1]]))
        st = os.stat(path)
    except (ConfigError, OSError):
        raise ConfigError("encryption_identity_file %s is not reachable for the server's OS user %s, who runs "
                          "restore_command" % (path, os_user), hint)
    bit = stat.S_IRUSR if st.st_uid == ids[0] else stat.S_IRGRP if st.st_gid == ids[1] else stat.S_IROTH
    if not st.st_mode & bit:
        raise ConfigError("encryption_identity_file %s (%s) cannot be read by the server's OS user %s, who runs "
                          "restore_command" % (path, owner_and_mode(path), os_user), hint)


def write_wal_config(path, params, ids):
    """The storage options restore_command needs, in a 0600 file owned by
    the server's OS user (secrets never go on a command line)."""
    opts = storage_options(params)
    lines = ["# written by drkit pitr for restore_command; removed when the recovery ends"]
    lines += ["%s: %s" % (k, json.dumps(opts[k])) for k in STORAGE_OPTION_NAMES if k in opts]
    return atomic_write(path, "\n".join(lines) + "\n", owner=ids)


def _block(title, settings):
    lines = ["", "%s %s ---" % (_MARK, title)]
    for k in settings:  # in order: see neutral_recovery_settings
        if not _SETTING_RE.match(k):
            raise ConfigError("%r is not a PostgreSQL setting name" % k)
        lines.append("%s = %s" % (k, conf_quote(settings[k])))
    return lines


def configure_recovery(data_dir, settings, ids=None, header="", recovery=None):
    """Prepare a restored base backup for recovery: recovery.signal; the
    recovery settings it carries in postgresql.auto.conf removed; our
    ``settings`` appended there (the last occurrence of a setting wins);
    with ``recovery`` (start: false) also those, in a block of their own.
    Missing postgresql.conf/pg_hba.conf (Debian keeps them in /etc, so base
    backups lack them) are created. Returns (created files, [(name, value)
    of the removed recovery settings])."""
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
    lines = _block(header, settings)
    if recovery:
        lines += _block("recovery settings: remove this block once the cluster is promoted", recovery)
        lines.append("%s end of the recovery settings ---" % _MARK)
    auto = os.path.join(data_dir, "postgresql.auto.conf")
    try:
        with open(auto, "rb") as fh:
            old, mode = fh.read(), stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
    except FileNotFoundError:
        old, mode = b"", 0o600
    kept, removed = strip_recovery_settings(old.decode("utf-8", "replace"))
    atomic_write(auto, (kept + "\n".join(lines) + "\n").encode("utf-8"), mode=mode, owner=ids)
    atomic_write(os.path.join(data_dir, "recovery.signal"), "", owner=ids)
    return created, removed


def conf_recovery_settings(data_dir):
    """Recovery settings a restored postgresql.conf (in the data directory)
    sets to something: overridden for the recovery, but worth a warning."""
    try:
        with open(os.path.join(data_dir, "postgresql.conf")) as fh:
            text = fh.read()
    except (IOError, OSError):
        return []
    return [(k, v) for k, v in strip_recovery_settings(text)[1] if v.strip("'\" ") not in ("", "0")]


LOG_FACTS = (
    ("recovery_stop", re.compile(r"LOG:\s+(recovery stopping .+)$", re.M)),
    ("last_transaction_time", re.compile(r"LOG:\s+last completed transaction was at log time (.+)$", re.M)),
    ("redo_done_lsn", re.compile(r"LOG:\s+redo done at ([0-9A-F]+/[0-9A-F]+)", re.M)),
    ("consistent_lsn", re.compile(r"LOG:\s+consistent recovery state reached at ([0-9A-F]+/[0-9A-F]+)", re.M)),
    ("new_timeline", re.compile(r"LOG:\s+selected new timeline ID: (\d+)", re.M)),
)
STOP_LSN = re.compile(r'WAL location \(LSN\) "([0-9A-F]+/[0-9A-F]+)"')


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


def wait_for_server(data_dir, log_file, deadline, offset=0, progress=None):
    """Watch a recovering server until it shuts down at the target or
    fails ('exited'), pauses at the target ('paused'), is promoted
    ('promoted') or ``deadline`` passes ('timeout'). Returns (status, log
    facts of what it logged since ``offset``)."""
    progress = progress or (lambda msg: None)
    seen_pid = None
    said = None
    while True:
        pid, _port, status = read_pidfile(data_dir)
        if pid:
            seen_pid = pid
        text = read_log(log_file, offset)
        facts = log_facts(text)
        alive = bool(pid) and pid_alive(pid)
        # postmaster.pid says "ready" already in hot standby: the promotion
        # is the log line without "read-only" (messages are forced to C).
        if alive and READY_LINE.search(text):
            return "promoted", facts
        if alive and PAUSED_LINE.search(text):
            return "paused", facts
        if status != said and status:
            progress("server status: %s" % status)
            said = status
        if (seen_pid and not pid_alive(seen_pid)) or (pid is None and seen_pid) or \
                (facts["fatal"] and not alive):
            time.sleep(0.2)
            text = read_log(log_file, offset)
            facts = log_facts(text)
            facts["shutdown_at_target"] = bool(SHUTDOWN_AT_TARGET.search(text))
            return "exited", facts
        if time.time() > deadline:
            return "timeout", facts
        time.sleep(0.2)


def check_stop(facts, target, value, end_lsn):
    """Did PostgreSQL stop where it was asked to? At LSN precision for
    ``latest`` (the end of the archive drkit computed) and ``lsn``. Returns
    the stop line; IntegrityError otherwise."""
    if facts["wal_fetch_errors"]:
        raise IntegrityError("Recovery saw wal-fetch errors (not a clean read of the archive): %s" % (
            "; ".join(facts["wal_fetch_errors"][:3])),
            "Fix the storage access or the damaged WAL, then run drkit pitr again into this directory")
    stop = facts.get("recovery_stop")
    if not stop:
        raise IntegrityError("Recovery ended without reaching the target (no \"recovery stopping\" line)",
                             "The WAL up to the target may be missing; see the server log")
    expected = end_lsn if target == "latest" else (value if target == "lsn" else None)
    if expected is not None:
        m = STOP_LSN.search(stop)
        got = parse_lsn(m.group(1)) if m else None
        if got is None or got < expected or (target == "latest" and got != expected):
            raise IntegrityError("Recovery stopped at %s, short of %s (%s)" % (
                m.group(1) if m else stop, format_lsn(expected),
                "the end of the archive" if target == "latest" else "the target LSN"),
                "PostgreSQL stopped before the point drkit asked for: something else set a recovery target "
                "(see the server log); nothing was promoted")
    return stop


# --------------------------------------------------------------------------
# the data directory


def inspect_directory(data_dir):
    """What is at data_directory: 'absent', 'empty', or for one that a drkit
    recovery left (its marker) the description of it; anything else is
    refused (check_data_directory)."""
    if os.path.isdir(data_dir):
        marker = read_marker(data_dir)
        if marker is not None:
            return "interrupted", check_takeover(data_dir, marker), marker
    return check_data_directory(data_dir), None, None


def take_over(data_dir, marker, bin_dir, ids, progress):
    """Clear a directory an interrupted or failed drkit recovery left: stop
    its server (it is in recovery; a promoted one is refused), remove that
    run's private directory, empty the directory."""
    promoted = not os.path.exists(os.path.join(data_dir, "backup_label")) and \
        control_state(bin_dir, data_dir) in ("in production", "shut down", "shutting down")
    if promoted:
        raise SafetyError("%s was left by a drkit recovery (marker %s) but was promoted afterwards: it is a primary "
                          "now, drkit does not remove it" % (data_dir, MARKER),
                          "If it is not needed, stop it and remove the directory; or recover into a new directory")
    if pidfile_live(data_dir):
        progress("stopping the server of the interrupted recovery in %s" % data_dir)
        if not stop_server(bin_dir, data_dir, ids, mode="fast", timeout=60):
            stop_server(bin_dir, data_dir, ids, mode="immediate", timeout=60)
        if pidfile_live(data_dir):
            raise SafetyError("The server of the interrupted recovery in %s does not stop" % data_dir,
                              "Stop it (pg_ctl stop -D %s) and run again" % data_dir)
    remove_private_dir(marker.get("private_dir"))
    empty_dir(data_dir)


def tidy_postmaster_opts(data_dir, ids):
    """postmaster.opts (pg_ctl restart reads it) without the recovery
    settings drkit passed on the command line."""
    path = os.path.join(data_dir, "postmaster.opts")
    try:
        with open(path) as fh:
            text = fh.read()
    except (IOError, OSError):
        return
    program = text.split(' "', 1)[0].strip()
    if program:
        atomic_write(path, '%s "-D" "%s" "-c" "lc_messages=C" "-c" "logging_collector=off"\n' % (program, data_dir),
                     owner=ids and (ids[0], ids[1]))


def _check_port(port):
    if not port_is_free(port):
        raise ConfigError("port %d is in use on 127.0.0.1" % port, "Pick a free port for the recovered server")


def _waldump(params, version_num):
    return find_tool("pg_waldump", version_num, bin_dir=params["pg_bin_dir"])


def _bin_dir_of(params, data_dir, version_num):
    if params["pg_bin_dir"]:
        return params["pg_bin_dir"]
    if version_num:
        return os.path.dirname(find_tool("pg_ctl", version_num))
    try:
        with open(os.path.join(data_dir, "PG_VERSION")) as fh:
            return find_pg_bindir(fh.read().strip())
    except (IOError, OSError):
        return find_pg_bindir()


# --------------------------------------------------------------------------
# pg_pitr


def pg_pitr(params, check_mode=False, runner=None, progress=None):
    """Engine entry point of drkit.backup.pg_pitr / ``drkit pitr``."""
    progress = progress or (lambda msg: None)
    t_all = time.time()
    params = resolve(OPTIONS, params)
    target, value = validate_target(params["target"], params["target_value"])
    tl_choice = timeline_choice(params["recovery_target_timeline"])
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
    steering = sorted(k for k in settings if k.lower() in RECOVERY_PARAMS)
    if steering:
        raise ConfigError("settings may not set %s: drkit sets the recovery settings itself" % ", ".join(steering),
                          "Use target, target_value, target_inclusive and recovery_target_timeline")
    timeout = params["timeout"]
    storage_url = params["storage_url"]
    trust = Trust.from_params(params)
    keyring = Keyring(params["encryption_identity_file"])
    storage = open_storage(storage_url, **storage_options(params))
    if not start and storage_options(params) and not params["wal_config"]:
        raise ConfigError("With start: false, restore_command needs a lasting config file for the storage options",
                          "Give wal_config: the 0600 config of the postgresql_wal_archive role (e.g. "
                          "/etc/drkit/wal-archive.yml); drkit keeps no credentials once it exits")

    state, found, old_marker = inspect_directory(data_dir)
    # (the server of an interrupted recovery there may hold it: stopped below)
    if start and not (found and pidfile_live(data_dir) and read_pidfile(data_dir)[1] == port):
        _check_port(port)
    histories = list_history(storage)
    wanted = newest_archive_timeline(histories) if tl_choice == "latest" else tl_choice
    entry = choose_backup(storage, params["backup_id"], target, value, wanted, histories, trust)
    require_base_key(entry, keyring)  # an encrypted base backup without its identity: before anything is done
    manifest = entry.manifest
    data = manifest["data"]
    seg_size = int(data.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)
    timeline = resolve_timeline(tl_choice, data, histories)
    version_num = data.get("server_version_num") or manifest["source"].get("server_version_num")

    # The WAL chain: the backup's own range must be complete; after it, a gap
    # is where recovery would stop.
    chain = recovery_chain(storage, int(data["timeline"]), data["wal_start_segment"], seg_size, histories,
                           target_timeline=timeline)
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

    if tl_choice == "latest" and target in ("time", "xid", "lsn", "name"):
        # switches inside the backup's own WAL are not a choice: from where it ends
        path = chain["path"]
        ends_on = [t for t, _s in path].index(backup_end(data)[0])
        conflict = branch_conflict(storage, _waldump(params, version_num), path[ends_on:], target, value,
                                   inclusive, seg_size, keyring)
        if conflict:
            raise ConfigError(
                "The %s target %s lies on timeline %d's branch: timeline %d left it at %s, and %s. "
                "recovery_target_timeline latest would give timeline %d's state there, without that work" % (
                    target, _show(target, value), conflict["timeline"], conflict["next"], conflict["switch"],
                    conflict["evidence"], chain["timeline"]),
                "Choose the timeline: --recovery-target-timeline %d (recovery_target_timeline: %d) for timeline "
                "%d's state at the target, or --recovery-target-timeline %d for timeline %d's" % (
                    conflict["timeline"], conflict["timeline"], conflict["timeline"], chain["timeline"],
                    chain["timeline"]))
    end_lsn = None
    if target == "latest":
        end_lsn = end_of_archive(storage, _waldump(params, version_num), chain, seg_size, keyring=keyring)
        if end_lsn is not None and end_lsn < parse_lsn(data["stop_lsn"]):
            end_lsn = None  # the archive ends with the backup: consistency is the end

    if found:
        warnings.append("Found %s in %s; it was removed before this recovery" % (found, data_dir))
    shown = None if value is None else _show(target, value)
    plan = {"backup_id": entry.backup_id, "target": target, "target_value": shown,
            "data_directory": data_dir, "port": port, "timeline": data["timeline"],
            "recovery_target_timeline": timeline, "timeline_path": [t for t, _s in chain["path"]],
            "target_lsn": format_lsn(end_lsn) if end_lsn is not None else None,
            "wal_start_segment": data["wal_start_segment"], "wal_stop_segment": data["wal_stop_segment"],
            "archive_last_segment": chain["last"], "archive_timeline": chain["timeline"], "warnings": warnings,
            "storage": storage.describe()}
    if check_mode:
        plan.update(changed=True, msg="Would %srestore %s into %s and recover to %s%s on timeline %d" % (
            "remove %s, then " % found if found else "", entry.backup_id, data_dir, target,
            (" " + plan["target_value"]) if value is not None else
            (" (%s, the end of the archive)" % plan["target_lsn"] if plan["target_lsn"] else ""), timeline))
        return True, plan

    os_user = default_os_user(params)
    ids = os_user_ids(os_user)
    if ids and ids[0] != os.geteuid():
        check_traversable(data_dir, ids[0], set([ids[1]]))
    check_identity_readable(params["encryption_identity_file"], ids, os_user)
    bin_dir = _bin_dir_of(params, data_dir, version_num)
    if found:
        progress("found %s in %s: stopping and removing it" % (found, data_dir))
        take_over(data_dir, old_marker, bin_dir, ids, progress)
        if start:
            _check_port(port)
    created_dir = state == "absent"
    if created_dir:
        os.makedirs(data_dir, 0o700)
        if ids:
            os.chown(data_dir, ids[0], ids[1])
    marker = new_marker(backup_id=entry.backup_id, target=target, target_value=shown, timeline=timeline)
    write_marker(data_dir, marker, ids)
    restored = False
    private_dir = None
    planned_warnings = len(warnings)
    result = dict(plan)
    try:
        restore_facts = restore_base_backup(storage, entry, data_dir, ids, progress, skip=[MARKER],
                                            keyring=keyring)
        restored = True
        result["restore_seconds"] = restore_facts["seconds"]
        result["restored_bytes"] = restore_facts["bytes"]
        config_path = params["wal_config"]
        if not config_path and storage_options(params):
            private_dir = make_private_dir(ids)
            marker.update(private_dir=private_dir)
            write_marker(data_dir, marker, ids)
            config_path = write_wal_config(os.path.join(private_dir, WAL_CONFIG_NAME), params, ids)
        rec = recovery_settings(target, value, inclusive, timeline, end_lsn)
        rec["restore_command"] = restore_command(params, storage_url, config_path)
        server = {}
        if port:
            server["port"] = port
        if not params["keep_archiving"]:
            # A recovered copy must not push its new timeline into the archive
            # of the original until someone decides it is the new primary.
            server["archive_mode"] = "off"
        server.update(settings)
        header = "%s, %s %s, %s" % (entry.backup_id, target, plan["target_value"] or "", mf.isoformat(mf.utcnow()))
        created, removed = configure_recovery(data_dir, server, ids, header=header,
                                              recovery=None if start else rec)
        if removed:
            warnings.append("The base backup carried recovery settings in postgresql.auto.conf (%s): removed; "
                            "an older drkit pitr left them in the cluster it promoted" % ", ".join(
                                "%s = %s" % kv for kv in removed[:8]))
        overridden = conf_recovery_settings(data_dir)
        if overridden:
            warnings.append("postgresql.conf in the base backup sets %s: overridden for this recovery; remove them "
                            "there" % ", ".join("%s = %s" % kv for kv in overridden[:8]))
        result.update(settings=dict(server), restore_command=rec["restore_command"], created_files=created,
                      recovery_settings=dict((k, v) for k, v in rec.items() if k != "restore_command"))
        for w in warnings[planned_warnings:]:
            progress("warning: %s" % w)
        if not start:
            remove_marker(data_dir)
            result.update(changed=True, started=False, duration=round(time.time() - t_all, 3),
                          msg="Restored %s into %s and configured recovery to %s on timeline %d: start it with "
                              "pg_ctl, it pauses there; check it, run pg_ctl promote, then remove the drkit "
                              "recovery settings block from postgresql.auto.conf" % (
                                  entry.backup_id, data_dir, target, timeline))
            return True, result

        marker.update(state="replaying")
        write_marker(data_dir, marker, ids)
        log_dir = os.path.join(data_dir, "log")
        if not os.path.isdir(log_dir):
            os.mkdir(log_dir, 0o700)
            if ids:
                os.chown(log_dir, ids[0], ids[1])
        log_file = os.path.join(log_dir, LOG_NAME)
        result["log_file"] = log_file
        deadline = time.time() + timeout
        t_rec = time.time()

        # 1. replay to the target and shut down there: never a promotion
        offset = os.path.getsize(log_file) if os.path.exists(log_file) else 0
        progress("replaying to the target on port %d (log %s)" % (port, log_file))
        start_server(bin_dir, data_dir, log_file, ids, settings=dict(rec, recovery_target_action="shutdown"))
        status, facts = wait_for_server(data_dir, log_file, deadline, offset, progress)
        result.update(dict((k, v) for k, v in facts.items() if k not in ("fatal", "shutdown_at_target")))
        _fail_unless(status, facts, ("exited",), timeout, log_file, result)
        if not facts.get("shutdown_at_target"):
            raise IntegrityError("Recovery FAILED, the server stopped: %s" % (
                "; ".join(facts["fatal"][-3:]) or "no FATAL line in the log"), _fatal_hint(facts, log_file),
                details=result)
        stopped_at = check_stop(facts, target, value, end_lsn)
        progress("%s; checked" % stopped_at)

        # 2. replay to the same point again, pause there, check, promote
        marker.update(state="promoting", stopped_at=stopped_at)
        write_marker(data_dir, marker, ids)
        offset = os.path.getsize(log_file)
        start_server(bin_dir, data_dir, log_file, ids, settings=rec)
        status, facts = wait_for_server(data_dir, log_file, deadline, offset, progress)
        _fail_unless(status, facts, ("paused", "promoted"), timeout, log_file, result)
        again = check_stop(facts, target, value, end_lsn)
        if again != stopped_at:
            raise IntegrityError("The second replay stopped elsewhere (%s) than the first (%s)" % (again, stopped_at),
                                 "The archive changed while drkit recovered; see %s" % log_file, details=result)
        if status == "paused":
            offset = os.path.getsize(log_file)
            promote_server(bin_dir, data_dir, ids, timeout=max(60, int(deadline - time.time())))
            status, after = wait_for_server(data_dir, log_file, max(deadline, time.time() + 60), offset, progress)
            _fail_unless(status, after, ("promoted",), timeout, log_file, result)
            facts.update((k, v) for k, v in after.items() if v and k not in ("fatal", "wal_fetch_errors"))
        result["recovery_seconds"] = round(time.time() - t_rec, 3)
        result.update(dict((k, v) for k, v in facts.items() if k not in ("fatal", "shutdown_at_target")))
        tidy_postmaster_opts(data_dir, ids)
        wal_fetcher.remove(os.path.join(data_dir, "pg_wal", PREFETCH_DIR))
        remove_marker(data_dir)
        result.update(changed=True, started=True, status="promoted", duration=round(time.time() - t_all, 3))
        point = stopped_at
        result["recovered_to"] = point
        result["msg"] = ("Recovered %s into %s, promoted on port %d (timeline %s): %s; restore %.1f s, "
                         "replay %.1f s" % (entry.backup_id, data_dir, port, facts.get("new_timeline"), point,
                                            result["restore_seconds"], result["recovery_seconds"]))
        return True, result
    except BaseException as exc:
        if not restored and created_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif not restored and os.path.isdir(data_dir):
            empty_dir(data_dir)
        else:
            _disable(data_dir, bin_dir, ids, marker, exc)
        raise
    finally:
        remove_private_dir(private_dir)


def _fatal_hint(facts, log_file):
    if any(FATAL_TARGET in f for f in facts["fatal"]):
        return ("The archive ends (or has a gap, or a damaged segment) before the target: the WAL up to it cannot "
                "be read. Choose an earlier target, or repair the archive and run again; see %s" % log_file)
    return "See %s" % log_file


def _fail_unless(status, facts, wanted, timeout, log_file, result):
    if status in wanted:
        return
    if status == "timeout":
        raise WaitTimeout("Recovery did not finish within %s s (log %s); the server was stopped" % (timeout, log_file),
                          "Raise timeout for big WAL volumes and run again into this directory", details=result)
    if status == "promoted":
        raise IntegrityError("The server promoted itself before drkit's checks", "See %s" % log_file, details=result)
    said = "; ".join(facts["fatal"][-3:]) or "no FATAL line in the log"
    if status == "paused":
        said = "it paused where it should have shut down"
    raise IntegrityError("Recovery FAILED, the server stopped: %s" % said, _fatal_hint(facts, log_file),
                         details=result)


def _disable(data_dir, bin_dir, ids, marker, exc):
    """After a failure once the base backup is in place: the server
    stopped, recovery.signal in place, the marker saying what happened."""
    try:
        if pidfile_live(data_dir):
            if not stop_server(bin_dir, data_dir, ids, mode="fast", timeout=60):
                stop_server(bin_dir, data_dir, ids, mode="immediate", timeout=60)
        atomic_write(os.path.join(data_dir, "recovery.signal"), "", owner=ids and (ids[0], ids[1]))
        ours = isinstance(exc, (DrkitError, Terminated))
        marker.update(state="failed (%s)" % marker.get("state", "?"),
                      error=str(exc) if ours else "%s: %s" % (type(exc).__name__, exc))
        write_marker(data_dir, marker, ids)
    except (DrkitError, OSError):
        pass  # the original error is what the caller must see
