# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_verify, redis_restore and redis_persistence against real
redis-servers, and the drkit CLI keeping the password out of argv."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from helpers import DRKIT, file_root, list_keys
from redis_support import fill, info, keyspace, new_password, start_redis, wait_until

from ansible_collections.drkit.backup.plugins.module_utils.redis import snapshot as redis_backup
from ansible_collections.drkit.backup.plugins.module_utils.redis import restore as restore_module
from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import redis_restore
from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import redis_verify
from ansible_collections.drkit.backup.plugins.module_utils.redis import settings as redis_settings
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, SafetyError

N = 20000


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "src", password=new_password(), appendonly=True)
    try:
        fill(srv, N, ttl_every=50)
        fill(srv, 300, db=2, prefix="d2")
        yield srv
    finally:
        srv.destroy()


def snap(srv, url, mode):
    return redis_backup.redis_snapshot({"login_host": srv.host, "login_port": srv.port,
                                        "login_password": srv.password, "storage_url": url, "mode": mode})[1]


@pytest.fixture
def backups(server, tmp_storage_url):
    return {"rdb": snap(server, tmp_storage_url, "rdb"), "aof": snap(server, tmp_storage_url, "aof"),
            "expected": keyspace(server)}


# --------------------------------------------------------------------------
# verify


@pytest.mark.parametrize("kind", ["rdb", "aof"])
def test_verify_every_level_passes_and_is_recorded(backups, tmp_storage_url, tmp_path, kind):
    bid = backups[kind]["backup_id"]
    metrics_dir = tmp_path / "m"
    metrics_dir.mkdir()
    for level in ("checksum", "structure", "restore"):
        _c, res = redis_verify({"storage_url": tmp_storage_url, "backup_id": bid, "level": level,
                                "metrics_dir": str(metrics_dir), "job_name": "redis_v"})
        assert res["passed"] is True, res["findings"]
    rows = res["keyspace"]
    assert res["key_counts_compared"] == "exact per database"
    assert dict((r["db"], r["actual"]) for r in rows) == dict((db, v["keys"]) for db, v in backups["expected"].items())
    assert all(r["ok"] for r in rows)
    records = [k for k in list_keys(tmp_storage_url) if k.startswith("backups/%s/verify-" % bid)]
    assert len(records) == 3
    rec = json.loads((file_root(tmp_storage_url) / records[0]).read_text())
    assert rec["result"] == "pass" and rec["format"] == "drkit.backup/verification"
    assert 'drkit_verify_last_status{drkit_job="redis_v",kind="redis_%s"} 1' % kind in \
        (metrics_dir / "drkit_redis_v.prom").read_text()


def test_verify_latest_picks_a_redis_backup_and_check_mode_reads_nothing(backups, tmp_storage_url):
    _c, res = redis_verify({"storage_url": tmp_storage_url, "level": "restore"}, check_mode=True)
    assert res["backup_id"] == backups["aof"]["backup_id"] and res["passed"] is None
    assert not [k for k in list_keys(tmp_storage_url) if "/verify-" in k]


def test_verify_detects_a_corrupt_artifact(backups, tmp_storage_url):
    bid = backups["rdb"]["backup_id"]
    art = backups["rdb"]["manifest"]["artifacts"][0]
    path = file_root(tmp_storage_url) / "backups" / bid / art["name"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as e:
        redis_verify({"storage_url": tmp_storage_url, "backup_id": bid, "level": "checksum"})
    assert "sha256" in str(e.value) and e.value.details["passed"] is False
    rec = json.loads((file_root(tmp_storage_url) / e.value.details["record_key"]).read_text())
    assert rec["result"] == "fail"


def test_verify_restore_detects_missing_keys(backups, tmp_storage_url):
    bid = backups["aof"]["backup_id"]
    mpath = file_root(tmp_storage_url) / "backups" / bid / "manifest.json"
    m = json.loads(mpath.read_text())
    m["data"]["keyspace"]["db0"]["keys"] += 1000  # the backup now "should" hold more keys than it does
    mpath.write_bytes(mf.Manifest(m).to_json())  # sealed again: the data is under test, not the digest
    with pytest.raises(IntegrityError) as e:
        redis_verify({"storage_url": tmp_storage_url, "backup_id": bid, "level": "restore"})
    assert "db0: expected" in str(e.value)


# --------------------------------------------------------------------------
# restore into a stopped instance


def write_conf(d, port, password, appendonly):
    conf = d / "redis.conf"
    conf.write_text("\n".join([
        "bind 127.0.0.1", "port %d" % port, "daemonize yes", 'dir "%s"' % d, "dbfilename dump.rdb",
        'pidfile "%s"' % (d / "redis.pid"), 'logfile "%s"' % (d / "redis.log"), 'save ""',
        "appendonly %s" % ("yes" if appendonly else "no"), 'requirepass "%s"' % password, ""]))
    conf.chmod(0o600)
    return conf


def stop_daemon(d):
    pidfile = d / "redis.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip())
        try:
            os.kill(pid, 15)
            wait_until(lambda: _gone(pid), what="redis to stop")
        except ProcessLookupError:
            pass


def _gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody reaps yet
    except OSError:
        return True


def target_dir(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    return d


def test_naive_drop_in_rdb_is_ignored_by_an_aof_instance(backups, tmp_storage_url, tmp_path):
    """The trap, shown with real redis-server: dump.rdb beside appendonly yes
    and no AOF -> Redis starts EMPTY (and writes an empty AOF that wins)."""
    from helpers import fetch_artifact
    from redis_support import unpack_by_hand

    d = target_dir(tmp_path, "naive")
    art = backups["rdb"]["manifest"]["artifacts"][0]
    unpack_by_hand(fetch_artifact(tmp_storage_url, backups["rdb"]["backup_id"], art), True, d)
    srv = start_redis(d, appendonly=True)
    try:
        assert keyspace(srv) == {}
    finally:
        srv.destroy()


@pytest.mark.parametrize("kind,appendonly", [("rdb", True), ("rdb", False), ("aof", False), ("aof", True)])
def test_restore_loads_whatever_the_aof_setting(backups, tmp_storage_url, tmp_path, kind, appendonly):
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port

    d = target_dir(tmp_path, "target")
    port, password = free_port(), new_password()
    conf = write_conf(d, port, password, appendonly)
    params = {"storage_url": tmp_storage_url, "backup_id": backups[kind]["backup_id"], "redis_conf": str(conf),
              "start_command": [shutil.which("redis-server"), str(conf)], "login_host": "127.0.0.1",
              "login_port": port, "login_password": password, "timeout": 60}
    try:
        changed, res = redis_restore(params)
        assert changed and res["started"] is True
        assert res["appendonly"] is appendonly
        assert res["conversion"] == {("rdb", True): "rdb->aof", ("aof", False): "aof->rdb"}.get((kind, appendonly))
        assert all(r["ok"] for r in res["keyspace"]), res["keyspace"]
        assert res["key_counts_compared"] == "exact per database"
        assert res["actual_keyspace"]["db0"]["keys"] == N and res["actual_keyspace"]["db2"]["keys"] == 300
        assert password not in json.dumps(res)
    finally:
        stop_daemon(d)
    # the restored data survives a plain restart too (it is in the files Redis loads)
    subprocess.run([shutil.which("redis-server"), str(conf)], check=True)
    try:
        c = __import__("redis").Redis(port=port, password=password)
        wait_until(lambda: _loaded(c), what="restart")
        assert c.dbsize() == N
    finally:
        stop_daemon(d)


def _loaded(c):
    try:
        return c.info("persistence")["loading"] == 0
    except Exception:  # noqa: BLE001 - still starting
        return False


def test_restore_safety_and_check_mode(backups, tmp_storage_url, tmp_path):
    d = target_dir(tmp_path, "safe")
    (d / "dump.rdb").write_bytes(b"old data")
    params = {"storage_url": tmp_storage_url, "data_dir": str(d), "appendonly": False}
    before = sorted(os.listdir(str(d)))
    _c, plan = redis_restore(dict(params, force=True), check_mode=True)
    assert plan["plan"][0].startswith("move %s aside" % (d / "dump.rdb"))
    assert sorted(os.listdir(str(d))) == before
    with pytest.raises(SafetyError) as e:
        redis_restore(params)
    assert "force" in str(e.value)
    # a running redis-server in that directory: refused even with force
    running = start_redis(tmp_path / "running")
    try:
        with pytest.raises(SafetyError) as e:
            redis_restore({"storage_url": tmp_storage_url, "data_dir": running.dir, "force": True})
        assert "is running" in str(e.value)
    finally:
        running.destroy()
    changed, res = redis_restore(dict(params, force=True))
    assert res["started"] is False and "Start the instance" in res["msg"]
    aside = [n for n in os.listdir(str(d)) if n.startswith("dump.rdb.drkit-")]
    assert len(aside) == 1 and (d / aside[0]).read_bytes() == b"old data"
    assert (d / "dump.rdb").read_bytes()[:5] == b"REDIS"
    assert not [n for n in os.listdir(str(d)) if n.startswith(".drkit-restore-")]  # staging cleaned
    assert oct((d / "dump.rdb").stat().st_mode & 0o777) == "0o600"


def test_restore_puts_old_data_back_when_it_fails(backups, tmp_storage_url, tmp_path, monkeypatch):
    d = target_dir(tmp_path, "rollback")
    (d / "dump.rdb").write_bytes(b"old data")
    (d / "appendonlydir").mkdir()
    (d / "appendonlydir" / "x").write_bytes(b"old aof")

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(restore_module, "fsync_dir", broken)
    with pytest.raises(OSError):
        redis_restore({"storage_url": tmp_storage_url, "data_dir": str(d), "force": True,
                       "backup_id": backups["aof"]["backup_id"]})
    assert (d / "dump.rdb").read_bytes() == b"old data"
    assert (d / "appendonlydir" / "x").read_bytes() == b"old aof"
    assert sorted(os.listdir(str(d))) == ["appendonlydir", "dump.rdb"]


def test_restore_fails_and_puts_old_data_back_when_the_directory_fsync_fails(backups, tmp_storage_url, tmp_path,
                                                                             monkeypatch):
    # The placed files are not durable until the data directory is fsync'ed:
    # a failing fsync is a failed restore, not a success that a crash may undo.
    d = target_dir(tmp_path, "fsync")
    (d / "dump.rdb").write_bytes(b"old data")
    real = os.fsync

    def fsync(fd):
        if os.path.samefile("/proc/self/fd/%d" % fd, str(d)):
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        redis_restore({"storage_url": tmp_storage_url, "data_dir": str(d), "force": True,
                       "backup_id": backups["rdb"]["backup_id"]})
    assert (d / "dump.rdb").read_bytes() == b"old data"
    assert sorted(os.listdir(str(d))) == ["dump.rdb"]


# --------------------------------------------------------------------------
# persistence settings


def persist_params(srv, **kw):
    p = {"login_host": srv.host, "login_port": srv.port, "login_password": srv.password}
    p.update(kw)
    return p


def test_persistence_settings_idempotent_with_diff(tmp_path):
    srv = start_redis(tmp_path / "p", password=new_password())
    try:
        fill(srv, 2000)
        want = persist_params(srv, save=["3600 1", "300 100", "60 10000"], appendonly=True, appendfsync="everysec")
        changed, res = redis_settings.redis_persistence(want, check_mode=True)
        assert changed and res["changes"] == {"save": "3600 1 300 100 60 10000", "appendonly": "yes"}
        assert srv.client().config_get("appendonly")["appendonly"] == "no"  # check mode changed nothing
        assert "appendonly no" in res["diff"]["before"] and "appendonly yes" in res["diff"]["after"]

        changed, res = redis_settings.redis_persistence(want)
        assert changed is True
        p = info(srv, "persistence")
        assert p["aof_enabled"] == 1 and p["aof_rewrite_in_progress"] == 0 and p["aof_base_size"] > 0
        # (appendfsync everysec is the default: CONFIG REWRITE leaves it out)
        assert redis_settings.read_conf_values(srv.conf_file, {"appendonly", "appendfsync", "save"}) == {
            "appendonly": "yes", "save": "3600 1 300 100 60 10000"}

        changed, res = redis_settings.redis_persistence(want)
        assert changed is False and res["changes"] == {}
        assert res["diff"]["before"] == res["diff"]["after"]

        # set live by hand but never written to redis.conf: a restart would lose it -> changed, rewritten
        srv.client().config_set("appendfsync", "always")
        srv.client().config_set("appendfsync", "everysec")
        with open(srv.conf_file, "a") as fh:
            fh.write("appendfsync always\n")
        changed, res = redis_settings.redis_persistence(want)
        assert changed is True and res["config_file_stale"] == ["appendfsync"] and res["changes"] == {}
        assert redis_settings.read_conf_values(srv.conf_file, {"appendfsync"}) == {"appendfsync": "everysec"}
        assert redis_settings.redis_persistence(want)[0] is False
    finally:
        srv.destroy()


def test_persistence_refuses_to_half_apply_without_a_config_file(tmp_path):
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port

    port = free_port()
    d = tmp_path / "noconf"
    d.mkdir()
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(d), "--save", ""], stdout=subprocess.DEVNULL)
    try:
        import redis
        c = redis.Redis(port=port)
        wait_until(lambda: _loaded(c), what="start")
        with pytest.raises(ConfigError) as e:
            redis_settings.redis_persistence({"login_host": "127.0.0.1", "login_port": port, "appendonly": True})
        assert "without a config file" in str(e.value)
        assert c.config_get("appendonly")["appendonly"] == "no"
        changed, _res = redis_settings.redis_persistence({"login_host": "127.0.0.1", "login_port": port,
                                                          "appendfsync": "always", "persist": False})
        assert changed and c.config_get("appendfsync")["appendfsync"] == "always"
    finally:
        proc.terminate()
        proc.wait(30)


# --------------------------------------------------------------------------
# the CLI: same engine, password never in argv


class ArgvWatcher(threading.Thread):
    """Scans every process's command line while a run goes on."""

    def __init__(self, secret):
        super(ArgvWatcher, self).__init__()
        self.daemon = True
        self.secret = secret.encode()
        self.stop = threading.Event()
        self.leaks = []
        self.seen = set()

    def run(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as fh:
                        cmd = fh.read()
                except OSError:
                    continue
                if self.secret in cmd:
                    self.leaks.append(cmd)
                for name in (b"drkit", b"redis-check-rdb", b"drkit-redis-verify"):
                    if name in cmd:
                        self.seen.add(name.decode())
            time.sleep(0.002)


def test_cli_keeps_the_password_out_of_argv(server, tmp_storage_url):
    watcher = ArgvWatcher(server.password)
    watcher.start()
    env = dict(os.environ, REDISCLI_AUTH=server.password, PGPASSWORD="not-the-redis-password")
    try:
        runs = []
        for args in (["redis-snapshot", "--host", server.host, "--port", str(server.port),
                      "--storage-url", tmp_storage_url, "--json"],
                     ["redis-snapshot", "--mode", "remote", "--host", server.host, "--port", str(server.port),
                      "--storage-url", tmp_storage_url, "--json"],
                     ["redis-verify", "--storage-url", tmp_storage_url, "--level", "restore", "--json"]):
            runs.append(subprocess.run([sys.executable, str(DRKIT)] + args, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, universal_newlines=True, timeout=300, check=False))
    finally:
        watcher.stop.set()
        watcher.join()
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert server.password not in r.stdout + r.stderr
    assert json.loads(runs[0].stdout)["key_counts_exact"] is True
    assert json.loads(runs[2].stdout)["passed"] is True
    assert watcher.leaks == []
    # the scan did see the runs, their checker and the verifier's scratch redis-server
    assert {"drkit", "redis-check-rdb", "drkit-redis-verify"} <= watcher.seen
    assert info(server, "persistence")["rdb_saves"] >= 2
