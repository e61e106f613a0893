# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_snapshot against real redis-servers (own dirs, free loopback ports).

Each mode is proven by a restore: the stored artifact is fetched and checked
with hashlib (helpers.fetch_artifact), unpacked by hand and loaded into a
fresh redis-server, and its key counts and sampled values compared with the
source.  The datasets are 50k keys so the file stays fast; the 1M-key run
is benchmarks/redis_snapshot.py.
"""

import json
import os
import signal
import threading

import pytest
from helpers import fetch_artifact, list_keys
from redis_support import (check_tool, children, dump_values, fill, info, keyspace, new_password, sample_keys,
                           start_redis, unpack_by_hand, wait_until)

from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.redis import snapshot_aof, snapshot_rdb
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import redis_snapshot
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot_rdb import GrowingFile, _Fallback
from ansible_collections.drkit.backup.plugins.module_utils.redis.tools import find_redis_tool
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, SourceError, ToolError,
                                                                               WaitTimeout)
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage

N = 50000


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "src", password=new_password())
    try:
        yield srv
    finally:
        srv.destroy()


@pytest.fixture
def aof_server(tmp_path):
    srv = start_redis(tmp_path / "src-aof", password=new_password(), appendonly=True)
    try:
        yield srv
    finally:
        srv.destroy()


def params(srv, storage_url, **kw):
    p = {"login_host": srv.host, "login_port": srv.port, "login_password": srv.password,
         "storage_url": storage_url, "timeout": 60}
    p.update(kw)
    return p


def stored_backups(storage_url):
    return [k for k in list_keys(storage_url) if k.startswith("backups/")]


def restore_by_hand(res, storage_url, tmp_path, name="byhand"):
    """Load the stored artifact into a fresh redis-server without the engine."""
    m = res["manifest"]
    art = m["artifacts"][0]
    data = fetch_artifact(storage_url, res["backup_id"], art)
    d = tmp_path / name
    layout = unpack_by_hand(data, art.get("compressed"), d)
    if layout == "rdb":
        rc, out = check_tool("redis-check-rdb", d / "dump.rdb")
    else:
        from redis_support import aof_manifest
        rc, out = check_tool("redis-check-aof", aof_manifest(d / "appendonlydir"))
    assert rc == 0, out
    return start_redis(d, appendonly=(layout == "aof")), layout


# --------------------------------------------------------------------------
# each mode restores


@pytest.mark.parametrize("mode", ["rdb", "remote"])
def test_rdb_modes_restore_same_keys_and_values(server, tmp_path, tmp_storage_url, mode):
    fill(server, N, ttl_every=100)
    fill(server, 500, db=5, prefix="other")
    expected = keyspace(server)
    sample = sample_keys(N)
    values = dump_values(server, sample)

    changed, res = redis_snapshot(params(server, tmp_storage_url, mode=mode))
    assert changed
    assert res["key_counts_exact"] is True, res["notes"]
    assert res["key_counts"] == expected
    data = res["manifest"]["data"]
    assert data["rdb"]["check"]["keys"] == N + 500
    assert data["rdb"]["check"]["dbs"] == [0, 5]
    assert res["manifest"]["kind"] == "redis_rdb"
    assert res["manifest"]["source"]["server_version"].startswith(("6.", "7.", "8."))
    assert res["manifest"]["source"]["role"] == "master"
    assert server.password not in json.dumps(res)

    restored, layout = restore_by_hand(res, tmp_storage_url, tmp_path)
    try:
        assert layout == "rdb"
        assert keyspace(restored) == expected
        assert dump_values(restored, sample) == values
    finally:
        restored.destroy()


def test_aof_backup_while_writes_continue_restores_exactly(aof_server, tmp_path, tmp_storage_url):
    fill(aof_server, N)
    stop = threading.Event()
    written = [0]

    def writer():
        c = aof_server.client()
        i = 0
        while not stop.is_set():
            p = c.pipeline(transaction=False)
            for _i in range(50):
                p.set("live:%d" % i, "x" * (i % 50))
                p.incr("counter")
                if i % 7 == 0:
                    p.delete("k:%d" % i)
                i += 1
            p.execute()
            written[0] = i
        c.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until(lambda: written[0] > 2000, what="writes to start")
        changed, res = redis_snapshot(params(aof_server, tmp_storage_url, mode="aof"))
        wait_until(lambda: written[0] > 0, what="writes to go on")
        before = written[0]
        wait_until(lambda: written[0] > before + 500, what="writes to go on after the backup")
    finally:
        stop.set()
        t.join()
    assert changed and res["manifest"]["kind"] == "redis_aof"
    assert res["key_counts_exact"] is True, res["notes"]
    # the writes went on while the backup ran: the backup holds fewer keys than the server now
    assert keyspace(aof_server)["db0"]["keys"] > res["key_counts"]["db0"]["keys"]
    assert info(aof_server, "persistence")["aof_rewrite_in_progress"] == 0
    assert aof_server.client().config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "100"

    restored, layout = restore_by_hand(res, tmp_storage_url, tmp_path)  # passes redis-check-aof
    try:
        assert layout == "aof"
        assert keyspace(restored) == res["key_counts"]
        counter = int(restored.client().get("counter"))
        assert 0 < counter <= written[0]
    finally:
        restored.destroy()


def test_remote_mode_with_acl_user_and_password(server, tmp_path, tmp_storage_url):
    fill(server, 5000)
    c = server.client()
    c.execute_command("ACL", "SETUSER", "backup", "on", ">backup-secret-9", "-@all", "+info", "+sync",
                      "+replconf", "+client|pause", "+client|unpause", "+ping")
    p = params(server, tmp_storage_url, mode="remote", login_user="backup", login_password="backup-secret-9")
    changed, res = redis_snapshot(p)
    assert res["key_counts"] == {"db0": {"keys": 5000, "expires": 0}} and res["key_counts_exact"]
    assert "backup-secret-9" not in json.dumps(res)
    restored = restore_by_hand(res, tmp_storage_url, tmp_path)[0]
    try:
        assert keyspace(restored) == {"db0": {"keys": 5000, "expires": 0}}
    finally:
        restored.destroy()
    # without the permission to pause, the backup still works; counts are marked approximate
    c.execute_command("ACL", "SETUSER", "backup", "-client|pause")
    changed, res = redis_snapshot(p)
    assert res["key_counts_exact"] is False
    assert any("could not be paused" in n for n in res["notes"])


def test_wrong_password_fails_without_echoing_it(server, tmp_storage_url):
    with pytest.raises(SourceError) as e:
        redis_snapshot(params(server, tmp_storage_url, login_password="wrong-pass-123"))
    assert "refused the credentials" in str(e.value)
    assert "wrong-pass-123" not in str(e.value)
    with pytest.raises(SourceError) as e:
        redis_snapshot(params(server, tmp_storage_url, login_password=None))
    assert "requires authentication" in str(e.value)
    assert stored_backups(tmp_storage_url) == []


# --------------------------------------------------------------------------
# BGSAVE corner cases


@pytest.mark.parametrize("streamed", [True, False])
def test_failing_bgsave_fails_and_ships_nothing(server, tmp_path, tmp_storage_url, monkeypatch, streamed):
    if not streamed:  # the path that waits for the save, then reads dump.rdb
        monkeypatch.setattr(snapshot_rdb, "find_temp_rdb", lambda *a: None)
    fill(server, 20000)
    server.client().config_set("rdb-key-save-delay", 200)  # microseconds per key: a 4 s save
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    box = {}

    def run():
        try:
            box["res"] = redis_snapshot(params(server, tmp_storage_url, metrics_dir=str(metrics_dir),
                                               job_name="redis_test"))
        except Exception as e:  # noqa: BLE001 - checked below
            box["err"] = e

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: info(server, "persistence")["rdb_bgsave_in_progress"] == 1, what="the BGSAVE")
    kids = children(server)
    assert kids, "no BGSAVE child found"
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert "res" not in box
    assert isinstance(box["err"], SourceError), box
    assert "BGSAVE" in str(box["err"]) and "failed" in str(box["err"])
    assert stored_backups(tmp_storage_url) == []
    prom = (metrics_dir / "drkit_redis_test.prom").read_text()
    assert 'drkit_backup_last_status{drkit_job="redis_test",kind="redis_rdb"} 0' in prom


def test_rdb_streams_while_redis_writes_and_falls_back(server, tmp_storage_url, monkeypatch):
    fill(server, 5000)
    server.client().config_set("rdb-key-save-delay", 100)  # a save of about a second
    _c, res = redis_snapshot(params(server, tmp_storage_url))
    data = res["manifest"]["data"]
    assert data["rdb"]["streamed_during_save"] is True and data["save_seconds"] is None
    assert data["rdb"]["check"]["keys"] == 5000 and res["key_counts_exact"]

    # the streamed file turns out not to be the saved one: the partial artifact
    # is dropped and the saved file is read instead
    def replaced(self, n=1 << 20):
        raise _Fallback()

    monkeypatch.setattr(GrowingFile, "read", replaced)
    _c, res = redis_snapshot(params(server, tmp_storage_url))
    data = res["manifest"]["data"]
    assert data["rdb"]["streamed_during_save"] is False and any("replaced" in n for n in res["notes"])
    assert [a["name"] for a in res["manifest"]["artifacts"]] == ["dump.rdb.zst"]
    assert data["rdb"]["check"]["keys"] == 5000 and res["key_counts_exact"]
    prefix = "backups/%s/" % res["backup_id"]
    assert sorted(k for k in list_keys(tmp_storage_url) if k.startswith(prefix)) == [
        prefix + "dump.rdb.zst", prefix + "manifest.json"]
    from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import redis_verify
    _c, ver = redis_verify({"storage_url": tmp_storage_url, "backup_id": res["backup_id"], "level": "restore"})
    assert ver["passed"]


def test_concurrent_bgsave_is_waited_for_then_ours_runs(server, tmp_storage_url):
    fill(server, 5000)
    c = server.client()
    c.config_set("rdb-key-save-delay", 100)  # microseconds per key: each save takes about a second
    saves0 = info(server, "persistence")["rdb_saves"]
    c.bgsave()
    assert info(server, "persistence")["rdb_bgsave_in_progress"] == 1
    c.set("written-after-the-other-save", "1")  # only our own, later, save has it
    changed, res = redis_snapshot(params(server, tmp_storage_url))
    assert any("already running" in n for n in res["notes"])
    assert info(server, "persistence")["rdb_saves"] == saves0 + 2
    assert res["key_counts_exact"] is True
    assert res["key_counts"]["db0"]["keys"] == 5001
    assert res["manifest"]["data"]["rdb"]["check"]["keys"] == 5001


def test_aof_rewrite_running_is_waited_for(aof_server, tmp_storage_url):
    fill(aof_server, 5000)
    c = aof_server.client()
    c.config_set("rdb-key-save-delay", 100)  # slows the AOF rewrite too (RDB preamble)
    c.bgrewriteaof()
    assert info(aof_server, "persistence")["aof_rewrite_in_progress"] == 1
    changed, res = redis_snapshot(params(aof_server, tmp_storage_url))
    assert any("already running" in n for n in res["notes"]), res["notes"]
    assert res["manifest"]["data"]["rdb"]["check"]["keys"] == 5000


def test_bgsave_timeout_is_clear_and_ships_nothing(server, tmp_storage_url):
    fill(server, 20000)
    server.client().config_set("rdb-key-save-delay", 200)
    with pytest.raises(WaitTimeout) as e:
        redis_snapshot(params(server, tmp_storage_url, timeout=1))
    assert "BGSAVE" in str(e.value) and "did not finish" in str(e.value) and "raise timeout" in str(e.value)
    assert stored_backups(tmp_storage_url) == []
    server.client().config_set("rdb-key-save-delay", 0)


# --------------------------------------------------------------------------
# AOF mode: the setting comes back whatever happens


def test_auto_aof_rewrite_percentage_restored_after_a_timeout(aof_server, tmp_storage_url):
    fill(aof_server, 20000)
    c = aof_server.client()
    c.config_set("auto-aof-rewrite-percentage", 137)
    c.config_set("rdb-key-save-delay", 200)  # a 4 s rewrite
    c.bgrewriteaof()
    with pytest.raises(WaitTimeout) as e:
        redis_snapshot(params(aof_server, tmp_storage_url, mode="aof", timeout=1))
    assert "AOF rewrite" in str(e.value)
    assert c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "137"
    assert stored_backups(tmp_storage_url) == []
    c.config_set("rdb-key-save-delay", 0)


def test_auto_aof_rewrite_percentage_restored_after_a_copy_failure(aof_server, tmp_storage_url, monkeypatch):
    fill(aof_server, 1000)
    c = aof_server.client()
    c.config_set("auto-aof-rewrite-percentage", 55)
    seen = {}

    def broken_pin(aofdir, manifest_path):
        seen["during"] = c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(snapshot_aof, "_pin_aof", broken_pin)
    with pytest.raises(OSError):
        redis_snapshot(params(aof_server, tmp_storage_url, mode="aof"))
    assert seen["during"] == "0"
    assert c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "55"
    assert stored_backups(tmp_storage_url) == []


def test_aof_mode_needs_aof(server, tmp_storage_url):
    with pytest.raises(ConfigError) as e:
        redis_snapshot(params(server, tmp_storage_url, mode="aof"))
    assert "AOF is off" in str(e.value)


# --------------------------------------------------------------------------
# check mode


@pytest.mark.parametrize("mode", ["rdb", "remote", "aof"])
def test_check_mode_writes_nothing(aof_server, tmp_storage_url, mode):
    fill(aof_server, 100)
    c = aof_server.client()
    c.config_set("auto-aof-rewrite-percentage", 99)
    pers0 = info(aof_server, "persistence")
    changed, res = redis_snapshot(params(aof_server, tmp_storage_url, mode=mode), check_mode=True)
    assert changed is True and res["backup_id"] is None and res["msg"].startswith("Would back up")
    pers1 = info(aof_server, "persistence")
    assert pers1["rdb_saves"] == pers0["rdb_saves"]
    assert pers1["aof_rewrites"] == pers0["aof_rewrites"]
    assert c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "99"
    assert list_keys(tmp_storage_url) == []


# --------------------------------------------------------------------------
# S3


def test_rdb_snapshot_to_s3_and_verify(server, s3, bucket):
    from helpers import open_multipart_uploads, s3_module_args
    from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import redis_verify

    fill(server, 10000)
    url = "s3://%s/redis" % bucket
    p = params(server, url)
    p.update(s3_module_args(s3))
    changed, res = redis_snapshot(p)
    storage = open_storage(url, **s3_module_args(s3))
    assert mf.load_manifest(storage, res["backup_id"])["data"]["keys_total"] == 10000
    v = dict(s3_module_args(s3), storage_url=url, level="restore")
    _c, vres = redis_verify(v)
    assert vres["passed"] and vres["keyspace"][0]["actual"] == 10000
    assert open_multipart_uploads(s3, bucket) == []


def test_check_tool_found_through_redis_server_symlink(tmp_path, server):
    """With only redis-server installed, the check tools run as a symlink
    with the right name (redis-server looks at argv[0])."""
    import shutil

    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(shutil.which("redis-server"), str(bindir / "redis-server"))
    tool = find_redis_tool("redis-check-rdb", str(bindir), search=(), use_path=False)
    assert os.path.basename(tool) == "redis-check-rdb" and os.path.islink(tool)
    fill(server, 100)
    server.client().save()
    rc, out = check_tool(tool, server.rdb_path)
    assert rc == 0 and "RDB looks OK" in out
    with pytest.raises(ToolError):
        find_redis_tool("redis-check-rdb", str(tmp_path / "nothing"), search=(), use_path=False)


# --------------------------------------------------------------------------
# kill -9 while a setting is changed for a moment (issue 13, hole 12)


def _drkit_snapshot(srv, storage_url, state_home, mode):
    """bin/drkit redis-snapshot as a cron job runs it: the password in
    REDISCLI_AUTH, the state directory from XDG_STATE_HOME (the default)."""
    import subprocess
    import sys
    from helpers import DRKIT
    env = dict(os.environ, REDISCLI_AUTH=srv.password, XDG_STATE_HOME=str(state_home))
    argv = [sys.executable, str(DRKIT), "redis-snapshot", "--host", srv.host, "--port", str(srv.port),
            "--storage-url", storage_url, "--mode", mode, "--json"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@pytest.mark.parametrize("next_mode", ["aof", "rdb"])
def test_kill9_while_rewrites_are_off_is_repaired_by_the_next_run(aof_server, tmp_path, tmp_storage_url, next_mode):
    """drkit killed with SIGKILL while it waits for a running AOF rewrite,
    auto-aof-rewrite-percentage at 0: the next snapshot, of either mode, puts
    the original back instead of recording 0 as the original and "restoring"
    0 (which left automatic rewrites off for good, the AOF growing unwarned)."""
    fill(aof_server, 20000)
    c = aof_server.client()
    c.config_set("auto-aof-rewrite-percentage", 73)
    c.config_set("rdb-key-save-delay", 200)  # a rewrite of ~4 s (its RDB preamble)
    c.bgrewriteaof()
    state = tmp_path / "state"
    proc = _drkit_snapshot(aof_server, tmp_storage_url, state, "aof")
    try:
        # the kill point: drkit says it turned rewrites off (it then waits for the running one)
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "auto-aof-rewrite-percentage 73 -> 0" in line:
                break
        wait_until(lambda: c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "0", 10)
        assert info(aof_server, "persistence")["aof_rewrite_in_progress"] == 1, "the kill must come during the wait"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "0"  # what SIGKILL leaves
    c.config_set("rdb-key-save-delay", 0)
    wait_until(lambda: info(aof_server, "persistence")["aof_rewrite_in_progress"] == 0, 60)

    proc = _drkit_snapshot(aof_server, tmp_storage_url, state, next_mode)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "73", err
    assert any("auto-aof-rewrite-percentage put back to 73" in n and "had left it at 0" in n
               for n in res["notes"]), res["notes"]
    if next_mode == "aof":
        assert res["manifest"]["data"]["auto_aof_rewrite_percentage"] == "73"  # not the 0 a crash left
    assert list(state.rglob("drkit-redis-settings-*")) == []  # the record goes once the original is back


def test_a_live_runs_record_is_respected(aof_server, tmp_path, tmp_storage_url):
    """A second AOF snapshot of the same server while the first one has the
    setting changed is refused, and the first run's original survives."""
    fill(aof_server, 20000)
    c = aof_server.client()
    c.config_set("auto-aof-rewrite-percentage", 61)
    c.config_set("rdb-key-save-delay", 200)
    c.bgrewriteaof()
    state = tmp_path / "state"
    first = _drkit_snapshot(aof_server, tmp_storage_url, state, "aof")
    try:
        for line in first.stderr:
            if "auto-aof-rewrite-percentage 61 -> 0" in line:
                break
        second = _drkit_snapshot(aof_server, tmp_storage_url, state, "aof")
        _out, err = second.communicate(timeout=120)
        assert second.returncode == 7, err  # SourceError
        assert "Another drkit run" in err and "auto-aof-rewrite-percentage" in err
    finally:
        c.config_set("rdb-key-save-delay", 0)
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert c.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "61"
