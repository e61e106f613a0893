# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL segments as PostgreSQL writes them (long page headers) and as the
archive holds them: timelines, history files, what is missing, and the
chain recovery will replay.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct
import time

from ..core.errors import IntegrityError, WaitTimeout
from ..core.stream import read_zstd
from ..repo.wal_layout import (
    DEFAULT_SEGMENT_SIZE,
    HISTORY_DIR,
    HISTORY_RE,
    SEGMENT_RE,
    STREAM_RE,
    WAL,
    name_of_key,
    parse_history,
    segment_name,
    segment_number,
    stream_end,
    timeline_of,
)

ARCHIVE_HINT = "The archived copy cannot be trusted; see docs/pitr.md"
XLP_LONG_HEADER = 0x0002
# XLogLongPageHeaderData: the 24-byte XLogPageHeaderData (magic u16, info
# u16, tli u32, pageaddr u64, rem_len u32, padding) then sysid u64,
# seg_size u32, xlog_blcksz u32.
LONG_HEADER = struct.Struct("<HHIQI4xQII")


def read_long_header(head, name=None):
    """Facts from the first page of a WAL segment (its long page header)."""
    if len(head) < LONG_HEADER.size:
        raise IntegrityError("%s is too short to be a WAL segment (%d bytes)" % (name or "file", len(head)))
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = LONG_HEADER.unpack_from(head)
    if not info & XLP_LONG_HEADER or seg_size == 0 or seg_size & (seg_size - 1) or blcksz == 0:
        raise IntegrityError("%s does not start with a WAL long page header" % (name or "file"),
                             "It is not a WAL segment of PostgreSQL; it was not archived")
    return {"magic": magic, "timeline": tli, "pageaddr": pageaddr, "system_identifier": str(sysid),
            "segment_size": seg_size, "block_size": blcksz}


# --------------------------------------------------------------------------
# reading the archive: listings, chains, waiting


def list_timeline(storage, timeline, streamed=False):
    """Names of the segments archived on a timeline (int or 8-hex), sorted.
    With ``streamed``, also those of which only a streamed partial is there
    (the streaming archiver's current segment): enough for replay to go as
    far as the partial holds, not for a base backup's own WAL."""
    tli = timeline if isinstance(timeline, str) else "%08X" % timeline
    out = set()
    for info in storage.list("%s/%s/" % (WAL, tli)):
        name = name_of_key(info.key)
        if name and SEGMENT_RE.match(name):
            out.add(name)
        elif streamed and name and STREAM_RE.match(name):
            out.add(name[:24])
    return sorted(out)


def stream_partials(storage, segment):
    """{end offset: key} of the streamed partials of ``segment``."""
    out = {}
    for info in storage.list("%s/%s/%s." % (WAL, timeline_of(segment), segment)):
        name = name_of_key(info.key)
        if name and STREAM_RE.match(name):
            out[stream_end(name)[1]] = info.key
    return out


def list_history(storage):
    """{timeline int: history text} of the archived timeline history files."""
    out = {}
    for info in storage.list(HISTORY_DIR + "/"):
        name = name_of_key(info.key)
        if name and HISTORY_RE.match(name):
            data = bytearray()
            read_zstd(storage, info.key, data.extend, hint=ARCHIVE_HINT)
            out[int(name[:8], 16)] = bytes(data).decode("utf-8", "replace")
    return out


def missing_segments(storage, names):
    """Which of ``names`` are not in the archive (listing once per timeline)."""
    by_tli = {}
    for n in names:
        by_tli.setdefault(timeline_of(n), []).append(n)
    missing = []
    for tli, wanted in sorted(by_tli.items()):
        present = set(list_timeline(storage, tli))
        missing.extend(n for n in wanted if n not in present)
    return missing


def wait_for_segments(storage, names, timeout, poll=1.0, progress=None, what="the base backup"):
    """Wait until every segment of ``names`` is in the archive; WaitTimeout
    naming the missing ones otherwise."""
    progress = progress or (lambda msg: None)
    deadline = time.time() + max(0.0, float(timeout))
    said = False
    while True:
        missing = missing_segments(storage, names)
        if not missing:
            return
        if time.time() >= deadline:
            raise WaitTimeout(
                "%d WAL segment(s) needed by %s did not reach the archive %s within %s s: %s" % (
                    len(missing), what, storage.describe(), timeout, ", ".join(missing[:10])),
                "Check archive_command and pg_stat_archiver (last_failed_wal) on the server, "
                "or raise wal_wait_timeout")
        if not said:
            progress("waiting for %d WAL segment(s) to be archived: %s" % (len(missing), ", ".join(missing[:3])))
            said = True
        time.sleep(poll)


def ancestry(histories, timeline):
    """{ancestor timeline: LSN where ``timeline``'s line of history left it}
    from timeline's history file (empty for a timeline without one)."""
    text = histories.get(int(timeline))
    return dict(parse_history(text)) if text else {}


def on_timeline(histories, timeline, tli, lsn):
    """Whether the WAL position ``lsn`` of timeline ``tli`` is part of
    ``timeline``'s history: the same timeline, or an ancestor that
    ``timeline`` left at or after ``lsn``."""
    if int(tli) == int(timeline):
        return True
    switch = ancestry(histories, timeline).get(int(tli))
    return switch is not None and lsn <= switch


def recovery_chain(storage, timeline, start_segment, seg_size=DEFAULT_SEGMENT_SIZE, histories=None,
                   target_timeline=None):
    """What replay to the end of the archive needs from ``start_segment`` on
    ``timeline``: follows ``target_timeline`` or, without one, the newest
    timeline whose history descends from it.

    Returns dict(timeline=final tli, segments=[names needed that exist or
    not], missing=[...], last=newest archived segment on the final tli,
    path=[(tli, LSN where replay leaves it, or None for the final one)])."""
    histories = list_history(storage) if histories is None else histories
    target = target_timeline
    if target is None:
        # The newest timeline whose ancestry includes ours (or ours itself).
        target = timeline
        for tli in sorted(histories, reverse=True):
            if tli > timeline and any(p == timeline for p, _lsn in parse_history(histories[tli])):
                target = tli
                break
    target = int(target)
    path = []  # [(tli, switch lsn or None)]
    if target != timeline:
        ancestors = parse_history(histories[target])
        started = False
        for parent, switch in ancestors:
            if parent == timeline:
                started = True
            if started:
                path.append((parent, switch))
    path.append((target, None))
    start_no = segment_number(start_segment, seg_size)
    needed, missing = [], []
    last = None
    for tli, switch in path:
        archived = list_timeline(storage, tli, streamed=True)
        if switch is not None:
            # PostgreSQL reads the segment holding the switch point from the
            # new timeline (which begins with a copy of it), so the old
            # timeline is needed up to the segment before it.
            end_no = switch // seg_size - 1
        else:
            numbers = [segment_number(n, seg_size) for n in archived]
            end_no = max(numbers) if numbers else start_no - 1
            last = segment_name(tli, end_no, seg_size) if numbers else None
        present = set(archived)
        for n in range(start_no, end_no + 1):
            name = segment_name(tli, n, seg_size)
            needed.append(name)
            if name not in present:
                missing.append(name)
        if switch is not None:
            start_no = max(start_no, switch // seg_size)
    return {"timeline": target, "segments": needed, "missing": missing, "last": last, "path": path}
