# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3_rotate on real storage: a directory, a SeaweedFS S3 server and Azurite
(Azure Blob).

Backups are fabricated cheaply (small artifacts, a manifest written last,
verification records and pins) with chosen finish times, deliberately in a
different order than their ids and than the objects' write times, so every
test also proves that the order comes from the manifest.  Each safety rule
has a test here that fails without the rule. At the end, racing writers:
rotation while a backup and a WAL push are about to write, two rotations
at once."""

import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo import rotate as rot
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import SYSID_KEY, segment_name, wal_key
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError, SafetyError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.repo.verification import RECORD_FORMAT, record_key
from ansible_collections.drkit.backup.plugins.module_utils.repo.retention import Policy
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from helpers import run_drkit
from support.barrier_drkit import race
from support.unit_helpers import SEG, long_header

UTC = dt.timezone.utc
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOV = [dt.datetime(2026, 11, d, 21, 0, tzinfo=UTC) for d in range(1, 31)]  # NOV[0] is 1 Nov


# --------------------------------------------------------------------------
# fixtures and helpers


class Store(object):
    def __init__(self, backend, url, options, root=None):
        self.backend, self.url, self.options, self.root = backend, url, options, root
        self.storage = open_storage(url, **options)

    def params(self, **policy):
        p = dict(self.options, storage_url=self.url)
        p.update(policy)
        return p

    def keys(self, prefix=""):
        return sorted(i.key for i in self.storage.list(prefix))

    def backups(self):
        return [e.backup_id for e in mf.list_backups(self.storage)[0]]

    def age(self, key, days):
        """Backdate an object (file:// only: S3 objects cannot be backdated)."""
        path = os.path.join(self.root, *key.split("/"))
        t = time.time() - days * 86400
        os.utime(path, (t, t))


def make_file_store(tmp_path):
    root = tmp_path / "storage"
    root.mkdir(mode=0o700)
    return Store("file", "file://" + str(root), {}, root=str(root))


def make_s3_store(s3, bucket):
    return Store("s3", "s3://%s/rotate-test" % bucket,
                 {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key,
                  "secret_key": s3.secret_key, "region": s3.region})


def make_az_store(azurite, container):
    return Store("az", "az://%s/rotate-test" % container, azurite.options())


@pytest.fixture(params=["file", "s3", "az"])
def store(request, tmp_path):
    if request.param == "file":
        return make_file_store(tmp_path)
    if request.param == "az":
        return make_az_store(request.getfixturevalue("azurite"), request.getfixturevalue("container"))
    return make_s3_store(request.getfixturevalue("s3"), request.getfixturevalue("bucket"))


def az_env(store):
    """An az:// store's options as the AZURE_STORAGE_* variables."""
    return {"AZURE_STORAGE_ACCOUNT_NAME": store.options["azure_account_name"],
            "AZURE_STORAGE_KEY": store.options["azure_account_key"],
            "AZURE_STORAGE_ENDPOINT": store.options["azure_endpoint"]}


@pytest.fixture
def file_store(tmp_path):
    return make_file_store(tmp_path)


@pytest.fixture
def s3_store(s3, bucket):
    return make_s3_store(s3, bucket)


def source(database="app", host="db1"):
    return {"type": "postgresql", "host": host, "port": 5432, "database": database}


def fabricate(st, finished, kind="pg_logical", database="app", host="db1", artifacts=("dump",),
              data=None, verify=(), pin=False):
    """A complete backup finished at ``finished``. Its id's time is random,
    so id order is not time order. ``verify`` is a list of (result, when)."""
    id_time = dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=random.randint(0, 360 * 86400))
    bid = mf.new_backup_id(kind, id_time)
    m = mf.Manifest.new(bid, kind, finished - dt.timedelta(minutes=3), source(database, host))
    for name in artifacts:
        body = os.urandom(48)
        st.storage.put_bytes(mf.artifact_key(bid, name), body)
        m.add_artifact(name, len(body), hashlib.sha256(body).hexdigest())
    if data:
        m["data"].update(data)
    m.finish(finished)
    mf.write_manifest(st.storage, m)
    for result, when in verify:
        write_record(st, bid, result, when)
    if pin:
        st.storage.put_bytes(mf.backup_prefix(bid) + mf.PIN, b"pinned by test\n")
    return bid


def write_record(st, bid, result, when, level="restore"):
    """A verification record as pg_verify writes it (docs/verification-records.md)."""
    rec = {"format": RECORD_FORMAT, "version": 1, "backup_id": bid, "level": level, "result": result,
           "started_at": mf.isoformat(when - dt.timedelta(minutes=1)), "finished_at": mf.isoformat(when),
           "findings": [] if result == "pass" else ["row count mismatch"]}
    key = record_key(bid, when)
    st.storage.put_bytes(key, json.dumps(rec).encode())
    return key


def month(st, days, shuffle=True, **kw):
    """One backup per given day of November 2026, written in random order."""
    order = list(days)
    if shuffle:
        random.shuffle(order)
    ids = dict((d, fabricate(st, NOV[d - 1], **kw)) for d in order)
    return ids


def ids_of(items):
    return [i["backup_id"] for i in items]


class Faulty(object):
    """A real storage with injected faults."""

    def __init__(self, inner, list_fails_after=None, get_fails=None, delete_fails_on_call=None):
        self.inner = inner
        self.list_fails_after = list_fails_after
        self.get_fails = get_fails or (lambda key: False)
        self.delete_fails_on_call = delete_fails_on_call
        self.delete_calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def list(self, prefix=""):
        for n, info in enumerate(self.inner.list(prefix)):
            if self.list_fails_after is not None and n >= self.list_fails_after:
                raise StorageError("Could not list %s: injected fault (connection reset)" % prefix)
            yield info

    def get_bytes(self, key):
        if self.get_fails(key):
            raise StorageError("Could not read %s: injected fault (timeout)" % key)
        return self.inner.get_bytes(key)

    def delete(self, keys):
        self.delete_calls += 1
        if self.delete_calls == self.delete_fails_on_call:
            raise StorageError("Could not delete %d objects: injected fault" % len(list(keys)))
        return self.inner.delete(keys)


# --------------------------------------------------------------------------
# plans match, deletes happen


def test_plan_matches_policy_and_deletes_happen(store):
    ids = month(store, range(1, 21))
    if store.backend == "file":
        # artifact mtimes in the opposite order of the manifests' times (not the
        # manifests' own: finished_at is checked against them, see test_clock_trouble.py)
        for d, bid in ids.items():
            for key in store.keys(mf.backup_prefix(bid)):
                if key != mf.manifest_key(bid):
                    store.age(key, days=d)
    before = store.keys()
    params = store.params(keep_daily=3, keep_weekly=2)

    changed, plan = rot.rotate(params, check_mode=True, diff=True)
    assert changed is True and plan["check_mode"] is True
    assert store.keys() == before, "check mode deleted something"
    # daily: 20, 19, 18 Nov; weekly: 2026-W47 (16-22 Nov) -> 20 Nov, 2026-W46 (9-15 Nov) -> 15 Nov
    expected = [ids[d] for d in (20, 19, 18, 15)]
    assert ids_of(plan["kept"]) == expected
    reasons = dict((i["backup_id"], i["reasons"]) for i in plan["kept"])
    assert reasons[ids[20]] == ["daily 2026-11-20", "weekly 2026-W47", "newest backup (safety)"]
    assert reasons[ids[15]] == ["weekly 2026-W46"]
    assert sorted(ids_of(plan["deleted"])) == sorted(ids[d] for d in range(1, 21) if d not in (20, 19, 18, 15))
    assert plan["diff"]["before"].count("\n") == 20 and plan["diff"]["after"].count("\n") == 4
    assert ids[1] in plan["diff"]["before"] and ids[1] not in plan["diff"]["after"]

    changed, done = rot.rotate(params)
    assert changed is True
    assert ids_of(done["deleted"]) == ids_of(plan["deleted"])
    assert store.backups() == expected
    left = store.keys()
    for bid in ids_of(done["deleted"]):
        assert not [k for k in left if k.startswith(mf.backup_prefix(bid))], "artifacts of %s left" % bid
    # What is left is exactly the four backups: manifest and artifact each.
    assert len(left) == 8

    changed, again = rot.rotate(params)
    assert changed is False and again["deleted"] == [] and ids_of(again["kept"]) == expected


def test_groups_are_rotated_separately(store):
    app = month(store, [3, 5, 7], database="app")
    other = month(store, [2, 4, 6], database="other")
    redis = month(store, [1, 8], kind="redis_rdb", database=None)
    res = rot.rotate(store.params(keep_last=1))[1]
    assert sorted(store.backups()) == sorted([app[7], other[6], redis[8]])
    assert set(res["groups"]) == {"pg_logical|postgresql:db1:5432:app", "pg_logical|postgresql:db1:5432:other",
                                  "redis_rdb|postgresql:db1:5432"}
    res = rot.rotate(store.params(keep_last=1, group_by=["none"]))[1]
    assert store.backups() == [redis[8]]


def test_filters_leave_other_backups_alone(store):
    pg = month(store, [1, 2, 3])
    redis = month(store, [4, 5, 6], kind="redis_rdb")
    res = rot.rotate(store.params(keep_last=1, kind="redis_rdb"))[1]
    assert sorted(store.backups()) == sorted(list(pg.values()) + [redis[6]])
    assert set(ids_of(res["deleted"])) == {redis[4], redis[5]}
    res = rot.rotate(store.params(keep_last=1, database="nope"))[1]
    assert res["kept"] == [] and res["deleted"] == [] and not res["changed"]


# --------------------------------------------------------------------------
# safety rules


def test_listing_failure_aborts_before_any_delete(store):
    month(store, range(1, 11))
    before = store.keys()
    faulty = Faulty(store.storage, list_fails_after=7)
    with pytest.raises(StorageError, match="injected"):
        rot.rotate(store.params(keep_last=1), storage=faulty)
    assert store.keys() == before


def test_manifest_read_failure_aborts_before_any_delete(store):
    ids = month(store, range(1, 11))
    before = store.keys()
    # The unreadable manifest is of an old backup that the policy would delete
    # anyway: a lenient listing would skip it and delete the other eight.
    faulty = Faulty(store.storage, get_fails=lambda key: key == mf.manifest_key(ids[2]))
    with pytest.raises(StorageError, match="injected"):
        rot.rotate(store.params(keep_last=1), storage=faulty)
    assert store.keys() == before


def test_corrupt_manifest_aborts_before_any_delete(store):
    ids = month(store, range(1, 6))
    store.storage.put_bytes(mf.manifest_key(ids[1]), b"{not json")
    before = store.keys()
    with pytest.raises(IntegrityError, match=ids[1]):
        rot.rotate(store.params(keep_last=1))
    assert store.keys() == before


def test_unreadable_verification_record_aborts(store):
    ids = month(store, range(1, 6))
    key = write_record(store, ids[4], "pass", NOV[5])
    before = store.keys()
    faulty = Faulty(store.storage, get_fails=lambda k: k == key)
    with pytest.raises(StorageError, match="injected"):
        rot.rotate(store.params(keep_last=1), storage=faulty)
    store.storage.put_bytes(key, b'{"result": "pass"}')  # not a drkit record
    with pytest.raises(IntegrityError, match="format"):
        rot.rotate(store.params(keep_last=1))
    assert store.keys() == before


def test_newest_verified_backup_is_never_deleted(store):
    b = {}
    b[5] = fabricate(store, NOV[4])  # newest: never verified
    b[4] = fabricate(store, NOV[3], verify=[("pass", NOV[4]), ("fail", NOV[5])])  # latest record failed
    b[3] = fabricate(store, NOV[2], verify=[("fail", NOV[3]), ("pass", NOV[4])])  # latest passed
    b[2] = fabricate(store, NOV[1], verify=[("pass", NOV[2])])
    b[1] = fabricate(store, NOV[0])
    changed, plan = rot.rotate(store.params(keep_last=1), check_mode=True)
    kept = dict((i["backup_id"], i["reasons"]) for i in plan["kept"])
    assert set(kept) == {b[5], b[3]}
    assert kept[b[3]][0].startswith("newest verified backup (safety, restore at 2026-11-05")
    rot.rotate(store.params(keep_last=1))
    assert store.backups() == [b[5], b[3]]
    # and it stays protected on the next run
    rot.rotate(store.params(keep_last=1))
    assert store.backups() == [b[5], b[3]]


def test_pinned_backups_are_never_deleted(store):
    ids = month(store, range(1, 8))
    store.storage.put_bytes(mf.backup_prefix(ids[2]) + mf.PIN, b"")
    plan = rot.rotate(store.params(keep_last=2), check_mode=True)[1]
    assert dict((i["backup_id"], i["reasons"]) for i in plan["kept"])[ids[2]] == ["pinned"]
    # A pin set after planning, before deleting, still wins.
    plan_obj = rot.plan_rotation(store.storage, Policy(last=2))
    store.storage.put_bytes(mf.backup_prefix(ids[4]) + mf.PIN, b"")
    done = rot.execute(store.storage, plan_obj)
    assert done["skipped"] == [{"backup_id": ids[4], "reason": "pinned since the plan was made"}]
    assert store.backups() == [ids[7], ids[6], ids[4], ids[2]]


def test_keep_nothing_policy_deletes_nothing(store):
    ids = month(store, range(1, 6))
    store.storage.put_bytes(mf.artifact_key(mf.new_backup_id("pg_logical", NOV[0]), "dump"), b"leftover")
    before = store.keys()
    for params in (store.params(), store.params(keep_last=0, keep_daily=0, keep_within="0d")):
        changed, res = rot.rotate(params, now=time.time() + 3 * 86400)
        assert changed is False and res["deleted"] == [] and res["incomplete_removed"] == []
        assert all(i["reasons"] == ["policy is empty", "newest backup (safety)"] if i["backup_id"] == ids[5]
                   else i["reasons"] == ["policy is empty"] for i in res["kept"])
        assert "policy is empty" in res["warnings"][0]
    assert store.keys() == before


def test_a_plan_deleting_a_whole_group_is_refused(store):
    ids = month(store, range(1, 5))
    before = store.keys()
    plan = rot.plan_rotation(store.storage, Policy(last=1))
    # Tamper with the plan as a policy bug would: everything goes.
    plan.delete.extend(dict(i, _keys=store.keys(mf.backup_prefix(i["backup_id"]))) for i in plan.kept)
    plan.kept = []
    with pytest.raises(SafetyError, match="would delete all 4 backups"):
        rot.execute(store.storage, plan)
    assert store.keys() == before
    # Keeping an older one but not the newest is refused too.
    plan = rot.plan_rotation(store.storage, Policy(last=1))
    newest = plan.kept.pop(0)
    plan.kept.append(plan.delete.pop())
    plan.delete.append(dict(newest, _keys=[]))
    with pytest.raises(SafetyError, match="newest backup of group"):
        rot.execute(store.storage, plan)
    assert store.keys() == before and ids[4] in store.backups()


def test_running_backup_is_never_touched_and_old_leftovers_go(store):
    ids = month(store, [1, 2, 3])
    running = mf.new_backup_id("pg_logical", NOV[3])
    store.storage.put_bytes(mf.artifact_key(running, "dump"), b"half a dump")
    changed, res = rot.rotate(store.params(keep_last=5))
    assert changed is False
    assert ids_of(res["incomplete_in_progress"]) == [running] and res["incomplete_removed"] == []
    assert store.keys(mf.backup_prefix(running)) == [mf.artifact_key(running, "dump")]
    # Two days later nothing has been written: it is a leftover of a crashed backup.
    changed, res = rot.rotate(store.params(keep_last=5), now=time.time() + 2 * 86400)
    assert changed is True and ids_of(res["incomplete_removed"]) == [running]
    assert store.keys(mf.backup_prefix(running)) == []
    assert sorted(store.backups()) == sorted(ids.values())


def test_old_artifact_with_a_fresh_temp_file_is_still_running(file_store):
    # file:// only: S3 objects cannot be backdated; the S3 case is the multipart test below.
    store = file_store
    month(store, [1, 2])
    running = mf.new_backup_id("pg_logical", NOV[3])
    store.storage.put_bytes(mf.artifact_key(running, "globals.sql"), b"written long ago")
    store.age(mf.artifact_key(running, "globals.sql"), days=3)
    w = store.storage.writer(mf.artifact_key(running, "dump"))  # still uploading
    w.write(b"streaming...")
    try:
        res = rot.rotate(store.params(keep_last=5))[1]
        assert ids_of(res["incomplete_in_progress"]) == [running] and res["uploads_aborted"] == []
        assert store.keys(mf.backup_prefix(running)) == [mf.artifact_key(running, "globals.sql")]
    finally:
        w.abort()
    # An old temp file of a crashed writer is aborted with its directory.
    stale = os.path.join(store.root, "backups", running, ".drkit-tmp-0123456789abcdef")
    with open(stale, "wb") as fh:
        fh.write(b"crashed")
    t = time.time() - 3 * 86400
    os.utime(stale, (t, t))
    res = rot.rotate(store.params(keep_last=5))[1]
    assert [u["key"] for u in res["uploads_aborted"]] == ["backups/%s/.drkit-tmp-0123456789abcdef" % running]
    assert ids_of(res["incomplete_removed"]) == [running]
    assert not os.path.exists(os.path.join(store.root, "backups", running))


def test_stale_multipart_upload_is_aborted(s3_store):
    store = s3_store
    month(store, [1, 2])
    st = store.storage
    running = mf.new_backup_id("pg_logical", NOV[3])
    full = st._full(mf.artifact_key(running, "dump"))
    up = st.client.create_multipart_upload(Bucket=st.bucket, Key=full)
    st.client.upload_part(Bucket=st.bucket, Key=full, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1024)
    res = rot.rotate(store.params(keep_last=5))[1]
    assert res["uploads_aborted"] == [] and res["changed"] is False
    assert [u.upload_id for u in st.list_incomplete("backups/")] == [up["UploadId"]]
    res = rot.rotate(store.params(keep_last=5), now=time.time() + 2 * 86400)[1]
    assert [u["upload_id"] for u in res["uploads_aborted"]] == [up["UploadId"]]
    assert list(st.list_incomplete("backups/")) == []


def test_interrupted_run_never_leaves_a_complete_looking_broken_backup(store):
    ids = month(store, range(1, 7))
    faulty = Faulty(store.storage, delete_fails_on_call=2)  # manifests go, then the artifacts fail
    with pytest.raises(StorageError, match="injected") as err:
        rot.rotate(store.params(keep_last=2), storage=faulty)
    # The manifests went first: those four backups are deleted as far as anyone can see.
    assert sorted(ids_of(err.value.details["done_before_error"]["deleted"])) == sorted(ids[d] for d in range(1, 5))
    # Every backup that is still listed is whole; the others have no manifest.
    assert store.backups() == [ids[6], ids[5]]
    for d in range(1, 5):
        assert store.keys(mf.backup_prefix(ids[d])) == [mf.artifact_key(ids[d], "dump")]
    # The next run, once the grace period has passed, removes the leftovers.
    res = rot.rotate(store.params(keep_last=2), now=time.time() + 2 * 86400)[1]
    assert sorted(ids_of(res["incomplete_removed"])) == sorted(ids[d] for d in range(1, 5))
    assert len(store.keys()) == 4


# --------------------------------------------------------------------------
# WAL


def seg(timeline, n):
    return segment_name(timeline, n)


def put_wal(store):
    """A WAL archive as repo/wal_layout.py lays it out (wal/<tli>/<name>.zst, history under wal/history/)."""
    names = [seg(1, n) for n in range(1, 11)] + [seg(2, n) for n in range(9, 13)]
    names += ["00000002.history", seg(1, 3) + ".00000028.backup", seg(1, 2) + ".partial"]
    keys = [wal_key(n) for n in names] + [SYSID_KEY, "wal/00000001/README"]
    for k in keys:
        store.storage.put_bytes(k, b"w")
    return keys


def test_wal_before_the_oldest_kept_physical_backup_is_pruned(store):
    archive = put_wal(store)
    old = fabricate(store, NOV[1], kind="pg_physical", data={"wal_start_segment": seg(1, 5), "timeline": 1})
    new = fabricate(store, NOV[2], kind="pg_physical", data={"wal_start_segment": seg(1, 8), "timeline": 1})
    fabricate(store, NOV[3])  # logical backups have no say in WAL
    changed, plan = rot.rotate(store.params(keep_last=2), check_mode=True)
    assert plan["wal_deleted"]["needed_from"] == seg(1, 5) and plan["wal_deleted"]["needed_by"] == old
    assert plan["wal_deleted"]["count"] == 6  # segments 1-4, the .partial (2) and the .backup (3)
    assert store.keys("wal/") == sorted(archive)
    rot.rotate(store.params(keep_last=2))
    gone = set(archive) - set(store.keys("wal/"))
    assert gone == set(["wal/00000001/%s.zst" % seg(1, n) for n in range(1, 5)]
                       + ["wal/00000001/%s.00000028.backup.zst" % seg(1, 3),
                          "wal/00000001/%s.partial.zst" % seg(1, 2)])
    # Rotating the old base backup away frees the WAL it needed, and only that.
    res = rot.rotate(store.params(keep_last=1, kind="pg_physical"))[1]
    assert ids_of(res["deleted"]) == [old] and res["wal_deleted"]["needed_by"] == new
    left = store.keys("wal/")
    assert "wal/history/00000002.history.zst" in left and "wal/00000001/README" in left
    assert SYSID_KEY in left
    assert [k for k in left if k.startswith("wal/00000001/0")] == ["wal/00000001/%s.zst" % seg(1, n)
                                                                   for n in range(8, 11)]
    assert len([k for k in left if k.startswith("wal/00000002/0") and k.endswith(".zst")]) == 4  # all needed


def test_wal_is_left_alone_without_a_usable_physical_backup(store):
    archive = put_wal(store)
    fabricate(store, NOV[1])
    res = rot.rotate(store.params(keep_last=1))[1]
    assert res["wal_deleted"]["count"] == 0 and "no kept physical backup" in res["wal_deleted"]["reason"]
    fabricate(store, NOV[2], kind="pg_physical", data={"timeline": 1})  # no start segment recorded
    res = rot.rotate(store.params(keep_last=1))[1]
    assert res["wal_deleted"]["count"] == 0 and "no valid wal_start_segment" in res["wal_deleted"]["reason"]
    assert store.keys("wal/") == sorted(archive)


def test_prune_wal_function(store):
    archive = put_wal(store)
    kept = [{"kind": "pg_physical", "backup_id": "x", "data": {"wal_start_segment": seg(1, 3)}}]
    info = rot.prune_wal(store.storage, kept, check_mode=True)
    assert info["keys"] == ["wal/00000001/%s.zst" % seg(1, 1), "wal/00000001/%s.partial.zst" % seg(1, 2),
                            "wal/00000001/%s.zst" % seg(1, 2)]
    assert store.keys("wal/") == sorted(archive)
    rot.prune_wal(store.storage, kept)
    assert len(store.keys("wal/")) == len(archive) - 3


def test_wal_still_needed_is_not_even_listed(store):
    for n in range(1, 201):
        store.storage.put_bytes(wal_key(seg(1, n)), b"w")
    kept = [{"kind": "pg_physical", "backup_id": "x", "data": {"wal_start_segment": seg(1, 11)}}]
    listed = []

    class Counting(Faulty):
        def list(self, prefix=""):
            for info in self.inner.list(prefix):
                listed.append(info.key)
                yield info

    info = rot.prune_wal(Counting(store.storage), kept)
    assert info["count"] == 10 and len(store.keys("wal/")) == 190
    # the listing stops at the first needed segment instead of reading the whole archive
    assert listed == [wal_key(seg(1, n)) for n in range(1, 12)]


# --------------------------------------------------------------------------
# metrics, CLI, Ansible


def test_metrics(store, tmp_path):
    month(store, range(1, 6))
    rot.rotate(store.params(keep_last=2, metrics_dir=str(tmp_path), job_name="rot"))
    text = (tmp_path / "drkit_rot.prom").read_text()
    assert 'drkit_rotate_deleted_backups{drkit_job="rot"} 3' in text
    assert 'drkit_rotate_kept_backups{drkit_job="rot"} 2' in text
    assert 'drkit_rotate_last_status{drkit_job="rot"} 1' in text
    with pytest.raises(StorageError):
        rot.rotate(store.params(keep_last=2, metrics_dir=str(tmp_path), job_name="rot"),
                   storage=Faulty(store.storage, list_fails_after=0))
    text = (tmp_path / "drkit_rot.prom").read_text()
    assert 'drkit_rotate_last_status{drkit_job="rot"} 0' in text
    assert 'drkit_rotate_deleted_backups{drkit_job="rot"} 3' in text  # the last success stays on record


def drkit(args, env=None, **kw):
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", "drkit")] + args, check=False, capture_output=True,
                          text=True, env=env, timeout=120, **kw)


def test_cli_dry_run_then_rotate(store, tmp_path):
    ids = month(store, range(1, 11))
    env = dict(os.environ)
    cfg = tmp_path / "rotate.yml"
    cfg.write_text(yaml.safe_dump({"storage_url": store.url, "keep_daily": 2, "keep_weekly": 1}))
    os.chmod(str(cfg), 0o600)
    common = ["--config", str(cfg), "--quiet"]
    if store.backend == "s3":
        env.update(AWS_ACCESS_KEY_ID=store.options["access_key"], AWS_SECRET_ACCESS_KEY=store.options["secret_key"],
                   AWS_DEFAULT_REGION=store.options["region"])
        common += ["--endpoint-url", store.options["endpoint_url"]]
    if store.backend == "az":
        env.update(az_env(store))
    r = drkit(["rotate", "--dry-run", "--keep-last", "3"] + common, env=env)
    assert r.returncode == 0, r.stderr
    assert "would delete 7 of 10 backups" in r.stdout
    assert "keep    %s" % ids[10] in r.stdout and "delete  %s" % ids[1] in r.stdout
    assert len(store.backups()) == 10
    r = drkit(["rotate", "--json"] + common, env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert ids_of(res["kept"]) == [ids[10], ids[9]] and len(res["deleted"]) == 8
    assert store.backups() == [ids[10], ids[9]]
    r = drkit(["rotate", "--keep-within", "forever"] + common, env=env)
    assert r.returncode == 2 and "keep_within" in r.stderr


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: plan only
      drkit.backup.s3_rotate:
        storage_url: "{{ storage_url }}"
        keep_daily: 3
        keep_weekly: 2
        metrics_dir: "{{ metrics_dir }}"
      check_mode: true
      diff: true
      register: plan

    - name: check mode wrote no metrics
      ansible.builtin.stat:
        path: "{{ metrics_dir }}/drkit_rotate.prom"
      register: metrics_after_plan

    - name: still all there
      drkit.backup.backup_info:
        storage_url: "{{ storage_url }}"
      register: before

    - name: rotate
      drkit.backup.s3_rotate:
        storage_url: "{{ storage_url }}"
        keep_daily: 3
        keep_weekly: 2
        metrics_dir: "{{ metrics_dir }}"
      register: real

    - name: what is left
      drkit.backup.backup_info:
        storage_url: "{{ storage_url }}"
      register: after

    - name: rotate again
      drkit.backup.s3_rotate:
        storage_url: "{{ storage_url }}"
        keep_daily: 3
        keep_weekly: 2
      register: again

    - name: bad policy fails cleanly
      drkit.backup.s3_rotate:
        storage_url: "{{ storage_url }}"
        keep_daily: -5
      register: bad
      ignore_errors: true

    - ansible.builtin.assert:
        that:
          - plan is changed
          - not metrics_after_plan.stat.exists
          - plan.deleted | length == 16
          - plan.kept | length == 4
          - plan.kept[0].reasons == ['daily 2026-11-20', 'weekly 2026-W47', 'newest backup (safety)']
          - before.count == 20
          - real is changed
          - real.deleted | map(attribute='backup_id') | list == plan.deleted | map(attribute='backup_id') | list
          - after.count == 4
          - after.backups | map(attribute='backup_id') | list == plan.kept | map(attribute='backup_id') | list
          - again is not changed
          - again.deleted == []
          - bad is failed
          - "'keep_daily must be 0 or more' in bad.msg"
"""


def test_through_ansible(store, tmp_path, ansible_env):
    month(store, range(1, 21))
    env = dict(ansible_env)
    if store.backend == "s3":
        env.update(AWS_ACCESS_KEY_ID=store.options["access_key"], AWS_SECRET_ACCESS_KEY=store.options["secret_key"],
                   AWS_DEFAULT_REGION=store.options["region"], AWS_ENDPOINT_URL=store.options["endpoint_url"])
    if store.backend == "az":
        env.update(az_env(store))
    book = tmp_path / "rotate.yml"
    book.write_text(textwrap.dedent(PLAYBOOK))
    metrics_dir = tmp_path / "metrics"
    r = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "--diff", str(book),
                        "-e", "storage_url=%s" % store.url, "-e", "metrics_dir=%s" % metrics_dir],
                       check=False, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "All assertions passed" in r.stdout
    # diff mode printed the before/after sets
    assert "(before)" in r.stdout and "(after)" in r.stdout
    # the real run wrote metrics
    assert "drkit_rotate_deleted_backups{drkit_job=\"rotate\"} 16" in (metrics_dir / "drkit_rotate.prom").read_text()
    assert store.options.get("secret_key", "no-secret-here") not in r.stdout + r.stderr
    assert store.options.get("azure_account_key", "no-secret-here") not in r.stdout + r.stderr


# --------------------------------------------------------------------------
# racing writers: rotation while others write, two rotations at once (real
# drkit processes held at a barrier: tests/support/barrier_drkit.py)


def test_rotation_while_a_backup_is_about_to_write_its_manifest(store, pg, pg_database, tmp_path):
    """A backup whose artifacts are stored and whose manifest is not yet:
    a rotation run then sees a fresh incomplete backup and leaves it alone;
    the backup completes afterwards."""
    old = month(store, range(1, 4))
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS n", dbname=pg_database)
    cfg = dict(store.options, login_host=pg.host, port=pg.port, login_user=pg.superuser,
               login_password=pg.password)
    rotations = []

    def rotate_meanwhile():
        in_flight = [d for d in store.storage.list_dirs("backups/") if d not in old.values()]
        assert len(in_flight) == 1 and store.keys("backups/%s/" % in_flight[0])  # artifacts, no manifest
        r = run_drkit(["rotate", "--json", "--keep-last", "1", "--storage-url", store.url], config=store.options)
        assert r.returncode == 0, r.stderr
        rotations.append((in_flight[0], json.loads(r.stdout)))

    [res] = race([["pg-backup", "--json", "--storage-url", store.url, "-d", pg_database]], str(tmp_path / "barrier"),
                 r"/manifest\.json$", config=cfg, during=rotate_meanwhile)
    assert res.returncode == 0, res.stderr
    [(in_flight, rotation)] = rotations
    assert ids_of(rotation["incomplete_in_progress"]) == [in_flight]
    assert sorted(ids_of(rotation["deleted"])) == sorted([old[1], old[2]])
    backup_id = json.loads(res.stdout)["backup_id"]
    assert backup_id == in_flight and set(store.backups()) == set([backup_id, old[3]])
    entry = mf.resolve(store.storage, backup_id)
    for art in entry.manifest["artifacts"]:
        assert store.storage.stat(mf.artifact_key(backup_id, art["name"])).size == art["size"]


def test_rotation_while_a_wal_push_is_about_to_store(store, tmp_path):
    """A wal-push held just before its create-only write while rotation
    prunes the WAL no kept backup needs: the push then stores its (newer)
    segment and exits 0; rotation deleted only what its plan said."""
    archive = put_wal(store)
    sysid = 7712224962849331826
    store.storage.put_bytes(SYSID_KEY, b"%d\n" % sysid)
    fabricate(store, NOV[1], kind="pg_physical", data={"wal_start_segment": seg(1, 5), "timeline": 1})
    fabricate(store, NOV[2], kind="pg_physical", data={"wal_start_segment": seg(1, 8), "timeline": 1})
    name = seg(1, 11)
    path = tmp_path / "pg_wal" / name
    path.parent.mkdir()
    path.write_bytes(long_header(sysid=sysid, segno=11) + b"\0" * (SEG - 8192))
    rotations = []

    def rotate_meanwhile():
        r = run_drkit(["rotate", "--json", "--keep-last", "1", "--kind", "pg_physical", "--storage-url", store.url],
                      config=store.options)
        assert r.returncode == 0, r.stderr
        rotations.append(json.loads(r.stdout))

    [res] = race([["wal-push", "--storage-url", store.url, str(path), name]], str(tmp_path / "barrier"),
                 r"^wal/[0-9A-F]{8}/", config=store.options, during=rotate_meanwhile)
    assert res.returncode == 0, res.stderr
    assert rotations[0]["wal_deleted"]["count"] == 9  # segments 1-7, the .partial and the .backup
    left = store.keys("wal/")
    assert wal_key(name) in left
    assert [k for k in left if k.startswith("wal/00000001/0")] == [wal_key(seg(1, n)) for n in range(8, 12)]
    assert set(left) - set(archive) == set([wal_key(name)])


@pytest.mark.parametrize("policies", [("1", "1"), ("3", "1")], ids=["same", "different"])
def test_two_rotations_at_once(store, tmp_path, policies):
    """Two rotations plan from the same listing and are released together
    at their first delete: both exit 0, and what is left is what the
    stricter plan keeps, the newest verified backup included."""
    ids = month(store, range(1, 11))
    write_record(store, ids[4], "pass", NOV[4] + dt.timedelta(hours=1))
    cmds = [["rotate", "--keep-last", keep, "--storage-url", store.url] for keep in policies]
    results = race(cmds, str(tmp_path / "barrier"), r"/manifest\.json$", at="delete", config=store.options)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert store.backups() == [ids[10], ids[4]]
    assert [k for k in store.keys("backups/") if not k.startswith(("backups/%s/" % ids[10], "backups/%s/" % ids[4]))] \
        == []
