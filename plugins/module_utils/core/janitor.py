# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The janitor: everything a drkit process creates carries its owner's
name, and the next run removes what dead processes of this host left.

The owner tag is ``<host>_<pid>_<start>``:

* ``host``: 8 hex digits of sha256 over the host name and /etc/machine-id.
  Several hosts may share one database server; a host only ever removes
  names with its own host id.
* ``pid``: the process id.
* ``start``: 6 hex digits of sha256 over the kernel's boot id and the
  process's start time (/proc/<pid>/stat, clock ticks since boot). A pid
  that a later process reuses, before or after a reboot, gives another
  value.

A tagged name belongs to a dead process when its host is this host and no
process has its pid, or that process is a zombie or started at another
time. Whatever cannot be told (no /proc, a hidden process) counts as alive:
kept. Temp directories are ``drkit-<kind>-<tag>-XXXXXXXX`` (``dir_prefix``);
``sweep_dirs`` removes a dead process's ones, after stopping a scratch
server (redis-server, postgres) still running inside. Database names
(scratch, staging) are made and swept in pg/janitor.py with the same tag.
See docs/storage-layout.md, "Names of what drkit creates at run time".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import time

TAG_PATTERN = r"([0-9a-f]{8})_([0-9]+)_([0-9a-f]{6})"
# mkdtemp appends 8 characters of [a-z0-9_]; redis-restore's staging
# directory inside a data directory starts with a dot
DIR_NAME = re.compile(r"^\.?drkit-[a-z0-9-]+?-%s-[a-z0-9_]{8}$" % TAG_PATTERN)
STOP_WAIT = 30.0  # seconds a stray scratch server gets to stop on SIGTERM

_cache = {}


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip()
    except (IOError, OSError):
        return ""


def _digest(text, length):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def host_id():
    """This host's id in names: the host name and machine id, hashed."""
    if "host" not in _cache:
        machine = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")
        _cache["host"] = _digest("%s\n%s" % (socket.gethostname(), machine), 8)
    return _cache["host"]


def _proc_stat(pid):
    """(state, start time in clock ticks since boot) of a process, or None
    when /proc has no such process."""
    text = _read("/proc/%d/stat" % pid)
    if not text:
        return None
    # "pid (comm) state ppid ... starttime(22nd) ...": comm may hold ") "
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], fields[19]


def start_value(ticks):
    return _digest("%s:%s" % (_read("/proc/sys/kernel/random/boot_id"), ticks), 6)


def owner_tag():
    """``<host>_<pid>_<start>`` of this process."""
    pid = os.getpid()
    if _cache.get("pid") != pid:  # after a fork, the child is another owner
        st = _proc_stat(pid)
        _cache["tag"] = "%s_%d_%s" % (host_id(), pid, start_value(st[1] if st else "?"))
        _cache["pid"] = pid
    return _cache["tag"]


def dir_prefix(kind):
    """Prefix for tempfile.mkdtemp: ``drkit-<kind>-<owner tag>-``."""
    return "drkit-%s-%s-" % (kind, owner_tag())


def private_dir(kind, parent=None):
    """A new 0700 directory ``drkit-<kind>-<tag>-XXXXXXXX`` below parent (the
    temp directory by default) that the next run removes if we die."""
    return tempfile.mkdtemp(prefix=dir_prefix(kind), dir=parent or None)


def is_dead(host, pid, start):
    """True only when the tag names a process of this host that no longer
    runs; another host's tag, a live process and anything unknown: False."""
    if host != host_id():
        return False
    pid = int(pid)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user
    except OSError:
        return False
    st = _proc_stat(pid)
    if st is None:
        return False  # /proc hides it (hidepid) or it just ended: keep
    if st[0] in ("Z", "X"):
        return True
    return start_value(st[1]) != start


# --------------------------------------------------------------------------
# directories


def _processes_inside(path):
    """{pid: ppid} of the processes whose working directory is path or below
    (scratch servers run there), ourselves excluded."""
    found = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % entry)
        except OSError:
            continue
        if cwd == path or cwd.startswith(path + os.sep):
            st = _read("/proc/%s/stat" % entry)
            if st:
                found[int(entry)] = int(st[st.rindex(")") + 2:].split()[1])
    return found


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _alive(pids):
    return [p for p in pids if (_proc_stat(p) or ("X",))[0] not in ("Z", "X")]


def stop_strays(path, wait=STOP_WAIT):
    """Stop the processes a dead drkit left running inside ``path`` (a
    scratch server in its own session outlives drkit's SIGKILL): SIGTERM to
    the top of each tree (a postmaster shuts its backends down), SIGKILL to
    whatever still runs after ``wait`` seconds. Returns their pids."""
    procs = _processes_inside(path)
    if not procs:
        return []
    _signal([p for p, ppid in procs.items() if ppid not in procs], signal.SIGTERM)
    deadline = time.time() + wait
    while _alive(procs) and time.time() < deadline:
        time.sleep(0.1)
    left = _alive(procs)
    if left:
        _signal(left, signal.SIGKILL)
        deadline = time.time() + 10
        while _alive(left) and time.time() < deadline:
            time.sleep(0.1)
    return sorted(procs)


def _removable(path):
    """A real directory (not a symlink) that this user may remove."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and (os.geteuid() == 0 or st.st_uid == os.geteuid())


def sweep_dirs(parents, progress=None):
    """Remove the drkit directories that dead processes of this host left
    directly below each of ``parents``. Returns the removed paths. Never
    fails: a directory that cannot be listed or removed is left alone."""
    progress = progress or (lambda msg: None)
    removed = []
    seen = set()
    for parent in parents:
        if not parent:
            continue
        parent = os.path.realpath(parent)
        if parent in seen:
            continue
        seen.add(parent)
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            m = DIR_NAME.match(name)
            path = os.path.join(parent, name)
            if not m or not is_dead(*m.groups()) or not _removable(path):
                continue
            try:
                strays = stop_strays(path)
            except OSError:
                strays = []
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):
                progress("could not remove %s, left by dead drkit process %s" % (path, m.group(2)))
                continue
            removed.append(path)
            progress("removed %s, left by dead drkit process %s%s" % (
                path, m.group(2), " (stopped processes %s still running in it)" % strays if strays else ""))
    return removed


def sweep(params, progress=None):
    """The front doors' janitor call (cli.main, _ansible.run_engine) before a
    command runs: the temp directory and the command's work_dir."""
    return sweep_dirs([tempfile.gettempdir(), (params or {}).get("work_dir")], progress)
