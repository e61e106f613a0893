# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_rewind for an old primary that becomes a standby of the new one
(``drkit standby --rewind``, pg_standby ``rewind: true``).

pg_rewind makes the old data directory a copy of the new primary's by
copying only the blocks that changed since the timelines diverged: minutes
for a large cluster where a rebuild from the repository reads every byte.
It needs ``wal_log_hints = on`` or data checksums on the old primary (a
hint-bit change writes no WAL otherwise, and pg_rewind would miss it), the
old primary stopped, and a superuser (or a role granted pg_ls_dir,
pg_stat_file, pg_read_binary_file and pg_read_binary_file(text, bigint,
bigint, boolean)) on the new one. WAL the old primary no longer holds is
fetched with its ``restore_command`` (``--restore-target-wal``), which drkit
sets to ``drkit wal-fetch`` before it runs pg_rewind.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess

from ..core.errors import ConfigError, SourceError, ToolError, WaitTimeout
from .client import _psycopg, connect
from .cluster import as_user, server_env

_DIVERGED = re.compile(r"servers diverged at WAL location ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_CHECKPOINT = re.compile(r"rewinding from last common checkpoint at ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_NOT_NEEDED = "no rewind required"


def check_rewindable(facts, data_dir):
    """ConfigError unless pg_controldata's ``facts`` show what pg_rewind
    needs: wal_log_hints or data checksums."""
    hints = facts.get("wal_log_hints setting") == "on"
    checksums = facts.get("Data page checksum version", "0") not in ("", "0")
    if not (hints or checksums):
        raise ConfigError(
            "pg_rewind cannot rejoin %s: the old primary ran with neither wal_log_hints = on nor data checksums "
            "(pg_controldata), so changes to hint bits left no WAL to find" % data_dir,
            "Build the standby from the repository instead (drkit standby without --rewind, into a new or "
            "emptied directory); for next time, set wal_log_hints = on on every server (a restart)")
    return {"wal_log_hints": hints, "data_checksums": checksums}


def checkpoint_source(cp):
    """CHECKPOINT on the new primary: pg_rewind reads the source's timeline
    from its pg_control, which a promotion updates only at the next
    checkpoint; before it, pg_rewind sees the old timeline and says no rewind
    is required (and the server then refuses to start)."""
    try:
        with connect(cp, "postgres", autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except _psycopg().Error as e:
        raise SourceError("CHECKPOINT on the new primary %s:%s failed: %s" % (
            cp["login_host"], cp["port"], str(e).strip()),
            "pg_rewind needs a superuser, or a role granted pg_checkpoint and the pg_rewind functions "
            "(pg_ls_dir, pg_stat_file, pg_read_binary_file)")


def run_pg_rewind(bin_dir, data_dir, conninfo, ids, timeout):
    """pg_rewind --restore-target-wal from the server ``conninfo`` names (a
    passfile, never a password) into ``data_dir``, as the server's OS user.
    Returns what it said: whether it rewound, where the timelines diverged
    and the checkpoint it rewound from."""
    argv = [os.path.join(bin_dir, "pg_rewind"), "--target-pgdata", data_dir, "--source-server", conninfo,
            "--restore-target-wal", "--progress"]
    try:
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/",
                             env=server_env(ids and ids[2]), timeout=timeout, check=False, **as_user(ids))
    except subprocess.TimeoutExpired:
        raise WaitTimeout("pg_rewind did not finish within %s s" % timeout,
                          "%s may be inconsistent now: build the standby from the repository into a new "
                          "directory (drkit standby without --rewind)" % data_dir)
    except OSError as e:
        raise ToolError("Could not run pg_rewind: %s" % e, "Install the PostgreSQL server package")
    said = res.stdout.decode("utf-8", "replace")
    lines = [line for line in said.splitlines() if line.strip() and "kB (" not in line]  # no progress lines
    if res.returncode != 0:
        raise ToolError("pg_rewind failed (exit %d): %s" % (res.returncode, " / ".join(lines[-4:])),
                        "If it stopped after it began copying, %s is inconsistent: build the standby from the "
                        "repository into a new directory (drkit standby without --rewind)" % data_dir)
    out = {"rewound": _NOT_NEEDED not in said, "pg_rewind_said": lines[-6:]}
    m = _DIVERGED.search(said)
    if m:
        out.update(diverged_at=m.group(1), diverged_timeline=int(m.group(2)))
    m = _CHECKPOINT.search(said)
    if m:
        out["rewound_from_checkpoint"] = m.group(1)
    return out
