# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The container drill (issue 16) on the tests' real Docker Engine
(tests/support/docker_engine.py: no bridge, containers on the host network,
servers bound to 127.0.0.1 on free ports):

* a PostgreSQL container with a healthcheck, restart policy unless-stopped
  and its data on a named volume: the drill measures a docker restart and a
  SIGKILL of its main process from the host; after the kill the Engine
  restarts it on its own, the marker row and the data written before are
  there, and the drill leaves no marker table behind;
* a Redis container without restart policy is flagged; confirmed, its
  stop/start keeps a key (AOF everysec) and its crash is reported as "did
  not come back" (the test starts it again);
* without confirmation nothing is touched (engine and playbook); check mode
  inspects only and writes no report.
"""

import json
import os
import secrets
import subprocess
import time

import psycopg
import pytest
import redis
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from ansible_collections.drkit.backup.plugins.module_utils.drill.container import MARKER_TABLE, container_drill
from helpers import REPO_ROOT, run_playbook, task
from test_containers import PG_BIN, PG_SCRIPT, SECOND, _name, wait_health

PLAYBOOK = str(REPO_ROOT / "playbooks" / "container_drill.yml")


# both containers belong to one compose project, as the audited platform's do
PROJECT = "drkit-drill-%s" % secrets.token_hex(4)


def start_container(engine, image, name, script, user, volume, env, check, service, restart_policy=None,
                    binds=None):
    api = engine.client()
    host_config = api.create_host_config(network_mode="host", restart_policy=restart_policy, binds=binds)
    labels = {"com.docker.compose.project": PROJECT, "com.docker.compose.service": service}
    cid = api.create_container(image, command=["sh", "-c", script], name=name, host_config=host_config, user=user,
                               environment=env, volumes=[volume], labels=labels,
                               healthcheck={"test": check, "interval": SECOND, "timeout": 5 * SECOND,
                                            "retries": 60})["Id"]
    api.start(cid)
    wait_health(engine, name, "healthy")
    return cid


class DrillPg(object):
    """PostgreSQL 15 as the audited platform runs it: restart: unless-stopped,
    a pg_isready healthcheck, the data directory on a named volume."""

    def __init__(self, engine, image):
        self.name = _name("drill-pg")
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.volume = self.name + "-data"
        self.id = start_container(
            engine, image, self.name, PG_SCRIPT, "postgres", "/var/lib/postgresql/data",
            {"DRKIT_PG_PASSWORD": self.password, "DRKIT_PG_PORT": str(self.port)},
            ["CMD", PG_BIN + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)], "agentic-postgres",
            restart_policy={"Name": "unless-stopped"},
            binds={self.volume: {"bind": "/var/lib/postgresql/data", "mode": "rw"}})

    def entry(self):
        return {"name": self.name, "kind": "postgres", "port": self.port}

    def query(self, sql):
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                             dbname="postgres", autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None


class DrillRedis(object):
    """Redis with AOF everysec and a healthcheck, but no restart policy."""

    def __init__(self, engine, image):
        self.name = _name("drill-redis")
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        # redis-server must be PID 1 to get docker stop's SIGTERM (behind a pipe
        # the shell stays PID 1 and ignores it): the password comes in a here-document
        script = ('exec redis-server - --bind 127.0.0.1 --port "$DRKIT_REDIS_PORT" --dir /data --save "" '
                  '--appendonly yes --appendfsync everysec <<EOF\nrequirepass "$DRKIT_REDIS_PASSWORD"\nEOF\n')
        check = ["CMD", "sh", "-c", 'REDISCLI_AUTH="$DRKIT_REDIS_PASSWORD" redis-cli -p "$DRKIT_REDIS_PORT" ping '
                 '| grep -q PONG']
        self.id = start_container(engine, image, self.name, script, "redis", "/data",
                                  {"DRKIT_REDIS_PASSWORD": self.password, "DRKIT_REDIS_PORT": str(self.port)}, check,
                                  "agentic-redis")

    def entry(self):
        return {"name": self.name, "kind": "redis", "port": self.port}

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=10)


class DrillGateway(object):
    """A dependent service (the audit's L09 API gateway) whose healthcheck
    passes only while it reaches its database: what says it reconnected."""

    def __init__(self, engine, image, pg):
        self.name = _name("drill-gw")
        self.password = None
        self.id = start_container(engine, image, self.name, "exec sleep infinity", "nobody", "/tmp", {},
                                  ["CMD", PG_BIN + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(pg.port)],
                                  "l09-api-gateway", restart_policy={"Name": "unless-stopped"})

    def entry(self):
        return {"name": self.name, "kind": "other"}


@pytest.fixture(scope="module")
def drill_pg(docker_engine, pg_redis_image):
    return DrillPg(docker_engine, pg_redis_image)


@pytest.fixture(scope="module")
def drill_redis(docker_engine, pg_redis_image):
    return DrillRedis(docker_engine, pg_redis_image)


def started_at(engine, name):
    return engine.client().inspect_container(name)["State"]["StartedAt"]


def drill_args(engine, *targets, **more):
    args = {"containers": [t.entry() for t in targets], "docker_host": engine.url,
            "login_passwords": dict((t.name, t.password) for t in targets)}
    args.update(more)
    return args


def test_without_confirmation_nothing_is_touched(docker_engine, drill_pg, drill_redis, tmp_path, ansible_env):
    before = [started_at(docker_engine, t.name) for t in (drill_pg, drill_redis)]
    with pytest.raises(ConfigError) as err:
        container_drill(drill_args(docker_engine, drill_pg, drill_redis, report_dir=str(tmp_path / "r")))
    assert "runs them only with confirm: true" in str(err.value)
    assert "drill_confirm=yes" in err.value.hint

    # the playbook without -e drill_confirm=yes: the same refusal
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"drill_containers": [drill_pg.entry(), drill_redis.entry()],
                                 "drill_docker_host": docker_engine.url, "drill_report_dir": str(tmp_path / "p"),
                                 "drill_login_passwords": {drill_pg.name: drill_pg.password}}))
    proc = subprocess.run(["ansible-playbook", PLAYBOOK, "-e", "@%s" % extra], env=ansible_env, cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300,
                          check=False)
    assert proc.returncode != 0, proc.stdout
    assert "only with confirm: true" in proc.stdout, proc.stdout
    assert drill_pg.password not in proc.stdout
    assert [started_at(docker_engine, t.name) for t in (drill_pg, drill_redis)] == before
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()


COMPOSE = """
services:
  agentic-postgres:
    restart: unless-stopped
    healthcheck: {test: ["CMD", "pg_isready"]}
  agentic-redis:
    healthcheck: {test: ["CMD", "redis-cli", "ping"]}
  l01-data-layer:
    depends_on:
      agentic-postgres: {condition: service_healthy}
      agentic-redis: {condition: service_healthy}
  l09-api-gateway:
    depends_on: [agentic-postgres]
"""


def test_check_mode_inspects_only(docker_engine, drill_pg, drill_redis, tmp_path):
    """The compose project found by its label, the containers' settings given
    by service name, the compose file read."""
    before = [started_at(docker_engine, t.name) for t in (drill_pg, drill_redis)]
    (tmp_path / "compose.yml").write_text(COMPOSE)
    args = {"compose_project": PROJECT, "compose_file": str(tmp_path / "compose.yml"), "docker_host": docker_engine.url,
            "containers": [dict(drill_pg.entry(), name="agentic-postgres"),
                           dict(drill_redis.entry(), name="agentic-redis")],
            "report_dir": str(tmp_path / "r"), "login_passwords": "{{ pw }}", "confirm": True}
    run = run_playbook([task("drkit.backup.container_drill", register="d", **args)], check=True, tmp_dir=tmp_path,
                       extra_vars={"pw": {drill_pg.name: drill_pg.password, drill_redis.name: drill_redis.password}})
    assert run.rc == 0, run.describe()
    res = run.result("drkit.backup.container_drill")
    assert res["inspect_only"] is True and res["scenarios"] == [] and res["changed"] is False
    assert sorted(c["name"] for c in res["containers"]) == sorted([drill_pg.name, drill_redis.name])
    assert "compose service l09-api-gateway depends on agentic-postgres without condition: service_healthy" \
        in " ".join(res["findings"])
    assert "compose service agentic-redis declares restart: no (unset)" in " ".join(res["findings"])
    assert not any("l01-data-layer" in f for f in res["findings"])
    assert "%s has no restart policy: a crash leaves it down" % drill_redis.name in " ".join(res["findings"])
    pg = [c for c in res["containers"] if c["name"] == drill_pg.name][0]
    assert pg["restart_policy"] == "unless-stopped" and pg["healthcheck"] is True, pg
    assert pg["data_volume"]["name"] == drill_pg.volume and pg["findings"] == [], pg
    # the Redis container's /data is an anonymous volume: flagged too
    assert any("anonymous volume" in f for f in res["findings"] if drill_redis.name in f)
    # no dependent given (kind: other); a cascade and a cold start of the two databases would run if confirmed
    assert sorted(n["scenario"] for n in res["not_shown"]) == ["dependent_failure", "network_partition"]
    assert drill_pg.password not in run.text and drill_redis.password not in run.text
    assert [started_at(docker_engine, t.name) for t in (drill_pg, drill_redis)] == before
    assert not (tmp_path / "r").exists()


def test_the_drill_measures_a_restart_and_a_crash_of_postgres(docker_engine, drill_pg, tmp_path):
    drill_pg.query("CREATE TABLE app_rows AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g")
    digest = drill_pg.query("SELECT count(*), md5(string_agg(v, '' ORDER BY id)) FROM app_rows")
    restarts = docker_engine.client().inspect_container(drill_pg.name)["RestartCount"]

    changed, res = container_drill(drill_args(docker_engine, drill_pg, confirm=True, scenarios=["restart", "crash"],
                                              report_dir=str(tmp_path / "report"), recovery_timeout=120))
    assert changed and res["passed"], res["findings"]
    for s in res["scenarios"]:  # the figures of docs/containers.md (pytest -s)
        print("drill %s %s: RTO %s s, healthy %s s, answers %s s" % (
            s["kind"], s["scenario"], s["rto_seconds"], s["healthy_seconds"], s["answers_seconds"]))
    by = dict((s["scenario"], s) for s in res["scenarios"])
    assert sorted(by) == ["crash", "restart"]
    for s in by.values():
        assert s["status"] == "passed", s
        assert s["rto_seconds"] > 0 and s["healthy_seconds"] > 0 and s["answers_seconds"] > 0, s
        assert s["marker"]["kept"] is True and s["marker"]["must_keep"] is True, s
    # the crash was a SIGKILL of the main process, and the Engine brought it back on its own
    info = docker_engine.client().inspect_container(drill_pg.name)
    assert by["crash"]["killed_pid"] > 1 and info["State"]["Pid"] != by["crash"]["killed_pid"]
    assert info["RestartCount"] == restarts + 1
    assert info["State"]["Health"]["Status"] == "healthy"
    assert drill_pg.query("SELECT count(*), md5(string_agg(v, '' ORDER BY id)) FROM app_rows") == digest
    assert drill_pg.query("SELECT to_regclass('public.%s') IS NULL" % MARKER_TABLE) == [(True,)]

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["format"] == "drkit.backup/container-drill"
    assert [s["rto_seconds"] for s in report["scenarios"]] == [s["rto_seconds"] for s in res["scenarios"]]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| %s | crash | passed |" % drill_pg.name in md and "network_partition" in md
    assert "<table>" in (tmp_path / "report" / "report.html").read_text()
    assert drill_pg.password not in md + json.dumps(report)


def test_a_redis_without_restart_policy_does_not_come_back_from_a_crash(docker_engine, drill_redis, tmp_path):
    api = docker_engine.client()
    drill_redis.client().set("app:session", "kept")
    changed, res = container_drill(drill_args(docker_engine, drill_redis, confirm=True,
                                              scenarios=["stop_start", "crash"], recovery_timeout=8))
    assert changed and not res["passed"]
    assert "%s has no restart policy: a crash leaves it down until someone starts it" % drill_redis.name \
        in res["findings"]
    stop_start, crash = res["scenarios"]
    print("drill redis stop_start: RTO %s s, healthy %s s, answers %s s" % (
        stop_start["rto_seconds"], stop_start["healthy_seconds"], stop_start["answers_seconds"]))
    # AOF everysec: the key written 1.5 s before the stop is there after the start
    assert stop_start["status"] == "passed" and stop_start["rto_seconds"] > 0, stop_start
    assert stop_start["marker"]["kept"] is True and "everysec" in stop_start["marker"]["promise"]
    assert crash["status"] == "failed" and crash["rto_seconds"] is None, crash
    assert crash["reason"].startswith("did not come back within 8 s: exited (exit code 137)"), crash
    assert "restart policy no" in crash["reason"]
    state = api.inspect_container(drill_redis.name)["State"]
    assert state["Running"] is False and state["ExitCode"] == 137

    # the test brings it back: the data from before the crash is in its AOF
    api.start(drill_redis.name)
    wait_health(docker_engine, drill_redis.name, "healthy")
    deadline = time.time() + 30
    while drill_redis.client().get("app:session") is None and time.time() < deadline:
        time.sleep(0.2)  # loading the AOF
    assert drill_redis.client().get("app:session") == b"kept"
    assert not os.path.exists(str(tmp_path / "report"))


def test_a_dependent_reconnects_after_a_crash_a_cascade_and_a_cold_start(docker_engine, drill_pg, pg_redis_image):
    gateway = DrillGateway(docker_engine, pg_redis_image, drill_pg)
    try:
        args = drill_args(docker_engine, drill_pg, confirm=True, scenarios=["crash", "cascade", "cold_start"],
                          recovery_timeout=120)
        args["containers"].append(gateway.entry())
        changed, res = container_drill(args)
        assert changed and res["passed"], res["findings"]
        for s in res["scenarios"]:  # the figures of docs/containers.md (pytest -s)
            print("drill %s %s %s: RTO %s s, dependents %s" % (
                s["kind"], s["container"], s["scenario"], s["rto_seconds"], s["dependents"]))
        rows = dict(((s["container"], s["scenario"]), s) for s in res["scenarios"])
        assert sorted(rows) == sorted((c, s) for c in (drill_pg.name, gateway.name)
                                      for s in ("crash", "cascade", "cold_start"))
        assert all(s["status"] == "passed" and s["rto_seconds"] > 0 for s in rows.values()), rows
        # the gateway's healthcheck passed again after PostgreSQL answered: it reconnected
        for scenario in ("crash", "cascade", "cold_start"):
            db = rows[(drill_pg.name, scenario)]
            assert db["dependents"][gateway.name] >= db["answers_seconds"] > 0, db
            assert db["marker"]["kept"] is True
        # its own crash (the audit's dependent failure): killed and back by its restart policy
        assert rows[(gateway.name, "crash")]["killed_pid"] > 1
        # the cascade killed both together: one moment, both main processes
        assert rows[(drill_pg.name, "cascade")]["killed_pid"] != rows[(gateway.name, "cascade")]["killed_pid"]
        # the cold start began with the gateway while its database was down: it came back all the same
        assert rows[(gateway.name, "cold_start")]["rto_seconds"] > 0
        assert [n["scenario"] for n in res["not_shown"]] == ["network_partition"]
        assert drill_pg.query("SELECT to_regclass('public.%s') IS NULL" % MARKER_TABLE) == [(True,)]
    finally:
        docker_engine.client().remove_container(gateway.name, force=True, v=True)
