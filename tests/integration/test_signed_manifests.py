# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed manifests end to end, against real PostgreSQL and SeaweedFS S3 on
loopback (tests/conftest.py), and on file://.

Two genuine logical backups are signed by two backup-host keys (a key
rotation: the readers trust both). Next to them, someone with write access
to the repository but no signing key copies the newest backup's objects
under newer ids with a forged manifest: an edited copy (its signature kept,
the digest recomputed), one signed by the attacker's own key, one unsigned.
With verify_keys: listing marks them, verify and restore of 'latest' pass
over them to the genuine backup, verify, restore and PITR refuse them by
id naming the key ids, and rotation neither counts nor deletes them;
retiring a key makes its backups untrusted; a copy takes only the genuine
backups, signatures included. The CLI takes --verify-key and
--signing-key-file."""

import datetime
import json
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import signing
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import pg_pitr
from ansible_collections.drkit.backup.plugins.module_utils.pg.restore import pg_restore_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo.copy import backup_copy
from ansible_collections.drkit.backup.plugins.module_utils.repo.listing import backup_info
from ansible_collections.drkit.backup.plugins.module_utils.repo.rotate import rotate
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage, storage_options
from helpers import drop_database, engine_params, key_files, run_drkit, table_row_counts


def forge(storage, genuine_id, suffix, minutes, mutate):
    """Copy a genuine backup's objects under a newer id with a manifest
    changed by ``mutate(doc)``, sealed again (the digest is no secret)."""
    doc = json.loads(storage.get_bytes(mf.manifest_key(genuine_id)))
    when = mf.parse_time(doc["finished_at"]) + datetime.timedelta(minutes=minutes)
    new_id = "%s-pg-logical-%s" % (when.strftime("%Y%m%dT%H%M%SZ"), suffix)
    for a in doc["artifacts"]:
        storage.put_bytes(mf.artifact_key(new_id, a["name"]),
                          b"".join(storage.iter_read(mf.artifact_key(genuine_id, a["name"]))))
    doc["backup_id"], doc["finished_at"] = new_id, mf.isoformat(when)
    mutate(doc)
    doc[mf.DIGEST] = mf.Manifest.digest(doc)
    storage.put_bytes(mf.manifest_key(new_id), json.dumps(doc).encode(), create=True)
    return new_id


@pytest.fixture
def small_db(pg):
    name = "sig_%s" % uuid.uuid4().hex[:8]
    pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql("CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 50);",
            dbname=name)
    try:
        yield name
    finally:
        drop_database(pg, name)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_forged_manifests_are_refused_and_not_counted(pg, s3, bucket, small_db, tmp_path, kind):
    url = "file://%s" % (tmp_path / "repo") if kind == "file" else "s3://%s/signed" % bucket
    old_key, old_pub, old_id = key_files(tmp_path, "host-old")
    new_key, new_pub, new_id = key_files(tmp_path, "host-new")
    attacker_key = key_files(tmp_path, "attacker")[0]
    # two genuine backups, before and after the backup host's key was rotated
    _c, first = pg_backup(engine_params(pg, url, s3, database=small_db, signing_key_file=old_key))
    _c, second = pg_backup(engine_params(pg, url, s3, database=small_db, signing_key_file=new_key))
    assert first["signed_by"] == old_id and second["signed_by"] == new_id
    assert second["manifest"]["signature"]["key_id"] == new_id
    assert open(new_key).read().strip().splitlines()[1] not in json.dumps(second)
    genuine = [first["backup_id"], second["backup_id"]]

    params = engine_params(pg, url, s3)
    storage = open_storage(url, **storage_options(params))
    attacker = signing.Signer.from_file(attacker_key)

    def edited(doc):
        for row in doc["data"]["table_rows"]:
            row["rows"] += 1

    def resigned(doc):
        doc["signature"] = attacker.sign(mf.Manifest.canonical(doc))

    def unsigned(doc):
        del doc["signature"]

    forged = [forge(storage, genuine[1], "f0000%d" % n, n, m) for n, m in ((1, edited), (2, resigned), (3, unsigned))]
    trusted = [old_pub, new_pub]

    # listing
    _c, listed = backup_info(dict(params, verify_keys=trusted))
    by_id = dict((b["backup_id"], b) for b in listed["backups"])
    assert listed["latest"]["backup_id"] == genuine[1] and listed["not_counted"] == 3
    assert [by_id[b]["signature_verified"] for b in genuine] == [True, True]
    assert [by_id[b]["signed_by"] for b in genuine] == [old_id, new_id]
    assert [by_id[b]["counted"] for b in forged] == [False, False, False]
    assert "does not match its content" in by_id[forged[0]]["doubts"][0]
    assert "not one of the trusted keys" in by_id[forged[1]]["doubts"][0]
    assert "is not signed" in by_id[forged[2]]["doubts"][0]
    # without verify_keys the newest forgery is what 'latest' means
    assert backup_info(params)[1]["latest"]["backup_id"] == forged[2]

    # verify: 'latest' is the genuine one, the forgeries are named as passed over; by id they are refused
    _c, res = pg_verify(dict(params, level="checksum", verify_keys=trusted))
    assert res["passed"] is True and res["backup_id"] == genuine[1]
    assert sorted(p.split(":")[0] for p in res["passed_over"]) == sorted(forged)
    for bid in forged:
        with pytest.raises(IntegrityError) as e:
            pg_verify(dict(params, level="checksum", backup_id=bid, verify_keys=trusted))
        assert bid in str(e.value) and new_id in str(e.value)

    # restore: a forgery by id is refused before anything is created; 'latest' restores the genuine one
    target = "sig_restored_%s" % uuid.uuid4().hex[:8]
    try:
        with pytest.raises(IntegrityError, match="is not signed"):
            pg_restore_backup(dict(params, backup_id=forged[2], target_database=target, verify_keys=trusted))
        assert target not in pg.psql("SELECT datname FROM pg_database")
        _c, res = pg_restore_backup(dict(params, target_database=target, verify_keys=trusted))
        assert res["backup_id"] == genuine[1]
        assert table_row_counts(pg, target) == {"public.t": 50}
    finally:
        drop_database(pg, target)

    # PITR is refused by id before it touches the data directory (the id is a logical backup, but the
    # signature is checked first)
    with pytest.raises(IntegrityError, match="is not signed"):
        pg_pitr(dict(params, backup_id=forged[2], data_directory=str(tmp_path / "pitr"), start=False,
                     wal_config=str(tmp_path / "wal.yml"), verify_keys=trusted))
    assert not (tmp_path / "pitr").exists()

    # the old key retired: its backup is no longer trusted, named by key id
    with pytest.raises(IntegrityError) as e:
        pg_verify(dict(params, level="checksum", backup_id=genuine[0], verify_keys=[new_pub]))
    assert "signed by the key id %s, which is not one of the trusted keys" % old_id in str(e.value)

    # a copy takes the genuine backups with their signatures, and leaves the forgeries out
    dst = "file://%s" % (tmp_path / "copy")
    _c, copied = backup_copy(dict(params, to_storage_url=dst, verify_keys=trusted, copy_wal=False))
    assert sorted(copied["copied"]) == sorted(genuine)
    assert sorted(p.split(":")[0] for p in copied["problems"]) == sorted(forged)
    _c, listed = backup_info({"storage_url": dst, "verify_keys": trusted})
    # both genuine ones may carry the same second in their ids: compare as sets
    assert sorted((b["backup_id"], b["signature_verified"]) for b in listed["backups"]) == sorted(
        (g, True) for g in genuine)

    # rotation with keep_last 1: the older genuine backup goes, the forgeries neither fill the slot nor go
    _c, rot = rotate(dict(params, keep_last=1, verify_keys=trusted))
    assert [d["backup_id"] for d in rot["deleted"]] == [genuine[0]]
    assert sorted(i["backup_id"] for i in rot["not_counted"]) == sorted(forged)
    left = mf.list_backups(storage, strict=False, doubtful=True)[0]
    assert sorted(e.backup_id for e in left) == sorted([genuine[1]] + forged)


def test_cli_signs_and_verifies(pg, small_db, tmp_path):
    url = "file://%s" % (tmp_path / "repo")
    key, pub, kid = key_files(tmp_path, "host")
    conn = {"login_password": pg.password}
    base = ["--storage-url", url]
    proc = run_drkit(["pg-backup", "--host", pg.host, "--port", str(pg.port), "--user", pg.superuser,
                      "-d", small_db, "--signing-key-file", key, "--json"] + base, config=conn, tmp_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["signed_by"] == kid
    assert open(key).read().splitlines()[1] not in proc.stdout + proc.stderr
    proc = run_drkit(["list", "--json", "--verify-key", pub] + base, tmp_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verify_keys"] == [kid] and out["backups"][0]["signature_verified"] is True
    # a wrong key: the backup does not count (marked in the table), and verify of latest finds nothing trusted
    _other_key, other_pub, other_id = key_files(tmp_path, "other")
    proc = run_drkit(["list", "--verify-key", other_pub] + base, tmp_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[SIGNATURE NOT TRUSTED]" in proc.stdout
    proc = run_drkit(["verify", "--level", "checksum", "--verify-key", other_pub, "--json"] + base, tmp_dir=tmp_path)
    assert proc.returncode != 0
    assert kid in proc.stderr and other_id in proc.stderr, proc.stderr


def test_redis_snapshot_signed_and_a_forgery_refused(tmp_path, tmp_storage_url):
    from ansible_collections.drkit.backup.plugins.module_utils.redis import snapshot as redis_backup
    from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import redis_verify
    from redis_support import fill, new_password, start_redis

    srv = start_redis(tmp_path / "src", password=new_password())
    try:
        fill(srv, 500)
        key, pub, kid = key_files(tmp_path, "redis-host")
        _c, snap = redis_backup.redis_snapshot({"login_host": srv.host, "login_port": srv.port,
                                                "login_password": srv.password, "storage_url": tmp_storage_url,
                                                "signing_key_file": key})
    finally:
        srv.destroy()
    assert snap["signed_by"] == kid
    storage = open_storage(tmp_storage_url)
    doc = json.loads(storage.get_bytes(mf.manifest_key(snap["backup_id"])))
    when = mf.parse_time(doc["finished_at"]) + datetime.timedelta(minutes=1)
    forged = "%s-redis-rdb-f00001" % when.strftime("%Y%m%dT%H%M%SZ")
    for a in doc["artifacts"]:
        storage.put_bytes(mf.artifact_key(forged, a["name"]),
                          b"".join(storage.iter_read(mf.artifact_key(snap["backup_id"], a["name"]))))
    doc["backup_id"], doc["finished_at"] = forged, mf.isoformat(when)
    del doc["signature"]
    doc[mf.DIGEST] = mf.Manifest.digest(doc)
    storage.put_bytes(mf.manifest_key(forged), json.dumps(doc).encode(), create=True)

    _c, res = redis_verify({"storage_url": tmp_storage_url, "level": "checksum", "verify_keys": [pub]})
    assert res["passed"] is True and res["backup_id"] == snap["backup_id"]
    assert [p.split(":")[0] for p in res["passed_over"]] == [forged]
    with pytest.raises(IntegrityError, match="is not signed"):
        redis_verify({"storage_url": tmp_storage_url, "level": "checksum", "backup_id": forged, "verify_keys": [pub]})
    # without verify_keys the forgery is 'latest'
    assert redis_verify({"storage_url": tmp_storage_url, "level": "checksum"})[1]["backup_id"] == forged
