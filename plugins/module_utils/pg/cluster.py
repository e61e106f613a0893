# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL cluster on disk: finding the server binaries, postmaster.pid,
pg_ctl start/stop as the cluster's OS user, postgresql.conf quoting, the
server log.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shlex
import shutil
import subprocess
import sys

from ..core.errors import ConfigError, ToolError, WaitTimeout
from ..core.osutil import user_ids
from ..core.scratch import clean_env
from .client import BIN_LAYOUTS, has_programs, pg_bindirs

SERVER_PROGRAMS = ("postgres", "initdb", "pg_ctl")


def find_pg_bindir(version=None):
    """Directory holding the PostgreSQL server programs (postgres, initdb,
    pg_ctl, pg_dump, psql...).

    With ``version`` (15, "16"...), exactly that major version. Otherwise
    ``pg_config --bindir`` if it has the server programs (on Debian
    pg_config comes from libpq-dev and may point at a client-only
    directory), else the newest ``/usr/lib/postgresql/*/bin``.
    """
    if version is not None:
        version = str(version).strip()
        found = pg_bindirs(SERVER_PROGRAMS, version)
        if found:
            return found[0]
        raise ConfigError(
            "PostgreSQL %s server programs (initdb, postgres, pg_ctl) were not found in %s"
            % (version, " or ".join(layout % version for layout in BIN_LAYOUTS)),
            "Install the package postgresql-%s (Debian/Ubuntu: apt-get install postgresql-%s)" % (version, version))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 check=True, timeout=30).stdout.decode("utf-8", "replace").strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and has_programs(out, SERVER_PROGRAMS):
            return out
    found = pg_bindirs(SERVER_PROGRAMS)
    if found:
        return found[0]
    raise ConfigError(
        "No PostgreSQL server programs (initdb, postgres, pg_ctl) were found "
        "(looked at pg_config --bindir and /usr/lib/postgresql/*/bin)",
        "Install the package postgresql (Debian/Ubuntu: apt-get install postgresql postgresql-client)")


def cmdline_value(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# --------------------------------------------------------------------------
# the data directory


def read_pidfile(data_dir):
    """(pid, port, status) from the data directory's postmaster.pid; status
    is its 8th line (starting, stopping, ready, standby) once the postmaster
    wrote it. (None, None, None) without a readable pid."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as fh:
            lines = fh.read().split("\n")
        pid = int(lines[0])
    except (IOError, OSError, ValueError, IndexError):
        return None, None, None
    try:
        port = int(lines[3])
    except (ValueError, IndexError):
        port = None
    return pid, port, ((lines[7].strip() if len(lines) > 7 else None) or None)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def pidfile_live(data_dir):
    """The pid in postmaster.pid if it is a live postgres process (a stale
    file may name a recycled pid: /proc says what runs there), else None."""
    pid = read_pidfile(data_dir)[0]
    if not pid or not pid_alive(pid):
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            if b"postgres" not in fh.read():
                return None
    except (IOError, OSError):
        pass  # no /proc: trust kill(pid, 0)
    return pid


def os_user_ids(os_user):
    if os_user is None:
        return None
    uid, gid, _groups, home = user_ids(os_user)
    return uid, gid, home


def default_os_user(params):
    if params.get("os_user"):
        return params["os_user"]
    return "postgres" if os.geteuid() == 0 else None


# --------------------------------------------------------------------------
# recovery configuration


def conf_quote(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "''")


# The settings that steer a recovery (PostgreSQL 12+: "Archive Recovery",
# "Recovery Target" and the standby's connection). A data directory must
# not keep them once it is a primary: every base backup of it would carry
# them into the next recovery (a stale recovery_target_time stops a later
# recovery to latest early; two targets make the server refuse to start).
TARGET_PARAMS = ("recovery_target", "recovery_target_lsn", "recovery_target_name", "recovery_target_time",
                 "recovery_target_xid")
RECOVERY_PARAMS = TARGET_PARAMS + (
    "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_target_action",
    "recovery_target_inclusive", "recovery_target_timeline", "recovery_min_apply_delay", "primary_conninfo",
    "primary_slot_name", "promote_trigger_file")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=\s*|\s+)(.*?)\s*$")


def neutral_recovery_settings(target=None, value=None):
    """Explicit empty values for every recovery target and the other
    recovery commands: given last (on the command line or at the end of
    postgresql.auto.conf), they override whatever the configuration files
    of a restored base backup still say. With ``target`` (one of
    TARGET_PARAMS) that one is set to ``value`` and comes LAST: PostgreSQL
    applies the settings in order and refuses to start ("multiple recovery
    targets specified") when it is told to empty one target after another
    one was set. Keep the order (a dict's) when writing them out."""
    out = dict((name, "") for name in TARGET_PARAMS if name != target)
    out.update(archive_cleanup_command="", recovery_end_command="", primary_conninfo="", primary_slot_name="",
               recovery_min_apply_delay=0)
    if target is not None:
        if target not in TARGET_PARAMS:
            raise ConfigError("%r is not a recovery target setting" % (target,))
        out[target] = value
    return out


def strip_recovery_settings(text):
    """``text`` (postgresql.auto.conf) without the lines that set a recovery
    setting. Returns (new text, [(name, value as written)])."""
    kept, removed = [], []
    for line in text.splitlines(True):
        m = _ASSIGNMENT.match(line.split("#", 1)[0]) if not line.lstrip().startswith("#") else None
        if m and m.group(1).lower() in RECOVERY_PARAMS:
            removed.append((m.group(1).lower(), m.group(2)))
            continue
        kept.append(line)
    return "".join(kept), removed


# --------------------------------------------------------------------------
# starting and watching recovery


# A recovered server's restore_command reads its storage options from the
# config file drkit writes, never from the credentials of whoever ran drkit.
RECOVERY_ENV_DROP = ("PG", "AWS_", "DRKIT_")


def server_env(home=None, user=None, drop_prefixes=("PG",)):
    """The environment of the server's programs: the caller's minus libpq's
    PG* variables (and ``drop_prefixes``) and LANGUAGE, C.UTF-8 messages,
    the OS user's HOME (and USER/LOGNAME when ``user`` is given)."""
    env = clean_env({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, drop_prefixes)
    env.pop("LANGUAGE", None)
    if home:
        env["HOME"] = home
    if user:
        env["USER"] = env["LOGNAME"] = user
    return env


def as_user(ids):
    """subprocess keyword arguments that run a program as ``ids`` (uid, gid,
    ...); none when that is who we are already."""
    if not ids or ids[0] == os.geteuid():
        return {}
    uid, gid = ids[0], ids[1]
    if sys.version_info >= (3, 9):
        return {"user": uid, "group": gid, "extra_groups": []}

    def demote():  # Python 3.8 (ansible-core 2.19's oldest target) has no user=/group=
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return {"preexec_fn": demote}


SERVER_OPTIONS = (("lc_messages", "C"), ("logging_collector", False))


def server_options(settings=None):
    """pg_ctl's -o string: ``-c name=value`` for SERVER_OPTIONS and then
    ``settings``, in their order (pg_ctl runs postgres through the shell:
    quoted for it)."""
    pairs = list(SERVER_OPTIONS) + list((settings or {}).items())
    return " ".join("-c %s" % shlex.quote("%s=%s" % (k, cmdline_value(v))) for k, v in pairs)


def start_server(bin_dir, data_dir, log_file, ids, timeout=60, settings=None):
    """pg_ctl start without waiting (we watch the recovery ourselves).
    Messages in English (lc_messages=C) and to our log file (no collector),
    so the FATAL we look for cannot be missed. ``settings`` go on the
    postmaster's command line: they live as long as that server process
    and are in no configuration file (pg_basebackup leaves postmaster.opts,
    where pg_ctl notes them, out of every backup)."""
    argv = [os.path.join(bin_dir, "pg_ctl"), "start", "-D", data_dir, "-l", log_file, "-W",
            "-o", server_options(settings)]
    try:
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=server_env(ids and ids[2], drop_prefixes=RECOVERY_ENV_DROP),
                             cwd=data_dir, timeout=timeout, check=False, **as_user(ids))
    except subprocess.TimeoutExpired:
        raise WaitTimeout("pg_ctl start did not return within %s s" % timeout)
    except OSError as e:
        raise ToolError("Could not run pg_ctl: %s" % e)
    if res.returncode != 0:
        raise ToolError("pg_ctl start failed (exit %d): %s" % (
            res.returncode, (res.stderr or res.stdout).decode("utf-8", "replace").strip()[-2000:]))


def _pg_ctl(bin_dir, action, data_dir, ids, timeout, *extra):
    """pg_ctl ACTION -D data_dir -w -t timeout as the cluster's OS user
    (``ids``: uid, gid, ...). Returns the CompletedProcess."""
    argv = [os.path.join(bin_dir, "pg_ctl"), action, "-D", data_dir] + list(extra) + ["-w", "-t", str(int(timeout))]
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=server_env(drop_prefixes=RECOVERY_ENV_DROP), cwd="/", timeout=timeout + 30,
                              check=False, **as_user(ids))
    except subprocess.TimeoutExpired:
        raise WaitTimeout("pg_ctl %s did not return within %s s" % (action, timeout + 30))
    except OSError as e:
        raise ToolError("Could not run pg_ctl: %s" % e)


def stop_server(bin_dir, data_dir, ids, mode="fast", timeout=60):
    """pg_ctl stop -m mode, waiting up to ``timeout`` s, as the cluster's OS
    user (``ids``: uid, gid, ...). True if pg_ctl says it stopped."""
    return _pg_ctl(bin_dir, "stop", data_dir, ids, timeout, "-m", mode).returncode == 0


def promote_server(bin_dir, data_dir, ids, timeout=60):
    """pg_ctl promote -w as the cluster's OS user: ends a paused recovery.
    ToolError with pg_ctl's words when it fails."""
    res = _pg_ctl(bin_dir, "promote", data_dir, ids, timeout)
    if res.returncode != 0:
        raise ToolError("pg_ctl promote failed (exit %d): %s" % (
            res.returncode, (res.stderr or res.stdout).decode("utf-8", "replace").strip()[-2000:]))


def control_facts(bin_dir, data_dir):
    """pg_controldata's lines as a dict (ToolError when it cannot read them)."""
    try:
        res = subprocess.run([os.path.join(bin_dir, "pg_controldata"), data_dir], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=server_env(), timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolError("Could not run pg_controldata: %s" % e)
    if res.returncode != 0:
        raise ToolError("pg_controldata %s failed: %s" % (data_dir, res.stderr.decode("utf-8", "replace").strip()))
    out = {}
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def control_state(bin_dir, data_dir):
    """pg_control's "Database cluster state" (in production, shut down, shut
    down in recovery, in archive recovery...), or None when pg_controldata
    cannot read it."""
    try:
        return control_facts(bin_dir, data_dir).get("Database cluster state")
    except ToolError:
        return None


def read_log(path, offset=0):
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return ""
