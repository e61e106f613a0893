# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A standby built from the repository, and failovers measured, for real:
a PostgreSQL 15 primary archiving with ``drkit wal-push`` into a file://
repository, a physical base backup taken as postgres, ``drkit standby``
restoring it into a new data directory on another loopback port (archive
first, then streaming from a slot), and ``drkit failover`` planned and
unplanned with a writer whose own log of committed ids is the oracle.
"""

import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import NewCluster, ansible_environment, role, role_results, run_drkit, run_playbook
from pitr_source import DRKIT_CMD, ArchivingSource

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port, make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import SourceError
from ansible_collections.drkit.backup.plugins.module_utils.core.metrics import read_textfile
from ansible_collections.drkit.backup.plugins.module_utils.pg.standby import pg_standby
from ansible_collections.drkit.backup.plugins.module_utils.pg.standby_check import standby_check

ROWS_BEFORE_BACKUP = 1000
ROWS_AFTER_BACKUP = 500
# the runbook's region-loss command, word for word (test_runbook.PLAYBOOK_COMMANDS)
FAILOVER_COMMAND = 'ansible-playbook -i "$INVENTORY" drkit.backup.failover -e @"$FAILOVER_VARS"'


class Pair(object):
    """A primary with rows before and after its base backup, and a standby
    built by drkit from the repository."""

    def __init__(self, root, settings=None):
        self.root = Path(root)
        self.password = uuid.uuid4().hex
        (self.root / "primary").mkdir(mode=0o755)
        self.source = ArchivingSource(self.root / "primary", self.password)
        self.source.pg.settings.update(settings or {})
        self.pg = self.source.pg
        self.standby_parent = self.root / "standby"
        self.standby_parent.mkdir(mode=0o755)
        self.standby_dir = self.standby_parent / "data"
        self.standby_port = free_port()

    def start(self):
        self.pg.start()
        self.pg.psql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")
        self.insert(1, ROWS_BEFORE_BACKUP)
        self.source.base_backup()
        self.insert(ROWS_BEFORE_BACKUP + 1, ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP)
        self.source.switch_wal_and_wait()
        return self

    def insert(self, first, last):
        self.pg.psql("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(%d, %d) g" % (first, last))

    def params(self, **extra):
        out = {"storage_url": self.source.wal_url, "login_host": "127.0.0.1", "port": self.pg.port,
               "login_user": "postgres", "login_password": self.password,
               "data_directory": str(self.standby_dir), "standby_port": self.standby_port,
               "drkit_command": DRKIT_CMD, "timeout": 120}
        out.update(extra)
        return out

    def standby_psql(self, sql, port=None):
        env = dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="10")
        res = subprocess.run([os.path.join(self.pg.bin_dir, "psql"), "-X", "-qAt", "-h", "127.0.0.1", "-p",
                              str(port or self.standby_port), "-U", "postgres", "-d", "postgres", "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout.decode().strip()

    def stop_standby(self):
        pid_file = self.standby_dir / "postmaster.pid"
        if pid_file.exists():
            subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.pg.bin_dir, "pg_ctl"), "stop",
                            "-D", str(self.standby_dir), "-m", "immediate", "-w"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def destroy(self):
        self.stop_standby()
        self.pg.destroy()


@pytest.fixture
def pair():
    root = make_scratch_dir(prefix="drkit-failover-")
    os.chmod(root, 0o755)
    # wal_log_hints: what pg_rewind needs to rejoin the old primary as a standby
    p = Pair(root, settings={"autovacuum": "off", "wal_log_hints": "on"})
    try:
        yield p.start()
    finally:
        p.destroy()
        shutil.rmtree(root, ignore_errors=True)


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % what)


def pwd_uid(name):
    import pwd
    return pwd.getpwnam(name).pw_uid


# --------------------------------------------------------------------------
# failover


class Writer(threading.Thread):
    """A client inserting one row per transaction into the primary, logging
    each id once its COMMIT returned, with the time: the oracle."""

    def __init__(self, pair, first_id=100000):
        super(Writer, self).__init__(daemon=True)
        self.pair, self.next_id = pair, first_id
        self.acked = []  # (id, time the commit returned)
        self.stop_flag = threading.Event()
        self.error = None

    def run(self):
        import psycopg
        try:
            with psycopg.connect(host="127.0.0.1", port=self.pair.pg.port, user="postgres",
                                 password=self.pair.password, dbname="postgres", autocommit=True) as conn:
                while not self.stop_flag.is_set():
                    conn.execute("INSERT INTO t VALUES (%s, 'writer')", (self.next_id,))
                    self.acked.append((self.next_id, time.time()))
                    self.next_id += 1
                    time.sleep(0.002)
        except psycopg.Error as e:
            self.error = str(e)

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        return self.acked


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], stdout=subprocess.PIPE, check=False)
    return [int(x) for x in out.stdout.split()]


def new_primary_ids(pair):
    return set(int(x) for x in pair.standby_psql("SELECT id FROM t WHERE id >= 100000").split())


def assert_fenced(pair):
    """Started again, the old primary is a standby: no write, no archiving."""
    old = pair.pg.data_dir
    assert (Path(old) / "standby.signal").exists()
    port = free_port()
    log = pair.root / ("fenced-%d.log" % port)  # in the test's own directory, gone with it
    log.touch()
    shutil.chown(str(log), "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pair.pg.bin_dir, "pg_ctl"), "start", "-D", old,
                    "-l", str(log), "-w", "-o",
                    "-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s" % (
                        port, pair.pg.socket_dir)], check=True, stdout=subprocess.DEVNULL)
    try:
        env = dict(os.environ, PGPASSWORD=pair.password)
        psql = [os.path.join(pair.pg.bin_dir, "psql"), "-X", "-qAt", "-h", "127.0.0.1", "-p", str(port), "-U",
                "postgres", "-d", "postgres", "-c"]
        out = subprocess.run(psql + ["SELECT pg_is_in_recovery(), current_setting('archive_mode')"],
                             stdout=subprocess.PIPE, env=env, check=True).stdout.decode().strip()
        assert out == "t|off", out
        res = subprocess.run(psql + ["INSERT INTO t VALUES (-1, 'split brain')"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, check=False)
        assert res.returncode != 0 and b"read-only" in res.stderr, res.stderr
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pair.pg.bin_dir, "pg_ctl"), "stop", "-D",
                        old, "-m", "fast", "-w"], check=False, stdout=subprocess.DEVNULL)


def check_standby_from_repository(pair):
    """Restored from the repository, replays from the archive, streams."""
    changed, plan = pg_standby(pair.params(), check_mode=True)
    assert changed and "Would restore" in plan["msg"]
    assert not pair.standby_dir.exists()

    changed, result = pg_standby(pair.params())
    assert changed and result["status"] == "streaming", result
    assert result["archive_segments_replayed"] >= 1, result
    # the primary's max_slot_wal_keep_size is -1 (the default): said, with what to do
    assert any("max_slot_wal_keep_size is -1" in w for w in result["warnings"]), result["warnings"]
    assert pair.standby_psql("SELECT pg_is_in_recovery()") == "t"
    assert pair.standby_psql("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert pair.standby_psql("SELECT count(*) FROM t") == str(ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP)
    # the password is in the passfile only: 0600, the server's user, outside the data directory
    passfile = Path(result["passfile"])
    st = passfile.stat()
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_uid == pwd_uid("postgres")
    assert pair.password in passfile.read_text()
    auto = (pair.standby_dir / "postgresql.auto.conf").read_text()
    assert pair.password not in auto and "passfile=" in auto and "primary_slot_name = 'drkit_standby'" in auto
    # the slot on the primary is the standby's, active
    assert pair.pg.psql("SELECT active FROM pg_replication_slots WHERE slot_name = 'drkit_standby'") == "t"

    # streaming: new rows show up without any archiving
    pair.insert(5001, 5010)
    wait_for(lambda: pair.standby_psql("SELECT count(*) FROM t WHERE id > 5000") == "10", what="streamed rows")

    # a rerun changes nothing and reports the lag
    changed, again = pg_standby(pair.params())
    assert not changed and again["existing"] and again["lag"]["replay_lag_bytes"] is not None, again

    check_the_lag_metrics(pair)

    # an occupied directory that is not drkit's standby is refused
    other = pair.root / "other"
    other.mkdir()
    (other / "PG_VERSION").write_text("15\n")
    with pytest.raises(Exception) as exc:
        pg_standby(pair.params(data_directory=str(other), standby_port=free_port()))
    assert "refusing" in str(exc.value)
    with pytest.raises(ConfigError):
        pg_standby(pair.params(passfile=str(pair.standby_dir / "pw")))


def check_the_lag_metrics(pair):
    """drkit standby-check: measured lag, a stuck replay, the primary or the standby gone."""
    metrics_dir = pair.root / "metrics"
    params = {"login_host": "127.0.0.1", "port": pair.pg.port, "login_user": "postgres",
              "login_password": pair.password, "standby_port": pair.standby_port, "metrics_dir": str(metrics_dir),
              "job_name": "standby_t"}
    prom = metrics_dir / "drkit_standby_t.prom"

    def metric(name):
        return read_textfile(str(prom))[(name, '{drkit_job="standby_t"}')]

    changed, ok = standby_check(params)
    assert not changed and ok["streaming"] and ok["caught_up"] and ok["replay_lag_bytes"] == 0, ok
    assert ok["replay_lag_seconds"] < 5, ok
    print("standby-check on a healthy pair: replay lag %.3f s, %d bytes" % (
        ok["replay_lag_seconds"], ok["replay_lag_bytes"]))
    assert metric("drkit_standby_streaming") == 1 and metric("drkit_standby_up") == 1
    assert metric("drkit_standby_replay_lag_seconds") == ok["replay_lag_seconds"]
    # the slot: what it makes the primary keep, unbounded (NaN) until max_slot_wal_keep_size is set
    assert ok["slot"]["wal_status"] == "reserved" and ok["slot"]["bounded"] is False, ok["slot"]
    assert metric("drkit_standby_slot_retained_bytes") >= 0 and metric("drkit_standby_slot_lost") == 0
    assert math.isnan(metric("drkit_standby_slot_safe_wal_bytes"))
    pair.pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
    pair.pg.psql("SELECT pg_reload_conf()")
    try:
        _c, bounded = standby_check(params)
    finally:
        pair.pg.psql("ALTER SYSTEM RESET max_slot_wal_keep_size")
        pair.pg.psql("SELECT pg_reload_conf()")
    # about the bound (PostgreSQL counts from the segment boundary: a little more)
    assert bounded["slot"]["bounded"] and 0 < metric("drkit_standby_slot_safe_wal_bytes") < 2 << 30, bounded

    # replay stuck: the lag is at least the wait, and the bytes show what is not replayed
    pair.standby_psql("SELECT pg_wal_replay_pause()")
    try:
        pair.insert(6001, 6100)
        _c, stuck = standby_check(dict(params, lag_wait=1.0))
    finally:
        pair.standby_psql("SELECT pg_wal_replay_resume()")
    assert stuck["streaming"] and not stuck["caught_up"], stuck
    assert stuck["replay_lag_seconds"] >= 1.0 and stuck["replay_lag_bytes"] > 0, stuck
    assert metric("drkit_standby_replay_lag_bytes") == stuck["replay_lag_bytes"]
    _c, resumed = standby_check(params)
    assert resumed["caught_up"] and resumed["replay_lag_bytes"] == 0, resumed

    # the primary does not answer (its region lost): the lag is unknown, written as NaN, not an old value
    _c, alone = standby_check(dict(params, port=free_port()))
    assert alone["streaming"] is True and alone["primary_reachable"] is False, alone
    assert math.isnan(metric("drkit_standby_replay_lag_seconds")) and metric("drkit_standby_primary_reachable") == 0

    # the standby down: the command fails (exit 7) and its metrics say so; drkit standby starts it again
    pair.stop_standby()
    with pytest.raises(SourceError):
        standby_check(params)
    assert metric("drkit_standby_up") == 0 and metric("drkit_standby_streaming") == 0
    cli = run_drkit(["standby-check", "--host", "127.0.0.1", "--port", str(pair.pg.port), "--standby-port",
                     str(pair.standby_port)], config={"login_password": pair.password}, tmp_dir=str(pair.root))
    assert cli.returncode == 7 and "does not answer" in cli.stderr, cli.stderr
    assert pair.password not in cli.stdout + cli.stderr
    changed, again = pg_standby(pair.params())
    assert changed and again["existing"] and again["status"] == "streaming", again


@pytest.fixture
def debian_cluster(pair):
    """Name, free port and data directory for a Debian cluster of the test
    (postgresql-common's tools, PostgreSQL 15); dropped afterwards."""
    parent = pair.root / "debian"
    parent.mkdir(mode=0o755)
    cluster = NewCluster(parent, prefix="drkit_standby")
    try:
        yield cluster
    finally:
        cluster.drop()


def debian_standby_variables(pair, root, cluster):
    return {"_drkit_runtime_installed": True, "postgresql_standby_install_runtime": False,
            "postgresql_standby_debian_cluster": cluster.name,
            "postgresql_standby_storage_url": pair.source.wal_url,
            "postgresql_standby_primary_host": "127.0.0.1", "postgresql_standby_primary_port": pair.pg.port,
            "postgresql_standby_replication_user": "postgres",
            "postgresql_standby_replication_password": pair.password,
            "postgresql_standby_data_directory": cluster.data_dir,
            "postgresql_standby_port": cluster.port, "postgresql_standby_pg_bin_dir": pair.pg.bin_dir,
            "postgresql_standby_timeout": 120, "postgresql_standby_drkit_command": DRKIT_CMD,
            "postgresql_standby_config_dir": str(root / "etc"),
            "postgresql_standby_metrics_dir": str(root / "metrics"),
            "postgresql_standby_cron_file": str(root / "cron.d" / "drkit-standby"),
            "postgresql_standby_log_file": str(root / "log" / "standby.log"),
            "postgresql_standby_lock_file": str(root / "lock" / "standby.lock"),
            "postgresql_standby_install_cron": False}


def postmaster_pid(data_dir):
    return (Path(data_dir) / "postmaster.pid").read_text().splitlines()[0]


def test_role_builds_the_standby_as_a_debian_cluster(pair, debian_cluster, tmp_path):
    """postgresql_standby_debian_cluster: the standby is a Debian cluster run
    by pg_ctlcluster (listed online by pg_lsclusters), streams from the
    primary, and a second run changes nothing."""
    c = debian_cluster
    assert c.listed() is None
    root = role_host_dirs(pair.root / "host")
    variables = dict(debian_standby_variables(pair, root, c),
                     postgresql_standby_settings={"listen_addresses": "127.0.0.1"})
    # check mode: says what it would do, creates nothing
    dry = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, check=True,
                       tmp_dir=str(tmp_path))
    assert dry.rc == 0, dry.describe()
    (would,) = role_results(dry, BUILD_TASK)
    assert would["result"]["changed"] and "Would restore" in would["result"]["msg"], would["result"]
    assert c.listed() is None and not os.path.exists(c.data_dir)
    t0 = time.time()
    run = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, tmp_dir=str(tmp_path))
    first_seconds = time.time() - t0
    assert run.rc == 0, run.describe()
    assert pair.password not in run.text
    (built,) = role_results(run, BUILD_TASK)
    assert built["result"]["changed"] and built["result"]["status"] == "streaming", built["result"]
    assert built["result"]["data_directory"] == c.data_dir
    listed = c.listed()
    assert listed is not None and listed[2] == str(c.port) and listed[3].startswith("online"), listed
    assert listed[5] == c.data_dir, listed
    # the server pg_ctlcluster started (its command line names the cluster's config), not drkit's pg_ctl
    opts = (Path(c.data_dir) / "postmaster.opts").read_text()
    assert "config_file=/etc/postgresql/%s/%s/postgresql.conf" % (c.version, c.name) in opts, opts
    assert pair.standby_psql("SELECT pg_is_in_recovery()", port=c.port) == "t"
    assert pair.standby_psql("SELECT status FROM pg_stat_wal_receiver", port=c.port) == "streaming"
    # the given settings (postgresql.auto.conf) win over Debian's postgresql.conf; pg_hba is the cluster's in /etc
    assert pair.standby_psql("SHOW listen_addresses", port=c.port) == "127.0.0.1"
    assert pair.standby_psql("SHOW hba_file", port=c.port) == "/etc/postgresql/%s/%s/pg_hba.conf" % (c.version, c.name)
    # rows written on the primary now arrive
    pair.insert(ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP + 1, ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP + 100)
    wait_for(lambda: pair.standby_psql("SELECT count(*) FROM t", port=c.port) ==
             str(ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP + 100), what="the new rows on the standby")
    pid = postmaster_pid(c.data_dir)
    t0 = time.time()
    again = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, tmp_dir=str(tmp_path))
    second_seconds = time.time() - t0
    assert again.rc == 0 and again.stats["localhost"]["changed"] == 0, again.describe()
    assert postmaster_pid(c.data_dir) == pid
    assert c.listed()[3].startswith("online")
    # stopped (a host without systemd after a reboot): the role starts it as the cluster, not with drkit's pg_ctl
    stopped = subprocess.run(["pg_ctlcluster", c.version, c.name, "stop"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert stopped.returncode == 0 and c.listed()[3].startswith("down"), stopped.stdout
    started = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, tmp_dir=str(tmp_path))
    assert started.rc == 0, started.describe()
    (start,) = role_results(started, "Debian cluster | Start the stopped standby as the Debian cluster")
    assert start["status"] == "ok" and start["result"]["changed"], start
    assert c.listed()[3].startswith("online")
    opts = (Path(c.data_dir) / "postmaster.opts").read_text()
    assert "config_file=/etc/postgresql/%s/%s/postgresql.conf" % (c.version, c.name) in opts, opts
    assert pair.standby_psql("SELECT status FROM pg_stat_wal_receiver", port=c.port) == "streaming"
    print("debian cluster standby: first run %.1f s, second run %.1f s" % (first_seconds, second_seconds))
    print("\n".join("%6.2fs %s" % (r.get("seconds", 0), r["task"]) for r in run.results if r.get("seconds", 0) > 0.5))


def test_role_refuses_a_debian_cluster_that_is_not_its_standby(pair, debian_cluster, tmp_path):
    """An existing cluster of that name holding other data: refused before
    anything is done (no slot on the primary, the cluster as it was)."""
    c = debian_cluster
    made = subprocess.run(["pg_createcluster", c.version, c.name, "--port", str(c.port), "--datadir", c.data_dir,
                           "--start"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)
    assert made.returncode == 0, made.stdout
    c.psql("CREATE TABLE precious (id int); INSERT INTO precious VALUES (42)")
    pid = postmaster_pid(c.data_dir)
    auto_conf = (Path(c.data_dir) / "postgresql.auto.conf").read_text()
    root = role_host_dirs(pair.root / "host")
    run = run_playbook([role("drkit.backup.postgresql_standby")],
                       extra_vars=debian_standby_variables(pair, root, c), tmp_dir=str(tmp_path))
    assert run.rc != 0
    assert "Cluster %s/%s exists" % (c.version, c.name) in run.text and \
        "is not a standby drkit built" in run.text, run.describe()
    assert not role_results(run, BUILD_TASK)
    assert pair.password not in run.text
    assert c.psql("SELECT id FROM precious") == "42"
    assert c.psql("SELECT pg_is_in_recovery()") == "f"
    assert postmaster_pid(c.data_dir) == pid
    assert (Path(c.data_dir) / "postgresql.auto.conf").read_text() == auto_conf
    assert not (Path(c.data_dir) / "standby.signal").exists()
    assert pair.pg.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    # no cluster of the name, but the given data directory holds files (pg_createcluster would adopt them)
    other = NewCluster(pair.root / "debian", prefix="drkit_standby")
    other.data_dir = str(pair.root / "debian" / "someones")
    os.mkdir(other.data_dir, 0o755)
    (Path(other.data_dir) / "PG_VERSION").write_text("15\n")
    try:
        run = run_playbook([role("drkit.backup.postgresql_standby")],
                           extra_vars=debian_standby_variables(pair, root, other), tmp_dir=str(tmp_path))
        assert run.rc != 0
        assert "holds files" in run.text and "the role never overwrites one" in run.text, run.describe()
        assert other.listed() is None
        assert os.listdir(other.data_dir) == ["PG_VERSION"]
        assert pair.pg.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    finally:
        other.drop()


def run_failover_playbook(root, variables):
    """The failover playbook as the runbook runs it (FAILOVER_COMMAND), on
    this host through a one-host inventory. Returns the finished process."""
    fvars = root / "failover.json"
    fvars.write_text(json.dumps(dict(variables, failover_hosts="standby_host")))
    os.chmod(str(fvars), 0o600)
    inventory = root / "inventory"
    inventory.write_text("standby_host ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    env = ansible_environment(str(root))
    env.update({"FAILOVER_VARS": str(fvars), "INVENTORY": str(inventory), "ANSIBLE_STDOUT_CALLBACK": "default"})
    return subprocess.run(["bash", "-c", FAILOVER_COMMAND], env=env, cwd=str(root), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)


def rejoin_variables(pair, **extra):
    """failover_rejoin_standby: the repository, and the role's host paths
    below the test's directory (no runtime install, no cron package)."""
    root = role_host_dirs(pair.root / "rejoin-host")
    out = {"postgresql_standby_storage_url": pair.source.wal_url, "postgresql_standby_pg_bin_dir": pair.pg.bin_dir,
           "postgresql_standby_drkit_command": DRKIT_CMD, "postgresql_standby_install_runtime": False,
           "postgresql_standby_install_cron": False, "postgresql_standby_timeout": 120,
           "postgresql_standby_config_dir": str(root / "etc"), "postgresql_standby_metrics_dir": str(root / "metrics"),
           "postgresql_standby_cron_file": str(root / "cron.d" / "drkit-standby"),
           "postgresql_standby_log_file": str(root / "log" / "standby.log"),
           "postgresql_standby_lock_file": str(root / "lock" / "standby.lock")}
    out.update(extra)
    return root, out


def planned_failover_variables(pair, report_dir):
    return {"failover_mode": "planned", "failover_login_port": pair.pg.port, "failover_login_password": pair.password,
            "failover_standby_port": pair.standby_port, "failover_primary_data_directory": pair.pg.data_dir,
            "failover_timeout": 60, "failover_report_dir": str(report_dir)}


def test_standby_from_repository_then_planned_failover_loses_nothing(pair):
    check_standby_from_repository(pair)
    # through the playbook, as the runbook runs it: check mode first, then the failover, then the report,
    # then the old primary rejoins as a standby of the new one (on its own port)
    writer = Writer(pair)
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, what="writer")
    report_dir = pair.root / "report"
    rejoin_root, rejoin = rejoin_variables(pair)
    proc = run_failover_playbook(pair.root, dict(planned_failover_variables(pair, report_dir), failover_rejoin=True,
                                                 failover_rejoin_standby=rejoin))
    acked = writer.finish()
    old_port = pair.pg.port
    pair.pg._proc = None  # stopped by the failover; the rejoin started it again as a standby
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert pair.password not in proc.stdout
    # check mode listed the rejoin as a step of the plan
    assert "rejoin the old primary in %s as a hot standby of 127.0.0.1:%d with pg_rewind" % (
        pair.pg.data_dir, pair.standby_port) in proc.stdout, proc.stdout[-6000:]
    result = json.loads((report_dir / "failover.json").read_text())
    report_md = (report_dir / "failover.md").read_text()
    assert "RTO" in report_md
    assert pair.password not in (report_dir / "failover.json").read_text() + report_md
    print("planned failover: RTO %.3f s (promotion %.3f s), %d rows written before the switch" % (
        result["rto_seconds"], result["promote_seconds"], len(acked)))
    assert result["new_timeline"] == 2 and result["rpo"]["lost_transactions"] == 0, result
    assert result["write_served_by_port"] == pair.standby_port
    # the client's log: every committed row is on the new primary
    assert set(i for i, _t in acked) <= new_primary_ids(pair)
    # and the rows from before (those of the backup, the archive and the stream)
    # (10 rows streamed, 100 written while the lag check held replay)
    assert pair.standby_psql("SELECT count(*) FROM t WHERE id < 100000") == str(ROWS_BEFORE_BACKUP +
                                                                                ROWS_AFTER_BACKUP + 110)
    assert pair.standby_psql("SELECT pg_is_in_recovery()") == "f"
    # archiving continues from the new primary on its timeline
    wait_for(lambda: os.path.exists(pair.source.wal_url[len("file://"):] + "/00000002.history") or
             any("00000002.history" in f for _r, _d, fs in os.walk(pair.source.wal_url[len("file://"):])
                 for f in fs), what="new timeline archived")
    check_the_rejoin(pair, result, report_md, old_port, rejoin_root)


def check_the_rejoin(pair, result, report_md, old_port, rejoin_root):
    """After the planned failover the playbook's rejoin made the fenced old
    primary a hot standby of the new one, on its old port, and reported it."""
    try:
        assert "standby.signal" in result["fenced"], result  # the failover fenced it; the rejoin removed the fence
        rejoin = result["rejoin"]
        print("playbook rejoin after the planned failover: CHECKPOINT + pg_rewind %.3f s, server start to "
              "streaming %.3f s, rejoin start to streaming %.3f s, whole rejoin (role) %.3f s" % (
                  rejoin["rewind_seconds"], rejoin["catch_up_seconds"], rejoin["streaming_after_seconds"],
                  rejoin["rejoin_seconds"]))
        assert rejoin["ok"] is True and rejoin["status"] == "streaming" and rejoin["unfenced"] is True, rejoin
        # planned: the old primary stopped where the new timeline begins
        assert rejoin["rewound"] is False and rejoin["standby_port"] == old_port, rejoin
        assert rejoin["primary"] == "127.0.0.1:%d" % pair.standby_port, rejoin
        assert 0 < rejoin["rewind_seconds"] < rejoin["streaming_after_seconds"] <= rejoin["rejoin_seconds"], rejoin
        assert 0 < rejoin["catch_up_seconds"] < rejoin["streaming_after_seconds"], rejoin
        assert "## The old primary rejoined as a standby" in report_md and "Rebuild the old primary" not in report_md
        assert "| CHECKPOINT and pg_rewind | %s s |" % rejoin["rewind_seconds"] in report_md, report_md
        # the new primary streams to it, and it is a standby
        assert pair.standby_psql("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = "
                                 "'drkit_standby'") == "streaming|async"
        assert pair.standby_psql("SELECT active FROM pg_replication_slots WHERE slot_name = 'drkit_standby'") == "t"
        assert pair.standby_psql("SELECT pg_is_in_recovery()", port=old_port) == "t"
        assert pair.standby_psql("SELECT status FROM pg_stat_wal_receiver", port=old_port) == "streaming"
        assert not (Path(pair.pg.data_dir) / "drkit-fenced").exists()
        # rows written on the new primary after the rejoin arrive on the old one
        pair.standby_psql("INSERT INTO t SELECT g, 'after rejoin' FROM generate_series(800001, 800010) g")
        wait_for(lambda: pair.standby_psql("SELECT count(*) FROM t WHERE id > 800000", port=old_port) == "10",
                 what="rows streamed to the rejoined old primary")
        # the role scheduled the lag check and ran it once: streaming
        assert "standby-check" in (rejoin_root / "cron.d" / "drkit-standby").read_text()
        prom = read_textfile(str(rejoin_root / "metrics" / "drkit_standby_main.prom"))
        assert prom[("drkit_standby_streaming", '{drkit_job="standby_main"}')] == 1
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pair.pg.bin_dir, "pg_ctl"), "stop", "-D",
                        pair.pg.data_dir, "-m", "immediate", "-w"], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


BUILD_TASK = "Build the standby (from the repository, or the old primary with pg_rewind) and wait until it streams"


def role_host_dirs(root):
    for d in ("etc", "log", "lock", "metrics", "cron.d", "systemd"):
        (root / d).mkdir(parents=True)
    for d in ("lock", "metrics"):  # the runtime (not installed here) makes them writable for the job users
        os.chmod(str(root / d), 0o1777)
    return root


def build_standby_with_the_role(pair, tmp_path):
    """Role postgresql_standby: the standby built from the repository, its
    lag check scheduled and run once as postgres (metrics written)."""
    root = role_host_dirs(pair.root / "host")
    variables = {"_drkit_runtime_installed": True, "postgresql_standby_install_runtime": False,
                 "postgresql_standby_storage_url": pair.source.wal_url,
                 "postgresql_standby_primary_host": "127.0.0.1", "postgresql_standby_primary_port": pair.pg.port,
                 "postgresql_standby_replication_user": "postgres",
                 "postgresql_standby_replication_password": pair.password,
                 "postgresql_standby_data_directory": str(pair.standby_dir),
                 "postgresql_standby_port": pair.standby_port, "postgresql_standby_pg_bin_dir": pair.pg.bin_dir,
                 "postgresql_standby_timeout": 120, "postgresql_standby_drkit_command": DRKIT_CMD,
                 "postgresql_standby_config_dir": str(root / "etc"),
                 "postgresql_standby_metrics_dir": str(root / "metrics"),
                 "postgresql_standby_cron_file": str(root / "cron.d" / "drkit-standby"),
                 "postgresql_standby_log_file": str(root / "log" / "standby.log"),
                 "postgresql_standby_lock_file": str(root / "lock" / "standby.lock"),
                 "postgresql_standby_install_cron": False}
    run = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, tmp_dir=str(tmp_path))
    assert run.rc == 0, run.describe()
    assert pair.password not in run.text
    (built,) = role_results(run, BUILD_TASK)
    assert built["result"]["changed"] and built["result"]["status"] == "streaming", built["result"]
    cron = (root / "cron.d" / "drkit-standby").read_text()
    assert "* * * * * postgres /usr/bin/flock -n %s " % (root / "lock" / "standby.lock") in cron
    assert "standby-check --quiet --config %s" % (root / "etc" / "standby-main.yml") in cron
    assert pair.password not in cron
    for config in ("standby-main.yml", "standby-main-wal.yml"):
        info = os.stat(str(root / "etc" / config))
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == pwd_uid("postgres"), config
    # the check ran once as postgres: the standby streams, its metrics say so
    prom = read_textfile(str(root / "metrics" / "drkit_standby_main.prom"))
    assert prom[("drkit_standby_streaming", '{drkit_job="standby_main"}')] == 1
    assert prom[("drkit_standby_up", '{drkit_job="standby_main"}')] == 1


def test_unplanned_failover_loss_bound_holds(pair, tmp_path):
    """The standby comes from role postgresql_standby here (the planned
    failover's from the module in-process)."""
    from ansible_collections.drkit.backup.plugins.module_utils.pg.failover import pg_failover
    build_standby_with_the_role(pair, tmp_path)
    writer = Writer(pair)
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, what="writer")
    # the network to the standby stalls: the walsender stops, the primary goes on committing
    walsender = int(pair.pg.psql("SELECT pid FROM pg_stat_replication WHERE application_name = 'drkit_standby'"))
    os.kill(walsender, signal.SIGSTOP)
    n_stalled = len(writer.acked)
    wait_for(lambda: len(writer.acked) > n_stalled + 50, what="commits after the stall")
    # then the primary dies with everything it had
    postmaster = pair.pg._proc.pid
    for pid in [postmaster] + children(postmaster):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    acked = writer.finish()
    pair.pg._proc.wait(10)
    pair.pg._proc = None

    fparams = {"login_host": "127.0.0.1", "port": pair.pg.port, "login_password": pair.password,
               "standby_port": pair.standby_port, "primary_data_directory": pair.pg.data_dir, "mode": "unplanned",
               "timeout": 60}
    changed, result = pg_failover(fparams)
    rpo = result["rpo"]
    present = new_primary_ids(pair)
    missing = [(i, t) for i, t in acked if i not in present]
    print("unplanned failover: RTO %.3f s, %d of %d committed rows lost, bound %s s, exact %s" % (
        result["rto_seconds"], len(missing), len(acked), rpo["rpo_bound_seconds"], rpo.get("lost_transactions")))
    assert missing, "the stalled walsender should have cost commits"
    # the bound: nothing the client saw committed before safe_before is lost
    from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
    safe = mf.parse_time(rpo["safe_before"]).timestamp()
    assert all(t >= safe for _i, t in missing), (rpo, missing[:3])
    assert rpo["rpo_bound_seconds"] >= max(t for _i, t in missing) - min(t for _i, t in missing)
    # exact from the old primary's WAL: every lost commit counted (at most one more, never acknowledged)
    assert rpo["exact"] and len(missing) <= rpo["lost_transactions"] <= len(missing) + 1, rpo
    assert result["new_timeline"] == 2
    assert_fenced(pair)
    rejoin_the_old_primary(pair, [i for i, _t in missing], tmp_path)


def rejoin_the_old_primary(pair, lost_ids, tmp_path):
    """The fenced old primary, rewound with pg_rewind, becomes a standby of
    the new primary (role postgresql_standby with rewind, its lag check on a
    systemd timer); what only it had is gone."""
    old_dir, port = pair.pg.data_dir, free_port()
    params = pair.params(data_directory=old_dir, port=pair.standby_port, standby_port=port, rewind=True,
                         slot_name="drkit_old_primary", application_name="drkit_old_primary")
    changed, plan = pg_standby(params, check_mode=True)
    assert changed and "Would rewind" in plan["msg"] and plan["fenced"] and plan["wal_log_hints"], plan
    root = role_host_dirs(pair.root / "old-host")
    variables = {"_drkit_runtime_installed": True, "postgresql_standby_install_runtime": False,
                 "postgresql_standby_name": "old", "postgresql_standby_rewind": True,
                 "postgresql_standby_storage_url": pair.source.wal_url,
                 "postgresql_standby_primary_host": "127.0.0.1", "postgresql_standby_primary_port": pair.standby_port,
                 "postgresql_standby_replication_user": "postgres",
                 "postgresql_standby_replication_password": pair.password,
                 "postgresql_standby_data_directory": old_dir, "postgresql_standby_port": port,
                 "postgresql_standby_slot_name": "drkit_old_primary",
                 "postgresql_standby_application_name": "drkit_old_primary",
                 "postgresql_standby_pg_bin_dir": pair.pg.bin_dir, "postgresql_standby_timeout": 120,
                 "postgresql_standby_drkit_command": DRKIT_CMD, "postgresql_standby_config_dir": str(root / "etc"),
                 "postgresql_standby_metrics_dir": str(root / "metrics"), "postgresql_standby_scheduler": "systemd",
                 "postgresql_standby_systemd_unit_dir": str(root / "systemd"),
                 "postgresql_standby_cron_file": str(root / "cron.d" / "drkit-standby-old")}
    try:
        run = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, tmp_dir=str(tmp_path))
        assert run.rc == 0, run.describe()
        assert pair.password not in run.text
        (built,) = role_results(run, BUILD_TASK)
        result = built["result"]
        print("old primary rejoined: pg_rewind %.3f s, catch-up %.3f s, diverged at %s" % (
            result["rewind_seconds"], result["catch_up_seconds"], result.get("diverged_at")))
        assert result["changed"] and result["status"] == "streaming" and result["rewound"], result
        assert result["diverged_timeline"] == 1 and result["unfenced"], result
        assert pair.standby_psql("SELECT pg_is_in_recovery()", port=port) == "t"
        # the commits only the old primary had are rewound away; the new primary's rows stream in
        lost = ",".join(str(i) for i in lost_ids)
        assert pair.standby_psql("SELECT count(*) FROM t WHERE id IN (%s)" % lost, port=port) == "0"
        pair.standby_psql("INSERT INTO t SELECT g, 'after rejoin' FROM generate_series(900001, 900010) g")
        wait_for(lambda: pair.standby_psql("SELECT count(*) FROM t WHERE id > 900000", port=port) == "10",
                 what="rows streamed to the rejoined old primary")
        auto = (Path(old_dir) / "postgresql.auto.conf").read_text()
        assert "fenced" not in auto and "drkit_old_primary" in auto and pair.password not in auto
        assert not (Path(old_dir) / "drkit-fenced").exists()
        # the lag check on a systemd timer (no systemd runs here: written and verified, not enabled), run once
        units = sorted(p.name for p in (root / "systemd").iterdir())
        assert units == ["drkit-standby-old-check.service", "drkit-standby-old-check.timer"], units
        service = (root / "systemd" / "drkit-standby-old-check.service").read_text()
        assert "User=postgres" in service and "standby-check" in service and pair.password not in service
        assert "OnCalendar=*-*-* *:*:00" in (root / "systemd" / "drkit-standby-old-check.timer").read_text()
        assert not (root / "cron.d" / "drkit-standby-old").exists()
        prom = read_textfile(str(root / "metrics" / "drkit_standby_old.prom"))
        assert prom[("drkit_standby_streaming", '{drkit_job="standby_old"}')] == 1
        # a rerun finds the standby it made and changes nothing
        again = run_playbook([role("drkit.backup.postgresql_standby")], extra_vars=variables, tmp_dir=str(tmp_path))
        assert again.rc == 0 and again.stats["localhost"]["changed"] == 0, again.describe()
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pair.pg.bin_dir, "pg_ctl"), "stop", "-D",
                        old_dir, "-m", "immediate", "-w"], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("variables, says", [
    # unplanned without the old primary's data directory: nothing to rejoin on this host
    ({"failover_mode": "unplanned", "failover_rejoin_standby": {"postgresql_standby_storage_url": "file:///srv/r"}},
     "failover_rejoin: true rejoins the old primary from its data directory on this host: set "
     "failover_primary_data_directory (an absolute path; got nothing)"),
    ({"failover_primary_data_directory": "/srv/pg/old"},
     "set failover_rejoin_standby.postgresql_standby_storage_url (s3://bucket/prefix, az://container/prefix or "
     "file:///abs/path; got nothing)"),
    ({"failover_primary_data_directory": "/srv/pg/old",
      "failover_rejoin_standby": {"postgresql_standby_storage_url": "file:///srv/r",
                                  "postgresql_standby_data_directory": "/srv/pg/other"}},
     "got keys ['postgresql_standby_storage_url', 'postgresql_standby_data_directory']"),
    ({"failover_primary_data_directory": "/srv/pg/old",
      "failover_rejoin_standby": {"storage_url": "file:///srv/r"}}, "got keys ['storage_url']"),
    ({"failover_primary_data_directory": "/srv/pg/old", "failover_rejoin_standby": "file:///srv/r"},
     "must be a mapping of role postgresql_standby variables (postgresql_standby_*, e.g. "
     "postgresql_standby_storage_url), without postgresql_standby_data_directory and postgresql_standby_rewind "
     "(the playbook sets them: failover_primary_data_directory, true); got a str"),
    ({"failover_primary_data_directory": "/srv/pg/old", "failover_login_port": 5433,
      "failover_rejoin_standby": {"postgresql_standby_storage_url": "file:///srv/r"}},
     "give it another port with failover_rejoin_standby.postgresql_standby_port (default failover_login_port, the "
     "old primary's; got 5433)"),
], ids=["no-data-directory", "no-repository", "data-directory-in-mapping", "not-role-variables", "not-a-mapping",
        "same-port"])
def test_rejoin_variables_are_checked_before_anything_happens(tmp_path, variables, says):
    """No server: the playbook stops at its checks, before the plan, so
    nothing is failed over with a rejoin that could not run."""
    os.chmod(str(tmp_path), 0o755)
    proc = run_failover_playbook(tmp_path, dict({"failover_mode": "planned", "failover_standby_port": 5433,
                                                 "failover_rejoin": True, "failover_login_password": "pw-not-shown",
                                                 "failover_report_dir": str(tmp_path / "report")}, **variables))
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0, out[-3000:]
    assert "TASK [Check " in out and "FAILED!" in out
    assert says in out, out[-3000:]
    assert "TASK [Plan the failover (check mode)]" not in out and not (tmp_path / "report").exists()
    assert "pw-not-shown" not in out


def test_a_failed_rejoin_keeps_the_failover_and_the_fence(pair):
    """pg_rewind fails after the playbook's planned failover: the failover's
    report stands, the rejoin's failure is added, the play fails saying the
    failover succeeded, and the old primary is fenced again (started, it is
    read-only and archives nothing); its slot on the new primary is gone."""
    changed, built = pg_standby(pair.params())
    assert changed and built["status"] == "streaming", built
    # the server binaries, but a pg_rewind that fails the way a broken one would
    bin_dir = pair.root / "bin"
    bin_dir.mkdir()
    for name in os.listdir(pair.pg.bin_dir):
        if name != "pg_rewind":
            os.symlink(os.path.join(pair.pg.bin_dir, name), str(bin_dir / name))
    (bin_dir / "pg_rewind").write_text("#!/bin/sh\necho 'pg_rewind: error: simulated failure' >&2\nexit 1\n")
    (bin_dir / "pg_rewind").chmod(0o755)
    os.chmod(str(pair.root), 0o755)
    report_dir = pair.root / "report"
    _root, rejoin = rejoin_variables(pair, postgresql_standby_pg_bin_dir=str(bin_dir))
    proc = run_failover_playbook(pair.root, dict(planned_failover_variables(pair, report_dir), failover_rejoin=True,
                                                 failover_rejoin_standby=rejoin))
    pair.pg._proc = None  # stopped and fenced by the failover
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0, out[-6000:]
    assert pair.password not in proc.stdout
    assert "The failover succeeded: 127.0.0.1:%d is the new primary" % pair.standby_port in out, out[-6000:]
    assert "simulated failure" in out and "The old primary is fenced." in out, out[-6000:]
    assert "build the standby from the repository into a new directory" in out, out[-6000:]
    result = json.loads((report_dir / "failover.json").read_text())
    assert result["new_timeline"] == 2 and result["rpo"]["lost_transactions"] == 0 and result["rto_seconds"] > 0
    rejoin_report = result["rejoin"]
    print("failed playbook rejoin: reported after %.3f s" % rejoin_report["rejoin_seconds"])
    assert rejoin_report["ok"] is False and rejoin_report["old_primary"] == "fenced", rejoin_report
    assert rejoin_report["pg_rewind_began"] is True and "simulated failure" in rejoin_report["error"], rejoin_report
    report_md = (report_dir / "failover.md").read_text()
    assert "**RTO" in report_md and "**The rejoin failed; the failover above is done and stands.**" in report_md
    assert pair.password not in report_md + (report_dir / "failover.json").read_text()
    assert pair.standby_psql("SELECT pg_is_in_recovery()") == "f"
    assert pair.standby_psql("SELECT count(*) FROM pg_replication_slots") == "0"
    assert (Path(pair.pg.data_dir) / "drkit-fenced").exists()
    assert_fenced(pair)
