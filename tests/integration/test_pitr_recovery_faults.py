# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recovery path under faults (issue 13, holes 8-11), for real: a
PostgreSQL 15 cluster archiving with ``drkit wal-push`` into SeaweedFS S3.

The lineage every test here starts from (module fixture ``lineage``)::

    C1 (timeline 1): marks 'tl1-base'   base backup B1
                     'tl1-a'  | T1 |  'tl1-b'  | T_OLD |  'tl1-c'     then C1 is gone
    PITR of B1 to T1 with keep_archiving -> C2, promoted: timeline 2, archiving
    into the SAME repository
    C2 (timeline 2): 'tl2-a'  | T2 |  recovery settings an older drkit left
                     (ALTER SYSTEM)  'tl2-b'  base backup B2 of C2
                     LSN Y  'tl2-c' (two acknowledged commits, T3 between them)

and the scenarios:

(a) PITR after PITR: from B2 to latest (every acknowledged commit), to T3
    (B2 again), to T2 on timeline 2, to T_OLD on timeline 1's branch
    (refused with the choice explained; given timeline 1: timeline 1's rows);
    ``verify --level restore`` of B2;
(b) one flipped byte in an archived segment: exit 8, and the directory does
    not start as a primary; the rerun names the failed recovery;
(c) kill -9 of drkit pitr during the base-backup restore and during replay
    (deterministic: the process kills itself from a hook, after the 20th tar
    member / once the server log shows a restored WAL file / once it shows
    the pause at the target, just before the promotion): the server never
    promotes itself, no secret is in the data directory, the rerun says what
    it found and succeeds;
(d) LSN precision: PostgreSQL stopping inside the last archived segment,
    short of the end of the archive, is caught.

Strings (marker name, messages) are spelled out here rather than imported, so
that the tests also run, and fail, against the engine before the fix.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
from helpers import DRKIT, REPO_ROOT, run_drkit
from test_pitr import connect_restored, copy_archive, drkit_command, new_cluster, pitr_params

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port, make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg import backup as pg_physical
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import pg_pitr
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import ZstdDecompress
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import fetch_file
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import list_history, list_timeline
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import (format_lsn, lsn_segment,
                                                                                   parse_history, segment_number,
                                                                                   wal_key)

MARKER = "drkit-pitr.incomplete"
PHASES_ALL = {"tl1-base": 5, "tl1-a": 5, "tl2-a": 5, "tl2-b": 5, "tl2-c": 10}
BIN = find_pg_bindir("15")


def now_utc(pg):
    return pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


def pause():
    time.sleep(1.1)  # commits on either side of a noted time are at least a second apart


def insert(conn_or_pg, phase, rows=5):
    sql = "INSERT INTO marks (phase) SELECT '%s' FROM generate_series(1, %d)" % (phase, rows)
    if hasattr(conn_or_pg, "psql"):
        conn_or_pg.psql(sql)
    else:
        conn_or_pg.execute(sql)


def wait_archived(conn, seg, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").fetchone()[0]
        if last and last[:24] >= seg:
            return
        time.sleep(0.2)
    raise AssertionError("%s not archived: %s" % (seg, conn.execute("SELECT * FROM pg_stat_archiver").fetchone()))


def phases(port, password):
    conn = connect_restored(port, password, dbname="postgres")
    try:
        return dict(conn.execute("SELECT phase, count(*) FROM marks GROUP BY 1").fetchall())
    finally:
        conn.close()


def as_postgres():
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


def pg_ctl(*args, timeout=120):
    return subprocess.run([os.path.join(BIN, "pg_ctl")] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, check=False,
                          cwd="/", **as_postgres())


def postmaster_pid(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as fh:
            pid = int(fh.readline())
    except (IOError, OSError, ValueError):
        return None
    return pid if os.path.exists("/proc/%d" % pid) else None


def controldata_state(data_dir):
    out = subprocess.run([os.path.join(BIN, "pg_controldata"), data_dir], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Database cluster state")][0]


def in_recovery(port, password):
    conn = connect_restored(port, password, dbname="postgres")
    try:
        return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    finally:
        conn.close()


def try_to_start(data_dir, password, scratch):
    """pg_ctl start on what a failed or interrupted recovery left. Returns
    'refused' (it does not start), 'in recovery' or 'PRIMARY'; the server is
    stopped again."""
    log = os.path.join(scratch, "start-%s.log" % uuid.uuid4().hex[:6])
    with open(log, "w"):
        pass
    shutil.chown(log, "postgres", "postgres")
    proc = pg_ctl("start", "-D", data_dir, "-w", "-t", "90", "-l", log, "-o", "-c listen_addresses=127.0.0.1")
    try:
        if proc.returncode != 0 or not postmaster_pid(data_dir):
            return "refused"
        with open(os.path.join(data_dir, "postmaster.pid")) as fh:
            port = int(fh.read().split("\n")[3])
        try:
            return "in recovery" if in_recovery(port, password) else "PRIMARY"
        except psycopg.OperationalError:
            # up as a hot standby, then stopped by the FATAL of its recovery
            deadline = time.time() + 60
            while postmaster_pid(data_dir) and time.time() < deadline:
                time.sleep(0.2)
            assert not postmaster_pid(data_dir), "running but refusing connections"
            return "refused"
    finally:
        if postmaster_pid(data_dir):
            pg_ctl("stop", "-D", data_dir, "-m", "immediate", "-w")


def files_holding(root, secret):
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as fh:
                    if secret.encode() in fh.read():
                        out.append(path)
            except (IOError, OSError):
                pass
    return out


def said(proc):
    return "exit %s\nstdout: %s\nstderr: %s" % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])


# --------------------------------------------------------------------------
# the lineage


@pytest.fixture(scope="module")
def lineage(s3, scratch_root):
    root, c1 = new_cluster(s3, scratch_root, "pitr-faults")
    facts = {"root": root, "url": c1.url, "cluster": c1, "password": c1.pg.password}
    c2_dir = os.path.join(make_scratch_dir(prefix="c2-", parent=root), "data")
    try:
        pg = c1.pg
        pg.psql("CREATE TABLE marks (id bigserial PRIMARY KEY, phase text NOT NULL, "
                "at timestamptz NOT NULL DEFAULT clock_timestamp())")
        insert(pg, "tl1-base")
        _changed, b1 = pg_physical.pg_backup(c1.params(wal_wait_timeout=60))
        facts["b1"] = b1["backup_id"]
        insert(pg, "tl1-a")
        c1.switch_and_wait()
        pause()
        facts["t1"] = now_utc(pg)
        pause()
        insert(pg, "tl1-b")  # on timeline 1 only: after the first PITR's target
        pause()
        facts["t_old"] = now_utc(pg)
        pause()
        insert(pg, "tl1-c")
        c1.switch_and_wait()
        pg.stop()  # the old primary is gone

        # The first PITR: C2 becomes the primary and archives into the same repository.
        p = pitr_params(c1, c2_dir, target="time", target_value=facts["t1"], keep_archiving=True)
        _changed, res = pg_pitr(p)
        assert res["status"] == "promoted", res
        facts["c2_dir"], facts["c2_port"] = c2_dir, p["port"]
        with open(os.path.join(c2_dir, "postgresql.auto.conf")) as fh:
            facts["c2_auto_conf"] = fh.read()
        conn = connect_restored(p["port"], c1.pg.password, dbname="postgres")
        try:
            insert(conn, "tl2-a")
            pause()
            facts["t2"] = conn.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                       "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").fetchone()[0]
            pause()
            # What an older drkit left in every promoted cluster (issue 13, hole 8).
            as_pg = facts["t1"].replace("T", " ").replace("Z", "+00")
            conn.execute("ALTER SYSTEM SET recovery_target_time = '%s'" % as_pg)
            conn.execute("ALTER SYSTEM SET recovery_target_action = 'promote'")
            conn.execute("ALTER SYSTEM SET recovery_target_timeline = 'latest'")
            insert(conn, "tl2-b")
            params = c1.params(wal_wait_timeout=60, login_host="127.0.0.1", port=p["port"])
            _changed, b2 = pg_physical.pg_backup(params)
            facts["b2"] = b2["backup_id"]
            facts["y"] = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            insert(conn, "tl2-c")
            pause()
            facts["t3"] = conn.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                       "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").fetchone()[0]
            pause()
            insert(conn, "tl2-c")
            seg = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            assert segment_number(seg) == segment_number(conn.execute(
                "SELECT pg_walfile_name('%s')" % facts["y"]).fetchone()[0]), "Y is not in the last segment"
            wait_archived(conn, seg)
            facts["last_segment"] = seg
        finally:
            conn.close()
        assert pg_ctl("stop", "-D", c2_dir, "-m", "fast", "-w").returncode == 0
        yield facts
    finally:
        if postmaster_pid(c2_dir):
            pg_ctl("stop", "-D", c2_dir, "-m", "immediate", "-w")
        c1.pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def new_dir(scratch_root):
    made = []

    def new():
        base = make_scratch_dir(prefix="pf-", parent=str(scratch_root))
        run = os.path.join(base, "run")
        os.mkdir(run, 0o700)
        shutil.chown(run, "postgres", "postgres")
        made.append(base)
        return os.path.join(base, "data"), run
    yield new
    for base in made:
        data = os.path.join(base, "data")
        if postmaster_pid(data):
            pg_ctl("stop", "-D", data, "-m", "immediate", "-w")
        shutil.rmtree(base, ignore_errors=True)


def pitr_argv(url, data_dir, run_dir, port, *extra):
    return ["pitr", "--json", "--storage-url", url, "--data-directory", data_dir, "--port", str(port),
            "--drkit-command", drkit_command(), "--timeout", "300",
            "--set", "unix_socket_directories=%s" % run_dir, "--set", "listen_addresses=127.0.0.1"] + list(extra)


def s3_config(lineage):
    s3 = lineage["cluster"].s3
    return {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
            "region": s3.region}


def drkit_pitr(lineage, data_dir, run_dir, port, *extra, url=None):
    return run_drkit(pitr_argv(url or lineage["url"], data_dir, run_dir, port, *extra),
                     config=s3_config(lineage), timeout=600)


# --------------------------------------------------------------------------
# (a) PITR after PITR


def test_promoted_cluster_keeps_none_of_the_recovery_settings(lineage):
    text = lineage["c2_auto_conf"]
    for name in ("recovery_target", "restore_command"):
        assert name not in text, text


def test_latest_from_a_backup_of_the_promoted_cluster_has_every_commit(lineage, new_dir):
    data_dir, run_dir = new_dir()
    port = free_port()
    proc = drkit_pitr(lineage, data_dir, run_dir, port, "--target", "latest", "--backup-id", lineage["b2"])
    assert proc.returncode == 0, said(proc)
    res = json.loads(proc.stdout)
    assert phases(port, lineage["password"]) == PHASES_ALL, res
    # the settings the backup carried were neutralised, and drkit said so
    assert any("recovery_target_time" in w for w in res["warnings"]), res["warnings"]
    with open(os.path.join(data_dir, "postgresql.auto.conf")) as fh:
        text = fh.read()
    assert "recovery_target" not in text and "restore_command" not in text, text


@pytest.mark.parametrize("when, extra, backup, rows", [
    ("t3", [], "b2", dict(PHASES_ALL, **{"tl2-c": 5})),  # after the backup of the promoted cluster
    ("t2", [], "b1", {"tl1-base": 5, "tl1-a": 5, "tl2-a": 5}),  # timeline 2, replayed across the switch
    ("t_old", ["--recovery-target-timeline", "1"], "b1", {"tl1-base": 5, "tl1-a": 5, "tl1-b": 5}),  # chosen
], ids=["after-b2", "timeline-2", "timeline-1-chosen"])
def test_a_time_recovers_that_timelines_rows(lineage, new_dir, when, extra, backup, rows):
    data_dir, run_dir = new_dir()
    port = free_port()
    proc = drkit_pitr(lineage, data_dir, run_dir, port, "--target", "time", "--target-value", lineage[when], *extra)
    assert proc.returncode == 0, said(proc)
    assert json.loads(proc.stdout)["backup_id"] == lineage[backup]
    assert phases(port, lineage["password"]) == rows


def test_time_on_the_old_timelines_branch_is_refused_with_the_choice(lineage, new_dir):
    data_dir, run_dir = new_dir()
    proc = drkit_pitr(lineage, data_dir, run_dir, free_port(), "--target", "time", "--target-value",
                      lineage["t_old"])
    assert proc.returncode == 2, said(proc)
    err = proc.stderr
    assert "timeline 1" in err and "timeline 2" in err and "--recovery-target-timeline" in err, err
    assert not os.path.exists(data_dir)


def test_verify_restore_level_of_a_backup_carrying_recovery_settings(lineage):
    proc = run_drkit(["verify", "--json", "--storage-url", lineage["url"], "--backup-id", lineage["b2"],
                      "--level", "restore"], config=dict(s3_config(lineage), timeout=120), timeout=600)
    assert proc.returncode == 0, said(proc)
    assert json.loads(proc.stdout)["passed"]


def rerun_recovers(lineage, data_dir, run_dir, port, found):
    """drkit pitr (latest from B1) again into the same directory: it names
    what it found there, takes it over and recovers everything."""
    again = drkit_pitr(lineage, data_dir, run_dir, port, "--target", "latest", "--backup-id", lineage["b1"])
    assert again.returncode == 0, said(again)
    assert "found %s" % found in again.stderr, said(again)
    assert phases(port, lineage["password"]) == {"tl1-base": 5, "tl1-a": 5, "tl2-a": 5, "tl2-b": 5, "tl2-c": 10}
    assert not os.path.exists(os.path.join(data_dir, MARKER))


def test_start_false_pauses_at_the_target_until_promoted(lineage, new_dir):
    """start: false writes the recovery settings with a pause: started by
    hand, the server stops at the target in recovery and waits for
    pg_ctl promote; the credentials come from the lasting config file."""
    data_dir, run_dir = new_dir()
    port = free_port()
    proc = run_drkit(pitr_argv(lineage["url"], data_dir, run_dir, port, "--target", "latest", "--backup-id",
                               lineage["b1"], "--no-start", "--wal-config", lineage["cluster"].config),
                     config=s3_config(lineage), timeout=600)
    assert proc.returncode == 0, said(proc)
    assert not os.path.exists(os.path.join(data_dir, MARKER))
    assert files_holding(data_dir, s3_config(lineage)["secret_key"]) == []
    log = os.path.join(os.path.dirname(data_dir), "by-hand.log")
    with open(log, "w"):
        pass
    shutil.chown(log, "postgres", "postgres")
    assert pg_ctl("start", "-D", data_dir, "-w", "-t", "120", "-l", log).returncode == 0
    deadline = time.time() + 180
    while "pausing at the end of recovery" not in open(log).read():
        text = open(log).read()
        assert "database system is ready to accept connections\n" not in text, "promoted itself:\n" + text[-3000:]
        assert time.time() < deadline and postmaster_pid(data_dir), text[-3000:]
        time.sleep(0.2)
    assert in_recovery(port, lineage["password"]) is True
    assert pg_ctl("promote", "-D", data_dir, "-w", "-t", "120").returncode == 0
    assert phases(port, lineage["password"]) == {"tl1-base": 5, "tl1-a": 5, "tl2-a": 5, "tl2-b": 5, "tl2-c": 10}


# --------------------------------------------------------------------------
# (b) a flipped byte in an archived segment


def flip_a_byte_that_matters(stored):
    """``stored`` (a zstd frame) with one bit flipped, from the middle on, at
    the first place where the flip changes the content. Some bits of a frame
    do not: a flip there decodes to the same segment, and replay rightly
    succeeds (seen in CI with the middle byte)."""
    for pos in range(len(stored) // 2, len(stored)):
        raw = bytearray(stored)
        raw[pos] ^= 0x01
        d = ZstdDecompress()
        try:
            d.update(bytes(raw))
            d.finish()
        except IntegrityError:
            return raw
    raise AssertionError("no single flipped bit from the middle on is detected")


@pytest.fixture(scope="module")
def flipped(lineage):
    """URL of a copy of the repository with one byte flipped in a timeline 1
    segment that replay from B1 needs (after B1, before the branch)."""
    c = lineage["cluster"]
    dst = copy_archive(c, "flipped")
    b1 = [e for e in c.storage().list("backups/%s/" % lineage["b1"]) if e.key.endswith("manifest.json")]
    manifest = json.loads(c.storage().get_bytes(b1[0].key))
    stop = segment_number(manifest["data"]["wal_stop_segment"])
    seg = [n for n in list_timeline(dst, 1) if segment_number(n) == stop + 1][0]
    # replay from B1 reads it from timeline 1 only if timeline 2 branches later
    ((parent, switch),) = parse_history(list_history(dst)[2])
    assert parent == 1 and segment_number(lsn_segment(format_lsn(switch), 1)) > segment_number(seg), (seg, switch)
    original = dst.get_bytes(wal_key(seg))
    raw = flip_a_byte_that_matters(original)
    dst.put_bytes(wal_key(seg), bytes(raw))
    # the stored object now reads back flipped, and a fetch refuses it
    assert dst.get_bytes(wal_key(seg)) == bytes(raw) != original
    probe = os.path.join(make_scratch_dir(prefix="flip-", parent=lineage["root"]), seg)
    with pytest.raises(IntegrityError):
        fetch_file(dst, seg, probe)
    assert not os.path.exists(probe)
    return {"url": c.url.rsplit("/", 1)[0] + "/flipped", "segment": seg}


def test_flipped_byte_fails_and_leaves_nothing_that_starts_as_a_primary(lineage, flipped, new_dir):
    data_dir, run_dir = new_dir()
    port = free_port()
    proc = drkit_pitr(lineage, data_dir, run_dir, port, "--target", "latest", "--backup-id", lineage["b1"],
                      url=flipped["url"])
    assert proc.returncode == 8, said(proc)
    assert not postmaster_pid(data_dir)
    assert os.path.exists(os.path.join(data_dir, MARKER)), os.listdir(data_dir)
    assert files_holding(data_dir, s3_config(lineage)["secret_key"]) == []
    assert try_to_start(data_dir, lineage["password"], os.path.dirname(data_dir)) != "PRIMARY"
    # the rerun (archive repaired) names what it found, cleans it up and succeeds
    rerun_recovers(lineage, data_dir, run_dir, port, "a failed drkit recovery")


# --------------------------------------------------------------------------
# (c) kill -9 of drkit pitr


# bin/drkit's main with a hook that SIGKILLs the process at a chosen point.
_KILLED_AT = r"""
import os, signal, sys
sys.argv[0] = sys.argv[1]
drkit = {}
drkit.update(__name__="drkit_bin", __file__=sys.argv[1])
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), drkit)
drkit["load_engine"]()
where = sys.argv[2]
if where == "restore":
    from drkit_engine.core import tar
    members = {"n": 0}
    original = tar.TarExtractor.member

    def member(self, header):
        members["n"] += 1
        if members["n"] == 20:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, header)
    tar.TarExtractor.member = member
else:
    from drkit_engine.pg import pitr
    original = pitr.read_log
    trigger = where.split(":", 1)[1]

    def read_log(path, offset=0):
        text = original(path, offset)
        if trigger in text:
            os.kill(os.getpid(), signal.SIGKILL)
        return text
    pitr.read_log = read_log
from drkit_engine.cli import main
sys.exit(main(sys.argv[3:]))
"""


def killed_pitr(lineage, where, argv):
    cfg_dir = make_scratch_dir(prefix="cfg-")
    try:
        cfg = os.path.join(cfg_dir, "drkit.yml")
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(s3_config(lineage), fh)
        return subprocess.run([sys.executable, "-c", _KILLED_AT, str(DRKIT), where] + argv + ["--config", cfg],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=600, check=False, cwd=str(REPO_ROOT))
    finally:
        shutil.rmtree(cfg_dir, ignore_errors=True)


def settle(data_dir, timeout=180):
    """After drkit died: wait until its server has stopped, or paused at the
    target, or promoted itself. Returns what the log says it did."""
    log = os.path.join(data_dir, "log", "drkit-pitr.log")
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log) as fh:
            text = fh.read()
        if not postmaster_pid(data_dir):
            return "stopped"
        if "pausing at the end of recovery" in text:
            return "paused"
        if "database system is ready to accept connections\n" in text:
            return "promoted"
        time.sleep(0.2)
    raise AssertionError("the recovering server did not settle:\n" + text[-3000:])


def test_kill_9_during_the_restore(lineage, new_dir):
    data_dir, run_dir = new_dir()
    port = free_port()
    argv = pitr_argv(lineage["url"], data_dir, run_dir, port, "--target", "latest", "--backup-id", lineage["b1"])
    proc = killed_pitr(lineage, "restore", argv)
    assert proc.returncode == -9, said(proc)
    assert os.path.exists(os.path.join(data_dir, MARKER)), os.listdir(data_dir)
    assert not postmaster_pid(data_dir)
    assert files_holding(data_dir, s3_config(lineage)["secret_key"]) == []
    assert try_to_start(data_dir, lineage["password"], os.path.dirname(data_dir)) != "PRIMARY"
    rerun_recovers(lineage, data_dir, run_dir, port, "an interrupted drkit recovery")


@pytest.mark.parametrize("archive, when", [
    ("intact", "restored log file"),  # replay under way
    ("flipped", "restored log file"),
    ("intact", "pausing at the end of recovery"),  # checked, about to be promoted
])
def test_kill_9_during_replay(lineage, flipped, new_dir, archive, when):
    data_dir, run_dir = new_dir()
    port = free_port()
    url = flipped["url"] if archive == "flipped" else lineage["url"]
    argv = pitr_argv(url, data_dir, run_dir, port, "--target", "latest", "--backup-id", lineage["b1"])
    proc = killed_pitr(lineage, "replay:" + when, argv)
    assert proc.returncode == -9, said(proc)
    outcome = settle(data_dir)
    assert outcome != "promoted", outcome  # without drkit's checks, never
    if outcome == "paused":
        assert in_recovery(port, lineage["password"]) is True
    assert files_holding(data_dir, s3_config(lineage)["secret_key"]) == []
    with open(os.path.join(data_dir, MARKER)) as fh:
        marker = json.load(fh)
    rerun_recovers(lineage, data_dir, run_dir, port, "an interrupted drkit recovery")
    # the dead run's private directory (the storage credentials) went with it
    assert marker.get("private_dir") and not os.path.exists(marker["private_dir"]), marker


# --------------------------------------------------------------------------
# (d) LSN precision


# pg_pitr in a subprocess, with the recovery settings changed to make
# PostgreSQL stop at LSN Y, inside the last archived segment.
_STOPS_SHORT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.drkit.backup.plugins.module_utils.pg import pitr
params, y = json.load(sys.stdin), sys.argv[2]  # params on stdin: they hold the S3 secret
original = pitr.recovery_settings

def recovery_settings(*args, **kwargs):
    out = original(*args, **kwargs)
    out["recovery_target_lsn"] = y
    out["recovery_target_inclusive"] = True
    return out
pitr.recovery_settings = recovery_settings
try:
    _changed, res = pitr.pg_pitr(params)
    print(json.dumps(res, default=str))
except Exception as e:
    print("%s: %s" % (type(e).__name__, e))
    sys.exit(getattr(e, "exit_code", 1))
"""


def test_a_stop_inside_the_last_segment_short_of_the_end_is_caught(lineage, new_dir):
    from conftest import BUILD_COLLECTIONS
    data_dir, run_dir = new_dir()
    c = lineage["cluster"]
    params = pitr_params(c, data_dir, target="latest", backup_id=lineage["b1"])
    params["settings"]["unix_socket_directories"] = run_dir
    proc = subprocess.run([sys.executable, "-c", _STOPS_SHORT, str(BUILD_COLLECTIONS), lineage["y"]],
                          input=json.dumps(params), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600, check=False)
    assert proc.returncode == 8, said(proc)
    assert "short of" in proc.stdout and lineage["y"].split("/")[0] in proc.stdout, said(proc)
    assert not postmaster_pid(data_dir)
    assert controldata_state(data_dir) != "shut down", "the directory was promoted"
    assert os.path.exists(os.path.join(data_dir, MARKER))
