# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis modules through ansible-playbook, for real: check mode ->
assert nothing happened -> real run -> assert real state -> rerun -> assert
idempotent, and the password never in the output."""

import pytest
from helpers import list_keys, run_playbook, task
from redis_support import fill, info, keyspace, new_password, start_redis


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "src", password=new_password(), appendonly=True)
    try:
        fill(srv, 3000)
        yield srv
    finally:
        srv.destroy()


def test_redis_modules_end_to_end(server, tmp_storage_url, tmp_path):
    pw = server.password
    conn = {"login_host": server.host, "login_port": server.port, "login_password": "{{ pw }}"}
    target = tmp_path / "target"
    target.mkdir()
    saves0 = info(server, "persistence")["rdb_saves"]
    tasks = [
        task("drkit.backup.redis_snapshot", register="snap_check", name="snapshot check mode",
             storage_url=tmp_storage_url, _check_mode=True, **conn),
        task("drkit.backup.redis_snapshot", register="snap_rdb", name="snapshot rdb",
             storage_url=tmp_storage_url, **conn),
        # no login_password: the REDISCLI_AUTH environment variable is the fallback
        task("drkit.backup.redis_snapshot", register="snap_aof", name="snapshot aof", mode="aof",
             storage_url=tmp_storage_url, login_host=server.host, login_port=server.port),
        task("drkit.backup.redis_verify", register="ver", name="verify restore", level="restore",
             storage_url=tmp_storage_url, backup_id="{{ snap_rdb.backup_id }}"),
        task("drkit.backup.redis_persistence", name="persistence check mode", save=["900 1", "300 10"],
             appendfsync="always", _check_mode=True, _diff=True, **conn),
        task("drkit.backup.redis_persistence", name="persistence", save=["900 1", "300 10"],
             appendfsync="always", _diff=True, **conn),
        task("drkit.backup.redis_persistence", name="persistence again", save=["900 1", "300 10"],
             appendfsync="always", **conn),
        task("drkit.backup.redis_restore", name="restore check mode", data_dir=str(target), appendonly=True,
             storage_url=tmp_storage_url, backup_id="{{ snap_rdb.backup_id }}", _check_mode=True),
        task("drkit.backup.redis_restore", name="restore", data_dir=str(target), appendonly=True,
             storage_url=tmp_storage_url, backup_id="{{ snap_rdb.backup_id }}"),
        task("drkit.backup.redis_snapshot", name="bad mode fails cleanly", mode="rdb", login_password="wrong",
             login_host=server.host, login_port=server.port, storage_url=tmp_storage_url, _ignore_errors=True),
    ]
    run = run_playbook(tasks, extra_vars={"pw": pw}, env={"REDISCLI_AUTH": pw}, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    assert pw not in run.text

    check = run.result("snapshot check mode")
    assert check["changed"] is True and check["backup_id"] is None

    rdb = run.result("snapshot rdb")
    assert rdb["changed"] and rdb["key_counts"] == {"db0": {"keys": 3000, "expires": 0}}
    assert rdb["key_counts_exact"] is True and rdb["manifest"]["kind"] == "redis_rdb"
    assert info(server, "persistence")["rdb_saves"] == saves0 + 1  # check mode did not BGSAVE
    aof = run.result("snapshot aof")
    assert aof["changed"] and aof["manifest"]["kind"] == "redis_aof" and aof["key_counts_exact"] is True
    backups = sorted(set(k.split("/")[1] for k in list_keys(tmp_storage_url) if k.endswith("manifest.json")))
    assert backups == sorted([rdb["backup_id"], aof["backup_id"]])

    ver = run.result("verify restore")
    assert ver["passed"] is True and ver["keyspace"][0]["actual"] == 3000

    pcheck = run.result("persistence check mode")
    assert pcheck["changed"] is True and "appendfsync always" in pcheck["diff"]["after"]
    p1, p2 = run.result("persistence"), run.result("persistence again")
    assert p1["changed"] is True and p1["changes"] == {"save": "900 1 300 10", "appendfsync": "always"}
    assert p2["changed"] is False
    c = server.client()
    assert c.config_get("save")["save"] == "900 1 300 10" and c.config_get("appendfsync")["appendfsync"] == "always"

    rcheck = run.result("restore check mode")
    assert rcheck["changed"] is True and rcheck["conversion"] == "rdb->aof"
    r = run.result("restore")
    assert r["changed"] is True and sorted(p.split("/")[-1] for p in r["placed"]) == ["appendonlydir", "dump.rdb"]
    restored = start_redis(target, appendonly=True)
    try:
        assert keyspace(restored) == {"db0": {"keys": 3000, "expires": 0}}
    finally:
        restored.destroy()

    bad = run.entry("bad mode fails cleanly")
    assert bad["status"] == "failed" and "refused the credentials" in bad["result"]["msg"]
