# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit with a Patroni-managed cluster, for real (issue 18): etcd (Debian's
etcd-server) and two Patroni nodes (PyPI patroni) running PostgreSQL 15, all
on loopback ports with their own directories. Patroni's configuration
carries ``archive_command = drkit wal-push`` (docs/failover.md, "With
Patroni"); drkit takes a physical base backup from the leader and copies the
repository to a second one; Patroni fails over when the leader is killed;
the new leader archives its timeline into the same repository; and a
point-in-time recovery from the copy holds every row committed on either
leader.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from helpers import DRKIT
from pitr_source import write_0600
from test_pitr import connect_restored, socket_dir_for

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port, make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import pg_pitr
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import list_timeline
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage

DRKIT_CMD = "%s %s" % (shlex.quote(sys.executable), shlex.quote(str(DRKIT)))
VENV_BIN = Path(sys.executable).parent


def as_postgres():
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out after %s s waiting for %s" % (timeout, what))


class Etcd(object):
    def __init__(self, root):
        self.dir = Path(root) / "etcd"
        self.dir.mkdir(mode=0o700)
        self.port, peer = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(str(Path(root) / "etcd.log"), "w")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "drkit", "--data-dir", str(self.dir / "data"), "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url, "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
             "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
             "--initial-cluster", "drkit=http://127.0.0.1:%d" % peer], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: http_status(self.url + "/health") == 200, 30, "etcd")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Node(object):
    """One Patroni node (as postgres); its config file holds the passwords (0600)."""

    def __init__(self, root, name, scope, etcd, passwords, archive_command):
        self.root = Path(root) / name
        self.root.mkdir(mode=0o700)
        shutil.chown(str(self.root), "postgres", "postgres")
        self.name, self.port, self.api_port = name, free_port(), free_port()
        self.api = "http://127.0.0.1:%d" % self.api_port
        self.data_dir = str(self.root / "data")
        config = {
            "scope": scope, "name": name, "namespace": "/drkit-test/",
            "restapi": {"listen": "127.0.0.1:%d" % self.api_port, "connect_address": "127.0.0.1:%d" % self.api_port},
            "etcd3": {"host": "127.0.0.1:%d" % etcd.port},
            "bootstrap": {
                "dcs": {"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "maximum_lag_on_failover": 16 * 1024 * 1024,
                        "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
                            # what docs/failover.md ("With Patroni") tells users to put here
                            "wal_level": "replica", "archive_mode": "on", "archive_command": archive_command,
                            "archive_timeout": 60, "wal_log_hints": "on", "max_wal_senders": 10,
                            "max_replication_slots": 10, "fsync": "off"}}},
                "initdb": [{"encoding": "UTF8"}, {"auth-host": "scram-sha-256"}, {"auth-local": "peer"}],
                "pg_hba": ["local all all peer", "host replication replicator 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256"]},
            "postgresql": {
                "listen": "127.0.0.1:%d" % self.port, "connect_address": "127.0.0.1:%d" % self.port,
                "data_dir": self.data_dir, "bin_dir": find_pg_bindir("15"), "pgpass": str(self.root / "pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": passwords[0]},
                                   "replication": {"username": "replicator", "password": passwords[1]}},
                "parameters": {"unix_socket_directories": str(self.root)}},
        }
        self.config = write_0600(self.root / "patroni.yml", config, owner="postgres")
        self.log = open(str(self.root / "patroni.log"), "w")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(VENV_BIN / "patroni"), self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=str(self.root), start_new_session=True,
                                     **as_postgres())

    def role(self):
        """'primary', 'replica' or None, from Patroni's REST API."""
        if http_status(self.api + "/primary") == 200:
            return "primary"
        if http_status(self.api + "/replica") == 200:
            return "replica"
        return None

    def kill(self):
        """The node lost: Patroni and every PostgreSQL process of it, SIGKILL."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        pid_file = Path(self.data_dir) / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # Patroni stops its PostgreSQL
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def patroni(scratch_root):
    if not shutil.which("etcd"):
        pytest.fail("etcd is missing: scripts/bootstrap.sh installs Debian's etcd-server")
    root = Path(make_scratch_dir(prefix="patroni-", parent=str(scratch_root)))
    os.chmod(str(root), 0o755)
    repo = root / "repo"
    repo.mkdir(mode=0o700)
    shutil.chown(str(repo), "postgres", "postgres")
    wal_config = write_0600(root / "wal.yml", {"storage_url": "file://%s" % repo}, owner="postgres")
    passwords = (uuid.uuid4().hex, uuid.uuid4().hex)
    archive_command = "%s wal-push --config %s %%p %%f" % (DRKIT_CMD, shlex.quote(wal_config))
    etcd = Etcd(root)
    nodes = []
    try:
        scope = "drkit-%s" % uuid.uuid4().hex[:8]
        for name in ("node1", "node2"):
            nodes.append(Node(root, name, scope, etcd, passwords, archive_command))
        yield {"root": root, "repo": "file://%s" % repo, "wal_config": wal_config, "nodes": nodes,
               "password": passwords[0], "etcd": etcd}
    finally:
        for node in nodes:
            node.stop()
        etcd.stop()
        shutil.rmtree(str(root), ignore_errors=True)


def drkit_as_postgres(root, config, *argv):
    path = write_0600(Path(root) / ("drkit-%s.yml" % uuid.uuid4().hex[:6]), config, owner="postgres")
    proc = subprocess.run(["runuser", "-u", "postgres", "--"] + shlex.split(DRKIT_CMD) + list(argv) +
                          ["--config", path, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def sql(node, password, statement):
    conn = connect_restored(node.port, password, dbname="postgres")
    try:
        cur = conn.execute(statement)
        return cur.fetchone() if cur.description else None
    finally:
        conn.close()


def wait_archived(node, password, timeout=60):
    seg = sql(node, password, "SELECT pg_walfile_name(pg_switch_wal())")[0]
    wait_for(lambda: (sql(node, password, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
                      or "")[:24] >= seg, timeout, "%s archived" % seg)
    return seg


def test_patroni_cluster_backed_up_archived_copied_failed_over_and_recovered(patroni, scratch_root):
    node1, node2 = patroni["nodes"]
    password = patroni["password"]
    node1.start()
    wait_for(lambda: node1.role() == "primary", 90, "node1 to lead")
    node2.start()
    wait_for(lambda: node2.role() == "replica", 90, "node2 to replicate")
    sql(node1, password, "CREATE TABLE t (id int PRIMARY KEY, leader text)")
    sql(node1, password, "INSERT INTO t SELECT g, 'node1' FROM generate_series(1, 1000) g")

    # drkit backs up the leader (physical) and copies the repository to a second one
    login = {"login_host": "127.0.0.1", "port": node1.port, "login_user": "postgres", "login_password": password}
    backup = drkit_as_postgres(patroni["root"], dict(login, storage_url=patroni["repo"], mode="physical",
                                                     wal_wait_timeout=120), "pg-backup")
    sql(node1, password, "INSERT INTO t SELECT g, 'node1' FROM generate_series(1001, 1500) g")
    wait_for(lambda: sql(node2, password, "SELECT count(*) FROM t")[0] == 1500, 30, "the replica to catch up")

    # the leader is lost: Patroni promotes node2 (no drkit involved)
    t0 = time.time()
    node1.kill()
    wait_for(lambda: node2.role() == "primary", 90, "Patroni to take the leader lock for node2")
    # the lock comes first, the promotion right after
    wait_for(lambda: sql(node2, password, "SELECT pg_is_in_recovery()")[0] is False, 60, "node2 to be promoted")
    promoted_after = time.time() - t0
    sql(node2, password, "INSERT INTO t SELECT g, 'node2' FROM generate_series(2001, 2300) g")
    # the new leader archives its timeline into the same repository with the same archive_command
    last = wait_archived(node2, password)
    timeline = int(last[:8], 16)
    assert timeline >= 2 and last in list_timeline(open_storage(patroni["repo"]), timeline), last

    second = patroni["root"] / "second"
    second.mkdir(mode=0o700)
    shutil.chown(str(second), "postgres", "postgres")
    copied = drkit_as_postgres(patroni["root"], {"storage_url": patroni["repo"],
                                                 "to_storage_url": "file://%s" % second}, "copy")
    assert copied["copied"] == [backup["backup_id"]] and copied["wal_objects"] > 0, copied

    # recovered from the second repository alone: every row of both leaders
    target = Path(make_scratch_dir(prefix="patroni-pitr-", parent=str(scratch_root)))
    os.chmod(str(target), 0o755)
    data_dir = str(target / "data")
    port = free_port()
    _changed, res = pg_pitr({"storage_url": "file://%s" % second, "data_directory": data_dir, "port": port,
                             "target": "latest", "drkit_command": DRKIT_CMD,
                             "settings": {"unix_socket_directories": socket_dir_for(data_dir),
                                          "listen_addresses": "127.0.0.1"}})
    print("Patroni promoted the replica %.1f s after the leader was killed (ttl 10 s); PITR from the copy: "
          "timelines %s, %s" % (promoted_after, res["timeline_path"], res["status"]))
    try:
        assert res["status"] == "promoted" and res["timeline_path"][-1] == timeline, res
        conn = connect_restored(port, password, dbname="postgres")
        try:
            rows = dict(conn.execute("SELECT leader, count(*) FROM t GROUP BY 1").fetchall())
        finally:
            conn.close()
        assert rows == {"node1": 1500, "node2": 300}, rows
    finally:
        subprocess.run([os.path.join(find_pg_bindir("15"), "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate",
                        "-w"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                       **as_postgres())
        shutil.rmtree(str(target), ignore_errors=True)
