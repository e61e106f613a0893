# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed manifests in the catalog (real file backend): with verify_keys, a
forged manifest (an edited copy, one signed by another key, an unsigned one)
next to genuine backups does not count for listing, is passed over by
'latest', refused by id, and neither fills a keep_last slot nor lets rotation
delete a genuine backup (the same treatment as a manifest dated in the
future, issue 13 hole 1)."""

import datetime
import json

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import signing
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError, SafetyError
from ansible_collections.drkit.backup.plugins.module_utils.repo import listing
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo.retention import Policy
from ansible_collections.drkit.backup.plugins.module_utils.repo.rotate import check_plan, plan_rotation
from cryptography.hazmat.primitives.asymmetric import ed25519

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 25, 21, 15, 0, tzinfo=UTC)
ART = "database.pgdump.zst"


def bid(when, suffix):
    return "%s-pg-logical-%s" % (when.strftime("%Y%m%dT%H%M%SZ"), suffix)


def make(when, suffix):
    m = mf.Manifest.new(bid(when, suffix), "pg_logical", when - datetime.timedelta(seconds=5),
                        {"type": "postgresql", "host": "db1", "port": 5432, "database": "app"},
                        compression={"algorithm": "zstd", "level": 3})
    m.add_artifact(ART, 10, "ab" * 32, raw_size=30)
    m.finish(when)
    return m


def store(fs, m, signer=None, data=None):
    fs.put_bytes(mf.artifact_key(m.backup_id, ART), b"x" * 10)
    fs.put_bytes(mf.manifest_key(m.backup_id), data if data is not None else m.to_json(signer))
    return m.backup_id


def reseal(doc):
    doc[mf.DIGEST] = mf.Manifest.digest(doc)
    return json.dumps(doc).encode()


@pytest.fixture
def repo(fs):
    """Three genuine signed backups (days -2, -1, 0) and three newer forgeries."""
    key, attacker = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    genuine = [store(fs, make(T0 - datetime.timedelta(days=d), "a%05d" % d), signing.Signer(key))
               for d in (2, 1, 0)]
    later = T0 + datetime.timedelta(minutes=1)
    # 1. a genuine manifest copied under a new id and time, its signature kept, digest recomputed
    doc = json.loads(fs.get_bytes(mf.manifest_key(genuine[-1])))
    doc["backup_id"], doc["finished_at"] = bid(later, "f00001"), mf.isoformat(later)
    edited = store(fs, mf.Manifest(doc), data=reseal(doc))
    # 2. signed, but by the attacker's own key
    other = store(fs, make(later + datetime.timedelta(minutes=1), "f00002"), signing.Signer(attacker))
    # 3. not signed at all
    unsigned = store(fs, make(later + datetime.timedelta(minutes=2), "f00003"))
    trust = signing.Trust({signing.key_id(key.public_key()): key.public_key()})
    return {"key": key, "trust": trust, "genuine": genuine, "forged": [edited, other, unsigned]}


def test_listing_marks_forged_manifests(fs, repo):
    entries, problems = mf.list_backups(fs, strict=False, doubtful=True, trust=repo["trust"],
                                        now=T0 + datetime.timedelta(hours=1))
    by_id = dict((e.backup_id, e) for e in entries)
    assert all(by_id[b].counts and by_id[b].signature_verified for b in repo["genuine"])
    edited, other, unsigned = (by_id[b] for b in repo["forged"])
    assert "does not match its content" in edited.untrusted
    assert "not one of the trusted keys" in other.untrusted
    assert "is not signed" in unsigned.untrusted
    for e in (edited, other, unsigned):
        assert not e.counts and e.signature_verified is False
        assert e.summary()["counted"] is False and e.summary()["signature_verified"] is False
    # without doubtful they are left out and named in problems
    entries, problems = mf.list_backups(fs, strict=False, trust=repo["trust"], now=T0 + datetime.timedelta(hours=1))
    assert sorted(e.backup_id for e in entries) == sorted(repo["genuine"])
    assert sorted(p.split(":")[0] for p in problems) == sorted(repo["forged"])
    # without verify_keys nothing is checked (and the forgeries count: what signing is for)
    plain = mf.list_backups(fs, strict=False, now=T0 + datetime.timedelta(hours=1))[0]
    assert len(plain) == 6 and all(e.signature_verified is None for e in plain)


def test_backup_info_with_verify_keys(fs, repo, tmp_path):
    pub = tmp_path / "signing.pub"
    pub.write_text(signing.public_line(repo["key"].public_key()) + "\n")
    _changed, result = listing.backup_info({"storage_url": "file://" + fs.root, "verify_keys": [str(pub)]})
    assert result["latest"]["backup_id"] == repo["genuine"][-1]
    assert result["not_counted"] == 3
    assert result["verify_keys"] == repo["trust"].ids()
    signed = dict((b["backup_id"], b["signed_by"]) for b in result["backups"])
    assert signed[repo["genuine"][0]] == repo["trust"].ids()[0]
    assert signed[repo["forged"][2]] is None


def test_resolve_latest_passes_over_forged_and_refuses_them_by_id(fs, repo):
    trust = repo["trust"]
    for restorable in (False, True):
        entry = mf.resolve(fs, trust=trust, restorable=restorable, now=T0 + datetime.timedelta(hours=1))
        assert entry.backup_id == repo["genuine"][-1]
        assert sorted(p.split(":")[0] for p in entry.passed_over) == sorted(repo["forged"])
        assert all("signature" in p for p in entry.passed_over)
    # without verify_keys, 'latest' is the newest forgery
    assert mf.resolve(fs, now=T0 + datetime.timedelta(hours=1)).backup_id == repo["forged"][2]
    for forged in repo["forged"]:
        with pytest.raises(IntegrityError) as e:
            mf.resolve(fs, forged, trust=trust)
        assert trust.ids()[0] in str(e.value) and forged in str(e.value)
        with pytest.raises(IntegrityError):
            mf.load_manifest(fs, forged, trust)
    assert mf.resolve(fs, repo["genuine"][0], trust=trust).signature_verified is True


def test_rotation_does_not_count_forged_manifests(fs, repo):
    now = T0 + datetime.timedelta(hours=1)
    plan = plan_rotation(fs, Policy(last=2), now=now, wal=False, trust=repo["trust"])
    kept = [i["backup_id"] for i in plan.kept]
    assert sorted(kept) == sorted(repo["genuine"][1:])
    assert [i["backup_id"] for i in plan.delete] == [repo["genuine"][0]]
    assert sorted(i["backup_id"] for i in plan.not_counted) == sorted(repo["forged"])
    assert all(any("signature" in r for r in i["reasons"]) for i in plan.not_counted)
    # a plan that deletes a forgery anyway is refused
    plan.delete.append(dict(plan.not_counted[0], _keys=[]))
    with pytest.raises(SafetyError, match="not signed by a trusted key"):
        check_plan(plan)
    # without verify_keys the forgeries fill keep_last and every genuine backup would go
    blind = plan_rotation(fs, Policy(last=2), now=now, wal=False)
    assert set(repo["genuine"]) <= set(i["backup_id"] for i in blind.delete)


@pytest.mark.parametrize("kind,short", [("pg_physical", "pg-physical"), ("redis_rdb", "redis-rdb")])
def test_pitr_and_redis_choose_only_trusted_backups(fs, kind, short):
    from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import choose_backup
    from ansible_collections.drkit.backup.plugins.module_utils.redis.artifacts import resolve_redis

    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key()
    trust = signing.Trust({signing.key_id(pub): pub})
    ids = []
    for n, signer in enumerate((signing.Signer(key), None)):  # genuine, then a newer unsigned one
        when = T0 + datetime.timedelta(minutes=n)
        m = mf.Manifest.new("%s-%s-%06x" % (when.strftime("%Y%m%dT%H%M%SZ"), short, n), kind,
                            when - datetime.timedelta(seconds=5), {"type": kind.split("_")[0], "host": "h",
                                                                   "port": 1})
        m.add_artifact(ART, 10, "ab" * 32)
        m.finish(when)
        ids.append(store(fs, m, signer))
    genuine, forged = ids
    if kind == "pg_physical":
        def choose(bid, t):
            return choose_backup(fs, bid, "latest", None, trust=t)
    else:
        def choose(bid, t):
            return resolve_redis(fs, {"backup_id": bid or "latest",
                                      "verify_keys": [signing.public_line(pub)] if t else None})
    assert choose(None, None).backup_id == forged
    assert choose(None, trust).backup_id == genuine
    with pytest.raises(IntegrityError, match="is not signed"):
        choose(forged, trust)
    assert choose(genuine, trust).backup_id == genuine
