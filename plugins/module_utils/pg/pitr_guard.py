# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What keeps an unfinished point-in-time recovery from passing for a
cluster, and its secrets from outliving it.

* The marker ``drkit-pitr.incomplete`` in the data directory: written
  before the first byte of the base backup, updated at each step (state,
  and the error when drkit saw one), removed only once the server is
  promoted and checked. With it the directory also keeps
  ``recovery.signal`` and no restore_command in any configuration file, so
  ``pg_ctl start`` refuses it ("must specify restore_command") until a
  new ``drkit pitr`` into the same directory takes it over: that run says
  what it found, stops the recovering server (never a promoted one),
  removes the dead run's private directory and starts over.
* The private directory ``drkit-pitr-<host>-<pid>-...`` in the system's
  temporary directory (0700, owned by the server's OS user): the storage
  options restore_command reads, when no lasting config (``wal_config``,
  the postgresql_wal_archive role's file) is given. Never inside the data
  directory, removed on every path drkit lives through, and after a kill
  -9 by the next run into the same directory.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import socket
import tempfile

from ..core.errors import ConfigError, SafetyError
from ..core.osutil import atomic_write, check_traversable
from ..repo import manifest as mf

MARKER = "drkit-pitr.incomplete"
PRIVATE_PREFIX = "drkit-pitr-"


def process_start(pid):
    """The start time of a process (clock ticks since boot, /proc/<pid>/stat
    field 22), to tell it from a later process with the same pid."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (IOError, OSError, IndexError):
        return None


def new_marker(**facts):
    out = {"tool": "drkit pitr", "host": socket.gethostname(), "pid": os.getpid(),
           "pid_start": process_start(os.getpid()), "started_at": mf.isoformat(mf.utcnow()), "state": "restoring",
           "private_dir": None, "error": None}
    out.update(facts)
    return out


def write_marker(data_dir, marker, ids=None):
    atomic_write(os.path.join(data_dir, MARKER), json.dumps(marker, indent=1, sort_keys=True) + "\n",
                 owner=ids and (ids[0], ids[1]))


def read_marker(data_dir):
    """The marker's content; None without a marker; {} when it cannot be read."""
    path = os.path.join(data_dir, MARKER)
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (IOError, OSError, ValueError):
        return {}


def remove_marker(data_dir):
    try:
        os.unlink(os.path.join(data_dir, MARKER))
    except FileNotFoundError:
        pass


def drkit_alive(marker):
    """Whether the drkit process that wrote the marker still runs here."""
    pid = marker.get("pid")
    if not isinstance(pid, int) or marker.get("host") != socket.gethostname():
        return False
    start = process_start(pid)
    return start is not None and start == marker.get("pid_start")


def describe(marker):
    """How a rerun names what it found."""
    what = "a failed drkit recovery" if marker.get("error") else "an interrupted drkit recovery"
    bits = []
    if marker.get("pid"):
        bits.append("pid %s on %s" % (marker["pid"], marker.get("host", "?")))
    if marker.get("started_at"):
        bits.append("started %s" % marker["started_at"])
    if marker.get("backup_id"):
        bits.append("from %s" % marker["backup_id"])
    bits.append("state %s" % marker.get("state", "unknown"))
    if marker.get("error"):
        bits.append("failed: %s" % str(marker["error"])[:300])
    return "%s (%s, marker %s)" % (what, ", ".join(bits), MARKER)


def check_takeover(data_dir, marker):
    """Refuse a marked directory that must not be taken over: its drkit still
    runs, or it belongs to another host. Returns how to name it."""
    found = describe(marker)
    if marker.get("host") and marker["host"] != socket.gethostname():
        raise SafetyError("%s holds %s from another host: drkit cannot tell whether it still runs" % (
            data_dir, found), "Check on %s; remove the directory yourself if that recovery is over" % marker["host"])
    if drkit_alive(marker):
        raise SafetyError("%s holds %s that is still running" % (data_dir, found),
                          "Wait for it, or stop it (its drkit process: pid %s)" % marker["pid"])
    return found


# --------------------------------------------------------------------------
# the private directory of a run's secrets


def make_private_dir(ids=None):
    """A new 0700 directory for this run's secrets, in the system's
    temporary directory, owned by the server's OS user (``ids``)."""
    parent = tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="%s%s-%d-" % (PRIVATE_PREFIX, socket.gethostname(), os.getpid()), dir=parent)
    os.chmod(path, 0o700)
    if ids and ids[0] != os.geteuid():
        try:
            check_traversable(path, ids[0], set([ids[1]]))
        except ConfigError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        os.chown(path, ids[0], ids[1])
    return path


def remove_private_dir(path):
    """Remove a run's private directory (only one drkit made)."""
    if path and os.path.basename(os.path.normpath(path)).startswith(PRIVATE_PREFIX) and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
