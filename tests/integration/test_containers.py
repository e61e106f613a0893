# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Databases in Docker containers (issue 16), on a real Docker Engine
(tests/support/docker_engine.py: the tests' own dockerd, no bridge, host
networking) with PostgreSQL 15 running in containers of an image built
from Debian's packages.

* A logical backup of a database in one container, with pg_dump running
  inside it, to SeaweedFS, restored by pg_restore running inside another
  container: row counts and a per-table digest of every table are equal,
  no local process ran, and nothing was written in the source container.
* A missing, stopped (never started, and exited), unhealthy container, and
  one that lacks pg_dump, fail with a message naming it, and nothing is
  stored.
* A Redis rdb snapshot of a server in a container: our BGSAVE, dump.rdb
  streamed out through the Engine's archive API and checked by the
  container's redis-check-rdb; loaded by hand into a local redis-server,
  every sampled key equal.
* The tests' engine itself: no bridge network, nothing left mounted.
"""

import json
import os
import secrets
import time
import uuid

import psycopg
import pytest
import redis
from ansible_collections.drkit.backup.plugins.module_utils.core import process
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, SourceError, ToolError
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.restore import pg_restore_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import redis_snapshot
from helpers import (
    decompress_to,
    fetch_artifact,
    fresh_paths,
    job_host_paths,
    list_keys,
    role,
    role_results,
    run_drkit,
    run_playbook,
    s3_module_args,
    task,
)
from redis_support import dump_values, fill, sample_keys, start_redis
from psycopg import sql
from support.docker_engine import DockerEngine, mounts_below
from test_wal_stream import new_data_dir, recover  # noqa: F401  # pylint: disable=unused-import

PG_BIN = "/usr/lib/postgresql/15/bin"
# The server in the container: data directory on an anonymous volume (so
# `docker diff` shows only what else is written in the container), no Unix
# socket, 127.0.0.1 on the port given; initdb reads the password from a pipe.
PG_SCRIPT = """set -e
D=/var/lib/postgresql/data
if [ ! -s "$D/PG_VERSION" ]; then
  printf '%s\\n' "$DRKIT_PG_PASSWORD" | {bin}/initdb -D "$D" -U postgres -A scram-sha-256 \\
      --pwfile=/dev/stdin --no-locale -E UTF8 >/dev/null
fi
exec {bin}/postgres -D "$D" -c listen_addresses=127.0.0.1 -c port="$DRKIT_PG_PORT" \\
    -c unix_socket_directories= -c fsync=off -c synchronous_commit=off -c full_page_writes=off
""".format(bin=PG_BIN)
SECOND = 1000000000  # the Engine API counts healthcheck times in nanoseconds


def _name(what):
    return "drkit-%s-%s" % (what, uuid.uuid4().hex[:8])


def create_container(engine, image, name, command, healthcheck=None, environment=None, volumes=None, user=None):
    api = engine.client()
    host_config = api.create_host_config(network_mode="host")
    return api.create_container(image, command=command, name=name, host_config=host_config,
                                healthcheck=healthcheck, environment=environment, volumes=volumes,
                                user=user)["Id"]


def wait_health(engine, name, status, timeout=120):
    api = engine.client()
    deadline = time.time() + timeout
    while True:
        state = api.inspect_container(name)["State"]
        health = (state.get("Health") or {}).get("Status")
        if health == status:
            return
        if not state.get("Running"):
            raise AssertionError("container %s stopped: %s\n%s" % (name, state, api.logs(name)[-3000:]))
        if time.time() > deadline:
            raise AssertionError("container %s not %s within %ss: %s\n%s" % (
                name, status, timeout, state, api.logs(name)[-3000:]))
        time.sleep(0.2)


class PgContainer(object):
    """PostgreSQL 15 in a container of the test image, on host networking."""

    def __init__(self, engine, image):
        self.engine = engine
        self.name = _name("pg")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        check = ["CMD", PG_BIN + "/pg_isready", "-q", "-h", self.host, "-p", str(self.port)]
        self.id = create_container(
            engine, image, self.name, ["sh", "-c", PG_SCRIPT], user="postgres",
            environment={"DRKIT_PG_PASSWORD": self.password, "DRKIT_PG_PORT": str(self.port)},
            volumes=["/var/lib/postgresql/data"],
            healthcheck={"test": check, "interval": SECOND, "timeout": 5 * SECOND, "retries": 60})
        engine.client().start(self.id)
        wait_health(engine, self.name, "healthy")

    def conninfo(self, dbname="postgres"):
        return {"host": self.host, "port": self.port, "user": "postgres", "password": self.password,
                "dbname": dbname}

    def args(self, **more):
        """pg_backup/pg_restore options for this server and its container."""
        out = {"login_host": self.host, "port": self.port, "login_user": "postgres",
               "login_password": self.password, "container": self.name, "docker_host": self.engine.url}
        out.update(more)
        return out

    def execute(self, dbname, *statements):
        with psycopg.connect(autocommit=True, **self.conninfo(dbname)) as conn, conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)


@pytest.fixture(scope="module")
def pg_source(docker_engine, pg_redis_image):
    return PgContainer(docker_engine, pg_redis_image)


@pytest.fixture(scope="module")
def pg_target(docker_engine, pg_redis_image):
    return PgContainer(docker_engine, pg_redis_image)


@pytest.fixture(scope="module")
def app_database(pg_source):
    """A database with a few tables of different shapes in the source container."""
    pg_source.execute("postgres", "CREATE DATABASE app")
    pg_source.execute(
        "app",
        "CREATE SCHEMA agents",
        "CREATE TABLE agents.agents (id bigserial PRIMARY KEY, name text NOT NULL, meta jsonb, "
        "created timestamptz NOT NULL DEFAULT '2026-01-01')",
        "INSERT INTO agents.agents (name, meta) SELECT 'agent-' || g, "
        "CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'tag', 'ünï ' || g) END "
        "FROM generate_series(1, 20000) g",
        "CREATE TABLE agents.events (agent_id bigint REFERENCES agents.agents, seq int, payload bytea, "
        "PRIMARY KEY (agent_id, seq))",
        "INSERT INTO agents.events SELECT (g % 20000) + 1, g, decode(md5(g::text), 'hex') "
        "FROM generate_series(1, 50000) g",
        "CREATE TABLE public.settings (k text PRIMARY KEY, v numeric)",
        "INSERT INTO public.settings SELECT 'k' || g, g / 3.0 FROM generate_series(1, 500) g",
        "CREATE TABLE public.empty_one (x int)")
    return "app"


def table_facts(conninfo):
    """{schema.table: (rows, md5 of every row as text, in order)}."""
    out = {}
    with psycopg.connect(**conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "ORDER BY 1, 2")
        for schema, table in cur.fetchall():
            cur.execute(sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                                "FROM {} t").format(sql.Identifier(schema, table)))
            out["%s.%s" % (schema, table)] = tuple(cur.fetchone())
    return out


@pytest.fixture
def no_local_tools(monkeypatch):
    """Any tool started on this machine instead of in a container fails the test."""
    def refuse(self, argv, *args, **kwargs):
        raise AssertionError("a local process was started: %s" % (argv,))
    monkeypatch.setattr(process.LocalRunner, "spawn", refuse)
    monkeypatch.setattr(process.LocalRunner, "run", refuse)


def storage_args(s3, bucket, prefix):
    return dict(s3_module_args(s3), storage_url="s3://%s/%s" % (bucket, prefix))


def test_backup_in_one_container_restores_into_another(
        docker_engine, pg_source, pg_target, app_database, s3, bucket, no_local_tools):
    api = docker_engine.client()
    before = api.diff(pg_source.name)
    storage = storage_args(s3, bucket, "containers")

    changed, backup = pg_backup(pg_source.args(database=app_database, **storage))
    assert changed
    stored = s3.client().get_object(Bucket=bucket, Key="containers/" + backup["manifest_key"])
    src = json.loads(stored["Body"].read())["source"]
    # the dump ran in the source container, with its own pg_dump
    assert src["container"]["id"] == pg_source.id and src["container"]["name"] == pg_source.name
    # nothing was written in the container (no temp dump, no docker cp)
    assert api.diff(pg_source.name) == before

    changed, restore = pg_restore_backup(pg_target.args(target_database="app_copy", **storage))
    assert changed and restore["verified"], restore
    expected = table_facts(pg_source.conninfo(app_database))
    assert len(expected) == 4 and expected["agents.events"][0] == 50000
    assert table_facts(pg_target.conninfo("app_copy")) == expected


def test_a_parallel_restore_through_a_container_is_refused_before_anything(
        pg_source, pg_target, app_database, s3, bucket, no_local_tools):
    storage = storage_args(s3, bucket, "jobs")
    pg_backup(pg_source.args(database=app_database, **storage))
    with pytest.raises(ConfigError) as err:
        pg_restore_backup(pg_target.args(target_database="app_jobs", jobs=2, **storage))
    assert "jobs > 1 cannot run through a container" in str(err.value)
    with psycopg.connect(**pg_target.conninfo()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'app_jobs%'")
        assert cur.fetchone()[0] == 0


def wal_bytes(pg):
    with psycopg.connect(**pg.conninfo()) as conn, conn.cursor() as cur:
        cur.execute("SELECT wal_bytes FROM pg_stat_wal")
        return int(cur.fetchone()[0])


def scratch_containers(engine):
    return engine.client().containers(all=True, filters={"label": "io.drkit.scratch"})


def test_verify_restores_in_a_scratch_container_of_the_image(
        docker_engine, pg_source, pg_target, app_database, s3, bucket, no_local_tools):
    """The test-restore of a backup of a database in a container runs in a
    scratch PostgreSQL started from the container's image (the production
    server writes no WAL for it), and the scratch container is gone after."""
    storage = storage_args(s3, bucket, "verify")
    _c, backup = pg_backup(pg_source.args(database=app_database, **storage))
    _c, listed = pg_verify(pg_target.args(level="structure", backup_id=backup["backup_id"], **storage))
    assert listed["passed"] is True, listed
    before = wal_bytes(pg_target)
    _c, res = pg_verify(pg_target.args(level="restore", backup_id=backup["backup_id"], **storage))
    assert res["passed"] is True, res
    counted = dict((t["name"], t["actual"]) for t in res["tables"])
    assert counted["agents.events"] == 50000 and counted["agents.agents"] == 20000, res["tables"]
    assert res["verified_in"].startswith("scratch container of image sha256:"), res["verified_in"]
    assert "PostgreSQL) 15." in res["verified_in"], res["verified_in"]
    assert float(res["timings"]["scratch_start_seconds"]) > 0, res["timings"]
    # 70,000 rows restored elsewhere: the production server wrote only its own background WAL
    assert wal_bytes(pg_target) - before < 1 << 20
    assert scratch_containers(docker_engine) == []


def test_verify_in_the_container_itself_when_asked(
        docker_engine, pg_source, pg_target, app_database, s3, bucket, no_local_tools):
    storage = storage_args(s3, bucket, "verify-in")
    _c, backup = pg_backup(pg_source.args(database=app_database, **storage))
    before = wal_bytes(pg_target)
    _c, res = pg_verify(pg_target.args(level="restore", backup_id=backup["backup_id"], verify_in="container",
                                       **storage))
    assert res["passed"] is True and res["verified_in"] == "container %s" % pg_target.name, res
    assert wal_bytes(pg_target) - before > 1 << 20  # the restore ran in the production server
    # the scratch database is gone again
    with psycopg.connect(**pg_target.conninfo()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (res["scratch_database"],))
        assert cur.fetchone()[0] == 0
    # parallel restore needs the dump as a file: refused through a container, before anything is made
    for verify_in in ("scratch", "container"):
        with pytest.raises(ConfigError) as err:
            pg_verify(pg_target.args(level="restore", backup_id=backup["backup_id"], jobs=2, verify_in=verify_in,
                                     **storage))
        assert "jobs > 1 cannot run through a container" in str(err.value)
    with pytest.raises(ConfigError) as err:
        pg_verify(dict(storage, level="restore", backup_id=backup["backup_id"], verify_in="container"))
    assert "verify_in: container needs container" in str(err.value)
    assert scratch_containers(docker_engine) == []


def test_drkit_restore_into_a_container(docker_engine, pg_source, pg_target, app_database, s3, bucket, tmp_path):
    storage = storage_args(s3, bucket, "cli")
    pg_backup(pg_source.args(database=app_database, **storage))
    # a pg_bin_dir that exists only inside the target container: a pg_restore
    # run on this machine instead could not be found
    api = docker_engine.client()
    only_there = "/opt/drkit-%s" % uuid.uuid4().hex[:8]
    link = api.exec_create(pg_target.name, ["ln", "-s", PG_BIN, only_there], user="root")["Id"]
    api.exec_start(link)
    assert api.exec_inspect(link)["ExitCode"] == 0 and not os.path.exists(only_there)
    config = dict(pg_target.args(**storage))
    res = run_drkit(["restore", "--container", config.pop("container"), "--target-database", "app_cli",
                     "--pg-bin-dir", only_there, "--json"], config=config, tmp_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["verified"] is True
    assert pg_target.password not in res.stdout + res.stderr
    assert table_facts(pg_target.conninfo("app_cli")) == table_facts(pg_source.conninfo(app_database))


def test_the_role_schedules_jobs_that_run_in_the_container(docker_engine, pg_source, app_database, scratch_dir,
                                                           tmp_path):
    root, wrapper = job_host_paths(scratch_dir)
    storage = scratch_dir / "backups"
    variables = fresh_paths(root)
    variables.update({
        "_drkit_runtime_installed": True,  # the wrapper runs the checkout's drkit
        "drkit_runtime_command": wrapper,
        "drkit_runtime_group": "postgres",  # creates no group on this machine
        "postgresql_backup_databases": [app_database],
        "postgresql_backup_storage_url": "file://%s" % storage,
        "postgresql_backup_storage_options": {},
        "postgresql_backup_os_user": "root",  # may use the Engine
        "postgresql_backup_login_host": pg_source.host,
        "postgresql_backup_login_port": pg_source.port,
        "postgresql_backup_login_password": pg_source.password,
        "postgresql_backup_container": pg_source.name,
        "postgresql_backup_docker_host": docker_engine.url,
    })
    run = run_playbook([role("drkit.backup.postgresql_backup")], extra_vars=variables, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    checks = role_results(run, "Jobs | Check each job once as its user (connects, finds the tools, proves the "
                               "storage writable)")
    assert [r["result"]["results"][0]["rc"] for r in checks] == [0], run.describe()
    config = root / "etc" / "drkit" / ("pg_%s.yml" % app_database)
    assert pg_source.password not in run.text
    # the scheduled commands, as cron would run them: the backup in the container, then the weekly verification in
    # a scratch container of its image
    cron = (root / "cron.d" / "drkit-postgresql").read_text()
    assert "pg-backup --config %s" % config in cron and "verify --config %s --level restore" % config in cron
    backup = run_drkit(["pg-backup", "--config", str(config), "--json"], tmp_dir=tmp_path)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["manifest"]["source"]["container"]["name"] == pg_source.name
    verify = run_drkit(["verify", "--config", str(config), "--level", "restore", "--json"], tmp_dir=tmp_path)
    assert verify.returncode == 0, verify.stderr
    verified = json.loads(verify.stdout)
    assert verified["passed"] is True
    assert verified["verified_in"].startswith("scratch container of image"), verified  # not the production server


def test_the_module_takes_a_container_in_check_mode(pg_source, app_database, s3, bucket, tmp_path):
    storage = storage_args(s3, bucket, "module")
    args = dict(pg_source.args(database=app_database, **storage), login_password="{{ pw }}")
    run = run_playbook([task("drkit.backup.pg_backup", register="b", **args)], check=True,
                       extra_vars={"pw": pg_source.password}, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    res = run.result("drkit.backup.pg_backup")
    assert "in container %s" % pg_source.name in res["msg"], res
    assert pg_source.password not in run.text
    # check mode wrote nothing but its create-only probe object (the storage contract's probe/ prefix)
    assert [k for k in list_keys(storage["storage_url"], s3=s3) if not k.startswith("probe/")] == []


def test_a_missing_container_is_named(docker_engine, pg_source, app_database, s3, bucket):
    storage = storage_args(s3, bucket, "missing")
    with pytest.raises(SourceError) as err:
        pg_backup(pg_source.args(database=app_database, container="drkit-no-such-container", **storage))
    assert "Container drkit-no-such-container does not exist on the Docker Engine at %s" % docker_engine.url \
        in str(err.value)
    assert list_keys(storage["storage_url"], s3=s3) == []


def test_a_container_never_started_is_named(docker_engine, pg_redis_image, pg_source, app_database, s3, bucket):
    name = _name("created")
    create_container(docker_engine, pg_redis_image, name, ["sleep", "infinity"])
    storage = storage_args(s3, bucket, "created")
    with pytest.raises(SourceError) as err:
        pg_backup(pg_source.args(database=app_database, container=name, **storage))
    assert "Container %s is not running (status created" % name in str(err.value)
    assert "docker start %s" % name in err.value.hint
    assert list_keys(storage["storage_url"], s3=s3) == []


def test_drkit_pg_backup_names_a_stopped_container(docker_engine, pg_redis_image, pg_source, app_database, s3,
                                                   bucket, tmp_path):
    api = docker_engine.client()
    name = _name("stopped")
    api.start(create_container(docker_engine, pg_redis_image, name, ["sleep", "infinity"]))
    api.stop(name, timeout=1)
    storage = storage_args(s3, bucket, "stopped")
    config = dict(pg_source.args(**storage), container=name)
    config.pop("docker_host")
    res = run_drkit(["pg-backup", "--database", app_database, "--docker-host", docker_engine.url],
                    config=config, tmp_dir=tmp_path)
    assert res.returncode == SourceError.exit_code, res.stderr
    assert "Container %s is not running (status exited" % name in res.stderr
    assert pg_source.password not in res.stderr + res.stdout
    assert list_keys(storage["storage_url"], s3=s3) == []


def test_an_unhealthy_container_is_named(docker_engine, pg_redis_image, pg_source, app_database, s3, bucket):
    name = _name("unhealthy")
    docker_engine.client().start(create_container(
        docker_engine, pg_redis_image, name, ["sleep", "infinity"],
        healthcheck={"test": ["CMD", "sh", "-c", "echo database gone; exit 1"], "interval": SECOND,
                     "timeout": 5 * SECOND, "retries": 1}))
    wait_health(docker_engine, name, "unhealthy")
    storage = storage_args(s3, bucket, "unhealthy")
    with pytest.raises(SourceError) as err:
        pg_backup(pg_source.args(database=app_database, container=name, **storage))
    assert "Container %s is unhealthy" % name in str(err.value)
    assert "database gone" in str(err.value)
    assert list_keys(storage["storage_url"], s3=s3) == []


def test_a_container_without_pg_dump_is_named(docker_engine, pg_redis_image, pg_source, app_database, s3, bucket):
    # The tools' container is not the server's here (both on the host network):
    # one whose image lost pg_dump.
    api = docker_engine.client()
    name = _name("notools")
    api.start(create_container(docker_engine, pg_redis_image, name, ["sleep", "infinity"]))
    gone = api.exec_create(name, ["rm", "-f", PG_BIN + "/pg_dump", "/usr/bin/pg_dump"])["Id"]
    api.exec_start(gone)
    assert api.exec_inspect(gone)["ExitCode"] == 0
    storage = storage_args(s3, bucket, "notools")
    with pytest.raises(ToolError) as err:
        pg_backup(pg_source.args(database=app_database, container=name, **storage))
    assert "pg_dump is not in container %s: tried %s/pg_dump" % (name, PG_BIN) in str(err.value)
    assert list_keys(storage["storage_url"], s3=s3) == []


def test_the_tests_engine_has_no_bridge_and_leaves_nothing_behind(scratch_dir):
    engine = DockerEngine(str(scratch_dir / "d"))
    engine.start()
    try:
        assert sorted(n["Name"] for n in engine.client().networks()) == ["host", "none"]
        assert not os.path.exists("/sys/class/net/docker0")
        assert mounts_below(engine.base_dir) != []  # dockerd's netns bind mount, which destroy() must undo
    finally:
        engine.destroy()
    assert mounts_below(engine.base_dir) == []
    assert not os.path.exists(engine.base_dir)


class RedisContainer(object):
    """redis-server in a container of the test image, on host networking; the
    password reaches it on stdin (a config read from ``-``), not in argv."""

    def __init__(self, engine, image):
        self.name = _name("redis")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        script = ('printf \'requirepass "%s"\\n\' "$DRKIT_REDIS_PASSWORD" | exec redis-server - --bind 127.0.0.1 '
                  '--port "$DRKIT_REDIS_PORT" --dir /data --dbfilename dump.rdb --save "" --appendonly no')
        check = ["CMD", "sh", "-c", 'REDISCLI_AUTH="$DRKIT_REDIS_PASSWORD" redis-cli -p "$DRKIT_REDIS_PORT" ping '
                 '| grep -q PONG']
        self.id = create_container(
            engine, image, self.name, ["sh", "-c", script], user="redis", volumes=["/data"],
            environment={"DRKIT_REDIS_PASSWORD": self.password, "DRKIT_REDIS_PORT": str(self.port)},
            healthcheck={"test": check, "interval": SECOND, "timeout": 5 * SECOND, "retries": 60})
        engine.client().start(self.id)
        wait_health(engine, self.name, "healthy")

    def client(self, **kwargs):
        kw = dict(host=self.host, port=self.port, password=self.password, socket_timeout=30)
        kw.update(kwargs)
        return redis.Redis(**kw)


def test_redis_rdb_snapshot_out_of_a_container(docker_engine, pg_redis_image, tmp_storage_url, scratch_dir,
                                               no_local_tools):
    server = RedisContainer(docker_engine, pg_redis_image)
    fill(server, 3000, db=0)
    fill(server, 500, db=3, prefix="other")
    changed, result = redis_snapshot({"login_host": server.host, "login_port": server.port,
                                      "login_password": server.password, "container": server.name,
                                      "docker_host": docker_engine.url, "storage_url": tmp_storage_url})
    assert changed and result["key_counts_exact"], result
    manifest = result["manifest"]
    assert manifest["source"]["container"]["id"] == server.id
    assert manifest["data"]["rdb"]["check"]["keys"] == 3500
    assert manifest["tools"]["redis-check-rdb"]  # the container's own, with its version

    # by hand: the stored RDB into a local redis-server, every sampled key equal
    artifact = manifest["artifacts"][0]
    data = fetch_artifact(tmp_storage_url, result["backup_id"], artifact)
    base_dir = scratch_dir / "loaded"
    base_dir.mkdir()
    decompress_to(data, str(base_dir / "dump.rdb"))
    os.chown(str(base_dir), os.getuid(), os.getgid())
    loaded = start_redis(base_dir)
    try:
        for db, prefix, n in ((0, "k", 3000), (3, "other", 500)):
            keys = sample_keys(n, prefix=prefix)
            assert dump_values(loaded, keys, db=db) == dump_values(server, keys, db=db)
            assert loaded.client(db=db).dbsize() == n
    finally:
        loaded.destroy()


def test_redis_remote_mode_refuses_a_container(docker_engine, tmp_storage_url):
    with pytest.raises(ConfigError) as err:
        redis_snapshot({"mode": "remote", "container": "agentic-redis", "docker_host": docker_engine.url,
                        "storage_url": tmp_storage_url})
    assert "container is for modes rdb and aof" in str(err.value)


# --------------------------------------------------------------------------
# WAL of a server in a container, archived from outside (issue 17)


def test_a_server_in_a_container_archived_from_outside_with_wal_stream(
        docker_engine, pg_redis_image, scratch_dir, new_data_dir):  # noqa: F811 (new_data_dir: the fixture)
    """drkit wal-stream runs on the host and receives the WAL of a PostgreSQL
    in a container over the replication protocol (the container needs no
    drkit and no archive_command); the physical base backup also connects
    from outside. The container and its volume are then lost: a point-in-time
    recovery on the host holds every committed row, the last ones from the
    streamed partial the archiver stored when it was stopped."""
    import signal
    import shutil
    import subprocess
    import sys
    from types import SimpleNamespace
    from helpers import DRKIT
    from pitr_source import write_0600

    c = PgContainer(docker_engine, pg_redis_image)
    archive = scratch_dir / "archive"
    archive.mkdir(mode=0o700)
    shutil.chown(str(archive), "postgres", "postgres")  # restore_command runs as postgres
    url = "file://%s" % archive
    login = {"login_host": c.host, "port": c.port, "login_user": "postgres", "login_password": c.password}
    c.execute("postgres", "CREATE TABLE marks (id serial PRIMARY KEY, phase text NOT NULL)",
              "INSERT INTO marks (phase) SELECT 'before' FROM generate_series(1, 100)")

    def server(query):
        with psycopg.connect(autocommit=True, **c.conninfo()) as conn:
            return conn.execute(query).fetchone()[0]

    cfg = write_0600(scratch_dir / "stream.yml", dict(login, storage_url=url, spool_dir=str(scratch_dir / "spool"),
                                                      partial_interval=0.5))
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    proc = subprocess.Popen([sys.executable, str(DRKIT), "wal-stream", "--config", cfg], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        deadline = time.time() + 60
        while server("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") != 1:
            assert proc.poll() is None and time.time() < deadline, proc.communicate() if proc.poll() else "slow"
            time.sleep(0.1)
        base = write_0600(scratch_dir / "base.yml", dict(login, storage_url=url, mode="physical",
                                                         wal_wait_timeout=120))
        backup = run_drkit(["pg-backup", "--json", "--config", base], tmp_dir=str(scratch_dir))
        assert backup.returncode == 0, backup.stderr
        c.execute("postgres", "INSERT INTO marks (phase) SELECT 'after' FROM generate_series(1, 50)")
        # synchronous_commit is off in the container: the commit may still be in WAL buffers
        lsn = server("SELECT pg_current_wal_insert_lsn()::text")
        deadline = time.time() + 60  # the archiver has received every committed row (written to its spool)
        while server("SELECT coalesce(bool_and(write_lsn >= '%s'), false) FROM pg_stat_replication" % lsn) is not True:
            assert proc.poll() is None and time.time() < deadline, "the archiver fell behind"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert c.password not in err

    docker_engine.client().remove_container(c.id, force=True, v=True)  # the container and its volume lost
    port, res = recover(SimpleNamespace(url=url), new_data_dir, target="latest")
    assert res["status"] == "promoted", res
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=c.password, dbname="postgres",
                         autocommit=True) as conn:
        phases = dict(conn.execute("SELECT phase, count(*) FROM marks GROUP BY 1").fetchall())
    assert phases == {"before": 100, "after": 50}, phases
