# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A PostgreSQL cluster on disk: finding the server binaries, postmaster.pid,
pg_ctl start/stop as the cluster's OS user, postgresql.conf quoting, the
server log.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re
import shutil
import subprocess

from ..core.errors import ConfigError, ToolError, WaitTimeout
from ..core.osutil import user_ids


def _version_key(path):
    name = os.path.basename(os.path.dirname(path.rstrip("/")))
    return [int(p) if p.isdigit() else 0 for p in re.split(r"[._-]", name)]


def _has_server(bindir):
    return all(os.access(os.path.join(bindir, b), os.X_OK) for b in ("postgres", "initdb", "pg_ctl"))


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
        candidates = ["/usr/lib/postgresql/%s/bin" % version, "/usr/pgsql-%s/bin" % version]
        for cand in candidates:
            if _has_server(cand):
                return cand
        raise ConfigError(
            "PostgreSQL %s server programs (initdb, postgres, pg_ctl) were not found in %s"
            % (version, " or ".join(candidates)),
            "Install the package postgresql-%s (Debian/Ubuntu: apt-get install postgresql-%s)" % (version, version))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 check=True, timeout=30).stdout.decode("utf-8", "replace").strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_server(out):
            return out
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if _has_server(d)]
    if found:
        return sorted(found, key=_version_key)[-1]
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


def pidfile_live(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as fh:
            pid = int(fh.readline().strip())
    except (IOError, OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            if b"postgres" not in fh.read():
                return None
    except (IOError, OSError):
        pass
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


# --------------------------------------------------------------------------
# starting and watching recovery


def server_env(ids):
    env = dict((k, v) for k, v in os.environ.items()
               if not k.startswith(("PG", "AWS_", "DRKIT_")) and k not in ("LANGUAGE",))
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    if ids:
        env["HOME"] = ids[2]
    return env


def as_user(ids):
    if not ids or ids[0] == os.geteuid():
        return {}
    return {"user": ids[0], "group": ids[1], "extra_groups": []}


def start_server(bin_dir, data_dir, log_file, ids, timeout=60):
    """pg_ctl start without waiting (we watch the promotion ourselves).
    Messages in English (lc_messages=C) and to our log file (no collector),
    so the FATAL we look for cannot be missed."""
    argv = [os.path.join(bin_dir, "pg_ctl"), "start", "-D", data_dir, "-l", log_file, "-W",
            "-o", "-c lc_messages=C -c logging_collector=off"]
    try:
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env(ids),
                             cwd=data_dir, timeout=timeout, check=False, **as_user(ids))
    except subprocess.TimeoutExpired:
        raise WaitTimeout("pg_ctl start did not return within %s s" % timeout)
    except OSError as e:
        raise ToolError("Could not run pg_ctl: %s" % e)
    if res.returncode != 0:
        raise ToolError("pg_ctl start failed (exit %d): %s" % (
            res.returncode, (res.stderr or res.stdout).decode("utf-8", "replace").strip()[-2000:]))


def stop_server(bin_dir, data_dir, ids, mode="fast"):
    argv = [os.path.join(bin_dir, "pg_ctl"), "stop", "-D", data_dir, "-m", mode, "-w", "-t", "60"]
    subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env(ids), cwd="/",
                   timeout=90, check=False, **as_user(ids))


def _pid_status(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as fh:
            lines = fh.read().split("\n")
    except (IOError, OSError):
        return None, None
    try:
        pid = int(lines[0])
    except (ValueError, IndexError):
        return None, None
    return pid, (lines[7].strip() if len(lines) > 7 else None)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def read_log(path, offset=0):
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return ""
