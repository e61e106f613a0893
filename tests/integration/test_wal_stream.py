# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit wal-stream against a real PostgreSQL 15 with archive_mode off: the
WAL reaches the archive only through pg_receivewal and drkit's pushes. The
server is then lost (stopped with -m immediate, the archiver killed with
SIGKILL: only what was uploaded counts) and recovered with drkit pitr from a
base backup plus the streamed archive, including the commits that were only
in the segment in progress (a streamed partial)."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from helpers import DRKIT, file_root, list_keys
from pitr_source import write_0600

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port
from ansible_collections.drkit.backup.plugins.module_utils.pg import cluster
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import pg_pitr
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import STREAM_RE, name_of_key, parse_lsn

SEG = 16 << 20


def pg15():
    return cluster.find_pg_bindir("15")


def postgres_ids():
    return cluster.os_user_ids(cluster.default_os_user({}))


def run_drkit(args, timeout=300):
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    p = subprocess.run([sys.executable, str(DRKIT)] + list(args), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout, check=False)
    return p.returncode, p.stdout, p.stderr


class Streamed(object):
    """A PostgreSQL 15 without archive_command and drkit wal-stream archiving it."""

    def __init__(self, root):
        self.root = root
        self.password = secrets.token_urlsafe(16)
        archive = root / "archive"
        archive.mkdir(mode=0o700)
        shutil.chown(str(archive), "postgres", "postgres")  # restore_command runs as postgres
        self.url = "file://%s" % archive
        self.pg = ScratchPostgres(str(root / "pg"), password=self.password, bin_dir=cluster.find_pg_bindir("15"),
                                  settings={"wal_level": "replica", "archive_mode": "off", "fsync": "off"})
        self.proc = None
        self.metrics = root / "metrics"
        self.metrics.mkdir()

    def conn(self):
        return {"login_host": self.pg.host, "port": self.pg.port, "login_user": "postgres",
                "login_password": self.password}

    def start_streaming(self, name="stream.yml", **extra):
        values = dict(self.conn(), storage_url=self.url, spool_dir=str(self.root / "spool"), partial_interval=0.5,
                      metrics_dir=str(self.metrics))
        values.update(extra)
        cfg = write_0600(self.root / ("%s-%s" % (uuid.uuid4().hex[:6], name)), values)
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        self.proc = subprocess.Popen([sys.executable, str(DRKIT), "wal-stream", "--config", cfg], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        deadline = time.time() + 60
        while self.pg.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'drkit_wal_stream' "
                           "AND state = 'streaming'") != "1":
            assert self.proc.poll() is None, self.proc.communicate()
            if time.time() > deadline:
                self.proc.kill()
                raise AssertionError("the archiver never streamed: %s" % (self.proc.communicate(),))
            time.sleep(0.1)
        return self.proc

    def stop_streaming(self, sig=signal.SIGTERM, timeout=60):
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def base_backup(self):
        cfg = write_0600(self.root / ("base-%s.yml" % uuid.uuid4().hex[:6]),
                         dict(self.conn(), storage_url=self.url, mode="physical", wal_wait_timeout=120))
        rc, out, err = run_drkit(["pg-backup", "--json", "--config", cfg])
        assert rc == 0, err
        return out

    def streamed_partials(self):
        """{segment: newest end} of the streamed partials in the archive."""
        out = {}
        for key in list_keys(self.url):
            name = name_of_key(key)
            if name and STREAM_RE.match(name):
                seg, end = name[:24], int(name.split(".")[1], 16)
                out[seg] = max(end, out.get(seg, 0))
        return out

    def wait_stored(self, segment, timeout=120):
        """Until the archive holds ``segment`` in full."""
        deadline = time.time() + timeout
        while not any(k.endswith("/%s.zst" % segment) for k in list_keys(self.url)):
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.time() < deadline, "%s was never stored" % segment
            time.sleep(0.2)

    def wait_streamed_past(self, lsn_text, timeout=60):
        """Until a streamed partial (or the full segment) holds WAL up to ``lsn_text``."""
        lsn = parse_lsn(lsn_text)
        seg = self.pg.psql("SELECT pg_walfile_name('%s')" % lsn_text)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            if any(k.endswith("/%s.zst" % seg) for k in list_keys(self.url)):
                return seg, None
            end = self.streamed_partials().get(seg)
            if end is not None and end >= lsn % SEG:
                return seg, end
            time.sleep(0.2)
        raise AssertionError("WAL up to %s never reached the archive: %s" % (lsn_text, self.streamed_partials()))


@pytest.fixture
def streamed(scratch_dir):
    s = Streamed(scratch_dir)
    s.pg.start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate()
        s.pg.destroy()


@pytest.fixture
def new_data_dir(scratch_dir):
    made = []

    def new():
        base = scratch_dir / ("restore-%d" % len(made))
        base.mkdir()
        run = base / "run"
        run.mkdir(mode=0o700)
        shutil.chown(str(run), "postgres", "postgres")
        made.append(base)
        return str(base / "data"), str(run)
    yield new
    for base in made:
        data = str(base / "data")
        if cluster.pidfile_live(data):
            cluster.stop_server(pg15(), data, postgres_ids(), mode="immediate")


def recover(s, new_data_dir, **target):
    data, run = new_data_dir()
    port = free_port()
    params = dict(storage_url=s.url, data_directory=data, port=port, drkit_command="%s %s" % (sys.executable, DRKIT),
                  settings={"unix_socket_directories": run, "listen_addresses": "127.0.0.1"})
    params.update(target)
    _changed, res = pg_pitr(params)
    return port, res


def rows(port, password):
    import psycopg
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT phase FROM marks ORDER BY id").fetchall()]


def test_lost_server_recovers_the_commits_only_a_streamed_partial_held(streamed, new_data_dir):
    s = streamed
    pg = s.pg
    pg.psql("CREATE TABLE marks (id serial primary key, phase text)")
    s.start_streaming()
    s.base_backup()  # needs no archive_command: the streamer's slot is active
    pg.psql("INSERT INTO marks (phase) VALUES ('before')")
    time.sleep(1.1)
    noted = pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.1)
    pg.psql("INSERT INTO marks (phase) VALUES ('after')")
    end = pg.psql("SELECT pg_current_wal_flush_lsn()")
    seg, partial_end = s.wait_streamed_past(end)
    assert partial_end is not None, "the last commits were in a full segment: nothing to prove about partials"
    # the host is lost: the server stops dead, the archiver is killed with what it had not uploaded
    pg.stop(mode="immediate")
    s.proc.kill()
    s.proc.communicate()
    assert not [k for k in list_keys(s.url) if k.endswith("/%s.zst" % seg)]  # only partials of that segment

    port, res = recover(s, new_data_dir, target="latest")
    assert rows(port, s.password) == ["before", "after"], res
    cluster.stop_server(pg15(), res["data_directory"], postgres_ids(), mode="fast")

    port, res = recover(s, new_data_dir, target="time", target_value=noted)
    assert rows(port, s.password) == ["before"], res


def test_archiver_restarted_leaves_no_gap_and_prunes_superseded_partials(streamed):
    s = streamed
    pg = s.pg
    s.start_streaming()
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    s.wait_streamed_past(pg.psql("SELECT pg_current_wal_flush_lsn()"))
    rc, out, err = s.stop_streaming()  # SIGTERM: a clean stop, exit 0
    assert rc == 0, err
    first = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    for _round in range(3):  # WAL written while the archiver is down stays on the server (the slot)
        pg.psql("INSERT INTO t SELECT g FROM generate_series(1, 200000) g")
        pg.psql("SELECT pg_switch_wal()")
    retained = int(pg.psql("SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
                           "WHERE slot_name = 'drkit_wal_stream'"))
    assert retained > 0
    s.start_streaming(name="again.yml")
    last = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    s.wait_stored(last)
    rc, out, err = s.stop_streaming()
    assert rc == 0, err
    segments = sorted(name_of_key(k) for k in list_keys(s.url) if name_of_key(k) and len(name_of_key(k)) == 24)
    numbers = [int(n[8:16], 16) * 256 + int(n[16:24], 16) for n in segments]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), segments  # no gap
    assert first in segments and last in segments
    # a segment stored in full has no streamed partial left
    assert not [seg for seg in s.streamed_partials() if seg in segments]
    assert (s.metrics / "drkit_wal_stream.prom").exists(), (list(s.metrics.iterdir()), err)
    text = (s.metrics / "drkit_wal_stream.prom").read_text()
    assert "drkit_wal_stream_gap" in text and "drkit_wal_stream_slot_retained_bytes" in text, text
    assert not [p.name for p in (s.root / "spool").iterdir() if len(p.name) == 24]  # pushed, then removed


def test_bad_settings_are_clear(scratch_dir):
    rc, out, err = run_drkit(["wal-stream", "--storage-url", "file://%s" % scratch_dir, "--port", "1"])
    assert rc == 2 and "spool_dir is required" in err, err
    rc, out, err = run_drkit(["wal-stream", "--storage-url", "file://%s" % scratch_dir, "--spool-dir",
                              str(scratch_dir / "s"), "--partial-interval", "0"])
    assert rc == 2 and "partial_interval" in err, err
    assert file_root("file://%s" % scratch_dir).exists()


def test_a_recreated_slot_after_lost_wal_reports_the_gap(streamed):
    """The slot is dropped while the archiver is down and the server recycles
    the WAL written meanwhile: the archiver recreates the slot, streams on
    from where the server is, and reports the gap (log, metric, exit 6 with
    both segment names) instead of papering over it."""
    s = streamed
    pg = s.pg
    s.start_streaming()
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    s.wait_streamed_past(pg.psql("SELECT pg_current_wal_flush_lsn()"))
    rc, out, err = s.stop_streaming()
    assert rc == 0, err
    pg.psql("SELECT pg_drop_replication_slot('drkit_wal_stream')")
    lost = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    for _round in range(4):  # with no slot, checkpoints recycle this WAL
        pg.psql("INSERT INTO t SELECT g FROM generate_series(1, 100000) g")
        pg.psql("SELECT pg_switch_wal()")
        pg.psql("CHECKPOINT")
    s.start_streaming(name="again.yml")
    last = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    s.wait_stored(last)
    rc, out, err = s.stop_streaming()
    assert rc == 6, err
    assert "WAL gap in the archive" in err and "take a new base backup" in err.lower(), err
    assert lost not in [name_of_key(k) for k in list_keys(s.url)]
    text = (s.metrics / "drkit_wal_stream.prom").read_text()
    assert 'drkit_wal_stream_gap{drkit_job="wal_stream",kind="pg_wal",slot="drkit_wal_stream"} 1' in text, text


def metric(s, name):
    """The value of ``name`` in the archiver's metrics file, or None."""
    path = s.metrics / "drkit_wal_stream.prom"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_metrics(s, predicate, what, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert s.proc.poll() is None, s.proc.communicate()
        lag, age = metric(s, "drkit_wal_stream_archive_lag_bytes"), metric(s, "drkit_wal_stream_unarchived_seconds")
        if lag is not None and age is not None and predicate(lag, age):
            return lag, age
        time.sleep(0.5)
    raise AssertionError("the metrics never showed %s: %s" % (what, (s.metrics / "drkit_wal_stream.prom").read_text()))


def test_rpo_metrics_show_wal_the_archive_does_not_hold_and_how_long(streamed):
    s = streamed
    s.start_streaming()
    wait_metrics(s, lambda lag, age: lag == 0 and age == 0, "the archive caught up")
    # pg_receivewal frozen: the server goes on committing, nothing reaches the archive
    receiver = int(subprocess.check_output(["pgrep", "-P", str(s.proc.pid), "pg_receivewal"]).split()[0])
    os.kill(receiver, signal.SIGSTOP)
    try:
        s.pg.psql("CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g")
        lag, age = wait_metrics(s, lambda lag, age: lag > 1 << 20 and age >= 6, "WAL waiting for 6 s or more")
    finally:
        os.kill(receiver, signal.SIGCONT)
    assert metric(s, "drkit_wal_stream_up") == 1
    assert metric(s, "drkit_wal_stream_updated_timestamp_seconds") > time.time() - 30
    # once it flows again the archive catches up and the age goes back to 0
    wait_metrics(s, lambda lag, age: lag == 0 and age == 0, "the archive caught up again")
    rc, _out, err = s.stop_streaming()
    assert rc == 0, err


def test_synchronous_mode_loses_no_acknowledged_commit(streamed, new_data_dir):
    """--synchronous with the archiver named in synchronous_standby_names: a
    commit returns only once pg_receivewal has flushed it, so a server lost
    right after the commit (the archiver's host survives and stops cleanly,
    storing what it received) is recovered with that commit, though no
    partial was uploaded between the commit and the loss."""
    s = streamed
    pg = s.pg
    pg.psql("CREATE TABLE marks (id serial primary key, phase text)")
    s.start_streaming(synchronous=True, partial_interval=3600)
    s.base_backup()
    pg.psql("ALTER SYSTEM SET synchronous_standby_names = 'drkit_wal_stream'")
    pg.psql("SELECT pg_reload_conf()")
    deadline = time.time() + 60
    while pg.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'drkit_wal_stream'") != "sync":
        assert time.time() < deadline, "the archiver never became the synchronous standby"
        time.sleep(0.2)
    before = s.streamed_partials()
    pg.psql("INSERT INTO marks (phase) VALUES ('acknowledged')")
    assert s.streamed_partials() == before  # nothing uploaded since: the spool alone holds it
    pg.stop(mode="immediate")
    rc, _out, err = s.stop_streaming()
    assert rc == 0, err
    port, res = recover(s, new_data_dir, target="latest")
    assert rows(port, s.password) == ["acknowledged"], res
