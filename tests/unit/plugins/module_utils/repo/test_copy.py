# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""repo/copy.py between two file:// repositories (S3 and a real backup:
tests/integration/test_backup_copy.py)."""

import datetime
import io
import hashlib

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ConflictError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.core.progress import Progress
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo.copy import backup_copy, copy_wal
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage

SEGMENT = "000000010000000000000003"


@pytest.fixture
def repos(tmp_path):
    return "file://%s/a" % tmp_path, "file://%s/b" % tmp_path


def make_backup(url, payload, minutes_ago=10):
    st = open_storage(url)
    finished = mf.utcnow() - datetime.timedelta(minutes=minutes_ago)
    bid = mf.new_backup_id("pg_logical", finished)
    m = mf.Manifest.new(bid, "pg_logical", finished - datetime.timedelta(seconds=5), {"database": "app"})
    st.put_bytes(mf.artifact_key(bid, "database.pgdump.zst"), payload)
    m.add_artifact("database.pgdump.zst", len(payload), hashlib.sha256(payload).hexdigest())
    m.finish(finished)
    mf.write_manifest(st, m)
    return bid


def copy(src, dst, check_mode=False, **extra):
    return backup_copy(dict(storage_url=src, to_storage_url=dst, **extra), check_mode=check_mode)


def test_backups_are_copied_oldest_first_manifest_byte_for_byte_and_only_once(repos):
    src, dst = repos
    old, new = make_backup(src, b"old" * 100, 20), make_backup(src, b"new" * 100, 10)
    changed, plan = copy(src, dst, check_mode=True)
    assert changed and plan["to_copy"] == [old, new] and plan["copied"] == []
    assert mf.list_backups(open_storage(dst), strict=False)[0] == []
    changed, res = copy(src, dst)
    assert changed and res["copied"] == [old, new] and res["bytes"] == 600
    a, b = open_storage(src), open_storage(dst)
    for bid in (old, new):
        assert a.get_bytes(mf.manifest_key(bid)) == b.get_bytes(mf.manifest_key(bid))
    changed, res = copy(src, dst)
    assert not changed and res["copied"] == [] and res["bytes"] == 0


def test_an_artifact_left_by_an_interrupted_copy_is_kept_when_whole_refused_when_different(repos):
    src, dst = repos
    bid = make_backup(src, b"x" * 1000)
    key = mf.artifact_key(bid, "database.pgdump.zst")
    open_storage(dst).put_bytes(key, b"x" * 1000)  # an earlier run stored it, then died
    changed, res = copy(src, dst)
    assert changed and res["copied"] == [bid] and res["bytes"] == 0
    other = make_backup(src, b"y" * 1000, 5)
    okey = mf.artifact_key(other, "database.pgdump.zst")
    open_storage(dst).put_bytes(okey, b"z" * 1000)
    with pytest.raises(ConflictError) as e:
        copy(src, dst)
    assert "never overwritten" in e.value.hint
    assert open_storage(dst).get_bytes(okey) == b"z" * 1000  # left alone
    assert not open_storage(dst).exists(mf.manifest_key(other))


def test_a_damaged_source_artifact_writes_nothing(repos):
    src, dst = repos
    bid = make_backup(src, b"x" * 1000)
    open_storage(src).put_bytes(mf.artifact_key(bid, "database.pgdump.zst"), b"X" + b"x" * 999)
    with pytest.raises(IntegrityError) as e:
        copy(src, dst)
    assert "sha256" in str(e.value)
    assert list(open_storage(dst).list("backups/")) == []


def test_bad_destinations_are_refused(repos):
    src, _dst = repos
    with pytest.raises(ConfigError, match="same repository"):
        copy(src, src)
    with pytest.raises(ConfigError, match="to_storage_url"):
        backup_copy(dict(storage_url=src))


def test_wal_copy_skips_superseded_partials_prunes_the_destinations_and_refuses_a_different_segment(repos):
    src, dst = repos
    a, b = open_storage(src), open_storage(dst)
    a.put_bytes("wal/00000001/%s.zst" % SEGMENT, b"full")
    a.put_bytes("wal/00000002.history.zst", b"history")
    nxt = "000000010000000000000004"
    a.put_bytes("wal/00000001/%s.00001000.stream.zst" % nxt, b"p1")
    a.put_bytes("wal/00000001/%s.00002000.stream.zst" % nxt, b"p2")
    b.put_bytes("wal/00000001/%s.00000800.stream.zst" % SEGMENT, b"old partial")  # copied before it was full
    objects, nbytes, pruned = copy_wal(a, b, lambda msg: None)
    assert (objects, pruned) == (3, 1)
    assert sorted(o.key for o in b.list("wal/")) == sorted([
        "wal/00000001/%s.zst" % SEGMENT, "wal/00000002.history.zst",
        "wal/00000001/%s.00002000.stream.zst" % nxt])
    assert copy_wal(a, b, lambda msg: None) == (0, 0, 0)
    # the destination holds another cluster's segment under the name: refused, left alone
    b.delete(["wal/00000001/%s.zst" % SEGMENT])
    b.put_bytes("wal/00000001/%s.zst" % SEGMENT, b"other cluster")
    with pytest.raises(ConflictError) as e:
        copy_wal(a, b, lambda msg: None)
    assert "differs" in str(e.value)
    assert b.get_bytes("wal/00000001/%s.zst" % SEGMENT) == b"other cluster"


def test_each_copied_artifact_is_a_copy_and_a_re_read_step(repos):
    src, dst = repos
    make_backup(src, b"abc" * 1000)
    progress = Progress("quiet", io.StringIO())
    backup_copy(dict(storage_url=src, to_storage_url=dst), progress=progress)
    assert [(s["step"], s["what"], s["bytes"]) for s in progress.steps()] == [
        ("copy", "database.pgdump.zst", 3000), ("re-read", "database.pgdump.zst", 3000)]
    backup_copy(dict(storage_url=src, to_storage_url=dst), progress=progress)
    assert len(progress.steps()) == 2  # nothing left to copy: no new step
