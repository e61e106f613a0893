# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""manifest.py: ids, validation, and the catalog (on a real file backend)."""

import datetime
import json
import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, NotFoundError
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.storage import file as st
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists, ObjectInfo

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
    """A manifest as parsed, without its digest: the checks below hold for
    manifests written before drkit sealed them, too."""
    doc = json.loads(make(bid("20261125T211500Z"), T0).to_json())
    del doc[mf.DIGEST]
    return doc


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
    (lambda d: d.update(version=3), "version 3; this drkit reads up to 2"),
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


def test_version_1_manifests_still_read():
    """Version 2 keyed a logical backup's row counts by (schema, table)
    (data.table_rows); manifests written before stay readable."""
    doc = good_doc()
    assert doc["version"] == mf.VERSION == 2
    doc.update(version=1, data={"row_counts": {"public.t": 3}})
    assert mf.Manifest.from_json(json.dumps(doc))["data"]["row_counts"] == {"public.t": 3}


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


# --------------------------------------------------------------------------
# the manifest's digest


def test_manifest_is_sealed_and_an_edit_is_refused(fs):
    m = make(bid("20261125T211500Z"), T0)
    m["data"]["row_counts"] = {"public.a": 10, "public.b": 0}
    save(fs, m)
    doc = json.loads(fs.get_bytes(mf.manifest_key(m.backup_id)))
    assert doc[mf.DIGEST] == mf.Manifest.digest(doc) and len(doc[mf.DIGEST]) == 64
    assert mf.load_manifest(fs, m.backup_id).sealed is True
    # Emptied row counts would let a restore-level verification compare nothing.
    doc["data"]["row_counts"] = {}
    fs.put_bytes(mf.manifest_key(m.backup_id), json.dumps(doc, indent=2).encode())
    with pytest.raises(IntegrityError) as e:
        mf.load_manifest(fs, m.backup_id)
    assert "does not match its manifest_sha256: it was changed after drkit wrote it" in str(e.value)
    assert "do not trust this backup" in e.value.hint
    # the catalog reports it like any unreadable manifest
    assert mf.list_backups(fs, strict=False)[1][0].startswith(m.backup_id + ": ")
    with pytest.raises(IntegrityError):
        mf.list_backups(fs, strict=True)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(finished_at="2099-01-01T00:00:00.000000Z"),
    lambda d: d["artifacts"][0].update(size=11),
    lambda d: d["source"].update(database="other"),
    lambda d: d.update(extra="added"),
    lambda d: d.update({mf.DIGEST: "0" * 64}),
    lambda d: d.update({mf.DIGEST: None}),
])
def test_any_edit_breaks_the_digest(edit):
    doc = json.loads(make(bid("20261125T211500Z"), T0).to_json())
    edit(doc)
    with pytest.raises(IntegrityError, match="does not match its manifest_sha256"):
        mf.Manifest.from_json(json.dumps(doc))


def test_digest_does_not_depend_on_layout_and_survives_json_round_trips():
    m = make(bid("20261125T211500Z"), T0)
    m["data"]["counts"] = {2: (1, 2), 10: "a"}  # int keys and tuples: stored as JSON turns them
    doc = json.loads(m.to_json())
    assert mf.Manifest.from_json(json.dumps(doc)) == doc                       # compact
    assert mf.Manifest.from_json(json.dumps(doc, indent=4, sort_keys=False)) == doc
    again = mf.Manifest.from_json(m.to_json())
    assert mf.Manifest.from_json(again.to_json())[mf.DIGEST] == m[mf.DIGEST]


def test_manifest_without_digest_still_reads(fs):
    """Manifests written before the digest are read as before; listing says
    digest: false."""
    doc = good_doc()
    fs.put_bytes(mf.artifact_key(doc["backup_id"], "database.pgdump.zst"), b"x" * 10)
    fs.put_bytes(mf.manifest_key(doc["backup_id"]), json.dumps(doc).encode())
    m = mf.load_manifest(fs, doc["backup_id"])
    assert m.sealed is False and m == doc
    (entry,), problems = mf.list_backups(fs)
    assert problems == [] and entry.summary()["digest"] is False and entry.counts


# --------------------------------------------------------------------------
# which backups count


def stored_at(fs, key, when):
    """Set the storage's time of an object (file://: its mtime)."""
    t = when.timestamp()
    os.utime(os.path.join(fs.root, *key.split("/")), (t, t))


def test_a_backup_counts_when_its_artifacts_are_stored_and_its_time_is_not_ahead(fs):
    ok = make(bid("20261125T211500Z", "aaaaaa"), T0)
    save(fs, ok)
    stored_at(fs, mf.manifest_key(ok.backup_id), T0 + datetime.timedelta(seconds=1))
    (entry,), problems = mf.list_backups(fs)
    assert entry.counts and entry.doubts == [] and problems == []
    assert entry.stored == (T0 + datetime.timedelta(seconds=1)).timestamp()
    s = entry.summary()
    assert s["counted"] is True and s["artifacts_missing"] == [] and s["future_dated"] is False
    assert s["stored_at"] == "2026-11-25T21:15:01.000000Z" and s["digest"] is True


def test_missing_or_truncated_artifacts_do_not_count(fs):
    gone = make(bid("20261126T000000Z", "aaaaaa"), T0 + datetime.timedelta(days=1))
    save(fs, gone, with_artifact=False)
    short = make(bid("20261127T000000Z", "bbbbbb"), T0 + datetime.timedelta(days=2))
    save(fs, short)
    fs.put_bytes(mf.artifact_key(short.backup_id, "database.pgdump.zst"), b"x" * 9)
    good = make(bid("20261125T000000Z", "cccccc"), T0)
    save(fs, good)
    entries, problems = mf.list_backups(fs)
    assert [e.backup_id for e in entries] == [good.backup_id]
    assert sorted(problems) == [
        "%s: not counted: artifacts missing or truncated: database.pgdump.zst (missing)" % gone.backup_id,
        "%s: not counted: artifacts missing or truncated: database.pgdump.zst (9 bytes stored, manifest says 10)"
        % short.backup_id]
    entries = mf.list_backups(fs, doubtful=True)[0]
    assert [(e.backup_id, e.counts) for e in entries] == [
        (short.backup_id, False), (gone.backup_id, False), (good.backup_id, True)]
    assert entries[1].summary()["artifacts_missing"] == ["database.pgdump.zst (missing)"]


def test_a_manifest_dated_after_its_storage_time_does_not_count(fs):
    m = make(bid("20261125T211500Z"), T0)
    save(fs, m)
    key = mf.manifest_key(m.backup_id)
    tol = mf.CLOCK_SKEW_TOLERANCE
    assert tol == 900
    # stored within the tolerance before finished_at (a writer's clock a little ahead): counts
    stored_at(fs, key, T0 - datetime.timedelta(seconds=tol))
    assert mf.list_backups(fs)[0][0].counts
    # more than that: dated in the future
    stored_at(fs, key, T0 - datetime.timedelta(seconds=tol + 1))
    entries, problems = mf.list_backups(fs)
    assert entries == [] and problems == [
        "%s: not counted: finished_at 2026-11-25T21:15:00.000000Z is later than its storage time "
        "2026-11-25T20:59:59.000000Z plus 900 s: dated in the future" % m.backup_id]
    (entry,) = mf.list_backups(fs, doubtful=True)[0]
    assert entry.future and entry.summary()["future_dated"] is True
    # a stated tolerance of the caller
    assert mf.list_backups(fs, tolerance=3600)[0][0].counts


def test_later_storage_times_are_fine_and_a_storage_time_ahead_is_capped_by_now(fs):
    m = make(bid("20261125T211500Z"), T0)
    save(fs, m)
    key = mf.manifest_key(m.backup_id)
    # a copied or restored repository: stored long after it finished
    stored_at(fs, key, T0 + datetime.timedelta(days=400))
    assert mf.list_backups(fs, now=T0 + datetime.timedelta(days=401))[0][0].counts
    # both finished_at and the storage time ahead of the reader's clock: the clock of the reader decides
    entries, problems = mf.list_backups(fs, now=T0 - datetime.timedelta(days=2))
    assert entries == [] and "later than the time now 2026-11-23T21:15:00.000000Z plus 900 s" in problems[0]


def test_unknown_storage_time_counts_as_now():
    m = make(bid("20261125T211500Z"), T0)
    objs = [ObjectInfo(mf.manifest_key(m.backup_id), 100, None),
            ObjectInfo(mf.artifact_key(m.backup_id, "database.pgdump.zst"), 10, None)]
    assert mf.BackupEntry(m, objs).assess(T0).counts
    assert not mf.BackupEntry(m, objs).assess(T0 - datetime.timedelta(hours=1)).counts


def forge(fs, template, when, suffix):
    """A copy of a real manifest under a new id, finished at ``when``,
    sealed (as a forger or a host with a wild clock would write it), without
    artifacts."""
    doc = json.loads(template.to_json())
    doc["backup_id"] = bid(when.strftime("%Y%m%dT%H%M%SZ"), suffix)
    doc["finished_at"] = mf.isoformat(when)
    forged = mf.Manifest(doc)
    fs.put_bytes(mf.manifest_key(forged.backup_id), forged.to_json())
    return forged.backup_id


def test_resolve_latest_passes_over_backups_dated_in_the_future(fs):
    real = make(bid("20261125T211500Z", "aaaaaa"), T0)
    save(fs, real)
    forged = [forge(fs, real, datetime.datetime(y, 1, 1, tzinfo=UTC), "f%05d" % y) for y in (2097, 2098, 2099)]
    for restorable in (False, True):
        entry = mf.resolve(fs, restorable=restorable)
        assert entry.backup_id == real.backup_id
        assert [p.split(":")[0] for p in entry.passed_over] == forged[::-1]
        assert "dated in the future" in entry.passed_over[0]
    # named by its id, a backup is returned as it is, with its doubts
    named = mf.resolve(fs, forged[0])
    assert named.backup_id == forged[0] and not named.counts and named.missing and named.future
    # nothing else: the error names what was passed over
    fs.delete([mf.manifest_key(real.backup_id)])
    with pytest.raises(NotFoundError) as e:
        mf.resolve(fs)
    assert "dated in the future: %s" % forged[2] in str(e.value)
    assert "named by its backup_id" in e.value.hint


def test_resolve_latest_with_artifacts_missing_verify_gets_it_restore_refuses(fs):
    old = make(bid("20261124T211500Z", "aaaaaa"), T0 - datetime.timedelta(days=1))
    new = make(bid("20261125T211500Z", "bbbbbb"), T0)
    for m in (old, new):
        save(fs, m)
    fs.delete([mf.artifact_key(new.backup_id, "database.pgdump.zst")])
    # a verification of the newest backup is what finds and records the damage
    entry = mf.resolve(fs)
    assert entry.backup_id == new.backup_id and entry.missing == ["database.pgdump.zst (missing)"]
    # a restore never quietly takes an older backup: it says which one it could
    with pytest.raises(IntegrityError) as e:
        mf.resolve(fs, restorable=True)
    assert str(e.value).startswith("Backup %s, the newest, cannot be restored: artifacts missing or truncated: "
                                   "database.pgdump.zst (missing)" % new.backup_id)
    assert "The newest backup that can be is %s (finished 2026-11-24T21:15:00.000000Z)" % old.backup_id in e.value.hint
    assert mf.resolve(fs, old.backup_id, restorable=True).backup_id == old.backup_id
    fs.delete([mf.artifact_key(old.backup_id, "database.pgdump.zst")])
    with pytest.raises(IntegrityError) as e:
        mf.resolve(fs, restorable=True)
    assert "no other backup can be restored either" in e.value.hint


def test_resolve_still_refuses_a_newer_unreadable_manifest(fs):
    real = make(bid("20261125T211500Z", "aaaaaa"), T0)
    save(fs, real)
    fs.put_bytes(mf.manifest_key(bid("20261126T000000Z", "bbbbbb")), b"{broken")
    with pytest.raises(IntegrityError, match="cannot be read"):
        mf.resolve(fs)
