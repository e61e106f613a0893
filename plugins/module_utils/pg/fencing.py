# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fence drkit failover puts on an old primary, and its removal when
the old primary becomes a standby of the new one (``drkit standby
--rewind``): one place that knows what the fence is."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

from ..core.errors import SafetyError
from ..core.osutil import atomic_write
from ..repo import manifest as mf
from .cluster import pidfile_live, stop_server, strip_recovery_settings

FENCE_MARKER = "drkit-fenced"
_FENCE_MARK = "# --- drkit failover: fenced"


def fence(data_dir, bin_dir, ids, reason, progress):
    """Stop the old primary and make sure that, started again, it is a
    read-only standby that archives nothing. Returns what was done."""
    done = []
    if pidfile_live(data_dir):
        progress("stopping the old primary in %s" % data_dir)
        if stop_server(bin_dir, data_dir, ids, mode="fast", timeout=30):
            done.append("stopped (fast)")
        elif stop_server(bin_dir, data_dir, ids, mode="immediate", timeout=30):
            done.append("stopped (immediate)")
        if pidfile_live(data_dir):
            raise SafetyError("The old primary in %s does not stop: not fenced, nothing promoted" % data_dir,
                              "Stop it (kill the postmaster) and run the failover again")
    owner = ids and (ids[0], ids[1])
    atomic_write(os.path.join(data_dir, "standby.signal"), "", owner=owner)
    auto, text, mode = _read_auto_conf(data_dir)
    kept, _removed = strip_recovery_settings(text)
    kept = kept.split(_FENCE_MARK, 1)[0]
    lines = ["%s %s (%s) ---" % (_FENCE_MARK, mf.isoformat(mf.utcnow()), reason),
             "# started again it is a read-only standby of nothing that archives nothing;",
             "# rebuild it as a standby of the new primary (drkit standby --rewind) instead of removing this",
             "archive_mode = off", "primary_conninfo = ''", "restore_command = ''"]
    atomic_write(auto, kept.rstrip("\n") + "\n" + "\n".join(lines) + "\n", mode=mode, owner=owner)
    atomic_write(os.path.join(data_dir, FENCE_MARKER), "fenced by drkit failover at %s: %s\n" % (
        mf.isoformat(mf.utcnow()), reason), owner=owner)
    done += ["standby.signal", "archive_mode = off"]
    return done


def _read_auto_conf(data_dir):
    auto = os.path.join(data_dir, "postgresql.auto.conf")
    try:
        with open(auto) as fh:
            return auto, fh.read(), stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
    except FileNotFoundError:
        return auto, "", 0o600


def is_fenced(data_dir):
    """The fence's file or its block in postgresql.auto.conf is there."""
    return os.path.exists(os.path.join(data_dir, FENCE_MARKER)) or _FENCE_MARK in _read_auto_conf(data_dir)[1]


def unfence(data_dir, ids):
    """Remove the fence (its postgresql.auto.conf block, its file; the
    standby.signal stays for the caller to decide). True if there was one."""
    auto, text, mode = _read_auto_conf(data_dir)
    found = False
    if _FENCE_MARK in text:
        atomic_write(auto, text.split(_FENCE_MARK, 1)[0].rstrip("\n") + "\n", mode=mode,
                     owner=ids and (ids[0], ids[1]))
        found = True
    try:
        os.unlink(os.path.join(data_dir, FENCE_MARKER))
        found = True
    except FileNotFoundError:
        pass
    return found
