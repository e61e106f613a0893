# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A physical base backup that spans a timeline switch, for real.

How such a backup happens.  A base backup taken from a standby starts on the
standby's timeline (backup_label ``START TIMELINE``) and stops at the
standby's minimum recovery point (pg_control), on whatever timeline the
standby replays by then.  PostgreSQL refuses the backup if the standby
*itself* is promoted while it runs ("the standby was promoted during online
backup", both in the file-sending loop and in pg_backup_stop; the
pg_basebackup docs: "If the standby is promoted to be primary during backup,
the backup fails").  What it does allow is an *upstream* promotion: the
standby we back up follows its upstream onto the new timeline, and the
backup_manifest then lists one WAL range per timeline ("if a backup is taken
from a standby which switches timelines during the backup due to an upstream
promotion, it is possible for multiple ranges to be present", backup
manifest format docs).  PostgreSQL writes the ranges newest timeline first.

The scenario (all on loopback, in a scratch directory, PostgreSQL 15 unless
DRKIT_TEST_PG_VERSION says otherwise)::

    P (primary, TL1, archive_mode=on)  --stream-->  A (standby, archive_mode=on)
                                                       --stream-->  S (cascading standby,
                                                                       archive_mode=always)
    every archive_command: drkit wal-push into ONE file:// archive

1. ``drkit pg-backup --mode physical`` against S.  Its start is a restartpoint
   on TL1.
2. While the backup is streaming the data files it is held: ``--pg-bin-dir``
   points at a wrapper around the real pg_basebackup that stops reading
   pg_basebackup's stdout after the first chunk until the test says go (the
   stand-in for a slow link or a big cluster; the server side is untouched:
   its walsender blocks on the socket, the backup stays in "streaming
   database files", which the test checks).
3. Meanwhile: writes and two WAL switches on P (so the backup's TL1 range has
   a segment strictly between start and switch), a clean shutdown of P, and
   ``pg_promote()`` on A: TL2.  S follows A onto TL2 (the
   walreceiver fetches 00000002.history and streams on).  More writes and a
   WAL switch on A, a CHECKPOINT on A replayed by S and a CHECKPOINT
   (restartpoint) on S, so S's minimum recovery point -- the backup's stop --
   is on TL2, one segment past the one holding the switch.
4. The backup is released; pg_backup_stop on S waits for its last segment to
   be archived, so the test switches WAL on A when S says "waiting for wal
   archiving to finish".

Every step waits on a server-side condition (replay LSNs, the receiver's
timeline, pg_control_recovery(), pg_stat_progress_basebackup), not on time,
so the shape is deterministic: start in segment s on TL1, switch point in
segment k >= s + 2 on TL1/TL2, stop in segment k + 1 on TL2.

Everything the tests then do goes through the command line (``bin/drkit``
in a subprocess), as an operator would.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from helpers import DRKIT, fetch_artifact, run_drkit

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port, make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres

PG_VERSION = os.environ.get("DRKIT_TEST_PG_VERSION", "15")
PASSWORD = "timeline-switch-pw"
DRKIT_CMD = "%s %s" % (shlex.quote(sys.executable), shlex.quote(str(DRKIT)))
SEG = 16 << 20
WAITING = "waiting for wal archiving to finish"
STREAMING = "streaming database files"

GATE_SCRIPT = r'''#!%(python)s
# pg_basebackup, held after its first chunk of output until %(gate)s/release
# exists (written by tests/integration/test_pitr_timeline_switch.py).
import os, signal, subprocess, sys, time
REAL = %(real)r
GATE = %(gate)r
args = sys.argv[1:]
if not any(a.startswith("--pgdata") or a == "-D" for a in args):
    os.execv(REAL, [REAL] + args)  # --version and the like
child = subprocess.Popen([REAL] + args, stdout=subprocess.PIPE)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda signum, frame: child.send_signal(signum))
held = False
while True:
    data = child.stdout.read1(1 << 16)
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
    if not held:
        held = True
        open(os.path.join(GATE, "held"), "w").close()
        deadline = time.time() + 600
        while not os.path.exists(os.path.join(GATE, "release")) and time.time() < deadline \
                and child.poll() is None:
            time.sleep(0.05)
rc = child.wait()
sys.exit(rc if rc >= 0 else 128 - rc)
'''


# --------------------------------------------------------------------------
# servers


class Node(ScratchPostgres):
    """A ScratchPostgres that also counts a hot standby as started
    (postmaster.pid says "standby" there, never "ready"; ScratchPostgres
    only waits for "ready")."""

    def _pidfile_status(self):
        status = super(Node, self)._pidfile_status()
        return "ready" if status == "standby" else status

    def lsn(self):
        return self.psql("SELECT pg_current_wal_lsn()")

    def switch(self):
        return self.psql("SELECT pg_walfile_name(pg_switch_wal())")

    def insert(self, phase, rows=50):
        self.psql("INSERT INTO marks (phase) SELECT '%s' FROM generate_series(1, %d)" % (phase, rows))


def as_postgres():
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


def chown_postgres(path):
    if os.geteuid() == 0:
        shutil.chown(str(path), "postgres", "postgres")


def wait_for(what, predicate, timeout=120, interval=0.1):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def replayed(standby, lsn):
    return standby.psql("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % lsn) == "t"


def archived(archive_dir, name):
    return (Path(archive_dir) / "wal" / name[:8] / (name + ".zst")).exists()


def clone(source, base, auto_conf):
    """pg_basebackup -R of ``source`` into base/data, ``auto_conf`` appended
    to its postgresql.auto.conf, started as a streaming standby."""
    os.makedirs(base, 0o711)
    chown_postgres(base)
    data = os.path.join(base, "data")
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    proc = subprocess.run([os.path.join(source.bin_dir, "pg_basebackup"), "-h", source.host,
                           "-p", str(source.port), "-U", "postgres", "-D", data, "-R", "-X", "stream",
                           "--checkpoint=fast", "--no-password"], env=env, cwd=base, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False,
                          **as_postgres())
    assert proc.returncode == 0, proc.stdout
    with open(os.path.join(data, "postgresql.auto.conf"), "a") as fh:
        fh.write("\n# test_pitr_timeline_switch\n")
        for k, v in auto_conf.items():
            fh.write("%s = '%s'\n" % (k, v))
    node = Node(base, password=PASSWORD, bin_dir=source.bin_dir)
    node.start()
    return node


class Topology(object):
    """P -> A -> S, all archiving into one file:// archive."""

    def __init__(self, root):
        self.root = Path(root)
        self.archive = self.root / "archive"
        self.archive.mkdir(mode=0o700)
        chown_postgres(self.archive)
        self.url = "file://%s" % self.archive
        command = "%s wal-push --storage-url %s %%p %%f" % (DRKIT_CMD, shlex.quote(self.url))
        self.bin_dir = find_pg_bindir(PG_VERSION)
        self.p = Node(str(self.root / "p"), password=PASSWORD, bin_dir=self.bin_dir, settings={
            "wal_level": "replica", "archive_mode": "on", "archive_command": command, "fsync": "off",
            "wal_keep_size": "1GB", "full_page_writes": "on"})
        self.a = self.s = None
        self.gate = self.root / "gate"
        self.gate_bin = self.root / "gate-bin"

    def start(self, cascade=True):
        """P -> A -> S (cascade), or P -> S."""
        self.p.start()
        self.p.psql("CREATE TABLE marks (id bigserial PRIMARY KEY, phase text NOT NULL, "
                    "at timestamptz NOT NULL DEFAULT clock_timestamp())")
        # ~45 MB of table: more than the loopback socket buffers and the pipe
        # hold, so a held pg_basebackup really stops the server mid-files.
        self.p.psql("CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 28) AS pad "
                    "FROM generate_series(1, 45000) g")
        self.p.insert("before-backup")
        if cascade:
            self.a = clone(self.p, str(self.root / "a"), {"archive_mode": "on"})
        self.s = clone(self.a or self.p, str(self.root / "s"), {"archive_mode": "always"})
        lsn = self.p.lsn()
        wait_for("S replaying %s" % lsn, lambda: replayed(self.s, lsn))
        # the gate
        self.gate.mkdir(mode=0o700)
        chown_postgres(self.gate)
        self.gate_bin.mkdir(mode=0o755)
        script = self.gate_bin / "pg_basebackup"
        script.write_text(GATE_SCRIPT % {"python": sys.executable, "gate": str(self.gate),
                                         "real": os.path.join(self.bin_dir, "pg_basebackup")})
        script.chmod(0o755)
        return self

    def progress(self, node):
        return node.psql("SELECT phase || '|' || backup_streamed || '|' || coalesce(backup_total, -1) "
                         "FROM pg_stat_progress_basebackup")

    def destroy(self, mode="fast"):
        for node in (self.s, self.a, self.p):
            if node is not None:
                node.stop(mode=mode)
                node.destroy()


def drkit_as_postgres(args, config):
    """bin/drkit as the postgres OS user (the archive has one owner, as in
    production), options in a 0600 config file owned by it."""
    path = config.pop("_path")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)  # JSON is YAML
    chown_postgres(path)
    argv = [sys.executable, str(DRKIT)] + list(args) + ["--config", path]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            cwd="/", **as_postgres())


def held_backup(t):
    """``drkit pg-backup --mode physical`` against S, held while it streams
    the data files. Returns (process, where it was held)."""
    t.p.psql("CHECKPOINT")  # the restartpoint S makes for the backup's start
    lsn = t.p.lsn()
    wait_for("S replaying the checkpoint", lambda: replayed(t.s, lsn))
    proc = drkit_as_postgres(["pg-backup", "--json"], {
        "_path": str(t.root / "backup.yml"), "storage_url": t.url, "login_host": t.s.host, "port": t.s.port,
        "login_user": "postgres", "login_password": PASSWORD, "mode": "physical", "checkpoint": "fast",
        "wal_wait_timeout": 120, "pg_bin_dir": str(t.gate_bin)})
    try:
        wait_for("pg_basebackup to be held", lambda: (t.gate / "held").exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
        phase, streamed, total = t.progress(t.s).split("|")
        held_at = {"phase": phase, "streamed": int(streamed), "total": int(total)}
        assert phase == STREAMING and int(streamed) < int(total), held_at
    except BaseException:
        release(t, proc)
        raise
    return proc, held_at


def release(t, proc, on_wait=None):
    """Let the held backup go on; call ``on_wait()`` (at most every 2 s)
    while S says it waits for the archive. Returns (rc, stdout, stderr)."""
    (t.gate / "release").touch()
    try:
        last = 0.0
        while proc.poll() is None:
            if on_wait and time.time() - last > 2 and t.progress(t.s).startswith(WAITING):
                on_wait()
                last = time.time()
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def spanning_backup(t):
    """Steps 1-4 of the module doc. Returns (facts, drkit's JSON result)."""
    p, a, s = t.p, t.a, t.s
    facts = {}
    proc, facts["held_at"] = held_backup(t)
    try:
        # TL1: two more segments, then the primary goes away cleanly
        p.insert("tl1-during-backup")
        facts["tl1_switched"] = [p.switch()]
        p.insert("tl1-during-backup")
        facts["tl1_switched"].append(p.switch())
        p.insert("tl1-last")
        lsn = p.lsn()
        wait_for("A replaying TL1 up to %s" % lsn, lambda: replayed(a, lsn))
        p.stop(mode="fast")
        facts["promoted"] = a.psql("SELECT pg_promote(true, 60)")
        assert facts["promoted"] == "t"
        facts["history"] = a.psql("SELECT pg_read_file('pg_wal/00000002.history')")
        wait_for("S to follow onto TL2", lambda: s.psql(
            "SELECT coalesce(max(received_tli), 0) FROM pg_stat_wal_receiver") == "2", timeout=120)

        # TL2: one more segment, and S's minimum recovery point on it
        a.insert("tl2-during-backup")
        facts["tl2_switched"] = [a.switch()]
        a.insert("tl2-during-backup")
        a.psql("CHECKPOINT")
        lsn = a.lsn()
        wait_for("S replaying TL2 up to %s" % lsn, lambda: replayed(s, lsn))
        s.psql("CHECKPOINT")
        facts["s_min_recovery"] = s.psql(
            "SELECT min_recovery_end_lsn || '|' || min_recovery_end_timeline FROM pg_control_recovery()")
        assert facts["s_min_recovery"].endswith("|2"), facts["s_min_recovery"]
    finally:
        rc, out, err = release(t, proc, on_wait=lambda: facts["tl2_switched"].append(a.switch()))
    facts["backup_rc"], facts["backup_stderr"] = rc, err
    result = json.loads(out) if rc == 0 and out.strip() else None
    return facts, result


@pytest.fixture(scope="module")
def topology(scratch_root):
    root = make_scratch_dir(prefix="tl-switch-", parent=str(scratch_root))
    t = Topology(root)
    try:
        yield t.start()
    finally:
        t.destroy()
        if os.environ.get("DRKIT_KEEP_SCRATCH") != "1":
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def spanning(topology):
    t0 = time.time()
    facts, result = spanning_backup(topology)
    facts["seconds"] = round(time.time() - t0, 1)
    # From here on only the archive counts, as after a disaster: nothing may
    # reach a live server (a restored standby's primary_conninfo names A).
    topology.s.stop()
    topology.a.stop()
    return {"facts": facts, "result": result, "topology": topology}


# --------------------------------------------------------------------------
# what the backup needs, worked out by hand from PostgreSQL's own manifest


def pg_wal_ranges(archive_dir, result):
    """WAL-Ranges of the backup_manifest drkit stored, read with hashlib and
    zstandard only (nothing from the engine)."""
    art = [a for a in result["manifest"]["artifacts"] if a["name"] == "backup_manifest.zst"][0]
    raw = fetch_artifact("file://%s" % archive_dir, result["backup_id"], art)
    return json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(raw))["WAL-Ranges"]


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def seg_name(tli, segno):
    return "%08X%08X%08X" % (tli, segno // 256, segno % 256)


def expected_segments(ranges):
    """pg_verifybackup's reading of the manifest: for each range, the
    segments from the one holding Start-LSN to the one holding End-LSN - 1,
    on that range's timeline; oldest timeline first."""
    out = []
    for r in sorted(ranges, key=lambda r: r["Timeline"]):
        first, last = lsn_int(r["Start-LSN"]) // SEG, (lsn_int(r["End-LSN"]) - 1) // SEG
        out += [seg_name(r["Timeline"], n) for n in range(first, max(first, last) + 1)]
    return out


@pytest.fixture(scope="module")
def shape(spanning):
    """start segment s on TL1, switch point in k, stop in k+1 on TL2."""
    res = spanning["result"]
    assert spanning["facts"]["backup_rc"] == 0 and res, spanning["facts"]
    ranges = sorted(pg_wal_ranges(spanning["topology"].archive, res), key=lambda r: r["Timeline"])
    assert [r["Timeline"] for r in ranges] == [1, 2], ranges
    tl1, tl2 = ranges
    assert tl1["End-LSN"] == tl2["Start-LSN"]  # the switch point
    s = lsn_int(tl1["Start-LSN"]) // SEG
    k = lsn_int(tl1["End-LSN"]) // SEG
    m = (lsn_int(tl2["End-LSN"]) - 1) // SEG
    assert k >= s + 2 and m == k + 1, (s, k, m)
    switch = spanning["facts"]["history"].split()[1]
    assert switch == tl1["End-LSN"], spanning["facts"]["history"]
    return {"ranges": ranges, "s": s, "k": k, "m": m, "needed": expected_segments(ranges),
            "tl1_middle": seg_name(1, s + 1), "tl2_switch": seg_name(2, k), "tl2_stop": seg_name(2, m),
            "backup_id": res["backup_id"], "stop_lsn": tl2["End-LSN"], "switch_lsn": switch}


# --------------------------------------------------------------------------
# copies of the archive, restored servers


@pytest.fixture(scope="module")
def archives(spanning, scratch_root):
    """archives(name, drop=()) -> file:// URL of a copy of the scenario's
    archive without the WAL segments in ``drop``."""
    made = []

    def copy(name, drop=()):
        base = make_scratch_dir(prefix="tl-archive-%s-" % name, parent=str(scratch_root))
        made.append(base)
        dst = Path(base) / "archive"
        shutil.copytree(str(spanning["topology"].archive), str(dst))
        for seg in drop:
            (dst / "wal" / seg[:8] / (seg + ".zst")).unlink()
        if os.geteuid() == 0:
            for path in [dst] + list(dst.rglob("*")):
                shutil.chown(str(path), "postgres", "postgres")
        return "file://%s" % dst
    yield copy
    for base in made:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pitr_dirs(spanning, scratch_root):
    """New data directories for `drkit pitr`; whatever runs in them is
    stopped and they are removed afterwards."""
    made = []
    bin_dir = spanning["topology"].bin_dir

    def new():
        base = Path(make_scratch_dir(prefix="tl-pitr-", parent=str(scratch_root)))
        run = base / "run"
        run.mkdir(mode=0o700)
        chown_postgres(run)
        made.append(base)
        return str(base / "data"), str(run)
    yield new
    for base in made:
        data = base / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run([os.path.join(bin_dir, "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **as_postgres())
        shutil.rmtree(str(base), ignore_errors=True)


def drkit_pitr(url, data_dir, run_dir, port, *extra):
    return run_drkit(["pitr", "--json", "--storage-url", url, "--data-directory", data_dir, "--port", str(port),
                      "--drkit-command", DRKIT_CMD, "--timeout", "300",
                      "--set", "unix_socket_directories=%s" % run_dir, "--set", "listen_addresses=127.0.0.1"]
                     + list(extra), timeout=600)


def drkit_verify(url, backup_id, level, **config):
    return run_drkit(["verify", "--json", "--storage-url", url, "--backup-id", backup_id, "--level", level],
                     config=dict(config, timeout=90), timeout=900)


def phases(bin_dir, port):
    env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="10")
    out = subprocess.run([os.path.join(bin_dir, "psql"), "-X", "-qAt", "-h", "127.0.0.1", "-p", str(port),
                          "-U", "postgres", "-c", "SELECT phase, count(*) FROM marks GROUP BY 1 ORDER BY 1"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         timeout=60, check=True).stdout
    return dict((k, int(v)) for k, v in (line.split("|") for line in out.split()))


def said(proc):
    return "exit %s\nstdout: %s\nstderr: %s" % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])


# --------------------------------------------------------------------------
# the scenario itself


def test_backup_from_a_standby_spans_the_upstream_promotion(spanning, shape):
    facts = spanning["facts"]
    assert facts["held_at"]["phase"] == STREAMING
    label = spanning["result"]["manifest"]["data"]["backup_label"]
    assert "BACKUP FROM: standby" in label and "START TIMELINE: 1" in label
    # The archive holds every segment of both ranges (S archives the TL1
    # segment it was streaming at the switch, A its .partial copy).
    for seg in shape["needed"]:
        assert archived(spanning["topology"].archive, seg), seg
    assert archived(spanning["topology"].archive, seg_name(1, shape["k"]) + ".partial")


def test_manifest_records_the_stop_on_the_new_timeline(spanning, shape):
    """drkit's facts must say where the backup really stops: PostgreSQL
    lists WAL-Ranges newest timeline first."""
    data = spanning["result"]["manifest"]["data"]
    assert (data["timeline"], data["wal_start_segment"]) == (1, seg_name(1, shape["s"]))
    assert (data["stop_timeline"], data["stop_lsn"], data["wal_stop_segment"]) == (
        2, shape["stop_lsn"], shape["tl2_stop"])
    assert data["wal_segments"] == len(shape["needed"]) == 6


# --------------------------------------------------------------------------
# (a) and (b): a segment of the backup's own WAL missing from the archive


WHICH = ["tl1_middle", "tl2_switch", "tl2_stop"]


@pytest.fixture(scope="module")
def holes(archives, shape):
    """{which: URL of an archive copy without that segment}"""
    return dict((which, archives(which, drop=[shape[which]])) for which in WHICH)


@pytest.mark.parametrize("target", ["immediate", "latest"])
@pytest.mark.parametrize("which", WHICH)
def test_pitr_refuses_up_front_when_the_backups_own_wal_is_missing(which, target, shape, holes, pitr_dirs):
    hole = shape[which]
    data_dir, run_dir = pitr_dirs()
    proc = drkit_pitr(holes[which], data_dir, run_dir, free_port(), "--target", target,
                      "--backup-id", shape["backup_id"])
    assert proc.returncode == 8, said(proc)
    assert "cannot be made consistent" in proc.stderr and hole in proc.stderr, said(proc)
    assert not os.path.exists(data_dir), "restored before refusing"


@pytest.mark.parametrize("which", WHICH)
def test_verify_checksum_names_the_missing_segment(which, shape, holes):
    hole = shape[which]
    proc = drkit_verify(holes[which], shape["backup_id"], "checksum")
    assert proc.returncode == 8, said(proc)
    assert "failed verification" in proc.stderr and hole in proc.stderr, said(proc)


# --------------------------------------------------------------------------
# (c): with the archive intact


def test_pitr_latest_recovers_across_the_switch(spanning, shape, pitr_dirs):
    data_dir, run_dir = pitr_dirs()
    port = free_port()
    proc = drkit_pitr(spanning["topology"].url, data_dir, run_dir, port, "--target", "latest",
                      "--backup-id", shape["backup_id"])
    assert proc.returncode == 0, said(proc)
    res = json.loads(proc.stdout)
    assert res["status"] == "promoted" and res["new_timeline"] == 3, res
    got = phases(spanning["topology"].bin_dir, port)
    assert got == {"before-backup": 50, "tl1-during-backup": 100, "tl1-last": 50, "tl2-during-backup": 100}, got


def test_pitr_immediate_reaches_consistency_on_the_new_timeline(spanning, shape, pitr_dirs):
    data_dir, run_dir = pitr_dirs()
    port = free_port()
    proc = drkit_pitr(spanning["topology"].url, data_dir, run_dir, port, "--target", "immediate",
                      "--backup-id", shape["backup_id"])
    assert proc.returncode == 0, said(proc)
    res = json.loads(proc.stdout)
    assert res["status"] == "promoted", res
    assert lsn_int(res["consistent_lsn"]) >= lsn_int(shape["stop_lsn"]), res
    assert phases(spanning["topology"].bin_dir, port)["tl2-during-backup"] == 100


@pytest.mark.parametrize("level", ["checksum", "restore"])
def test_verify_passes_with_the_archive_intact(spanning, shape, level):
    # at restore level: replayed to consistency, i.e. onto TL2, from the archive alone
    tl2 = {"name": "TL2 rows", "sql": "SELECT count(*) FROM marks WHERE phase = 'tl2-during-backup'", "equals": 100}
    proc = drkit_verify(spanning["topology"].url, shape["backup_id"], level, checks=[tl2])
    assert proc.returncode == 0, said(proc)
    res = json.loads(proc.stdout)
    assert res["passed"] and res["result"] == "pass", res
    if level == "restore":
        assert [c["ok"] for c in res["checks"]] == [True], res["checks"]


# --------------------------------------------------------------------------
# what the brief first suggested: promoting the standby being backed up


@pytest.fixture
def pair(scratch_root):
    root = make_scratch_dir(prefix="tl-self-", parent=str(scratch_root))
    t = Topology(root)
    try:
        yield t.start(cascade=False)
    finally:
        t.destroy(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_promoting_the_standby_being_backed_up_fails_the_backup(pair):
    """PostgreSQL refuses that backup (basebackup.c's file loop and
    do_pg_backup_stop): drkit must fail and record nothing."""
    proc, held_at = held_backup(pair)
    try:
        assert pair.s.psql("SELECT pg_promote(true, 60)") == "t"
    finally:
        rc, out, err = release(pair, proc)
    assert rc == 6, (rc, out, err)
    assert "the standby was promoted during online backup" in err, err
    listed = run_drkit(["list", "--json", "--storage-url", pair.url])
    assert listed.returncode == 0 and json.loads(listed.stdout)["backups"] == [], said(listed)
    left = sorted(str(f) for f in (pair.archive / "backups").rglob("*") if f.is_file()) \
        if (pair.archive / "backups").exists() else []
    assert left == [], left
