# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The databases drkit creates and the janitor's database part.

Names, at most 63 bytes (PostgreSQL silently cuts longer ones)::

    drkit_verify_<tag>_<rand>               verify's scratch database
    <target>__drkit_restore_<tag>_<rand>    restore's staging database
    <target>__drkit_old_<tag>_<rand>        the original a forced restore renamed away

``<tag>`` is the owner tag of core/janitor.py (host, pid, start time),
``<rand>`` 4 hex digits; the target's name is cut (on a character boundary)
to make room. ``sweep_databases`` (one catalog query) drops the scratch and
staging databases of this host's dead drkit processes. It never drops a
``__drkit_old_`` database: that is the user's data as it was before a
restore (the swap renames both databases in one transaction, so an
interrupted swap leaves either the original under its own name or the
restored copy in place and the original under this name); it names it and
keeps it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import os
import re

from ..core.janitor import TAG_PATTERN, host_id, is_dead, owner_tag
from .client import MAX_IDENT, drop_database

SCRATCH = "drkit_verify"
STAGING = "__drkit_restore"
OLD = "__drkit_old"
NAME = re.compile(r"^(.*?)(%s|%s|%s)_%s_[0-9a-f]{4}$" % (SCRATCH, STAGING, OLD, TAG_PATTERN), re.S)


def unique_name(prefix, marker):
    """``<prefix><marker>_<owner tag>_<random>``, at most 63 BYTES: the
    prefix is shortened first, on a character boundary, so the marker and
    the owner tag always survive whole."""
    suffix = "%s_%s_%s" % (marker, owner_tag(), binascii.hexlify(os.urandom(2)).decode("ascii"))
    budget = MAX_IDENT - len(suffix.encode("utf-8"))
    return prefix.encode("utf-8")[:max(budget, 0)].decode("utf-8", "ignore") + suffix


def parse(name):
    """(marker, host, pid, start) of a name unique_name made, else None. A
    scratch database's name starts with its marker."""
    m = NAME.match(name)
    if not m or (m.group(2) == SCRATCH and m.group(1)):
        return None
    return m.group(2), m.group(3), m.group(4), m.group(5)


def _leftovers(conn):
    """Names of this host's scratch, staging and renamed-away databases that
    the connected role may drop (one catalog query)."""
    pattern = "(^%s|%s|%s)_%s_[0-9]+_[0-9a-f]{6}_[0-9a-f]{4}$" % (SCRATCH, STAGING, OLD, host_id())
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname ~ %s AND pg_has_role(datdba, 'MEMBER') "
                    "ORDER BY datname", (pattern,))
        return [row[0] for row in cur.fetchall()]


def sweep_databases(conn, progress=None):
    """Drop the scratch and staging databases that dead drkit processes of
    this host left on conn's server; name (and keep) their renamed-away
    originals. ``conn``: any connection (set to autocommit meanwhile).
    Returns (dropped, kept). Never fails the command: a database that cannot
    be dropped is reported and left."""
    progress = progress or (lambda msg: None)
    from psycopg import Error  # pylint: disable=import-outside-toplevel
    dropped, kept = [], []
    autocommit = conn.autocommit
    try:
        conn.autocommit = True
        for name in _leftovers(conn):
            parsed = parse(name)
            if parsed is None or not is_dead(*parsed[1:]):
                continue
            marker, pid = parsed[0], parsed[2]
            if marker == OLD:
                kept.append(name)
                progress("kept %s: the database a restore by dead drkit process %s renamed away (the data "
                         "that was in place before it); drop it once it is not needed" % (name, pid))
                continue
            try:
                drop_database(conn, name)
            except Error as e:
                progress("could not drop %s, left by dead drkit process %s: %s" % (name, pid, e))
                continue
            dropped.append(name)
            progress("dropped %s, left by dead drkit process %s" % (name, pid))
    finally:
        conn.autocommit = autocommit
    return dropped, kept
