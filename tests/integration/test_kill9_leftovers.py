# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kill -9 of ``drkit`` (bin/drkit, real processes, real PostgreSQL 15 on
loopback) during a logical backup, a restore and a test-restore verify.

Kill points are events, never a sleep: a file of pg_dump's appearing in the
work dir, the staging or scratch database appearing in pg_database, pg_restore
copying rows into it. After the kill:

* no file anywhere in the temp directory or the work dir holds the
  PostgreSQL password (drkit used to leave it in ``drkit-pg-*/pgpass``);
* the next successful run removes what the dead process left (its temp
  directories, the uncompressed dump, the download, the scratch and staging
  databases), and nothing else: a live drkit's objects, another host's, and
  the database an interrupted restore had renamed away all survive.

Every drkit here runs with its own TMPDIR, so the janitor sees only this
test's temp directory (docs/failure-promises.md, "kill -9 and leftovers")."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from helpers import DRKIT, drop_database, make_sample_database, pg_module_args, recorded_counts, table_row_counts
from support.netcheck import process_tree
from support.unit_helpers import dead_tag

WAIT = 120  # seconds an event may take before the test gives up


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def source(pg, tmp_path_factory):
    """A database big enough that a dump or a restore of it takes a couple of
    seconds, and a custom-format backup of it (taken in-process)."""
    name = "k9src_%s" % uuid.uuid4().hex[:8]
    make_sample_database(pg, name, scale=0.05, seed=11)
    url = "file://%s" % tmp_path_factory.mktemp("k9-store")
    params = pg_module_args(pg, name)
    params["storage_url"] = url
    _changed, bak = pg_backup(params)
    try:
        yield name, url, bak
    finally:
        drop_database(pg, name)


class Drkit(object):
    """bin/drkit with the password in a 0600 --config file (never argv), its
    own TMPDIR and a work dir, both scanned by the tests."""

    def __init__(self, tmp_path, pg):
        self.pg = pg
        self.tmp = tmp_path / "tmp"
        self.work = tmp_path / "work"
        for d in (self.tmp, self.work):
            d.mkdir(mode=0o700)
        cfg_dir = tmp_path / "cfg"
        cfg_dir.mkdir(mode=0o700)
        self.cfg = cfg_dir / "drkit.yml"
        fd = os.open(str(self.cfg), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump({"login_password": pg.password}, fh)
        self.env = dict(os.environ, TMPDIR=str(self.tmp))
        self.env.pop("PGPASSWORD", None)

    def argv(self, args):
        return [sys.executable, str(DRKIT)] + list(args) + [
            "--config", str(self.cfg), "--host", self.pg.host, "--port", str(self.pg.port),
            "--user", self.pg.superuser, "--work-dir", str(self.work)]

    def popen(self, args):
        return subprocess.Popen(self.argv(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)

    def run(self, args):
        return subprocess.run(self.argv(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=600, check=False)

    def leftovers(self):
        """drkit's entries in the temp directory and the work dir."""
        return sorted("%s/%s" % (d.name, n) for d in (self.tmp, self.work) for n in os.listdir(str(d))
                      if "drkit" in n)

    def files_holding_password(self):
        secret = self.pg.password.encode("utf-8")
        hits = []
        for root in (self.tmp, self.work):
            for d, _dirs, files in os.walk(str(root)):
                for f in files:
                    path = os.path.join(d, f)
                    try:
                        with open(path, "rb") as fh:
                            if secret in fh.read():
                                hits.append(path)
                    except OSError:
                        pass
        return hits


@pytest.fixture
def drkit(tmp_path, pg):
    return Drkit(tmp_path, pg)


def gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")


def kill9_when(proc, ready, what):
    """SIGKILL drkit (the process alone, as the OOM killer or ``kill -9 PID``
    would) once ``ready()``; then wait until its orphaned children (pg_dump,
    pg_restore) have ended by themselves."""
    deadline = time.time() + WAIT
    while proc.poll() is None and not ready():
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.02)
    assert proc.poll() is None, "drkit ended before %s: %s" % (what, proc.communicate()[1][-2000:])
    children = process_tree(proc.pid)[1:]
    os.kill(proc.pid, signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    while not all(gone(p) for p in children):
        assert time.time() < deadline, "orphaned children %s did not end" % children
        time.sleep(0.05)
    return err


def databases(pg, like):
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE '%s' ORDER BY 1" % like)
    return [line for line in out.splitlines() if line]


def dump_files(work):
    return [f for d, _dirs, files in os.walk(str(work)) for f in files if f.endswith(".dat")]


# --------------------------------------------------------------------------
# the three kill -9 scenarios


def test_kill9_during_directory_backup(pg, source, drkit):
    """kill -9 while pg_dump -Fd writes the uncompressed dump into the work
    dir: no password on disk; the next backup removes the dead run's dump."""
    db, url, _bak = source
    args = ["pg-backup", "--database", db, "--format", "directory", "--jobs", "2", "--storage-url", url]
    proc = drkit.popen(args)
    kill9_when(proc, lambda: dump_files(drkit.work), "pg_dump writing the dump directory")
    assert drkit.files_holding_password() == [], "the password was left on disk"
    left = drkit.leftovers()
    assert any(n.startswith("work/drkit-dump-") for n in left), left  # the janitor's job

    again = drkit.run(args)
    assert again.returncode == 0, again.stderr
    assert drkit.leftovers() == [], "the next run did not remove %s:\n%s" % (left, again.stderr)
    assert "removed" in again.stderr and "dead drkit process" in again.stderr, again.stderr
    assert drkit.files_holding_password() == []


def test_kill9_during_parallel_restore_at_the_name_limit(pg, source, drkit):
    """kill -9 while a restore with jobs=2 downloads into the work dir and
    restores into its staging database; the target's name is 63 bytes, so
    the staging name is cut to the limit and must still be recognised."""
    _db, url, bak = source
    target = "k9_%s%s" % (uuid.uuid4().hex[:8], "é" * 26)
    assert len(target.encode("utf-8")) == 63
    other = "k9_other_%s" % uuid.uuid4().hex[:8]
    args = ["restore", "--storage-url", url, "--backup-id", bak["backup_id"], "--jobs", "2"]
    proc = drkit.popen(args + ["--target-database", target])
    try:
        def staging_and_download():
            return databases(pg, "%__drkit_restore_%") and any(
                os.path.getsize(os.path.join(d, f)) > 0 for d, _x, fs in os.walk(str(drkit.work)) for f in fs)
        kill9_when(proc, staging_and_download, "the staging database and the download")
        assert drkit.files_holding_password() == [], "the password was left on disk"
        (staging,) = databases(pg, "%__drkit_restore_%")
        # cut to the limit on a character boundary ("é" is 2 bytes)
        assert 62 <= len(staging.encode("utf-8")) <= 63 and staging.startswith(target[:11] + "é")
        assert any(n.startswith("work/drkit-restore-") for n in drkit.leftovers())

        again = drkit.run(args + ["--target-database", other])
        assert again.returncode == 0, again.stderr
        assert databases(pg, "%__drkit_%") == [], again.stderr
        assert drkit.leftovers() == [], again.stderr
        assert databases(pg, target) == []  # the killed restore never put anything in place
        assert table_row_counts(pg, other) == recorded_counts(bak["manifest"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in [target, other] + databases(pg, "%__drkit_restore_%"):
            drop_database(pg, name)


def test_kill9_during_verify_restore_level(pg, source, drkit):
    """kill -9 while pg_restore copies rows into verify's scratch database:
    the next verify drops it (and its own)."""
    _db, url, bak = source
    args = ["verify", "--level", "restore", "--jobs", "1", "--storage-url", url, "--backup-id", bak["backup_id"]]
    proc = drkit.popen(args)

    def copying():
        scratch = databases(pg, "drkit\\_verify\\_%")
        return scratch and pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
                                   "AND query LIKE 'COPY%%'" % scratch[0]).strip() != "0"
    try:
        kill9_when(proc, copying, "pg_restore copying into the scratch database")
        assert drkit.files_holding_password() == [], "the password was left on disk"
        assert len(databases(pg, "drkit\\_verify\\_%")) == 1

        again = drkit.run(args)
        assert again.returncode == 0, again.stderr
        assert databases(pg, "drkit\\_verify\\_%") == [], again.stderr
        assert drkit.leftovers() == []
    finally:
        for name in databases(pg, "drkit\\_verify\\_%"):
            drop_database(pg, name)


# --------------------------------------------------------------------------
# kill -9 inside a forced restore's swap

# Runs pg/restore.py's _swap in a process of its own, with a hook that stops
# after the first rename (target -> old name) until the test kills it.
SWAP_SCRIPT = r"""
import importlib.util, os, sys, time
from importlib.machinery import SourceFileLoader
loader = SourceFileLoader("drkit_bin", sys.argv[1])
spec = importlib.util.spec_from_loader("drkit_bin", loader)
bin_drkit = importlib.util.module_from_spec(spec)
loader.exec_module(bin_drkit)
bin_drkit.load_engine()
from drkit_engine.pg import client, restore
try:
    from drkit_engine.pg.janitor import OLD, STAGING, unique_name
except ImportError:  # drkit before the janitor
    OLD, STAGING, unique_name = "__drkit_old", "__drkit_restore", client.unique_name
target = sys.argv[2]
cp = {"login_host": sys.argv[3], "port": int(sys.argv[4]), "login_user": sys.argv[5],
      "login_password": os.environ["PGPASSWORD"], "ssl_mode": "disable", "connect_timeout": 10}
conn = client.connect(cp, "postgres", autocommit=True)
staging, old = unique_name(target, STAGING), unique_name(target, OLD)
client.create_database(conn, staging)
rename = restore._rename

def hooked(conn, a, b):
    rename(conn, a, b)
    print("renamed %s %s" % (a, b), flush=True)
    time.sleep(3600)  # here the test kills us

restore._rename = hooked
print("staging %s" % staging, flush=True)
restore._swap(conn, target, staging, old)
"""


def test_kill9_between_the_two_renames_of_the_swap(pg, source, drkit, tmp_path):
    """A forced restore swaps by renaming the target away, then the staging
    copy into place. Killed between the two renames, the target must still
    hold the user's data under its own name (both renames are one
    transaction), and the next run drops the staging copy only."""
    _db, url, bak = source
    target = "k9_swap_%s" % uuid.uuid4().hex[:8]
    pg.psql('CREATE DATABASE "%s"' % target)
    pg.psql("CREATE TABLE precious (v int); INSERT INTO precious VALUES (7)", dbname=target)
    script = tmp_path / "swap.py"
    script.write_text(SWAP_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(DRKIT), target, pg.host, str(pg.port),
                             pg.superuser], env=dict(drkit.env, PGPASSWORD=pg.password),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        staging = proc.stdout.readline().split()[-1]
        renamed = proc.stdout.readline()
        assert renamed.startswith("renamed %s " % target), renamed + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert databases(pg, target) == [target], "the target is gone; the data is only in %s" % (
            databases(pg, target + "\\_\\_drkit\\_old\\_%"))
        assert pg.psql("SELECT v FROM precious", dbname=target) == "7"
        assert databases(pg, staging) == [staging]

        sweep = drkit.run(["verify", "--level", "restore", "--storage-url", url, "--backup-id", bak["backup_id"]])
        assert sweep.returncode == 0, sweep.stderr
        assert "dropped %s" % staging in sweep.stderr, sweep.stderr
        assert databases(pg, target + "%") == [target]
        assert pg.psql("SELECT v FROM precious", dbname=target) == "7"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in databases(pg, target + "%"):
            drop_database(pg, name)


# --------------------------------------------------------------------------
# what the janitor must never touch


def test_janitor_spares_live_processes_other_hosts_and_renamed_originals(pg, source, drkit):
    """A stopped (alive) restore keeps its staging database and download;
    names of another host survive; a same-host dead process's
    ``__drkit_old_`` database (the original an interrupted restore renamed
    away) is kept and named; a same-host dead scratch database goes."""
    from ansible_collections.drkit.backup.plugins.module_utils.core import janitor

    _db, url, bak = source
    assert janitor.host_id() != "0badc0de"
    dead, foreign_tag = dead_tag(), dead_tag("0badc0de")
    ours_dead = "drkit_verify_%s_0001" % dead
    foreign_db = "drkit_verify_%s_0002" % foreign_tag
    renamed_away = "k9orig__drkit_old_%s_0003" % dead
    foreign_dir = drkit.tmp / ("drkit-restore-%s-abcdefgh" % foreign_tag)
    ours_dead_dir = drkit.tmp / ("drkit-restore-%s-abcdefgh" % dead)
    for name in (ours_dead, foreign_db, renamed_away):
        pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql("CREATE TABLE precious (v int); INSERT INTO precious VALUES (42)", dbname=renamed_away)
    for d in (foreign_dir, ours_dead_dir):
        d.mkdir()
        (d / "database.pgdump").write_bytes(b"x" * 10)

    live_target = "k9_live_%s" % uuid.uuid4().hex[:8]
    live = drkit.popen(["restore", "--storage-url", url, "--backup-id", bak["backup_id"], "--jobs", "2",
                        "--target-database", live_target])
    try:
        deadline = time.time() + WAIT
        while not (databases(pg, live_target + "\\_\\_drkit\\_restore\\_%") and os.listdir(str(drkit.work))):
            assert live.poll() is None, live.communicate()[1]
            assert time.time() < deadline, "the live restore made no staging database"
            time.sleep(0.02)
        os.kill(live.pid, signal.SIGSTOP)  # alive, and holding still
        live_objects = (databases(pg, live_target + "\\_\\_drkit\\_restore\\_%"),
                        [n for n in drkit.leftovers() if n.startswith("work/")])

        sweep = drkit.run(["verify", "--level", "restore", "--storage-url", url, "--backup-id", bak["backup_id"]])
        assert sweep.returncode == 0, sweep.stderr
        assert databases(pg, ours_dead) == [] and not ours_dead_dir.exists(), sweep.stderr  # the janitor ran
        assert databases(pg, foreign_db) == [foreign_db] and foreign_dir.exists()
        assert databases(pg, renamed_away) == [renamed_away]
        assert pg.psql("SELECT v FROM precious", dbname=renamed_away) == "42"
        assert "kept %s" % renamed_away in sweep.stderr, sweep.stderr
        assert (databases(pg, live_target + "\\_\\_drkit\\_restore\\_%"),
                [n for n in drkit.leftovers() if n.startswith("work/")]) == live_objects

        os.kill(live.pid, signal.SIGCONT)
        _out, err = live.communicate(timeout=WAIT)
        assert live.returncode == 0, err
        assert table_row_counts(pg, live_target) == recorded_counts(bak["manifest"])
    finally:
        if live.poll() is None:
            os.kill(live.pid, signal.SIGCONT)
            live.kill()
            live.wait()
        for name in (ours_dead, foreign_db, renamed_away, live_target):
            drop_database(pg, name)
        for name in databases(pg, live_target + "\\_\\_drkit\\_%"):
            drop_database(pg, name)
