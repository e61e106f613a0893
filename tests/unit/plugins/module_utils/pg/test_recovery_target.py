# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""recovery_target.py: recovery_target_timeline resolved to a number, and a
target on an older timeline's branch (the archive reads are stood in for;
tests/integration/test_pitr_recovery_faults.py does it for real)."""

import datetime

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.pg import recovery_target as rt
from ansible_collections.drkit.backup.plugins.module_utils.pg.waldump import Record

# timeline 2 branched off 1 at 0/5000100; timeline 3 off 2 at 0/7000200
HISTORIES = {2: "1\t0/5000100\tbefore 2026-12-02 10:00:00+00\n",
             3: "1\t0/5000100\tbefore 2026-12-02 10:00:00+00\n2\t0/7000200\tno recovery target specified\n"}


def data(tli, stop_lsn, stop_tli=None):
    return {"timeline": tli, "stop_timeline": stop_tli or tli, "stop_lsn": stop_lsn}


def test_timeline_choice():
    assert rt.timeline_choice(None) == "latest" and rt.timeline_choice("Current") == "current"
    assert rt.timeline_choice("2") == 2 and rt.timeline_choice(3) == 3 and rt.timeline_choice("0x0A") == 10
    for bad in ("0", "-1", "newest", "1.5"):
        with pytest.raises(ConfigError):
            rt.timeline_choice(bad)


def test_resolve_timeline():
    before_branch, after_branch = data(1, "0/4000000"), data(1, "0/6000000")
    assert rt.newest_archive_timeline(HISTORIES) == 3 and rt.newest_archive_timeline({}) == 1
    assert rt.resolve_timeline("latest", before_branch, HISTORIES) == 3
    assert rt.resolve_timeline("current", after_branch, HISTORIES) == 1
    assert rt.resolve_timeline(1, after_branch, HISTORIES) == 1
    assert rt.resolve_timeline(2, before_branch, HISTORIES) == 2
    assert rt.resolve_timeline(3, data(2, "0/7000000"), HISTORIES) == 3
    # a backup taken on timeline 1 after timeline 2 left it is not on timeline 2's line
    with pytest.raises(ConfigError) as exc:
        rt.resolve_timeline("latest", after_branch, HISTORIES)
    assert "does not continue" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        rt.resolve_timeline(7, before_branch, HISTORIES)
    assert "Timeline 7 is not in the archive" in str(exc.value)
    assert rt.reaches_timeline(before_branch, 3, HISTORIES) and not rt.reaches_timeline(after_branch, 2, HISTORIES)
    # a backup that spans the switch ends on timeline 2
    assert rt.resolve_timeline("current", data(1, "0/6000000", stop_tli=2), HISTORIES) == 2


def utc(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc)


def rec(lsn, desc, xid=0, rmgr="Transaction"):
    return Record(rmgr, xid, lsn, desc)


@pytest.fixture
def archive(monkeypatch):
    """{timeline: [records past the branch]} stands in for the archive."""
    wal = {}

    def first_after(storage, tool, tli, start, seg_size, predicate, keyring=None):
        return next((r for r in wal.get(tli, []) if r.lsn >= start and predicate(r)), None)
    monkeypatch.setattr(rt, "_first_after", first_after)
    return wal


PATH = [(1, 0x5000100), (2, None)]


def test_a_time_on_the_old_branch_is_a_conflict(archive):
    archive[1] = [rec(0x5000200, "COMMIT 2026-12-02 10:00:05 UTC", 800)]
    archive[2] = [rec(0x5000100, "END_OF_RECOVERY tli 2; prev tli 1; time 2026-12-02 10:30:00 UTC", rmgr="XLOG")]
    c = rt.branch_conflict(None, None, PATH, "time", utc("2026-12-02 10:10:00"), True, 16 << 20)
    assert (c["timeline"], c["next"], c["switch"]) == (1, 2, "0/5000100")
    assert "transaction 800" in c["evidence"] and "began only at" in c["evidence"]
    # before the old branch's first commit: both timelines agree
    assert rt.branch_conflict(None, None, PATH, "time", utc("2026-12-02 10:00:04"), True, 16 << 20) is None
    # exclusive: a commit exactly at the target does not count
    assert rt.branch_conflict(None, None, PATH, "time", utc("2026-12-02 10:00:05"), False, 16 << 20) is None
    # once the new timeline is live, latest is what is meant
    assert rt.branch_conflict(None, None, PATH, "time", utc("2026-12-02 10:40:00"), True, 16 << 20) is None


def test_without_an_end_of_recovery_record_the_first_commit_dates_the_new_timeline(archive):
    archive[1] = [rec(0x5000200, "COMMIT 2026-12-02 10:00:05 UTC", 800)]
    archive[2] = [rec(0x5000300, "COMMIT 2026-12-02 10:35:00 UTC", 801)]
    assert rt.branch_conflict(None, None, PATH, "time", utc("2026-12-02 10:20:00"), True, 16 << 20)
    assert rt.branch_conflict(None, None, PATH, "time", utc("2026-12-02 10:36:00"), True, 16 << 20) is None


def test_xid_name_and_lsn_on_the_old_branch(archive):
    archive[1] = [rec(0x5000200, "COMMIT 2026-12-02 10:00:05 UTC", 800),
                  rec(0x5000300, "RESTORE_POINT before-migration", rmgr="XLOG")]
    assert rt.branch_conflict(None, None, PATH, "xid", 800, True, 16 << 20)
    assert rt.branch_conflict(None, None, PATH, "xid", (1 << 32) + 800, True, 16 << 20)  # 64-bit, same xid
    assert rt.branch_conflict(None, None, PATH, "xid", 799, True, 16 << 20) is None
    assert rt.branch_conflict(None, None, PATH, "name", "before-migration", True, 16 << 20)
    assert rt.branch_conflict(None, None, PATH, "name", "other", True, 16 << 20) is None
    assert rt.branch_conflict(None, None, PATH, "lsn", 0x5000250, True, 16 << 20)
    assert rt.branch_conflict(None, None, PATH, "lsn", 0x5000100, True, 16 << 20) is None  # at the switch
    assert rt.branch_conflict(None, None, PATH, "lsn", 0x5000200, True, 16 << 20) is None  # nothing before it
    # an old timeline with nothing past the branch: no conflict whatever the target
    archive[1] = []
    assert rt.branch_conflict(None, None, PATH, "xid", 800, True, 16 << 20) is None
    assert rt.branch_conflict(None, None, [(2, None)], "xid", 800, True, 16 << 20) is None
