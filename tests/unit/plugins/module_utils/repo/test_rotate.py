# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rotate.py parts that need no storage: WAL names, the grace period, and
check_plan on hand-made plans.  Real storage is in
tests/integration/test_rotate.py."""

import datetime as dt

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, SafetyError
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from ansible_collections.drkit.backup.plugins.module_utils.repo.retention import Duration, Policy
from ansible_collections.drkit.backup.plugins.module_utils.repo.rotate import (
    Plan,
    check_plan,
    parse_grace,
    plan_wal_prune,
    stored_last,
    wal_position,
)
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectInfo


def test_wal_position_follows_wal_py_names():
    assert wal_position(wal.wal_key("00000001000000A0000000FF")) == (1, 0xA0000000FF)
    assert wal_position(wal.wal_key("00000002000000A000000010.partial")) == (2, 0xA000000010)
    assert wal_position(wal.wal_key("00000001000000A000000010.00000028.backup")) == (1, 0xA000000010)
    for never in (wal.wal_key("00000002.history"), wal.SYSID_KEY, "wal/00000001/00000001000000A0000000FF",
                  "wal/00000001/notes.txt.zst", "wal/00000001/00000001000000A0000000FF.zst.tmp"):
        assert wal_position(never) is None


def _phys(bid, start, **kw):
    data = {"wal_start_segment": start}
    data.update(kw)
    return {"kind": "pg_physical", "backup_id": bid, "data": data}


def test_plan_wal_prune_uses_the_oldest_kept_start():
    names = ["0000000100000001000000%02X" % n for n in range(0xF0, 0x100)] + \
            ["00000001000000020000000%X" % n for n in range(0, 5)]
    objs = [ObjectInfo(wal.wal_key(n), 10, 0) for n in names]
    kept = [_phys("new", "000000010000000200000003"), _phys("old", "0000000100000001000000FE"),
            {"kind": "pg_logical", "backup_id": "l", "data": {}}]
    doomed, info = plan_wal_prune(objs, kept)
    assert info["needed_by"] == "old" and info["count"] == 14 and info["bytes"] == 140
    assert [o.key for o in doomed][-1] == wal.wal_key("0000000100000001000000FD")
    # across the log boundary: 1/FF is below 2/00
    doomed = plan_wal_prune(objs, [_phys("x", "000000010000000200000000")])[0]
    assert wal.wal_key("0000000100000001000000FF") in [o.key for o in doomed]
    assert wal.wal_key("000000010000000200000000") not in [o.key for o in doomed]


@pytest.mark.parametrize("kept,why", [
    ([], "no kept physical backup"),
    ([{"kind": "pg_logical", "backup_id": "l", "data": {}}], "no kept physical backup"),
    ([_phys("a", "000000010000000200000003"), _phys("b", None)], "no valid wal_start_segment"),
    ([_phys("a", "0000000100000002000003")], "no valid wal_start_segment"),
])
def test_plan_wal_prune_leaves_wal_alone_when_unsure(kept, why):
    objs = [ObjectInfo(wal.wal_key("000000010000000000000001"), 10, 0)]
    doomed, info = plan_wal_prune(objs, kept)
    assert doomed == [] and why in info["reason"]


def test_grace():
    assert parse_grace(None) == Duration(days=1)
    assert parse_grace("6h") == Duration(hours=6)
    assert parse_grace("1m") == Duration(months=1)
    with pytest.raises(ConfigError, match="shorter"):
        parse_grace("0h")
    with pytest.raises(ConfigError):
        parse_grace("30s")


def _plan(groups, kept, delete, verified=None, pinned=(), policy=None, stored_last=None, not_counted=()):
    plan = Plan("file:///x", policy or Policy(last=1), ["kind", "source"],
                dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc), Duration(days=1))
    plan.groups.update(groups)
    plan.kept = [{"backup_id": b} for b in kept]
    plan.delete = [{"backup_id": b, "_keys": []} for b in delete]
    plan.verified.update(verified or {})
    plan.pinned.update(pinned)
    plan.stored_last.update(stored_last or {})
    plan.not_counted = [{"backup_id": b, "reasons": ["dated in the future"]} for b in not_counted]
    return plan


def test_check_plan_accepts_a_sound_plan():
    check_plan(_plan({"g": ["c", "b", "a"], "h": ["z"]}, ["c", "a", "z"], ["b"], verified={"g": "a"}))


@pytest.mark.parametrize("plan,match", [
    (_plan({"g": ["c", "b", "a"]}, [], ["c", "b", "a"]), "delete all 3 backups"),
    (_plan({"g": ["c", "b", "a"]}, ["b"], ["c", "a"]), "newest backup"),
    (_plan({"g": ["c", "b", "a"]}, ["c"], ["b", "a"], verified={"g": "b"}), "newest verified"),
    (_plan({"g": ["c", "b", "a"]}, ["c"], ["b", "a"], pinned={"a"}), "pinned"),
    (_plan({"g": ["c", "b"]}, ["c", "b"], ["b"]), "both keeps and deletes"),
    (_plan({"g": ["c", "b"]}, ["c"], ["b", "x"]), "did not list"),
    (_plan({"g": ["c", "b"]}, ["c", "b"], [], policy=Policy()), None),
    (_plan({"g": ["c", "b", "a"]}, ["c"], ["b", "a"], stored_last={"g": "a"}), "manifest was stored last"),
    (_plan({"g": ["c"]}, ["c"], ["f"], not_counted=["f"]), "do not count"),
])
def test_check_plan_refuses(plan, match):
    if match is None:  # the empty policy with nothing to delete is fine ...
        check_plan(plan)
        plan.wal = {"keys": ["wal/00000001/000000010000000000000001.zst"]}  # ... but not if it deletes WAL
        match = "policy is empty"
    with pytest.raises(SafetyError, match=match):
        check_plan(plan)


class _E(object):
    def __init__(self, backup_id, stored):
        self.backup_id, self.stored = backup_id, stored


def test_stored_last_names_a_backup_stored_well_after_the_newest():
    # newest first by finished_at; "b" was stored an hour after "c": its writer's clock was behind
    assert stored_last([_E("c", 1000.0), _E("b", 1000.0 + 3600), _E("a", 10.0)]) == "b"
    # within the tolerance (or before): the usual order, nothing to protect
    assert stored_last([_E("c", 1000.0), _E("b", 1000.0 + 900), _E("a", 10.0)]) is None
    assert stored_last([_E("c", 1000.0), _E("b", 999.0)]) is None
    assert stored_last([_E("c", None), _E("b", 5000.0)]) is None
    assert stored_last([_E("c", 1000.0), _E("b", None), _E("a", 9000.0)]) == "a"
    assert stored_last([]) is None
