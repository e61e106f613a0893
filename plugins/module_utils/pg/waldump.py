# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading archived WAL records with PostgreSQL's own pg_waldump: where the
archive of a timeline ends (the last complete record), and the first
record after a point that matches a condition (a commit, a transaction id,
a restore point). PITR uses it to give PostgreSQL an exact target for
``latest`` and to tell whether a target lies on an older timeline's branch.

Segments are fetched from the archive (checked like every wal-fetch) into a
private scratch directory, at most two at a time: pg_waldump reads a window
of two segments, so a record that crosses the boundary is seen whole.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import re
import shutil
import subprocess
import tempfile

from ..core.errors import NotFoundError, ToolError
from ..core.scratch import clean_env
from ..repo.wal_layout import format_lsn, parse_lsn, segment_name
from .wal_archive import fetch_file

_RECORD = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), "
                     r"prev [0-9A-F]+/[0-9A-F]+, desc: (.*)$")
_XACT_TIME = re.compile(r"^(COMMIT|ABORT)(?:_PREPARED)? (?:\d+: )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
_EOR_TIME = re.compile(r"^END_OF_RECOVERY .*\btime (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


class Record(object):
    """One WAL record as pg_waldump describes it."""

    __slots__ = ("rmgr", "xid", "lsn", "desc")

    def __init__(self, rmgr, xid, lsn, desc):
        self.rmgr, self.xid, self.lsn, self.desc = rmgr, xid, lsn, desc

    @property
    def kind(self):
        return self.desc.split(" ", 1)[0].rstrip(";")

    @property
    def xact_time(self):
        """The time of a commit or abort record (aware, UTC), else None."""
        if self.rmgr != "Transaction":
            return None
        m = _XACT_TIME.match(self.desc)
        return _utc(m.group(2)) if m else None

    @property
    def is_commit(self):
        return self.rmgr == "Transaction" and self.kind in ("COMMIT", "COMMIT_PREPARED")

    @property
    def end_of_recovery_time(self):
        m = _EOR_TIME.match(self.desc) if self.rmgr == "XLOG" else None
        return _utc(m.group(1)) if m else None

    def __repr__(self):
        return "Record(%s %s tx %d: %s)" % (format_lsn(self.lsn), self.rmgr, self.xid, self.desc[:60])


def _utc(text):
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)


def parse_records(text):
    out = []
    for line in text.splitlines():
        m = _RECORD.match(line.strip())
        if m:
            out.append(Record(m.group(1), int(m.group(2)), parse_lsn(m.group(3)), m.group(4).strip()))
    return out


def run_waldump(tool, wal_dir, timeline, start, end=None):
    """The records pg_waldump reads from ``start`` (an LSN int) on
    ``timeline`` in ``wal_dir``, up to ``end`` or the end of what is there
    (its error at the end of the WAL is expected and not one)."""
    argv = [tool, "--path", wal_dir, "--timeline", str(timeline), "--start", format_lsn(start)]
    if end is not None:
        argv += ["--end", format_lsn(end)]
    try:
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600, check=False,
                             env=clean_env({"TZ": "UTC", "LC_ALL": "C"}))
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolError("Could not run %s: %s" % (tool, e))
    records = parse_records(res.stdout.decode("utf-8", "replace"))
    err = res.stderr.decode("utf-8", "replace").strip()
    if res.returncode != 0 and not records and "could not find a valid record" not in err \
            and "could not find file" not in err and "invalid record" not in err and "error in WAL record" not in err:
        raise ToolError("%s failed (exit %d): %s" % (os.path.basename(tool), res.returncode, err[-1000:]))
    return records


class ArchiveReader(object):
    """Segments of one timeline fetched from the archive into a private
    scratch directory as they are needed (a context manager: the directory
    goes on exit). ``keyring`` (core.crypto.Keyring): for an encrypted
    archive."""

    def __init__(self, storage, tool, timeline, seg_size, keyring=None):
        self.storage, self.tool, self.timeline, self.seg_size = storage, tool, int(timeline), seg_size
        self.keyring = keyring
        self.dir = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="drkit-waldump-")
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _have(self, numbers):
        """Keep exactly these segments in the directory; False when one of
        them is not in the archive."""
        wanted = set(segment_name(self.timeline, n, self.seg_size) for n in numbers)
        for name in os.listdir(self.dir):
            if name not in wanted:
                os.unlink(os.path.join(self.dir, name))
        for name in sorted(wanted):
            path = os.path.join(self.dir, name)
            if not os.path.exists(path):
                try:
                    fetch_file(self.storage, name, path, keyring=self.keyring)
                except NotFoundError:
                    return False
        return True

    def window(self, first_no, last_no, start):
        """Records from ``start`` in segments first_no..last_no."""
        if not self._have(range(first_no, last_no + 1)):
            return None
        # --end at the window's end: without it pg_waldump waits for the next
        # segment to appear (seconds of retries) before it gives up
        return run_waldump(self.tool, self.dir, self.timeline, max(start, first_no * self.seg_size),
                           (last_no + 1) * self.seg_size)

    def find(self, start, predicate, last_no, first_only=True):
        """Records after ``start`` (LSN int) on this timeline that satisfy
        ``predicate``, reading up to segment ``last_no``: the first one (or
        None), or with first_only=False all of them."""
        found, seen = [], set()
        no = start // self.seg_size
        while no <= last_no:
            records = self.window(max(start // self.seg_size, no - 1), no, start)
            if records is None:
                break
            for r in records:
                if r.lsn >= start and r.lsn not in seen:
                    seen.add(r.lsn)
                    if predicate(r):
                        if first_only:
                            return r
                        found.append(r)
            no += 1
        return None if first_only else found

    def last_record(self, last_no, floor_lsn=0, lookback=8):
        """The last complete record in the archive up to segment ``last_no``
        (looking back at most ``lookback`` segments), or None."""
        for back in range(0, lookback):
            first = last_no - back
            if first < 0 or (first + 1) * self.seg_size <= floor_lsn:
                break
            records = self.window(first, last_no, max(floor_lsn, first * self.seg_size))
            if records:
                return records[-1]
        return None
