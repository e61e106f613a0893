# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis in Docker containers (issue 16), on the tests' real Docker Engine
(tests/support/docker_engine.py), with redis-server 7 from Debian running in
containers of the test image on host networking.

* aof mode out of a container: the multi-part AOF read through the Engine's
  archive API, checked by the container's redis-check-aof; a stopped
  container and one without the AOF directory named.
* redis_restore into another container (running, holding other data: moved
  aside): an AOF backup into an AOF container, and an RDB backup into an
  AOF container (the AOF-wins trap: converted in a scratch container of the
  image); key counts and a DUMP of sampled keys equal; no container left.
* redis_verify: in a scratch container of the image (nothing left, the
  production container untouched), and, asked, inside the container (no
  process and no file left there).
"""

import hashlib
import json
import secrets
import signal
import subprocess
import sys
import time

import pyrage
import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (
    ConfigError,
    IntegrityError,
    SafetyError,
    SourceError,
)
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import redis_restore
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import redis_snapshot
from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import redis_verify
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from helpers import DRKIT, file_root
from redis_support import dump_values, fill, sample_keys
from test_containers import SECOND, _name, create_container, wait_health
# a fixture, used by name
from test_containers import no_local_tools  # noqa: F401  # pylint: disable=unused-import

# redis-server replaces the shell (PID 1, so docker stop's SIGTERM reaches it);
# its password comes on stdin, from a here-document, not in argv
SCRIPT = ('exec redis-server - --bind 127.0.0.1 --port "$DRKIT_REDIS_PORT" --dir /data --dbfilename dump.rdb '
          '--save "" --appendonly {aof} <<EOF\nrequirepass "$DRKIT_REDIS_PASSWORD"\nEOF\n')


class RedisContainer(object):
    """redis-server in a container of the test image, host networking, /data
    on an anonymous volume; the password reaches it on stdin (a config read
    from ``-``), not in argv."""

    def __init__(self, engine, image, appendonly=False, start=True):
        self.engine = engine
        self.name = _name("redis")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        check = ["CMD", "sh", "-c", 'REDISCLI_AUTH="$DRKIT_REDIS_PASSWORD" redis-cli -p "$DRKIT_REDIS_PORT" ping '
                 '| grep -q PONG']
        self.id = create_container(
            engine, image, self.name, ["sh", "-c", SCRIPT.format(aof="yes" if appendonly else "no")],
            user="redis", volumes=["/data"],
            environment={"DRKIT_REDIS_PASSWORD": self.password, "DRKIT_REDIS_PORT": str(self.port)},
            healthcheck={"test": check, "interval": SECOND, "timeout": 5 * SECOND, "retries": 60})
        if start:
            self.start()

    def start(self):
        self.engine.client().start(self.id)
        wait_health(self.engine, self.name, "healthy")

    def client(self, **kwargs):
        import redis  # pylint: disable=import-outside-toplevel
        kw = dict(host=self.host, port=self.port, password=self.password, socket_timeout=30)
        kw.update(kwargs)
        return redis.Redis(**kw)

    def args(self, **more):
        out = {"login_host": self.host, "login_port": self.port, "login_password": self.password,
               "container": self.name, "docker_host": self.engine.url}
        out.update(more)
        return out


@pytest.fixture(scope="module")
def aof_source(docker_engine, pg_redis_image):
    server = RedisContainer(docker_engine, pg_redis_image, appendonly=True)
    fill(server, 2000, db=0)
    fill(server, 300, db=2, prefix="other")
    server.client().bgrewriteaof()  # a base file with an RDB preamble, then an incr file written after it
    fill(server, 100, db=0, prefix="late")
    return server


@pytest.mark.usefixtures("no_local_tools")
def test_aof_snapshot_out_of_a_container(aof_source, tmp_storage_url, tmp_path):
    changed, result = redis_snapshot(aof_source.args(mode="aof", storage_url=tmp_storage_url,
                                                     state_dir=str(tmp_path / "state")))
    assert changed and result["key_counts_exact"], result
    manifest = result["manifest"]
    assert manifest["kind"] == "redis_aof"
    assert manifest["source"]["container"]["name"] == aof_source.name
    aof = manifest["data"]["aof"]
    assert [f["type"] for f in aof["files"]][-1] == "i" and aof["files"][0]["type"] == "b", aof
    assert aof["container"] == aof_source.name
    assert aof["base_check"]["keys"] == 2300  # the container's redis-check-aof read the base file's RDB part
    assert {db: v["keys"] for db, v in result["key_counts"].items()} == {"db0": 2100, "db2": 300}
    # automatic rewrites are back on (the server's default, 100)
    assert aof_source.client().config_get("auto-aof-rewrite-percentage") == {"auto-aof-rewrite-percentage": "100"}


def test_aof_mode_names_a_container_without_the_aof(docker_engine, pg_redis_image, aof_source, tmp_storage_url,
                                                    tmp_path):
    other = _name("noaof")
    api = docker_engine.client()
    api.start(create_container(docker_engine, pg_redis_image, other, ["sleep", "infinity"]))
    with pytest.raises(ConfigError) as err:
        redis_snapshot(aof_source.args(mode="aof", container=other, storage_url=tmp_storage_url,
                                       state_dir=str(tmp_path / "state")))
    assert "does not exist in container %s" % other in str(err.value), err.value
    assert "appendonlydir" in str(err.value)


def test_aof_mode_names_a_stopped_container(docker_engine, pg_redis_image, aof_source, tmp_storage_url):
    other = _name("stopped")
    create_container(docker_engine, pg_redis_image, other, ["sleep", "infinity"])
    with pytest.raises(SourceError) as err:
        redis_snapshot(aof_source.args(mode="aof", container=other, storage_url=tmp_storage_url))
    assert "Container %s is not running (status created" % other in str(err.value), err.value


@pytest.fixture(scope="module")
def aof_backup(aof_source, tmp_path_factory):
    url = "file://%s" % tmp_path_factory.mktemp("aof-store")
    _changed, result = redis_snapshot(aof_source.args(mode="aof", storage_url=url,
                                                      state_dir=str(tmp_path_factory.mktemp("state"))))
    return url, result


def _same_data(source, target):
    for db, prefix, n in ((0, "k", 2000), (0, "late", 100), (2, "other", 300)):
        keys = sample_keys(n, count=100, prefix=prefix)
        assert dump_values(target, keys, db=db) == dump_values(source, keys, db=db)
    assert target.client(db=0).dbsize() == 2100 and target.client(db=2).dbsize() == 300


def _containers(engine):
    return sorted(c["Names"][0] for c in engine.client().containers(all=True))


def test_aof_backup_restored_into_another_container(docker_engine, pg_redis_image, aof_source, aof_backup):
    url, backup = aof_backup
    target = RedisContainer(docker_engine, pg_redis_image, appendonly=True)
    fill(target, 50, prefix="old")
    before = _containers(docker_engine)
    args = target.args(storage_url=url, backup_id=backup["backup_id"])
    with pytest.raises(SafetyError) as err:
        redis_restore(args)
    assert "Container %s is running" % target.name in str(err.value)

    changed, result = redis_restore(dict(args, force=True))
    assert changed and result["started"] and result["stopped"], result
    assert result["conversion"] is None and result["placed"] == ["/data/appendonlydir"], result
    assert any(m.startswith("/data/appendonlydir.drkit-") for m in result["moved_aside"]), result
    _same_data(aof_source, target)
    assert target.client().get("old:0") is None
    assert _containers(docker_engine) == before  # the helper is gone


def test_rdb_backup_into_an_aof_container_is_converted(docker_engine, pg_redis_image, aof_source,
                                                       tmp_storage_url, tmp_path):
    _changed, backup = redis_snapshot(aof_source.args(storage_url=tmp_storage_url))
    assert backup["manifest"]["kind"] == "redis_rdb"
    target = RedisContainer(docker_engine, pg_redis_image, appendonly=True, start=False)
    before = _containers(docker_engine)
    # a never-started container: where it keeps the AOF is read from its command line
    changed, result = redis_restore(target.args(storage_url=tmp_storage_url))
    assert result["conversion"] == "rdb->aof" and result["appendonly"] is True, result
    assert "the container's command line" in result["msg"], result
    assert result["placed"] == ["/data/dump.rdb", "/data/appendonlydir"], result
    _same_data(aof_source, target)
    assert _containers(docker_engine) == before  # helper and scratch container removed


def _redis_processes(engine, name):
    top = engine.client().top(name, ps_args="-eo pid,args")
    return [p[-1] for p in top["Processes"] if "redis-server" in p[-1]]


def test_verify_in_a_scratch_container_leaves_nothing(docker_engine, aof_source, aof_backup):
    url, backup = aof_backup
    before = _containers(docker_engine)
    started = docker_engine.client().inspect_container(aof_source.name)["State"]["StartedAt"]
    procs = _redis_processes(docker_engine, aof_source.name)
    _changed, result = redis_verify({"storage_url": url, "backup_id": backup["backup_id"], "level": "restore",
                                     "container": aof_source.name, "docker_host": docker_engine.url})
    assert result["passed"], result
    assert result["verified_in"].startswith("scratch container of image sha256:"), result
    assert {r["db"]: r["actual"] for r in result["keyspace"]} == {"db0": 2100, "db2": 300}, result
    assert result["key_counts_compared"] == "exact per database"
    assert result["structure"]["keys"] == 2300  # the base file's RDB part, read by the image's redis-check-aof
    assert _containers(docker_engine) == before
    assert docker_engine.client().inspect_container(aof_source.name)["State"]["StartedAt"] == started
    assert _redis_processes(docker_engine, aof_source.name) == procs  # nothing ran in the production container


def test_verify_inside_the_container_when_asked(docker_engine, aof_source, aof_backup):
    url, backup = aof_backup
    before = _containers(docker_engine)
    procs = _redis_processes(docker_engine, aof_source.name)
    said = []
    _changed, result = redis_verify({"storage_url": url, "backup_id": backup["backup_id"], "level": "restore",
                                     "container": aof_source.name, "docker_host": docker_engine.url,
                                     "verify_in": "container"}, progress=said.append)
    assert result["passed"], result
    assert result["verified_in"] == "container %s" % aof_source.name, result
    assert any("second redis-server inside container %s" % aof_source.name in m for m in said), said
    assert {r["db"]: r["actual"] for r in result["keyspace"]} == {"db0": 2100, "db2": 300}, result
    assert _containers(docker_engine) == before
    assert _redis_processes(docker_engine, aof_source.name) == procs
    api = docker_engine.client()
    left = api.exec_start(api.exec_create(aof_source.name, ["sh", "-c", "ls -d /tmp/drkit-* 2>/dev/null; true"]))
    assert left == b"", left  # its temp directory is gone


def test_a_sigterm_removes_the_scratch_container(docker_engine, aof_source, aof_backup):
    url, backup = aof_backup
    api = docker_engine.client()
    proc = subprocess.Popen([sys.executable, str(DRKIT), "redis-verify", "--storage-url", url, "--backup-id",
                             backup["backup_id"], "--level", "restore", "--container", aof_source.name,
                             "--docker-host", docker_engine.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not api.containers(all=True, filters={"label": "io.drkit.scratch"}):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no scratch container appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "Interrupted by signal" in err, err
    assert api.containers(all=True, filters={"label": "io.drkit.scratch"}) == []


def test_restore_names_a_missing_container_and_one_without_a_volume(docker_engine, pg_redis_image, aof_backup):
    url, backup = aof_backup
    with pytest.raises(SourceError) as err:
        redis_restore({"storage_url": url, "container": "drkit-nowhere", "docker_host": docker_engine.url})
    assert "Container drkit-nowhere does not exist" in str(err.value)
    name = _name("novolume")
    create_container(docker_engine, pg_redis_image, name, ["redis-server", "--dir", "/srv/redis"])
    with pytest.raises(ConfigError) as err:
        redis_restore({"storage_url": url, "container": name, "docker_host": docker_engine.url})
    assert "/srv/redis of container %s is not on a volume" % name in str(err.value), err.value


# --------------------------------------------------------------------------
# encrypted snapshots (issue 15): the container's redis-check-aof checks the plaintext at backup time; a
# restore without the identity, or of a damaged ciphertext, neither stops the target nor touches its data


def _age_key(tmp_path):
    ident = pyrage.x25519.Identity.generate()
    path = tmp_path / "age.key"
    path.write_text("%s\n" % ident)
    path.chmod(0o600)
    return str(path), str(ident.to_public())


def _reseal_damaged(url, backup):
    """Flip a byte near the end of the stored object and re-seal the manifest
    with its new sha256: only age's authentication can refuse it."""
    bdir = file_root(url) / "backups" / backup["backup_id"]
    art = bdir / backup["manifest"]["artifacts"][0]["name"]
    data = bytearray(art.read_bytes())
    data[len(data) - 50] ^= 0x01
    art.write_bytes(bytes(data))
    m = json.loads((bdir / "manifest.json").read_text())
    m["artifacts"][0]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (bdir / "manifest.json").write_bytes(mf.Manifest(m).to_json())


def test_encrypted_snapshot_restores_into_a_container_only_with_the_identity(
        docker_engine, pg_redis_image, aof_source, tmp_storage_url, tmp_path):
    key, pub = _age_key(tmp_path)
    _changed, backup = redis_snapshot(aof_source.args(mode="aof", storage_url=tmp_storage_url,
                                                      state_dir=str(tmp_path / "state"), encryption_recipients=[pub]))
    manifest = backup["manifest"]
    assert manifest["artifacts"][0]["encrypted"] is True and manifest["encryption"]["format"] == "age"
    assert manifest["data"]["aof"]["base_check"]["keys"] == 2300  # the container's redis-check-aof, on the plaintext
    _changed, damaged = redis_snapshot(aof_source.args(mode="rdb", storage_url=tmp_storage_url,
                                                       encryption_recipients=[pub]))
    _reseal_damaged(tmp_storage_url, damaged)

    target = RedisContainer(docker_engine, pg_redis_image, appendonly=True)
    fill(target, 50, prefix="old")
    api = docker_engine.client()
    started = api.inspect_container(target.name)["State"]["StartedAt"]
    before = _containers(docker_engine)
    args = target.args(storage_url=tmp_storage_url, backup_id=backup["backup_id"], force=True)
    with pytest.raises(ConfigError) as err:
        redis_restore(args)
    assert manifest["encryption"]["recipients"][0] in str(err.value)
    with pytest.raises(IntegrityError) as err:
        redis_restore(dict(args, backup_id=damaged["backup_id"], encryption_identity_file=key))
    assert "failed age authentication" in str(err.value), err.value
    # neither stopped the container nor placed anything: its own data is served as before
    assert api.inspect_container(target.name)["State"]["StartedAt"] == started
    assert target.client().exists("old:0") == 1 and target.client().dbsize() == 50
    assert _containers(docker_engine) == before

    _changed, result = redis_restore(dict(args, encryption_identity_file=key))
    assert result["started"] and result["stopped"], result
    _same_data(aof_source, target)
    assert target.client().get("old:0") is None
    _changed, result = redis_verify({"storage_url": tmp_storage_url, "backup_id": backup["backup_id"],
                                     "level": "restore", "container": aof_source.name,
                                     "docker_host": docker_engine.url, "encryption_identity_file": key})
    assert result["passed"] and {r["db"]: r["actual"] for r in result["keyspace"]} == {"db0": 2100, "db2": 300}
    assert _containers(docker_engine) == before
