# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side age encryption of logical PostgreSQL backups, against real
PostgreSQL and SeaweedFS S3 on loopback (tests/conftest.py).

An encrypted backup stores no plaintext and records only fingerprints; a
checksum-level verify and a listing need no key; verify at level restore and
a restore with the identity get exactly the manifest's rows; a missing or a
wrong identity fails before any database is created, naming the
fingerprints it needs; a flipped ciphertext byte fails authentication and
leaves no staging database and the target untouched."""

import hashlib
import os
import shutil
import subprocess
import time
import uuid

import pyrage
import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.restore import pg_restore_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo.copy import backup_copy
from ansible_collections.drkit.backup.plugins.module_utils.repo.listing import backup_info
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage, storage_options
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import (
    default_os_user, find_pg_bindir, os_user_ids, pidfile_live, stop_server)
from helpers import drop_database, engine_params, file_root, table_row_counts

SQL = """
CREATE TABLE public.secret_rows (id int PRIMARY KEY, what text);
INSERT INTO public.secret_rows SELECT g, 'confidential-' || g FROM generate_series(1, 4000) g;
CREATE TABLE public.other (id serial PRIMARY KEY, v text);
INSERT INTO public.other (v) SELECT 'v' || g FROM generate_series(1, 123) g;
"""


def storage_url(kind, tmp_path, bucket):
    return "file://%s" % (tmp_path / "repo") if kind == "file" else "s3://%s/enc" % bucket


def keypair(tmp_path, name):
    ident = pyrage.x25519.Identity.generate()
    path = tmp_path / ("%s.key" % name)
    path.write_text("# age identity for tests\n%s\n" % ident)
    os.chmod(str(path), 0o600)
    return str(path), str(ident.to_public())


def databases(pg):
    return set(line for line in pg.psql("SELECT datname FROM pg_database").splitlines() if line)


def staging_leftovers(pg):
    return sorted(d for d in databases(pg) if "__drkit_restore" in d or "drkit_verify" in d)


@pytest.fixture
def secret_db(pg):
    name = "enc_%s" % uuid.uuid4().hex[:8]
    pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql(SQL, dbname=name)
    try:
        yield name
    finally:
        drop_database(pg, name)


@pytest.fixture
def cleanup(pg):
    names = []
    yield names
    for name in names:
        drop_database(pg, name)


def stored_artifact(params, bid, name):
    storage = open_storage(params["storage_url"], **storage_options(params))
    key = mf.artifact_key(bid, name)
    return storage, key, b"".join(storage.iter_read(key))


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_encrypted_backup_verify_restore_round_trip(pg, s3, bucket, secret_db, tmp_path, cleanup, kind):
    url = storage_url(kind, tmp_path, bucket)
    ops_key, ops_pub = keypair(tmp_path, "ops")
    escrow_key, escrow_pub = keypair(tmp_path, "escrow")
    recipients_file = tmp_path / "recipients.txt"
    recipients_file.write_text("# escrow, offline\n%s\n" % escrow_pub)
    _changed, bak = pg_backup(engine_params(pg, url, s3, database=secret_db,
                                            encryption_recipients=[ops_pub, str(recipients_file)]))
    bid = bak["backup_id"]
    man = bak["manifest"]
    fps = [hashlib.sha256(r.encode()).hexdigest() for r in (ops_pub, escrow_pub)]
    assert man["encryption"] == {"format": "age", "recipients": fps}
    assert ops_pub not in str(man) and escrow_pub not in str(man)
    art = man["artifacts"][0]
    assert art["encrypted"] is True and "toc_entries" not in man["data"]
    params = engine_params(pg, url, s3)
    _storage, _key, stored = stored_artifact(params, bid, art["name"])
    assert stored.startswith(b"age-encryption.org/v1\n") and b"confidential-" not in stored
    assert hashlib.sha256(stored).hexdigest() == art["sha256"] and len(stored) == art["size"]

    # the stored bytes check without a key; listing shows the fingerprints
    _changed, res = pg_verify(engine_params(pg, url, s3, backup_id=bid, level="checksum"))
    assert res["passed"] is True, res
    _changed, listed = backup_info(dict(params, backup_id=bid))
    assert listed["backups"][0]["manifest"]["encryption"]["recipients"] == fps
    # structure and a test restore with the escrow key (the toc is checked here, not at backup time)
    _changed, res = pg_verify(engine_params(pg, url, s3, backup_id=bid, level="structure",
                                            encryption_identity_file=escrow_key))
    assert res["passed"] is True, res
    _changed, res = pg_verify(engine_params(pg, url, s3, backup_id=bid, level="restore",
                                            encryption_identity_file=ops_key))
    assert res["passed"] is True, res
    target = "dec_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    for jobs in (1, 2):  # streamed into pg_restore, and the parallel path through a local file
        _changed, res = pg_restore_backup(engine_params(pg, url, s3, backup_id=bid, target_database=target,
                                                        encryption_identity_file=ops_key, jobs=jobs, force=True))
        assert table_row_counts(pg, target) == table_row_counts(pg, secret_db) == {
            "public.other": 123, "public.secret_rows": 4000}, jobs
    assert staging_leftovers(pg) == []
    if kind == "file":
        # a copy is the stored bytes as they are: no key needed, and it restores with the identity
        copy_url = "file://%s" % (tmp_path / "copy")
        backup_copy(dict(params, to_storage_url=copy_url, backup_id=bid, copy_wal=False))
        _storage, _key, copied = stored_artifact(engine_params(pg, copy_url), bid, art["name"])
        assert copied == stored
        pg_restore_backup(engine_params(pg, copy_url, backup_id=bid, target_database=target, force=True,
                                        encryption_identity_file=escrow_key))
        assert table_row_counts(pg, target)["public.secret_rows"] == 4000


def test_missing_or_wrong_identity_fails_before_anything_is_created(pg, tmp_path, secret_db, cleanup):
    url = storage_url("file", tmp_path, None)
    _key, pub = keypair(tmp_path, "ops")
    wrong_key, wrong_pub = keypair(tmp_path, "wrong")
    bid = pg_backup(engine_params(pg, url, database=secret_db, encryption_recipients=[pub]))[1]["backup_id"]
    fp = hashlib.sha256(pub.encode()).hexdigest()
    target = "dec_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    before = databases(pg)
    with pytest.raises(ConfigError) as e:
        pg_restore_backup(engine_params(pg, url, backup_id=bid, target_database=target))
    assert fp in e.value.message and "encryption_identity_file" in e.value.message
    with pytest.raises(ConfigError) as e:
        pg_restore_backup(engine_params(pg, url, backup_id=bid, target_database=target,
                                        encryption_identity_file=wrong_key))
    assert fp in e.value.message and hashlib.sha256(wrong_pub.encode()).hexdigest() in e.value.message
    with pytest.raises(ConfigError) as e:
        pg_verify(engine_params(pg, url, backup_id=bid, level="restore"))
    assert fp in e.value.message
    assert databases(pg) == before


@pytest.mark.parametrize("jobs", [1, 2])
def test_flipped_ciphertext_byte_restores_nothing(pg, s3, bucket, secret_db, tmp_path, pg_database, jobs):
    """The stored bytes are rewritten with their sha256 in the manifest
    matching (an attacker who can write the bucket and the manifest): age's
    authentication is what refuses them; the staging database is dropped
    and the target keeps its content."""
    url = storage_url("s3", tmp_path, bucket)
    key_file, pub = keypair(tmp_path, "ops")
    bak = pg_backup(engine_params(pg, url, s3, database=secret_db, encryption_recipients=[pub]))[1]
    bid = bak["backup_id"]
    params = engine_params(pg, url, s3)
    art = bak["manifest"]["artifacts"][0]
    storage, key, stored = stored_artifact(params, bid, art["name"])
    bad = bytearray(stored)
    bad[len(bad) - 100] ^= 0x01  # in the last chunk: earlier chunks were already handed on
    with storage.writer(key) as w:
        w.write(bytes(bad))
    man = dict(bak["manifest"])
    man["artifacts"] = [dict(art, sha256=hashlib.sha256(bytes(bad)).hexdigest())]
    with storage.writer(mf.manifest_key(bid)) as w:
        w.write(mf.Manifest(man).to_json())
    pg.psql("CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1)", dbname=pg_database)
    before = databases(pg)
    with pytest.raises(IntegrityError) as e:
        pg_restore_backup(engine_params(pg, url, s3, backup_id=bid, target_database=pg_database, force=True,
                                        encryption_identity_file=key_file, jobs=jobs))
    assert "age authentication" in str(e.value), str(e.value)
    assert databases(pg) == before and staging_leftovers(pg) == []
    assert table_row_counts(pg, pg_database) == {"public.keep_me": 1}
    with pytest.raises(IntegrityError) as e:
        pg_verify(engine_params(pg, url, s3, backup_id=bid, level="restore", encryption_identity_file=key_file))
    assert staging_leftovers(pg) == []


# --------------------------------------------------------------------------
# physical base backups and their WAL: PITR, verify, damage


def postgres_keypair(root, name):
    """An identity file the server's OS user reads (restore_command runs as postgres)."""
    path, pub = keypair(root, name)
    shutil.chown(path, "postgres", "postgres")
    return path, pub


def stop_if_running(data_dir):
    if pidfile_live(data_dir):
        stop_server(find_pg_bindir("15"), data_dir, os_user_ids(default_os_user({})), mode="immediate")


def pitr_into(source, data_dir, **extra):
    import shlex

    from pitr_source import DRKIT_CMD
    params = {"storage_url": source.wal_url, "data_directory": data_dir, "port": free_port(),
              "drkit_command": DRKIT_CMD, "target": "latest", "timeout": 300,
              "settings": {"unix_socket_directories": os.path.dirname(data_dir), "listen_addresses": "127.0.0.1"}}
    params.update(extra)
    assert shlex.quote(data_dir) == data_dir
    return params


def test_encrypted_base_backup_and_wal_recover_only_with_the_identity(scratch_dir):
    """Base backup and WAL encrypted on the database host (recipients only);
    a point-in-time recovery and a restore-level verify need the identity,
    fail before anything is created without it, and with it recover every
    row written after the backup."""
    from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import pg_pitr
    from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
    from pitr_source import ArchivingSource

    key_file, pub = postgres_keypair(scratch_dir, "ops")
    wrong_key, wrong_pub = postgres_keypair(scratch_dir, "wrong")
    fp = hashlib.sha256(pub.encode()).hexdigest()
    source = ArchivingSource(scratch_dir, uuid.uuid4().hex, recipients=[pub])
    restored = scratch_dir / "restored"
    restored.mkdir()
    shutil.chown(str(restored), "postgres", "postgres")
    try:
        source.start(scale=0.001)
        source.base_backup()
        source.pg.psql("CREATE TABLE after_backup (id int PRIMARY KEY, what text); "
                       "INSERT INTO after_backup SELECT g, 'after-' || g FROM generate_series(1, 321) g",
                       dbname="agentic_platform")
        source.switch_wal_and_wait()
        storage = open_storage(source.wal_url)
        (entry,) = [b for b in backup_info({"storage_url": source.wal_url})[1]["backups"]
                    if b["kind"] == "pg_physical"]
        bid = entry["backup_id"]
        man = dict(mf.load_manifest(storage, bid))
        assert man["encryption"] == {"format": "age", "recipients": [fp]}
        assert all(a.get("encrypted") for a in man["artifacts"]), man["artifacts"]
        base = b"".join(storage.iter_read(mf.artifact_key(bid, "base.tar.zst")))
        assert base.startswith(b"age-encryption.org/v1\n") and b"ustar" not in base
        segment = man["data"]["wal_start_segment"]
        assert storage.get_bytes(wal.wal_key(segment)).startswith(b"drkit-age1 ")

        # without the identity, or with another one: refused before the directory is touched
        data_dir = str(restored / "data")
        wrong_fp = hashlib.sha256(wrong_pub.encode()).hexdigest()
        for extra, wanted in (({}, "no encryption_identity_file"), ({"encryption_identity_file": wrong_key}, wrong_fp)):
            for check_mode in (True, False):
                with pytest.raises(ConfigError) as e:
                    pg_pitr(pitr_into(source, data_dir, **extra), check_mode=check_mode)
                assert fp in e.value.message and wanted in e.value.message, e.value.message
                assert not os.path.exists(data_dir)
        with pytest.raises(ConfigError) as e:
            pg_verify({"storage_url": source.wal_url, "backup_id": bid, "level": "restore"})
        assert fp in e.value.message
        # a checksum-level verify needs no key
        assert pg_verify({"storage_url": source.wal_url, "backup_id": bid, "level": "checksum"})[1]["passed"]
        # restore level with the identity: extracted, pg_verifybackup, replayed to consistency
        res = pg_verify({"storage_url": source.wal_url, "backup_id": bid, "level": "restore",
                         "encryption_identity_file": key_file})[1]
        assert res["passed"] and "successfully verified" in res["physical"]["pg_verifybackup"], res

        # an identity restore_command's user cannot read: said before anything is restored
        os.chmod(key_file, 0o600)
        shutil.chown(key_file, "root", "root")
        with pytest.raises(ConfigError) as e:
            pg_pitr(pitr_into(source, data_dir, encryption_identity_file=key_file))
        assert "cannot be read by the server's OS user postgres" in e.value.message, e.value.message
        assert not os.path.exists(data_dir)
        shutil.chown(key_file, "postgres", "postgres")

        _changed, res = pg_pitr(pitr_into(source, data_dir, encryption_identity_file=key_file))
        assert res["status"] == "promoted", res
        assert "--encryption-identity-file %s" % key_file in res["restore_command"]
        port = res["port"]
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "agentic_platform",
                              "-XAtc", "SELECT count(*), max(what) FROM after_backup"],
                             env=dict(os.environ, PGPASSWORD=source.password), stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.strip()
        assert out == "321|after-99", out
    finally:
        stop_if_running(str(restored / "data"))
        source.destroy()


def test_standby_from_an_encrypted_repository(scratch_dir):
    """A hot standby built from an encrypted base backup and encrypted WAL:
    refused without the identity (nothing created, no slot left on the
    primary), built with it, and it streams what the primary writes next."""
    from ansible_collections.drkit.backup.plugins.module_utils.pg.standby import pg_standby
    from pitr_source import DRKIT_CMD, ArchivingSource

    key_file, pub = postgres_keypair(scratch_dir, "ops")
    fp = hashlib.sha256(pub.encode()).hexdigest()
    password = uuid.uuid4().hex
    source = ArchivingSource(scratch_dir, password, recipients=[pub])
    standby_parent = scratch_dir / "standby"
    standby_parent.mkdir()
    shutil.chown(str(standby_parent), "postgres", "postgres")
    data_dir = str(standby_parent / "data")
    params = {"storage_url": source.wal_url, "login_host": "127.0.0.1", "login_user": "postgres",
              "login_password": password, "data_directory": data_dir, "standby_port": free_port(),
              "drkit_command": DRKIT_CMD, "timeout": 120,
              "settings": {"unix_socket_directories": str(standby_parent), "listen_addresses": "127.0.0.1"}}
    try:
        source.start(scale=0.001)
        source.pg.psql("CREATE TABLE t (id int PRIMARY KEY)")
        source.pg.psql("INSERT INTO t SELECT generate_series(1, 100)")
        source.base_backup()
        source.pg.psql("INSERT INTO t SELECT generate_series(101, 250)")
        source.switch_wal_and_wait()
        params["port"] = source.pg.port
        with pytest.raises(ConfigError) as e:
            pg_standby(params)
        assert fp in e.value.message and "no encryption_identity_file" in e.value.message, e.value.message
        assert not os.path.exists(data_dir)
        assert source.pg.psql("SELECT count(*) FROM pg_replication_slots") == "0"

        _changed, res = pg_standby(dict(params, encryption_identity_file=key_file))
        assert res["status"] == "streaming" and res["archive_segments_replayed"] >= 1, res
        assert "--encryption-identity-file %s" % key_file in res["standby_settings"]["restore_command"]
        source.pg.psql("INSERT INTO t SELECT generate_series(251, 300)")
        lsn = source.pg.psql("SELECT pg_current_wal_lsn()")

        def standby(sql):
            return subprocess.run(["psql", "-XAt", "-h", "127.0.0.1", "-p", str(params["standby_port"]), "-U",
                                   "postgres", "-d", "postgres", "-c", sql], env=dict(os.environ, PGPASSWORD=password),
                                  stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()
        deadline = time.time() + 30
        while standby("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % lsn) != "t":
            assert time.time() < deadline, "the standby did not replay %s" % lsn
            time.sleep(0.2)
        assert standby("SELECT count(*), pg_is_in_recovery() FROM t") == "300|t"
    finally:
        stop_if_running(data_dir)
        source.destroy()


def test_damaged_encrypted_base_backup_leaves_no_data_directory(scratch_dir):
    """A ciphertext byte flipped in the base backup's last chunk, the
    manifest's sha256 rewritten to match (a bucket writer): age refuses it
    during the extraction, and the half-extracted directory is removed."""
    from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import pg_pitr
    from pitr_source import ArchivingSource

    key_file, pub = postgres_keypair(scratch_dir, "ops")
    source = ArchivingSource(scratch_dir, uuid.uuid4().hex, recipients=[pub])
    try:
        source.start(scale=0.001)
        source.base_backup()
    finally:
        source.destroy()
    storage = open_storage(source.wal_url)
    (entry,) = backup_info({"storage_url": source.wal_url})[1]["backups"]
    bid = entry["backup_id"]
    man = dict(mf.load_manifest(storage, bid))
    root = file_root(source.wal_url)
    path = root / mf.artifact_key(bid, "base.tar.zst")
    bad = bytearray(path.read_bytes())
    bad[len(bad) - 100] ^= 0x01
    path.write_bytes(bytes(bad))
    data = dict(man)
    data["artifacts"] = [dict(a, sha256=hashlib.sha256(bytes(bad)).hexdigest()) if a["name"] == "base.tar.zst"
                         else a for a in man["artifacts"]]
    (root / mf.manifest_key(bid)).write_bytes(mf.Manifest(data).to_json())
    restored = scratch_dir / "restored"
    restored.mkdir()
    shutil.chown(str(restored), "postgres", "postgres")
    data_dir = str(restored / "data")
    with pytest.raises(IntegrityError) as e:
        pg_pitr(pitr_into(source, data_dir, encryption_identity_file=key_file))
    assert "age authentication" in str(e.value), str(e.value)
    assert not os.path.exists(data_dir)
    with pytest.raises(IntegrityError) as e:
        pg_verify({"storage_url": source.wal_url, "backup_id": bid, "level": "structure",
                   "encryption_identity_file": key_file})
    assert "age authentication" in str(e.value), str(e.value)


# --------------------------------------------------------------------------
# the WAL archive: wal-push / wal-fetch through the real command line


def wal_segment(pg, tmp_path):
    """A copy of one completed WAL segment of ``pg``: (name, path)."""
    pg.psql("SELECT pg_logical_emit_message(false, 'drkit-enc-test', repeat('x', 200000))")
    name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    src = os.path.join(pg.data_dir, "pg_wal", name)
    dst = tmp_path / ("seg-%s" % uuid.uuid4().hex[:6])
    dst.mkdir()
    path = dst / name
    path.write_bytes(open(src, "rb").read())
    return name, str(path)


@pytest.fixture
def wal_archive(s3, bucket):
    url = "s3://%s/walenc" % bucket
    cfg = {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
           "region": s3.region}
    return url, cfg, open_storage(url, **cfg)


def test_encrypted_wal_push_fetch_round_trip(pg, tmp_path, wal_archive):
    from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
    from helpers import run_drkit

    url, cfg, st = wal_archive
    key_file, pub = keypair(tmp_path, "ops")
    wrong_key, _wrong_pub = keypair(tmp_path, "wrong")
    name, path = wal_segment(pg, tmp_path)
    local = open(path, "rb").read()
    push_cfg = dict(cfg, encryption_recipients=[pub])  # the job's config file, as archive_command reads it
    r = run_drkit(["wal-push", "--storage-url", url, path, name], config=push_cfg)
    assert r.returncode == 0, r.stderr
    stored = st.get_bytes(wal.wal_key(name))
    assert stored.startswith(b"drkit-age1 ") and b"\nage-encryption.org/v1\n" in stored
    assert hashlib.sha256(local).hexdigest() in stored.split(b"\n", 1)[0].decode()
    assert b"drkit-enc-test" not in stored and pub.encode() not in stored
    # an identical re-push is recognised without a key (the archiver holds none)
    r = run_drkit(["wal-push", "--storage-url", url, "--verbose", path, name], config=push_cfg)
    assert r.returncode == 0 and "already archived" in r.stdout, r.stderr
    assert st.get_bytes(wal.wal_key(name)) == stored
    # a different file under the name is refused as before
    changed = tmp_path / "changed"
    changed.mkdir()
    other = bytearray(local)
    other[8192 * 3 + 100:8192 * 3 + 104] = b"\xde\xad\xbe\xef"
    (changed / name).write_bytes(bytes(other))
    r = run_drkit(["wal-push", "--storage-url", url, str(changed / name), name], config=push_cfg)
    assert r.returncode == 5, r.stderr

    out = tmp_path / "pg_wal"
    out.mkdir()
    # no identity, a wrong one: an error (not "end of archive"), naming the fingerprint; nothing written
    fp = hashlib.sha256(pub.encode()).hexdigest()
    r = run_drkit(["wal-fetch", "--storage-url", url, name, str(out / "RECOVERYXLOG")], config=cfg)
    assert r.returncode not in (0, 1) and fp in r.stderr, r.stderr
    r = run_drkit(["wal-fetch", "--storage-url", url, "--encryption-identity-file", wrong_key, name,
                   str(out / "RECOVERYXLOG")], config=cfg)
    assert r.returncode not in (0, 1) and fp in r.stderr, r.stderr
    assert os.listdir(str(out)) == []
    r = run_drkit(["wal-fetch", "--storage-url", url, "--encryption-identity-file", key_file, name,
                   str(out / "RECOVERYXLOG")], config=cfg)
    assert r.returncode == 0, r.stderr
    assert (out / "RECOVERYXLOG").read_bytes() == local
    assert sorted(os.listdir(str(out))) == ["RECOVERYXLOG"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_encrypted_segment_is_never_written_into_place(pg, tmp_path, wal_archive, damage):
    from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
    from helpers import run_drkit

    url, cfg, st = wal_archive
    key_file, pub = keypair(tmp_path, "ops")
    name, path = wal_segment(pg, tmp_path)
    r = run_drkit(["wal-push", "--storage-url", url, path, name], config=dict(cfg, encryption_recipients=[pub]))
    assert r.returncode == 0, r.stderr
    stored = bytearray(st.get_bytes(wal.wal_key(name)))
    if damage == "flip":
        stored[len(stored) - 50] ^= 0x01  # the last chunk: earlier ones were decrypted already
    elif damage == "truncate":
        stored = stored[:len(stored) - 20]
    else:  # the header names another content: the decrypted segment does not match it
        line, rest = bytes(stored).split(b"\n", 1)
        stored = bytearray(line.replace(b'"sha256":"', b'"sha256":"0') + b"\n" + rest)
    st.put_bytes(wal.wal_key(name), bytes(stored))
    out = tmp_path / "pg_wal"
    out.mkdir()
    r = run_drkit(["wal-fetch", "--storage-url", url, "--encryption-identity-file", key_file, name,
                   str(out / "RECOVERYXLOG")], config=cfg)
    assert r.returncode not in (0, 1), r.stderr
    assert ("authentication" in r.stderr) if damage != "header" else ("header" in r.stderr), r.stderr
    assert os.listdir(str(out)) == []  # no segment, no temp file
