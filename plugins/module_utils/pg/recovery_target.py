# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a point-in-time recovery stops at, decided by drkit before
PostgreSQL starts, so that PostgreSQL is never left to guess:

* the timeline: ``recovery_target_timeline`` (``latest`` as in PostgreSQL,
  ``current`` or a number) resolved against the archive's history files to
  one timeline number, which PostgreSQL is then given;
* for ``latest``, the exact end of the archive: the start LSN of the last
  complete WAL record of that timeline (read with pg_waldump), given to
  PostgreSQL as ``recovery_target_lsn``; PostgreSQL ignores
  ``recovery_target_action`` when no target is set, an explicit one makes
  it stop (or fail) there;
* whether a time, xid, LSN or restore-point target lies on an older
  timeline's branch: after a recovery promoted a copy, the old timeline
  may go on in the archive past the point where the new one branched off.
  With ``latest`` PostgreSQL would silently give the new timeline's state;
  drkit refuses and names both choices.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..core.errors import ConfigError, IntegrityError
from ..repo import manifest as mf
from ..repo.wal_layout import format_lsn, parse_lsn, segment_number
from .waldump import ArchiveReader
from .wal_segments import list_timeline, on_timeline

TIMELINE_WORDS = ("latest", "current")


def timeline_choice(value):
    """'latest', 'current' or a timeline number (int >= 1)."""
    text = str(value if value not in (None, "") else "latest").strip().lower()
    if text in TIMELINE_WORDS:
        return text
    try:
        number = int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError("recovery_target_timeline must be latest, current or a timeline number, got %r" % (value,))
    return number


def backup_end(data):
    """(timeline, LSN) where a physical backup's WAL ends."""
    return int(data.get("stop_timeline") or data["timeline"]), parse_lsn(data["stop_lsn"])


def reaches_timeline(data, timeline, histories):
    """Whether recovery from this backup can continue on ``timeline``."""
    tli, lsn = backup_end(data)
    return on_timeline(histories, timeline, tli, lsn)


def newest_archive_timeline(histories):
    """PostgreSQL's ``latest``: the highest timeline the archive has a
    history file for (1 without any)."""
    return max([1] + list(histories))


def resolve_timeline(choice, data, histories):
    """The timeline number to recover into, from the backup's manifest data
    and the archive's history files."""
    tli, lsn = backup_end(data)
    if choice == "current":
        return tli
    if choice == "latest":
        choice = newest_archive_timeline(histories)
    if choice != tli and choice not in histories:
        raise ConfigError("Timeline %d is not in the archive (no %08X.history)" % (choice, choice),
                          "Known timelines: %s" % ", ".join(str(t) for t in sorted(set(histories) | set([tli]))))
    if not on_timeline(histories, choice, tli, lsn):
        raise ConfigError("Timeline %d does not continue from where the base backup ends (timeline %d, %s)" % (
            choice, tli, format_lsn(lsn)), "Pick a base backup on timeline %d's history (or leave backup_id unset)"
            % choice)
    return choice


def end_of_archive(storage, tool, chain, seg_size, floor_lsn=0, keyring=None):
    """Start LSN of the last complete record of the archive on the chain's
    final timeline; None when that timeline has no segment archived.
    ``keyring`` (core.crypto.Keyring): for an encrypted archive."""
    if not chain["last"]:
        return None
    with ArchiveReader(storage, tool, chain["timeline"], seg_size, keyring) as reader:
        record = reader.last_record(segment_number(chain["last"], seg_size), floor_lsn=floor_lsn)
    if record is None:
        raise IntegrityError("No complete WAL record found at the end of the archive (%s and before)" % (
            chain["last"]), "The newest archived WAL cannot be read; see docs/pitr.md")
    return record.lsn


# --------------------------------------------------------------------------
# a target on an older timeline's branch


def _first_after(storage, tool, tli, start, seg_size, predicate, keyring=None):
    numbers = [segment_number(n, seg_size) for n in list_timeline(storage, tli, streamed=True)]
    numbers = [n for n in numbers if n >= start // seg_size]
    if not numbers:
        return None
    with ArchiveReader(storage, tool, tli, seg_size, keyring) as reader:
        return reader.find(start, predicate, max(numbers))


def _new_timeline_start(storage, tool, tli, switch, seg_size, keyring):
    """When timeline ``tli`` began: the time of its END_OF_RECOVERY record
    (pg_ctl promote) or else of its first commit; None if unknown."""
    first = _first_after(storage, tool, tli, switch, seg_size,
                         lambda r: r.end_of_recovery_time is not None or r.xact_time is not None, keyring)
    if first is None:
        return None
    return first.end_of_recovery_time or first.xact_time


def branch_conflict(storage, tool, path, target, value, inclusive, seg_size, keyring=None):
    """For a ``time``, ``xid``, ``lsn`` or ``name`` target and the timeline
    path recovery follows ([(tli, switch LSN or None)], as recovery_chain
    returns it): the first older timeline on which the target lies past the
    point where the path leaves it. Returns a dict (timeline, next,
    switch, evidence) or None."""
    xid = value & 0xFFFFFFFF if target == "xid" else None
    for i, (tli, switch) in enumerate(path[:-1]):
        nxt = path[i + 1][0]
        if target == "time":
            first = _first_after(storage, tool, tli, switch, seg_size, lambda r: r.is_commit and r.xact_time,
                                 keyring)
            if first is None or not (first.xact_time <= value if inclusive else first.xact_time < value):
                continue
            began = _new_timeline_start(storage, tool, nxt, switch, seg_size, keyring)
            if began is not None and value >= began:
                continue  # the target is a time when the new timeline was the live one
            evidence = "timeline %d has a commit at %s (transaction %d) past that point%s" % (
                tli, mf.isoformat(first.xact_time), first.xid,
                "; timeline %d began only at %s" % (nxt, mf.isoformat(began)) if began else "")
        elif target == "xid":
            first = _first_after(storage, tool, tli, switch, seg_size,
                                 lambda r: r.xid == xid and r.xact_time is not None, keyring)
            if first is None:
                continue
            evidence = "transaction %d ended on timeline %d past that point (%s)" % (xid, tli, first.kind)
        elif target == "name":
            first = _first_after(storage, tool, tli, switch, seg_size,
                                 lambda r: r.rmgr == "XLOG" and r.kind == "RESTORE_POINT"
                                 and r.desc.split(" ", 1)[-1].strip() == value, keyring)
            if first is None:
                continue
            evidence = "restore point %r is on timeline %d past that point, at %s" % (
                value, tli, format_lsn(first.lsn))
        elif target == "lsn":
            if value <= switch:
                continue
            first = _first_after(storage, tool, tli, switch, seg_size, lambda r: True, keyring)
            if first is None or first.lsn >= value:
                continue
            evidence = "timeline %d holds WAL from %s on that timeline %d does not" % (tli, format_lsn(first.lsn), nxt)
        else:
            return None
        return {"timeline": tli, "next": nxt, "switch": format_lsn(switch), "evidence": evidence}
    return None
