# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/dr_rebuild.yml end to end: the "lost host" is the session's
PostgreSQL fixture and a Redis server; the "fresh host" is a NEW Debian
cluster made by the playbook itself with pg_createcluster on a free loopback
port (never the machine's own 5432/6379) and a stopped Redis data directory.
The test runs the exact command of the runbook (RUNBOOK_COMMAND, checked by
test_runbook.py) and then checks by hand that every table has the source's
row count, that Redis holds the source's keys, that the rebuild password is
gone again, and that the report holds measured times."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import (DRKIT, NewCluster, ansible_environment, drop_database, key_files, make_sample_database,
                     table_row_counts)

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from support.redis_server import ScratchRedis

# The runbook's "Complete infrastructure loss" command (docs/DISASTER-RECOVERY-RUNBOOK.md).
RUNBOOK_COMMAND = 'ansible-playbook -i "$INVENTORY" -l "$NEW_HOST" drkit.backup.dr_rebuild -e @"$DR_VARS"'
PG_VERSION = os.environ.get("DRKIT_TEST_PG_VERSION", "15")


def run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False, **kw)


def drkit(args, config):
    proc = run(["/usr/bin/env", str(Path(DRKIT).parent.parent / ".venv" / "bin" / "python"), str(DRKIT)]
               + args + ["--config", str(config)])
    assert proc.returncode == 0, proc.stdout
    return proc


def write_0600(path, data):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh)
    return path


@pytest.fixture
def new_cluster(scratch_dir):
    cluster = NewCluster(scratch_dir)
    try:
        yield cluster
    finally:
        cluster.drop()


def _redis_conf(directory, port, password):
    conf = Path(directory) / "redis.conf"
    conf.write_text("bind 127.0.0.1\nport %d\ndir %s\ndbfilename dump.rdb\nappendonly yes\n"
                    "appenddirname appendonlydir\nsave \"\"\nrequirepass \"%s\"\ndaemonize yes\n"
                    "pidfile %s/redis.pid\nlogfile %s/redis.log\n"
                    % (port, directory, password, directory, directory))
    conf.chmod(0o600)
    shutil.chown(str(conf), "redis", "redis")
    return conf


@pytest.fixture
def source_redis(scratch_dir):
    server = ScratchRedis(str(Path(scratch_dir) / "redis-source"), password=uuid.uuid4().hex)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.mark.parametrize("protected", [False, True], ids=["plain", "signed-and-encrypted"])
def test_dr_rebuild_onto_a_fresh_cluster(pg, source_redis, scratch_dir, tmp_path, new_cluster, protected):
    """protected: the backups as jobs with keys take them (issue 15): logical
    ones encrypted to an age recipient and every manifest signed; the rebuild
    gets only the public verification key and the identity."""
    keys, rebuild_keys = {}, {}
    if protected:
        import pyrage
        signing_key, public_key, _key_id = key_files(tmp_path, "backup-host")
        ident = pyrage.x25519.Identity.generate()
        identity_file = tmp_path / "restore.age"
        identity_file.write_text("# age identity (restore side only)\n%s\n" % ident)
        os.chmod(str(identity_file), 0o600)
        keys = {"signing_key_file": signing_key}
        rebuild_keys = {"dr_rebuild_verify_keys": [public_key],
                        "dr_rebuild_encryption_identity_file": str(identity_file)}
    # --- the lost host's backups (file storage), taken with the CLI as the roles would
    storage = Path(scratch_dir) / "backups"
    storage.mkdir()
    url = "file://%s" % storage
    db1, db2 = "rb_app_%s" % uuid.uuid4().hex[:6], "rb_small_%s" % uuid.uuid4().hex[:6]
    make_sample_database(pg, db1, scale=0.002)
    pg.psql('CREATE DATABASE "%s"' % db2)
    pg.psql("CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 321) g", dbname=db2)
    try:
        for db in (db1, db2):
            values = {"storage_url": url, "login_host": pg.host, "port": pg.port, "login_user": pg.superuser,
                      "login_password": pg.password, "database": db}
            values.update(keys)
            if protected:
                values["encryption_recipients"] = [str(ident.to_public())]
            cfg = write_0600(tmp_path / ("%s.yml" % db), values)
            drkit(["pg-backup", "-q"], cfg)
        expected = dict((db, table_row_counts(pg, db)) for db in (db1, db2))
    finally:
        drop_database(pg, db1)
        drop_database(pg, db2)
    client = source_redis.client()
    for i in range(500):
        client.set("session:%d" % i, "v%d" % i)
    rcfg = write_0600(tmp_path / "redis.yml", dict(keys, **{
        "storage_url": url, "login_host": "127.0.0.1", "login_port": source_redis.port,
        "login_password": source_redis.password}))
    drkit(["redis-snapshot", "-q"], rcfg)
    manifests = [json.loads(m.read_text()) for m in storage.rglob("manifest.json")]
    assert len(manifests) == 3 and all(("signature" in m) == protected for m in manifests)
    dumps = [p for p in storage.rglob("*") if p.is_file() and p.name.startswith("database.")]
    # age ciphertext when protected (the recipients' stanzas in its header)
    assert len(dumps) == 2 and all((b"age-encryption.org/v1" in p.read_bytes()[:4096]) == protected for p in dumps)

    # --- the "fresh host": an empty, stopped Redis data directory owned by redis
    rdir = Path(scratch_dir) / "redis-new"
    rdir.mkdir()
    shutil.chown(str(rdir), "redis", "redis")
    rport = free_port()
    rpass = "rebuild-%s" % uuid.uuid4().hex
    conf = _redis_conf(rdir, rport, rpass)
    start = ["setpriv", "--reuid", "redis", "--regid", "redis", "--init-groups",
             shutil.which("redis-server") or "/usr/bin/redis-server", str(conf)]

    inventory = tmp_path / "inventory.ini"
    inventory.write_text("newhost ansible_connection=local ansible_python_interpreter=%s\n"
                         % (Path(DRKIT).parent.parent / ".venv" / "bin" / "python"))
    report_dir = tmp_path / "report"
    dr_vars = write_0600(tmp_path / "dr.yml", dict(rebuild_keys, **{
        "dr_rebuild_storage_url": url,
        "dr_rebuild_install_packages": False,
        "dr_rebuild_pg_version": PG_VERSION,
        "dr_rebuild_pg_cluster": new_cluster.name,
        "dr_rebuild_pg_port": new_cluster.port,
        "dr_rebuild_pg_data_directory": new_cluster.data_dir,
        "dr_rebuild_redis": True,
        "dr_rebuild_redis_conf": str(conf),
        "dr_rebuild_redis_start_command": start,
        "dr_rebuild_redis_login_port": rport,
        "dr_rebuild_redis_login_password": rpass,
        "dr_rebuild_report_dir": str(report_dir),
    }))
    env = ansible_environment(str(tmp_path))
    env.update({"INVENTORY": str(inventory), "NEW_HOST": "newhost", "DR_VARS": str(dr_vars),
                "ANSIBLE_STDOUT_CALLBACK": "default"})
    try:
        if protected:
            # someone else's public key: the signatures do not verify, nothing is restored
            _other_key, other_public, _other_id = key_files(tmp_path, "someone-else")
            wrong_vars = dict(yaml.safe_load(Path(dr_vars).read_text()), dr_rebuild_verify_keys=[other_public])
            wrong = write_0600(tmp_path / "dr-wrong-key.yml", wrong_vars)
            refused = run(["bash", "-c", RUNBOOK_COMMAND], env=dict(env, DR_VARS=wrong), cwd=str(tmp_path),
                          timeout=900)
            assert refused.returncode != 0 and "which is not one of the trusted keys" in refused.stdout, \
                refused.stdout[-8000:]
            assert all(new_cluster.psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % db) == "0"
                       for db in expected)
        proc = run(["bash", "-c", RUNBOOK_COMMAND], env=env, cwd=str(tmp_path), timeout=900)
        assert proc.returncode == 0, proc.stdout[-8000:]
        assert rpass not in proc.stdout and pg.password not in proc.stdout

        # every table of every database, counted by hand in the new cluster
        for db, counts in expected.items():
            got = dict((t, int(new_cluster.psql("SELECT count(*) FROM %s" % t, dbname=db))) for t in counts)
            assert got == counts, db
        # the temporary password is gone: peer authentication only, as Debian sets it up
        assert new_cluster.psql("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'postgres'") == "t"
        # Redis: running as redis, on its port, with the source's keys, from an AOF (appendonly yes)
        cli = run(["redis-cli", "-h", "127.0.0.1", "-p", str(rport), "DBSIZE"],
                  env=dict(os.environ, REDISCLI_AUTH=rpass))
        assert cli.stdout.strip() == "500", cli.stdout
        assert (rdir / "appendonlydir").is_dir()

        report = json.loads((report_dir / "rebuild.json").read_text())
        assert float(report["rebuild_seconds"]) > 0
        assert float(report["steps"]["restore_postgresql_seconds"]) > 0
        assert float(report["rebuild_seconds"]) >= float(report["steps"]["restore_postgresql_seconds"])
        assert sorted(d["item"] for d in report["postgresql"]["databases"]) == sorted(expected)
        assert all(float(d["duration"]) > 0 for d in report["postgresql"]["databases"])
        assert report["redis"]["backup_id"]
        md = (report_dir / "rebuild.md").read_text()
        assert "Rebuild time (measured RTO of losing this host)" in md
    finally:
        pid = rdir / "redis.pid"
        if pid.exists():
            run(["kill", pid.read_text().strip()])


def test_dr_rebuild_with_point_in_time_recovery(scratch_dir, tmp_path, new_cluster):
    """The audit's scenario 3 on a lost host: base backup, an accidental
    TRUNCATE, then the host is lost; the rebuild recovers to the time before
    the mistake into a new Debian cluster, managed by pg_ctlcluster. The
    base backup and the WAL were encrypted on the lost host (it held only the
    public key): the rebuild decrypts them with the identity."""
    import pyrage
    from pitr_source import ArchivingSource

    ident = pyrage.x25519.Identity.generate()
    identity_file = scratch_dir / "age.key"
    identity_file.write_text("%s\n" % ident)
    os.chmod(str(identity_file), 0o600)
    shutil.chown(str(identity_file), "postgres", "postgres")  # restore_command reads it as the cluster's owner
    password = uuid.uuid4().hex
    source = ArchivingSource(scratch_dir, password, recipients=[str(ident.to_public())])
    try:
        source.start()
        source.base_backup()
        before, agents = source.accident()
        wal_url = source.wal_url
    finally:
        source.destroy()  # the host is gone
    wal_dir = Path(wal_url[len("file://"):]) / "wal"
    some_segment = next(p for p in wal_dir.rglob("*") if p.is_file() and len(p.name.split(".")[0]) == 24)
    assert some_segment.read_bytes().startswith(b"drkit-age1 "), some_segment

    inventory = tmp_path / "inventory.ini"
    inventory.write_text("newhost ansible_connection=local ansible_python_interpreter=%s\n"
                         % (Path(DRKIT).parent.parent / ".venv" / "bin" / "python"))
    report_dir = tmp_path / "report"
    dr_vars = write_0600(tmp_path / "dr.yml", {
        "dr_rebuild_storage_url": wal_url,
        "dr_rebuild_pg_method": "pitr",
        "dr_rebuild_pitr_target": "time",
        "dr_rebuild_pitr_target_value": before,
        "dr_rebuild_encryption_identity_file": str(identity_file),
        "dr_rebuild_install_packages": False,
        "dr_rebuild_pg_version": PG_VERSION,
        "dr_rebuild_pg_cluster": new_cluster.name,
        "dr_rebuild_pg_port": new_cluster.port,
        "dr_rebuild_pg_data_directory": new_cluster.data_dir,
        "dr_rebuild_report_dir": str(report_dir),
    })
    env = ansible_environment(str(tmp_path))
    env.update({"INVENTORY": str(inventory), "NEW_HOST": "newhost", "DR_VARS": str(dr_vars),
                "ANSIBLE_STDOUT_CALLBACK": "default"})
    proc = run(["bash", "-c", RUNBOOK_COMMAND], env=env, cwd=str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-8000:]

    # the rows deleted after "before" are back, in a cluster pg_ctlcluster manages
    assert int(new_cluster.psql("SELECT count(*) FROM mcp_documents.agents", dbname="agentic_platform")) == agents
    assert new_cluster.psql("SELECT pg_is_in_recovery()") == "f"
    clusters = run(["pg_lsclusters", "--no-header"]).stdout
    assert any(line.split()[1] == new_cluster.name and line.split()[3] == "online" for line in clusters.splitlines())
    assert not (Path(new_cluster.data_dir) / "drkit-restore.yml").exists()  # no storage credentials left
    report = json.loads((report_dir / "rebuild.json").read_text())
    assert report["postgresql"]["method"] == "pitr"
    assert report["postgresql"]["pitr"]["target_value"]
    assert "agentic_platform" in [d["item"] for d in report["postgresql"]["databases"]]
    assert float(report["rebuild_seconds"]) > 0
