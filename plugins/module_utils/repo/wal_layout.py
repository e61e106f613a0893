# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL in the repository: PostgreSQL's file names, LSN arithmetic, the keys
under wal/ (docs/pitr.md) and the archive's system identifier.  Pure
naming rules, shared by the archiver, PITR and rotation.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ..core.errors import ConfigError, ConflictError, IntegrityError, NotFoundError
from ..storage.base import put_new

WAL = "wal"
SYSID_KEY = WAL + "/SYSTEM_IDENTIFIER"
HISTORY_DIR = WAL + "/history"
SUFFIX = ".zst"
DEFAULT_SEGMENT_SIZE = 16 << 20


SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.partial$")
BACKUP_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.[0-9A-F]{8}\.backup$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
# A partial segment uploaded by the streaming archiver (pg/wal_stream.py):
# the segment's name plus the end of what it holds (a byte offset in the
# segment), so each upload has its own key and the newest is the largest.
STREAM_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.([0-9A-F]{8})\.stream$")


# --------------------------------------------------------------------------
# names, keys, LSNs


def classify(name):
    """'segment', 'partial', 'backup', 'history' or 'stream'; ConfigError otherwise."""
    if not isinstance(name, str):
        name = str(name)
    if SEGMENT_RE.match(name):
        return "segment"
    if PARTIAL_RE.match(name):
        return "partial"
    if BACKUP_RE.match(name):
        return "backup"
    if HISTORY_RE.match(name):
        return "history"
    if STREAM_RE.match(name):
        return "stream"
    raise ConfigError("%r is not a WAL file name PostgreSQL archives" % (name,),
                      "Pass %f as the file name (e.g. 000000010000000000000003, 00000002.history)")


def timeline_of(name):
    return name[:8]


def wal_key(name):
    """Storage key of a WAL file (see the module doc for the layout)."""
    kind = classify(name)
    if kind == "history":
        return "%s/%s%s" % (HISTORY_DIR, name, SUFFIX)
    return "%s/%s/%s%s" % (WAL, timeline_of(name), name, SUFFIX)


def stream_name(segment, end):
    """The name of a streamed partial of ``segment`` holding its first ``end`` bytes."""
    return "%s.%08X.stream" % (segment, end)


def stream_end(name):
    """(segment, end offset) of a streamed partial's name."""
    m = STREAM_RE.match(name)
    return name[:24], int(m.group(3), 16)


def name_of_key(key):
    """The WAL file name of a storage key, or None if it is not a WAL file."""
    base = key.rsplit("/", 1)[-1]
    if not base.endswith(SUFFIX):
        return None
    base = base[:-len(SUFFIX)]
    try:
        classify(base)
    except ConfigError:
        return None
    return base


def segments_per_xlogid(seg_size):
    return 0x100000000 // seg_size


def segment_number(name, seg_size=DEFAULT_SEGMENT_SIZE):
    m = SEGMENT_RE.match(name[:24])
    if not m:
        raise ConfigError("%r is not a WAL segment name" % (name,))
    return int(m.group(2), 16) * segments_per_xlogid(seg_size) + int(m.group(3), 16)


def segment_name(timeline, segno, seg_size=DEFAULT_SEGMENT_SIZE):
    per = segments_per_xlogid(seg_size)
    return "%08X%08X%08X" % (int(timeline), segno // per, segno % per)


def parse_lsn(text):
    """'16/B374D848' -> int."""
    if isinstance(text, int):
        return text
    m = re.match(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$", str(text))
    if not m:
        raise ConfigError("%r is not an LSN" % (text,), "Write it as PostgreSQL does, e.g. 16/B374D848")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(value):
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def lsn_segment(lsn, timeline, seg_size=DEFAULT_SEGMENT_SIZE, previous=False):
    """Name of the segment holding ``lsn`` (``previous``: holding lsn - 1,
    PostgreSQL's XLByteToPrevSeg, used for a stop/end point)."""
    value = parse_lsn(lsn)
    if previous:
        value -= 1
    return segment_name(timeline, value // seg_size, seg_size)


def segment_range(first, last, seg_size=DEFAULT_SEGMENT_SIZE):
    """Segment names first..last inclusive, on first's timeline."""
    tli = int(timeline_of(first), 16)
    a, b = segment_number(first, seg_size), segment_number(last, seg_size)
    return [segment_name(tli, n, seg_size) for n in range(a, b + 1)]


# --------------------------------------------------------------------------
# system identifier of the archive


def archive_system_identifier(storage):
    """The system identifier recorded in wal/SYSTEM_IDENTIFIER, or None."""
    try:
        text = storage.get_bytes(SYSID_KEY).decode("ascii", "replace").strip()
    except NotFoundError:
        return None
    if not text.isdigit():
        raise IntegrityError("%s in %s holds %r, not a system identifier" % (SYSID_KEY, storage.describe(), text),
                             "Fix or remove it by hand: it names the cluster this archive belongs to")
    return text


TIMELINE_RE = re.compile(r"^[0-9A-F]{8}$")


def timeline_dirs(storage):
    """The archive's timeline directories (wal/00000001/ ...), in order;
    not wal/history/ nor anything else under wal/."""
    return sorted(t for t in storage.list_dirs(WAL + "/") if TIMELINE_RE.match(t))


def newest_archived(storage, now=None):
    """What the archive holds last, for the RPO a point-in-time recovery
    achieves now: the WAL segment, promotion partial or streamed partial of
    the newest timeline stored last (its key, name, timeline, mtime and age
    in seconds), or None when the archive has no WAL. Only the newest
    timeline's directory is listed."""
    for tli in reversed(timeline_dirs(storage)):
        newest = None
        for info in storage.list("%s/%s/" % (WAL, tli)):
            name = name_of_key(info.key)
            if name is None or classify(name) == "backup":
                continue
            if newest is None or (info.mtime, info.key) > (newest[0].mtime, newest[0].key):
                newest = (info, name)
        if newest is not None:
            info, name = newest
            now = time.time() if now is None else now
            return {"key": info.key, "name": name, "timeline": tli, "stored_at": info.mtime,
                    "age_seconds": round(max(0.0, now - info.mtime), 3)}
    return None


def claim_archive(storage, system_identifier, what):
    """Make sure the archive belongs to this cluster; record it if new."""
    sysid = str(system_identifier)
    current = archive_system_identifier(storage)
    if current is None:
        try:
            put_new(storage, SYSID_KEY, (sysid + "\n").encode("ascii"))
            return sysid
        except ConflictError:
            current = archive_system_identifier(storage)  # a concurrent first push
    if current != sysid:
        raise ConflictError(
            "%s belongs to the cluster with system identifier %s, but the archive %s belongs to cluster %s" % (
                what, sysid, storage.describe(), current),
            "Each cluster needs its own storage_url (e.g. s3://bucket/<cluster name>); nothing was stored")
    return sysid


def parse_history(text):
    """[(parent timeline, switch LSN int)] from a timeline history file."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            try:
                out.append((int(parts[0]), parse_lsn(parts[1])))
            except (ValueError, ConfigError):
                continue
    return out


# --------------------------------------------------------------------------
# The one rule for the WAL a physical base backup needs.
#
# It is PostgreSQL's: the backup_manifest lists it as WAL-Ranges, one range
# per timeline (several when the backup was taken from a standby that
# followed an upstream promotion while it ran), newest timeline first. A
# range needs the segments from the one holding its Start-LSN to the one
# holding End-LSN - 1, on the range's timeline: what pg_verifybackup reads.
# Across a switch at LSN X in segment k, segment k is needed twice: on the
# old timeline (its WAL up to X) and on the new one. Start 0/5000028 on TL1,
# switch 0/80000A0, stop 0/90021D8 on TL2 -> 1/5 1/6 1/7 1/8 2/8 2/9.
# Every drkit physical manifest records the ranges verbatim
# (data.pg_manifest.wal_ranges); without them, start..stop on one timeline,
# or across timelines the ranges rebuilt from the stop timeline's history.


def backup_wal_ranges(data, histories=None):
    """[(timeline, start LSN, end LSN)] (ints) a physical backup needs, oldest
    timeline first. ``data`` is its manifest's data; ``histories``
    ({timeline: history file text}) is only read for a manifest without
    WAL-Ranges whose start and stop timelines differ."""
    ranges = (data.get("pg_manifest") or {}).get("wal_ranges")
    if ranges:
        return sorted((int(r["Timeline"]), parse_lsn(r["Start-LSN"]), parse_lsn(r["End-LSN"])) for r in ranges)
    seg_size = int(data.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)
    first, last = data["wal_start_segment"], data["wal_stop_segment"]
    start_tli, stop_tli = int(first[:8], 16), int(last[:8], 16)
    start = parse_lsn(data["start_lsn"]) if data.get("start_lsn") else segment_number(first, seg_size) * seg_size
    end = (segment_number(last, seg_size) + 1) * seg_size
    if data.get("stop_lsn") and int(data.get("stop_timeline") or stop_tli) == stop_tli:
        end = parse_lsn(data["stop_lsn"])
    if start_tli == stop_tli:
        return [(start_tli, start, end)]
    text = (histories or {}).get(stop_tli)
    if text is None:
        raise IntegrityError(
            "The backup's WAL runs from timeline %d to %d, its manifest records no WAL-Ranges and there is no "
            "history file for timeline %d: which WAL it needs cannot be told" % (start_tli, stop_tli, stop_tli),
            "Restore %08X.history into the archive (wal/history/)" % stop_tli)
    out, begin = [], start
    for tli, switch in parse_history(text):
        if tli < start_tli or switch < start:
            continue  # ended before the backup started
        out.append((tli, begin, switch))
        begin = switch
    out.append((stop_tli, begin, end))
    if out[0][0] != start_tli:
        raise IntegrityError("Timeline %d, where the backup starts, is not in the history of timeline %d" % (
            start_tli, stop_tli))
    return out


def backup_segments(data, histories=None):
    """Names of the WAL segments a physical backup needs, oldest timeline
    first (see backup_wal_ranges)."""
    seg_size = int(data.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)
    out = []
    for tli, start, end in backup_wal_ranges(data, histories):
        first = start // seg_size
        last = max(first, (end - 1) // seg_size)
        out.extend(segment_name(tli, n, seg_size) for n in range(first, last + 1))
    return out


def backup_timelines(segments):
    """The timelines a backup's WAL switches to (their history files are
    needed to replay it), from backup_segments()."""
    return sorted(set(int(n[:8], 16) for n in segments))[1:]
