# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fault injection against real servers of the test's own (never the shared
fixtures, which other tests need running): PostgreSQL stopped with
`pg_ctl stop -m immediate` in the middle of a dump and of a base backup,
SeaweedFS killed in the middle of an upload and of a download, drkit or its
child tool killed with SIGKILL in the middle of a base backup, a dump and a
Redis snapshot, Redis restarted while drkit waits for its save.

Every kill point is chosen by what happened (bytes stored, a file grown), the
process held with SIGSTOP and stepped to it (helpers.step_until), never by
sleeping. Each scenario asserts: a clear message and the documented exit
code; nothing that looks like a complete backup; no good backup deleted; the
next run succeeds; the metrics say the run failed. docs/failure-promises.md
lists them."""

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import (DRKIT, file_root, list_keys, make_blob_database, open_multipart_uploads, read_proc,
                     step_until, temp_upload_over, wait_for_child)
from pitr_source import ArchivingSource, write_0600
from redis_support import fill, new_password, start_redis
from support.seaweedfs import SeaweedS3

from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres

MIB = 1 << 20


def config_file(path, values, owner=None):
    """A 0600 drkit config (the password lives here, never in argv)."""
    return write_0600(path, values, owner=owner)


def drkit(args, env=None, user=None):
    argv = [sys.executable, str(DRKIT)] + list(args)
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    environ = dict(os.environ)
    environ.pop("PGPASSWORD", None)
    environ.update(env or {})
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
                            universal_newlines=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def manifests(url, s3=None):
    return [k for k in list_keys(url, s3) if k.endswith("/manifest.json")]


def parent_of(pid):
    return int(read_proc(pid, "stat").rsplit(b")", 1)[1].split()[1])


def written(pid):
    """Bytes process ``pid`` has written so far (/proc/<pid>/io wchar)."""
    for line in read_proc(pid, "io").decode().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def metric(metrics_dir, job, name):
    text = (metrics_dir / ("drkit_%s.prom" % job)).read_text()
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("%s not in %s" % (name, text))


# --------------------------------------------------------------------------
# PostgreSQL stopped with -m immediate mid-dump


@pytest.fixture
def own_pg(scratch_dir):
    server = ScratchPostgres(str(scratch_dir / "pg"), password=secrets.token_urlsafe(16),
                             bin_dir=find_pg_bindir(os.environ.get("DRKIT_TEST_PG_VERSION", "15")),
                             settings={"fsync": "off"})
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def test_postgres_stopped_immediately_mid_dump(own_pg, tmp_path, tmp_storage_url):
    db = "pgstop_%s" % uuid.uuid4().hex[:8]
    make_blob_database(own_pg, db, 20)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()

    def config(name):
        return config_file(tmp_path / name, {
            "login_host": own_pg.host, "port": own_pg.port, "login_user": own_pg.superuser,
            "login_password": own_pg.password, "database": db, "storage_url": tmp_storage_url,
            "metrics_dir": str(metrics_dir), "job_name": "pgstop", "compression_level": 1})

    proc = drkit(["pg-backup", "--config", config("drkit.yml")])
    try:
        dumper = wait_for_child(proc.pid, "pg_dump", match=b"--snapshot=")
        step_until(dumper, lambda: temp_upload_over(file_root(tmp_storage_url), 4 * MIB))
        own_pg.stop(mode="immediate")  # the server goes away mid-dump
        os.kill(dumper, signal.SIGCONT)
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 6, err  # ToolError: pg_dump failed
    assert "pg_dump failed while dumping database %s" % db in err, err
    assert "Traceback" not in err and own_pg.password not in err
    assert manifests(tmp_storage_url) == [] and list_keys(tmp_storage_url) == []  # nothing half-written left
    assert metric(metrics_dir, "pgstop", "drkit_backup_last_status") == 0
    own_pg.start()  # maybe on another port
    rc, out, err = finish(drkit(["pg-backup", "--config", config("again.yml")]))
    assert rc == 0, err
    assert len(manifests(tmp_storage_url)) == 1
    assert metric(metrics_dir, "pgstop", "drkit_backup_last_status") == 1


# --------------------------------------------------------------------------
# base backups of a cluster archiving into file://


@pytest.fixture
def archiving_source(scratch_dir):
    source = ArchivingSource(str(scratch_dir), password=secrets.token_urlsafe(16)).start(scale=0.01)
    try:
        yield source
    finally:
        source.pg.destroy()


def physical_config(source, path, metrics_dir):
    return config_file(path, {
        "storage_url": source.wal_url, "login_host": source.pg.host, "port": source.pg.port,
        "login_user": "postgres", "login_password": source.password, "mode": "physical",
        "wal_wait_timeout": 120, "metrics_dir": str(metrics_dir), "job_name": "base"}, owner="postgres")


def shared_metrics_dir(scratch_dir):
    metrics_dir = scratch_dir / "metrics"  # the postgres OS user must reach it
    metrics_dir.mkdir()
    os.chmod(str(metrics_dir), 0o777)
    return metrics_dir


def backup_keys(url):
    """What a listing may see under backups/ (temp uploads are invisible to it)."""
    return sorted(k for k in list_keys(url) if k.startswith("backups/") and ".drkit-tmp-" not in k)


def age_temp_uploads(root):
    """Make the temp uploads a kill left look two days old, past rotation's grace."""
    leftovers = list(Path(root).rglob(".drkit-tmp-*"))
    for p in leftovers:
        os.utime(str(p), (0, os.stat(str(p)).st_mtime - 2 * 86400))
    return leftovers


# --------------------------------------------------------------------------
# PostgreSQL stopped with -m immediate mid-base-backup


def test_postgres_stopped_immediately_mid_base_backup(archiving_source, scratch_dir):
    source = archiving_source
    metrics_dir = shared_metrics_dir(scratch_dir)
    archive = file_root(source.wal_url)
    before = backup_keys(source.wal_url)
    proc = drkit(["pg-backup", "--config", physical_config(source, scratch_dir / "a.yml", metrics_dir)],
                 user="postgres")
    try:
        streamer = wait_for_child(proc.pid, "pg_basebackup", match=b"--pgdata=-")  # not a --version
        # the kill point: 8 MiB of the tar stream written by pg_basebackup (a
        # fresh cluster compresses to too little to count stored bytes)
        step_until(streamer, lambda: written(streamer) > 8 * MIB)
        assert temp_upload_over(archive / "backups", 0)  # mid-upload
        source.pg.stop(mode="immediate")
        os.kill(streamer, signal.SIGCONT)
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 6, err  # ToolError: pg_basebackup failed
    assert "pg_basebackup failed while taking the base backup" in err, err
    assert "Traceback" not in err and source.password not in err
    assert backup_keys(source.wal_url) == before
    # drkit lived to remove its temp upload. (An archive_command push the immediate shutdown killed may leave
    # its own under wal/: invisible to listings, removed by rotation after its grace period.)
    assert not list((archive / "backups").rglob(".drkit-tmp-*"))
    assert metric(metrics_dir, "base", "drkit_backup_last_status") == 0
    source.pg.start()  # maybe on another port
    again = physical_config(source, scratch_dir / "b.yml", metrics_dir)
    rc, out, err = finish(drkit(["pg-backup", "--config", again], user="postgres"))
    assert rc == 0, err
    assert len(manifests(source.wal_url)) == 1
    assert metric(metrics_dir, "base", "drkit_backup_last_status") == 1


# --------------------------------------------------------------------------
# kill -9 of drkit, and of its child tool, mid-base-backup and mid-dump


@pytest.mark.parametrize("victim", ["drkit", "pg_basebackup"])
def test_kill9_mid_base_backup(archiving_source, scratch_dir, victim):
    """SIGKILL of drkit itself (its child tool then dies on the broken pipe)
    or of pg_basebackup (drkit sees the tool die) with 8 MiB of the base
    backup streamed: nothing listed, the server is not left in backup mode,
    rotation removes the temp upload, the next run succeeds."""
    source = archiving_source
    metrics_dir = shared_metrics_dir(scratch_dir)
    archive = file_root(source.wal_url)
    before = backup_keys(source.wal_url)
    proc = drkit(["pg-backup", "--config", physical_config(source, scratch_dir / "a.yml", metrics_dir)],
                 user="postgres")
    try:
        streamer = wait_for_child(proc.pid, "pg_basebackup", match=b"--pgdata=-")
        step_until(streamer, lambda: written(streamer) > 8 * MIB)
        assert temp_upload_over(archive / "backups", 0)
        drkit_pid = parent_of(streamer)  # proc is runuser
        assert b"pg-backup" in read_proc(drkit_pid, "cmdline")
        if victim == "drkit":
            os.kill(drkit_pid, signal.SIGKILL)
            os.kill(streamer, signal.SIGCONT)  # it writes on, into the broken pipe
        else:
            os.kill(streamer, signal.SIGKILL)  # a stopped process dies of it at once
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    if victim == "drkit":
        assert rc != 0
    else:
        assert rc == 6, err  # ToolError
        assert "pg_basebackup failed while taking the base backup" in err, err
        assert "Traceback" not in err and source.password not in err
        assert metric(metrics_dir, "base", "drkit_backup_last_status") == 0
    assert backup_keys(source.wal_url) == before  # only a temp upload, which no listing shows
    rc, out, err = finish(drkit(["list", "--storage-url", source.wal_url]))
    assert rc == 0 and "no complete backups" in out, out
    # the server let go of the base backup: no walsender still streaming one
    assert source.pg.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'backup'") == "0"
    if victim == "pg_basebackup":  # drkit lived to remove its temp upload
        assert not list(archive.rglob(".drkit-tmp-*"))
    assert bool(age_temp_uploads(archive)) == (victim == "drkit")
    rc, out, err = finish(drkit(["rotate", "--storage-url", source.wal_url, "--keep-last", "5"]))
    assert rc == 0, err
    assert not list(archive.rglob(".drkit-tmp-*"))
    again = physical_config(source, scratch_dir / "b.yml", metrics_dir)
    rc, out, err = finish(drkit(["pg-backup", "--config", again], user="postgres"))
    assert rc == 0, err
    assert len(manifests(source.wal_url)) == 1
    assert metric(metrics_dir, "base", "drkit_backup_last_status") == 1


def test_kill9_of_pg_dump_mid_dump(pg, tmp_path, tmp_storage_url):
    """pg_dump dies of SIGKILL with 4 MiB stored: a clear tool error (exit 6)
    naming the database, nothing stored, the failure in the metrics, no
    leftover, and the next run succeeds."""
    db = "dumpkill_%s" % uuid.uuid4().hex[:8]
    make_blob_database(pg, db, 20)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    cfg = config_file(tmp_path / "drkit.yml", {
        "login_host": pg.host, "port": pg.port, "login_user": pg.superuser, "login_password": pg.password,
        "database": db, "storage_url": tmp_storage_url, "metrics_dir": str(metrics_dir), "job_name": "dumpkill",
        "compression_level": 1})
    try:
        proc = drkit(["pg-backup", "--config", cfg])
        try:
            dumper = wait_for_child(proc.pid, "pg_dump", match=b"--snapshot=")
            step_until(dumper, lambda: temp_upload_over(file_root(tmp_storage_url), 4 * MIB))
            os.kill(dumper, signal.SIGKILL)
            rc, out, err = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert rc == 6, err
        assert "pg_dump failed while dumping database %s" % db in err, err
        assert "Traceback" not in err and pg.password not in err
        assert list_keys(tmp_storage_url) == []
        assert not list(file_root(tmp_storage_url).rglob(".drkit-tmp-*"))  # drkit was alive to clean up
        assert metric(metrics_dir, "dumpkill", "drkit_backup_last_status") == 0
        rc, out, err = finish(drkit(["pg-backup", "--config", cfg]))
        assert rc == 0, err
        assert len(manifests(tmp_storage_url)) == 1
        assert metric(metrics_dir, "dumpkill", "drkit_backup_last_status") == 1
    finally:
        pg.psql('DROP DATABASE IF EXISTS "%s"' % db)


# --------------------------------------------------------------------------
# SeaweedFS killed mid-upload and mid-download


@pytest.fixture
def own_s3(scratch_dir):
    server = SeaweedS3(str(scratch_dir / "s3"))
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def s3_config(s3):
    return {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
            "region": s3.region}


@pytest.fixture(scope="module")
def blob_db(pg):
    name = "s3kill_%s" % uuid.uuid4().hex[:8]
    make_blob_database(pg, name, 20)
    yield name
    pg.psql('DROP DATABASE IF EXISTS "%s"' % name)


def test_s3_server_killed_mid_upload(pg, blob_db, own_s3, tmp_path):
    bucket = "drkit-kill-%s" % uuid.uuid4().hex[:8]
    own_s3.create_bucket(bucket)
    url = "s3://%s/pg" % bucket
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    values = dict(s3_config(own_s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
                  login_password=pg.password, database=blob_db, storage_url=url, compression_level=1,
                  metrics_dir=str(metrics_dir), job_name="s3kill")
    cfg = config_file(tmp_path / "drkit.yml", values)
    proc = drkit(["pg-backup", "--config", cfg])
    try:
        dumper = wait_for_child(proc.pid, "pg_dump", match=b"--snapshot=")
        step_until(dumper, lambda: bool(open_multipart_uploads(own_s3, bucket)))
        os.kill(own_s3.pid, signal.SIGKILL)  # the storage dies mid-upload
        own_s3.stop()
        os.kill(dumper, signal.SIGCONT)
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 3, err  # StorageError
    assert "Traceback" not in err and own_s3.secret_key not in err and pg.password not in err
    assert metric(metrics_dir, "s3kill", "drkit_backup_last_status") == 0
    own_s3.start()  # the same data directory, new ports
    values.update(s3_config(own_s3))
    cfg = config_file(tmp_path / "drkit2.yml", values)
    assert manifests(url, own_s3) == []  # the killed run left nothing that counts
    rc, out, err = finish(drkit(["pg-backup", "--config", cfg]))
    assert rc == 0, err
    assert len(manifests(url, own_s3)) == 1
    rc, out, err = finish(drkit(["list", "--config", cfg]))
    assert rc == 0 and out.count("pg_logical") == 1, out


def test_s3_server_killed_mid_download(pg, blob_db, own_s3, tmp_path):
    bucket = "drkit-kill-%s" % uuid.uuid4().hex[:8]
    own_s3.create_bucket(bucket)
    url = "s3://%s/pg" % bucket
    values = dict(s3_config(own_s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
                  login_password=pg.password, storage_url=url, compression_level=1)
    cfg = config_file(tmp_path / "drkit.yml", dict(values, database=blob_db))
    rc, out, err = finish(drkit(["pg-backup", "--config", cfg]))
    assert rc == 0, err
    work = tmp_path / "work"
    work.mkdir()
    target = "s3dl_%s" % uuid.uuid4().hex[:8]
    before = set(pg.psql("SELECT datname FROM pg_database").split())
    proc = drkit(["restore", "--config", cfg, "--target-database", target, "--jobs", "2", "--work-dir", str(work)])
    try:
        step_until(own_s3.pid, lambda: any(p.is_file() and p.stat().st_size > 2 * MIB for p in work.rglob("*")),
                   run=0.01)
        os.kill(own_s3.pid, signal.SIGKILL)  # the storage dies mid-download (held stopped until now)
        own_s3.stop()
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 3, err  # StorageError: the transfer failed, not "corrupt"
    assert "Traceback" not in err and own_s3.secret_key not in err
    assert list(work.iterdir()) == []  # the partial download is gone
    assert set(pg.psql("SELECT datname FROM pg_database").split()) == before  # no staging database, no target
    own_s3.start()
    values.update(s3_config(own_s3))
    cfg = config_file(tmp_path / "drkit2.yml", values)
    rc, out, err = finish(drkit(["restore", "--config", cfg, "--target-database", target, "--jobs", "2",
                                 "--work-dir", str(work)]))
    try:
        assert rc == 0, err
        assert pg.psql("SELECT count(*) FROM small", dbname=target) == "10"
    finally:
        pg.psql('DROP DATABASE IF EXISTS "%s"' % target)


# --------------------------------------------------------------------------
# drkit killed with SIGKILL mid-Redis snapshot (rdb)


def test_kill9_of_drkit_mid_redis_rdb_snapshot(scratch_dir, tmp_path, tmp_storage_url):
    server = start_redis(scratch_dir / "src", password=new_password())
    try:
        fill(server, 200000)
        server.client().config_set("rdb-key-save-delay", 20)  # a save long enough to stop in
        env = {"REDISCLI_AUTH": server.password, "XDG_STATE_HOME": str(tmp_path / "state")}
        args = ["redis-snapshot", "--host", server.host, "--port", str(server.port), "--storage-url",
                tmp_storage_url, "--mode", "rdb", "--compression-level", "1"]
        proc = drkit(args, env=env)
        try:
            step_until(proc.pid, lambda: temp_upload_over(file_root(tmp_storage_url), 256 << 10), run=0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        server.client().config_set("rdb-key-save-delay", 0)
        assert manifests(tmp_storage_url) == []
        rc, out, err = finish(drkit(["list", "--storage-url", tmp_storage_url]))
        assert rc == 0 and "no complete backups" in out, out
        # the upload the kill cut is a temp file no listing shows; rotation
        # removes it once older than its grace period
        leftovers = list(file_root(tmp_storage_url).rglob(".drkit-tmp-*"))
        assert leftovers
        for p in leftovers:
            os.utime(str(p), (0, os.stat(str(p)).st_mtime - 2 * 86400))
        rc, out, err = finish(drkit(["rotate", "--storage-url", tmp_storage_url, "--keep-last", "5"]))
        assert rc == 0, err
        assert not list(file_root(tmp_storage_url).rglob(".drkit-tmp-*"))
        rc, out, err = finish(drkit(args, env=env))  # the next run succeeds
        assert rc == 0, err
        assert len(manifests(tmp_storage_url)) == 1
    finally:
        server.destroy()


# --------------------------------------------------------------------------
# Redis restarted in the middle of a snapshot


@pytest.mark.parametrize("mode", ["rdb", "aof"])
def test_redis_restarted_mid_snapshot(scratch_dir, tmp_path, tmp_storage_url, mode):
    """The server is shut down (its save child with it) and started again
    while drkit waits for the save (rdb) or the rewrite (aof): a clear error,
    nothing shipped, and the next run succeeds."""
    server = start_redis(scratch_dir / "src", password=new_password(), appendonly=(mode == "aof"))
    try:
        fill(server, 100000)
        client = server.client()
        client.config_set("rdb-key-save-delay", 50)  # a save or rewrite long enough to restart in
        env = {"REDISCLI_AUTH": server.password, "XDG_STATE_HOME": str(tmp_path / "state")}
        args = ["redis-snapshot", "--host", server.host, "--port", str(server.port), "--storage-url",
                tmp_storage_url, "--mode", mode, "--compression-level", "1"]
        if mode == "aof":
            client.bgrewriteaof()  # a running rewrite that drkit waits for, rewrites turned off meanwhile

        def waiting():
            if mode == "rdb":  # our BGSAVE is running
                return client.info("persistence")["rdb_bgsave_in_progress"] == 1
            return client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "0"

        proc = drkit(args, env=env)
        try:
            deadline = time.time() + 60
            while not waiting():
                assert time.time() < deadline and proc.poll() is None, "drkit never came to wait"
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGSTOP)  # drkit mid-wait while the server goes away and comes back
            server.stop(mode="immediate")  # the server's process group: the save child too
            server._port_given = True  # pylint: disable=protected-access  # back on the same port
            server.start()
            os.kill(proc.pid, signal.SIGCONT)
            rc, out, err = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert rc == 7, err  # SourceError
        assert "Redis at %s:%d closed the connection" % (server.host, server.port) in err, err
        assert "Traceback" not in err and server.password not in err + out, err
        assert manifests(tmp_storage_url) == []
        server.client().config_set("rdb-key-save-delay", 0)
        rc, out, err = finish(drkit(args, env=env))  # the next run succeeds
        assert rc == 0, err
        assert len(manifests(tmp_storage_url)) == 1
        # automatic rewrites stay on: the restarted server's value is not taken for drkit's 0
        assert server.client().config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] != "0"
    finally:
        server.destroy()
