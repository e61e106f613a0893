# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""manifest.py: ids, validation, and the catalog (on a real file backend)."""

import datetime
import json

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, NotFoundError
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.storage import file as st
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 25, 21, 15, 0, tzinfo=UTC)


def make(backup_id, finished, kind="pg_logical", database="app", started=None):
    m = mf.Manifest.new(backup_id, kind, started or finished - datetime.timedelta(seconds=5),
                        {"type": "postgresql", "host": "db1", "port": 5432, "database": database},
                        compression={"algorithm": "zstd", "level": 3})
    m.add_artifact("database.pgdump.zst", 10, "ab" * 32, raw_size=30)
    m.finish(finished)
    return m


def save(fs, m, with_artifact=True):
    if with_artifact:
        fs.put_bytes(mf.artifact_key(m.backup_id, "database.pgdump.zst"), b"x" * 10)
    mf.write_manifest(fs, m)


def bid(ts, suffix="aaaaaa", kind="pg-logical"):
    return "%s-%s-%s" % (ts, kind, suffix)


# --------------------------------------------------------------------------
# ids and times


def test_new_backup_id_shape_and_uniqueness():
    ids = set(mf.new_backup_id("pg_logical", T0) for _i in range(50))
    assert len(ids) > 45  # random suffix
    for i in ids:
        assert mf.ID_RE.match(i) and i.startswith("20261125T211500Z-pg-logical-")
        assert mf.check_backup_id(i) == i


@pytest.mark.parametrize("bad", ["latest", "", None, "../etc", "20261125T211500Z-pg-logical-XYZ123",
                                 "20261125T211500Z-pg-logical-abc", "x/20261125T211500Z-pg-logical-abcdef"])
def test_check_backup_id_rejects(bad):
    with pytest.raises(ConfigError) as e:
        mf.check_backup_id(bad)
    assert "is not a backup id" in str(e.value)


def test_unknown_kind():
    with pytest.raises(ConfigError):
        mf.new_backup_id("mysql")


def test_times_are_utc_iso_and_parse_back():
    local = datetime.datetime(2026, 11, 25, 23, 15, 0, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    text = mf.isoformat(local)
    assert text == "2026-11-25T21:15:00.123456Z"
    assert mf.parse_time(text) == local
    assert mf.parse_time("2026-11-25T21:15:00") == datetime.datetime(2026, 11, 25, 21, 15, tzinfo=UTC)
    with pytest.raises(ConfigError):
        mf.parse_time("yesterday")


def test_finish_sets_duration():
    m = make(bid("20261125T211500Z"), T0 + datetime.timedelta(seconds=90), started=T0)
    assert m["duration_seconds"] == 90.0
    assert m["finished_at"] == "2026-11-25T21:16:30.000000Z"


# --------------------------------------------------------------------------
# validation


def good_doc():
    return json.loads(make(bid("20261125T211500Z"), T0).to_json())


def test_round_trip():
    m = make(bid("20261125T211500Z"), T0)
    again = mf.Manifest.from_json(m.to_json())
    assert again == m and again.backup_id == m.backup_id and again.finished == T0
    assert again.artifact("database.pgdump.zst")["raw_size"] == 30
    with pytest.raises(IntegrityError):
        again.artifact("missing")


@pytest.mark.parametrize("field", mf.REQUIRED)
def test_missing_field(field):
    doc = good_doc()
    del doc[field]
    with pytest.raises(IntegrityError) as e:
        mf.Manifest.from_json(json.dumps(doc), where="backups/x/manifest.json")
    assert "backups/x/manifest.json lacks %s" % field in str(e.value)


@pytest.mark.parametrize("mutate,fragment", [
    (lambda d: d.update(version=2), "version 2; this drkit reads up to 1"),
    (lambda d: d.update(version="1"), "version '1'"),
    (lambda d: d.update(format="something/else"), "has format"),
    (lambda d: d.update(backup_id="not-an-id"), "invalid backup_id"),
    (lambda d: d.update(finished_at="soon"), "invalid time"),
    (lambda d: d["artifacts"].append({"name": "x"}), "malformed artifact"),
    (lambda d: d["artifacts"].append("x"), "malformed artifact"),
])
def test_invalid_manifests(mutate, fragment):
    doc = good_doc()
    mutate(doc)
    with pytest.raises(IntegrityError) as e:
        mf.Manifest.from_json(json.dumps(doc))
    assert fragment in str(e.value)


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_not_a_manifest(data):
    with pytest.raises(IntegrityError):
        mf.Manifest.from_json(data)


def test_upgrade_hint_for_newer_version():
    doc = good_doc()
    doc["version"] = 99
    with pytest.raises(IntegrityError) as e:
        mf.Manifest.from_json(json.dumps(doc))
    assert "Upgrade drkit" in str(e.value)


def test_load_manifest_detects_edited_id(fs):
    a = make(bid("20261125T211500Z", "aaaaaa"), T0)
    b_id = bid("20261125T211500Z", "bbbbbb")
    fs.put_bytes(mf.manifest_key(b_id), a.to_json())  # a's manifest copied under b
    with pytest.raises(IntegrityError) as e:
        mf.load_manifest(fs, b_id)
    assert "claims backup id %s" % a.backup_id in str(e.value)
    assert "do not trust this backup" in str(e.value)


def test_load_manifest_missing(fs):
    with pytest.raises(NotFoundError) as e:
        mf.load_manifest(fs, bid("20261125T211500Z"))
    assert "has no manifest" in str(e.value) and "incomplete" in str(e.value)


def test_manifest_is_written_last_by_write_manifest(fs):
    m = make(bid("20261125T211500Z"), T0)
    save(fs, m)
    assert mf.load_manifest(fs, m.backup_id) == m


def test_a_manifest_is_never_replaced(fs):
    first = make(bid("20261125T211500Z"), T0)
    save(fs, first)
    second = make(bid("20261125T211500Z"), T0 + datetime.timedelta(seconds=1), database="other")
    with pytest.raises(ObjectExists) as e:
        mf.write_manifest(fs, second)
    assert e.value.exit_code == 5 and "already has a manifest" in str(e.value) and "run it again" in str(e.value)
    assert mf.load_manifest(fs, first.backup_id) == first


# --------------------------------------------------------------------------
# catalog


def test_list_ignores_backups_without_manifest(fs):
    done = make(bid("20261125T211500Z", "aaaaaa"), T0)
    save(fs, done)
    # an interrupted backup: artifacts but no manifest
    fs.put_bytes("backups/%s/database.pgdump.zst" % bid("20261126T000000Z", "bbbbbb"), b"partial")
    # unrelated objects, and a directory that is not a backup id
    fs.put_bytes("backups/README", b"x")
    fs.put_bytes("backups/not-an-id/manifest.json", done.to_json())
    entries, problems = mf.list_backups(fs)
    assert [e.backup_id for e in entries] == [done.backup_id] and problems == []


def test_list_sorts_by_manifest_finish_time_not_name(fs):
    # Ids (names) sort the other way round from the finish times.
    early_name_late_finish = make(bid("20260101T000000Z", "aaaaaa"), T0 + datetime.timedelta(days=3))
    late_name_early_finish = make(bid("20261231T000000Z", "bbbbbb"), T0)
    middle = make(bid("20260601T000000Z", "cccccc"), T0 + datetime.timedelta(days=1))
    for m in (late_name_early_finish, middle, early_name_late_finish):
        save(fs, m)
    entries, _problems = mf.list_backups(fs)
    assert [e.backup_id for e in entries] == [early_name_late_finish.backup_id, middle.backup_id,
                                              late_name_early_finish.backup_id]
    assert mf.resolve(fs).backup_id == early_name_late_finish.backup_id


def test_list_filters(fs):
    a = make(bid("20261125T211500Z", "aaaaaa"), T0, database="app")
    b = make(bid("20261125T211501Z", "bbbbbb"), T0 + datetime.timedelta(seconds=1), database="other")
    c = make(bid("20261125T211502Z", "cccccc", "redis-rdb"), T0 + datetime.timedelta(seconds=2), kind="redis_rdb",
             database="0")
    for m in (a, b, c):
        save(fs, m)

    def ids(**kw):
        return [e.backup_id for e in mf.list_backups(fs, **kw)[0]]

    assert ids(kind="pg_logical") == [b.backup_id, a.backup_id]
    assert ids(database="app") == [a.backup_id]
    assert ids(source="postgresql:db1:5432:other") == [b.backup_id]
    assert ids(kind="redis_rdb") == [c.backup_id]


def test_corrupt_manifest_strict_and_lenient(fs):
    good = make(bid("20261125T211500Z", "aaaaaa"), T0)
    save(fs, good)
    bad_id = bid("20261125T211501Z", "bbbbbb")
    fs.put_bytes(mf.manifest_key(bad_id), b"{truncated")
    with pytest.raises(IntegrityError):
        mf.list_backups(fs, strict=True)
    entries, problems = mf.list_backups(fs, strict=False)
    assert [e.backup_id for e in entries] == [good.backup_id]
    assert len(problems) == 1 and problems[0].startswith(bad_id + ": ")


def test_summary_pin_and_verifications(fs):
    m = make(bid("20261125T211500Z"), T0)
    save(fs, m)
    fs.put_bytes(mf.backup_prefix(m.backup_id) + mf.PIN, b"")
    fs.put_bytes(mf.backup_prefix(m.backup_id) + "verify-20261126T000000Z.json", b"{}")
    (entry,), _problems = mf.list_backups(fs)
    s = entry.summary()
    assert s["pinned"] is True and s["verifications"] == 1
    assert s["size"] == 10 and s["artifacts"] == ["database.pgdump.zst"]
    assert s["source_key"] == "postgresql:db1:5432:app"


def test_resolve(fs):
    a = make(bid("20261125T211500Z", "aaaaaa"), T0)
    b = make(bid("20261126T211500Z", "bbbbbb"), T0 + datetime.timedelta(days=1))
    for m in (a, b):
        save(fs, m)
    assert mf.resolve(fs, "latest").backup_id == b.backup_id
    assert mf.resolve(fs, None).backup_id == b.backup_id
    assert mf.resolve(fs, a.backup_id).backup_id == a.backup_id
    assert mf.resolve(fs, before="2026-11-26T00:00:00Z").backup_id == a.backup_id
    with pytest.raises(NotFoundError) as e:
        mf.resolve(fs, before="2026-01-01T00:00:00Z")
    assert "finished at or before 2026-01-01T00:00:00Z" in str(e.value)
    with pytest.raises(ConfigError):
        mf.resolve(fs, a.backup_id, kind="redis_rdb")
    with pytest.raises(NotFoundError):
        mf.resolve(fs, bid("20260101T000000Z", "cccccc"))
    with pytest.raises(NotFoundError):
        mf.resolve(st.FileStorage(fs.root + "-empty"))
