# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""dr_rebuild.yml for databases in containers (issue 16), on the tests' real
Docker Engine: PostgreSQL and Redis run in containers of the test image
(host network, data on anonymous volumes), are backed up through the Engine,
then lost with their volumes. The rebuild recreates them empty from their
images (tests/support/compose_up.py standing in for `docker compose up
-d`), waits until they are healthy, restores the database through the new
container's pg_restore and Redis into its data volume, and reports the
time of each step: every row and every sampled key is back."""

import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import redis_snapshot
from helpers import DRKIT, ansible_environment
from redis_support import dump_values, fill, sample_keys
from test_containers import PG_BIN, PG_SCRIPT, SECOND, table_facts, wait_health
from test_containers_redis import SCRIPT as REDIS_SCRIPT

COMPOSE_UP = Path(__file__).resolve().parent.parent / "support" / "compose_up.py"
REBUILD = 'ansible-playbook -i "$INVENTORY" drkit.backup.dr_rebuild -e @"$DR_VARS"'


def write_0600(path, data):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return str(path)


class Platform(object):
    """The two containers as a compose file would declare them."""

    def __init__(self, engine, image):
        self.engine = engine
        tag = uuid.uuid4().hex[:8]
        self.pg_name, self.redis_name = "agentic-postgres-%s" % tag, "agentic-redis-%s" % tag
        self.pg_port, self.redis_port = free_port(), free_port()
        self.pg_password, self.redis_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        pg_check = ["CMD", PG_BIN + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.pg_port)]
        redis_check = ["CMD", "sh", "-c", 'REDISCLI_AUTH="$DRKIT_REDIS_PASSWORD" redis-cli -p "$DRKIT_REDIS_PORT" '
                       'ping | grep -q PONG']
        health = {"interval": SECOND, "timeout": 5 * SECOND, "retries": 60}
        self.spec = {"docker_host": engine.url, "containers": [
            {"name": self.pg_name, "image": image, "command": ["sh", "-c", PG_SCRIPT], "user": "postgres",
             "environment": {"DRKIT_PG_PASSWORD": self.pg_password, "DRKIT_PG_PORT": str(self.pg_port)},
             "volumes": ["/var/lib/postgresql/data"], "healthcheck": dict(health, test=pg_check)},
            {"name": self.redis_name, "image": image, "command": ["sh", "-c", REDIS_SCRIPT.format(aof="no")],
             "user": "redis", "volumes": ["/data"],
             "environment": {"DRKIT_REDIS_PASSWORD": self.redis_password, "DRKIT_REDIS_PORT": str(self.redis_port)},
             "healthcheck": dict(health, test=redis_check)}]}

    def up(self, spec_file):
        proc = subprocess.run([sys.executable, str(COMPOSE_UP), spec_file], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        assert proc.returncode == 0, proc.stdout
        for name in (self.pg_name, self.redis_name):
            wait_health(self.engine, name, "healthy")

    def lose(self):
        """The containers and their volumes are gone (the host's disk failed)."""
        api = self.engine.client()
        for name in (self.pg_name, self.redis_name):
            api.remove_container(name, force=True, v=True)

    def pg(self, dbname="postgres"):
        return {"host": "127.0.0.1", "port": self.pg_port, "user": "postgres", "password": self.pg_password,
                "dbname": dbname}

    def redis(self, **kwargs):
        import redis  # pylint: disable=import-outside-toplevel
        return redis.Redis(host="127.0.0.1", port=self.redis_port, password=self.redis_password, socket_timeout=30,
                           **kwargs)

    # redis_support's helpers take a server with .client()
    def client(self, **kwargs):
        return self.redis(**kwargs)


def test_containers_lost_with_their_volumes_are_recreated_and_restored(docker_engine, pg_redis_image, tmp_path):
    platform = Platform(docker_engine, pg_redis_image)
    spec_file = write_0600(tmp_path / "compose.json", platform.spec)
    storage = tmp_path / "repo"
    storage.mkdir(mode=0o700)
    url = "file://%s" % storage
    try:
        platform.up(spec_file)
        with psycopg.connect(autocommit=True, **platform.pg()) as conn:
            conn.execute("CREATE DATABASE app")
        with psycopg.connect(autocommit=True, **platform.pg("app")) as conn:
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, item text, qty int)")
            conn.execute("INSERT INTO orders (item, qty) SELECT 'item-' || g, g % 17 FROM generate_series(1, 30000) g")
            conn.execute("CREATE TABLE notes (k text PRIMARY KEY, v jsonb)")
            conn.execute("INSERT INTO notes SELECT 'n' || g, jsonb_build_object('g', g) FROM generate_series(1, 700) g")
        before = table_facts(platform.pg("app"))
        fill(platform, 1500, db=0)
        keys = sample_keys(1500)
        values = dump_values(platform, keys)
        docker = {"container": platform.pg_name, "docker_host": docker_engine.url}
        pg_backup(dict(docker, login_host="127.0.0.1", port=platform.pg_port, login_user="postgres",
                       login_password=platform.pg_password, database="app", storage_url=url))
        redis_snapshot({"login_host": "127.0.0.1", "login_port": platform.redis_port,
                        "login_password": platform.redis_password, "container": platform.redis_name,
                        "docker_host": docker_engine.url, "storage_url": url})

        platform.lose()

        inventory = tmp_path / "inventory.ini"
        inventory.write_text("platform ansible_connection=local ansible_python_interpreter=%s\n"
                             % (Path(DRKIT).parent.parent / ".venv" / "bin" / "python"))
        report_dir = tmp_path / "report"
        dr_vars = write_0600(tmp_path / "dr.json", {
            "dr_rebuild_storage_url": url,
            "dr_rebuild_install_packages": False,
            "dr_rebuild_recreate_command": [sys.executable, str(COMPOSE_UP), spec_file],
            "dr_rebuild_docker_host": docker_engine.url,
            "dr_rebuild_pg_container": platform.pg_name,
            "dr_rebuild_pg_port": platform.pg_port,
            "dr_rebuild_pg_login_password": platform.pg_password,
            "dr_rebuild_redis": True,
            "dr_rebuild_redis_container": platform.redis_name,
            "dr_rebuild_redis_login_port": platform.redis_port,
            "dr_rebuild_redis_login_password": platform.redis_password,
            "dr_rebuild_report_dir": str(report_dir),
        })
        env = ansible_environment(str(tmp_path))
        env.update({"INVENTORY": str(inventory), "DR_VARS": dr_vars, "ANSIBLE_STDOUT_CALLBACK": "default"})
        proc = subprocess.run(["bash", "-c", REBUILD], env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-8000:]
        assert platform.pg_password not in proc.stdout and platform.redis_password not in proc.stdout

        # every row, and every sampled key, in the recreated containers
        assert table_facts(platform.pg("app")) == before
        assert platform.redis().dbsize() == 1500
        assert dump_values(platform, keys) == values
        report = json.loads((report_dir / "rebuild.json").read_text())
        steps = report["steps"]
        print("rebuild %s s, steps %s" % (report["rebuild_seconds"], json.dumps(steps)))
        assert float(steps["recreate_containers_seconds"]) > 0
        assert float(report["rebuild_seconds"]) >= float(steps["recreate_containers_seconds"]) + \
            float(steps["restore_postgresql_seconds"])
        assert report["postgresql"]["container"] == platform.pg_name and report["postgresql"]["version"] is None
        assert [d["item"] for d in report["postgresql"]["databases"]] == ["app"]
        assert all(t["ok"] for t in report["postgresql"]["databases"][0]["tables"])
        assert report["redis"]["container"] == platform.redis_name and report["redis"]["started"]
        md = (report_dir / "rebuild.md").read_text()
        assert "recreate the containers from their images" in md and platform.pg_name in md
    finally:
        api = docker_engine.client()
        for name in (platform.pg_name, platform.redis_name):
            try:
                api.remove_container(name, force=True, v=True)
            except Exception:  # noqa: BLE001 - already gone  # pylint: disable=broad-except
                pass
