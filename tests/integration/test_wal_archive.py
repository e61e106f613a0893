# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's archive_command / restore_command contract, case by case,
through the real command line (``bin/drkit wal-push %p %f`` and
``wal-fetch %f %p``, as the server runs them) against SeaweedFS S3 and a
file:// archive, with real WAL segments of two real PostgreSQL 15 clusters.

Exit codes checked: 0 stored / fetched; 1 wal-fetch "not in the archive";
5 conflict (different content, another cluster); 8 integrity.
"""

import hashlib
import os
import shutil
import uuid

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.pg import scratch as sandbox
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from helpers import run_drkit
from support.barrier_drkit import race


@pytest.fixture(scope="module")
def other_cluster(scratch_root):
    """A second cluster: its WAL carries another system identifier."""
    server = sandbox.ScratchPostgres(str(scratch_root / ("other-%s" % uuid.uuid4().hex[:6])), password="x")
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def segments_of(server, tmp_path, count=2, tag="a"):
    """Copies of ``count`` completed WAL segments of ``server`` (name, path)."""
    out = []
    for i in range(count):
        # WAL without touching any table of the (shared) server
        server.psql("SELECT pg_logical_emit_message(false, 'drkit-test', repeat('x', 200000))")
        name = server.psql("SELECT pg_walfile_name(pg_switch_wal())")
        src = os.path.join(server.data_dir, "pg_wal", name)
        dst_dir = tmp_path / ("wal-%s-%d" % (tag, i))
        dst_dir.mkdir()
        dst = dst_dir / name
        shutil.copyfile(src, str(dst))
        out.append((name, str(dst)))
    return out


@pytest.fixture(params=["s3", "file"])
def archive(request, tmp_path):
    """(storage_url, config dict, Storage) of an empty archive."""
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")
        bucket = request.getfixturevalue("bucket")
        url = "s3://%s/cluster-a" % bucket
        cfg = {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
               "region": s3.region}
    else:
        url = "file://%s/archive" % tmp_path
        cfg = {}
    st = storage.open_storage(url, **cfg)
    return url, cfg, st


def push(archive, path, name, *extra):
    url, cfg, _st = archive
    return run_drkit(["wal-push", "--storage-url", url] + list(extra) + [path, name], config=cfg)


def fetch(archive, name, path):
    url, cfg, _st = archive
    return run_drkit(["wal-fetch", "--storage-url", url, name, path], config=cfg)


def stored_raw(st, name):
    return zstandard.ZstdDecompressor().decompressobj().decompress(st.get_bytes(wal.wal_key(name)))


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# wal-push


def test_push_stores_a_verified_copy(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1)
    r = push(archive, path, name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # quiet in the server log unless --verbose
    st = archive[2]
    assert wal.wal_key(name) == "wal/%s/%s.zst" % (name[:8], name)
    with open(path, "rb") as fh:
        assert stored_raw(st, name) == fh.read()
    sysid = pg.psql("SELECT system_identifier FROM pg_control_system()")
    assert st.get_bytes("wal/SYSTEM_IDENTIFIER").decode().strip() == sysid


def test_identical_repush_succeeds_and_leaves_the_stored_copy(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1)
    st = archive[2]
    assert push(archive, path, name).returncode == 0
    before = st.get_bytes(wal.wal_key(name))
    info = st.stat(wal.wal_key(name))
    r = push(archive, path, name, "--verbose")
    assert r.returncode == 0, r.stderr
    assert "already archived" in r.stdout
    assert st.get_bytes(wal.wal_key(name)) == before
    assert st.stat(wal.wal_key(name)).mtime == info.mtime  # not uploaded again


def test_different_content_under_an_existing_name_is_refused(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1)
    st = archive[2]
    assert push(archive, path, name).returncode == 0
    stored = st.get_bytes(wal.wal_key(name))
    with open(path, "r+b") as fh:  # same header, different page content
        fh.seek(8192 * 3 + 100)
        fh.write(b"\xde\xad\xbe\xef" * 8)
    r = push(archive, path, name)
    assert r.returncode == 5, r.stderr
    assert "different content" in r.stderr and "left untouched" in r.stderr
    assert st.get_bytes(wal.wal_key(name)) == stored


def test_history_files_are_never_overwritten(archive, tmp_path):
    st = archive[2]
    first = tmp_path / "a" / "00000002.history"
    first.parent.mkdir()
    first.write_text("1\t0/3000000\tbefore 2026-11-25 10:00:00+00\n")
    assert push(archive, str(first), first.name).returncode == 0
    assert push(archive, str(first), first.name).returncode == 0  # identical again: fine
    second = tmp_path / "b" / "00000002.history"
    second.parent.mkdir()
    second.write_text("1\t0/5000000\tno recovery target specified\n")
    r = push(archive, str(second), second.name)
    assert r.returncode == 5, r.stderr
    assert "timeline history file" in r.stderr
    assert stored_raw(st, "00000002.history") == first.read_bytes()
    assert wal.wal_key("00000002.history") == "wal/history/00000002.history.zst"


def test_segment_of_another_cluster_is_refused(pg, other_cluster, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1, tag="mine")
    assert push(archive, path, name).returncode == 0
    (oname, opath), = segments_of(other_cluster, tmp_path, 1, tag="other")
    st = archive[2]
    had = st.stat(wal.wal_key(oname)) is not None
    r = push(archive, opath, oname)
    assert r.returncode == 5, r.stderr
    other_id = other_cluster.psql("SELECT system_identifier FROM pg_control_system()")
    assert other_id in r.stderr and "belongs to cluster" in r.stderr
    if not had:
        assert st.stat(wal.wal_key(oname)) is None
    assert st.get_bytes("wal/SYSTEM_IDENTIFIER").decode().strip() != other_id


def test_misnamed_segment_is_refused(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1)
    wrong = name[:16] + "%08X" % (int(name[16:], 16) + 7)
    r = push(archive, path, wrong)
    assert r.returncode == 8, r.stderr
    assert archive[2].stat(wal.wal_key(wrong)) is None


def test_partial_and_backup_files_round_trip(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1)
    partial = path + ".partial"
    shutil.copyfile(path, partial)
    backup = tmp_path / ("%s.00000028.backup" % name)
    backup.write_text("START WAL LOCATION: 0/2000028 (file %s)\nSTOP WAL LOCATION: 0/2000100\n" % name)
    for p, n in ((partial, name + ".partial"), (str(backup), backup.name)):
        r = push(archive, p, n)
        assert r.returncode == 0, r.stderr
        assert archive[2].stat("wal/%s/%s.zst" % (name[:8], n)) is not None
        out = tmp_path / ("fetched-" + n)
        r = fetch(archive, n, str(out))
        assert r.returncode == 0, r.stderr
        with open(p, "rb") as fh:
            assert out.read_bytes() == fh.read()


# --------------------------------------------------------------------------
# wal-fetch


def test_fetch_of_a_missing_file_exits_1(archive, tmp_path):
    if archive[0].startswith("file://"):
        # an archive nothing was pushed to yet; a root that does not exist
        # at all is exit 2 (test_backup_info.py), never "not archived"
        os.makedirs(archive[2].root, 0o700)
    target = tmp_path / "RECOVERYXLOG"
    r = fetch(archive, "0000000100000000000000AA", str(target))
    assert r.returncode == 1, r.stderr
    assert "not in archive" in r.stderr
    assert not target.exists()
    r = fetch(archive, "00000009.history", str(target))
    assert r.returncode == 1


def test_fetch_writes_atomically_and_checks_what_it_reads(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1)
    assert push(archive, path, name).returncode == 0
    out_dir = tmp_path / "pg_wal"
    out_dir.mkdir()
    target = out_dir / "RECOVERYXLOG"
    r = fetch(archive, name, str(target))
    assert r.returncode == 0, r.stderr
    with open(path, "rb") as fh:
        assert sha(target.read_bytes()) == sha(fh.read())
    assert sorted(os.listdir(str(out_dir))) == ["RECOVERYXLOG"]  # no temp file left
    # The stored copy is damaged (truncated): non-zero, and %p never appears half-written.
    st = archive[2]
    good = st.get_bytes(wal.wal_key(name))
    st.put_bytes(wal.wal_key(name), good[:len(good) // 2])
    target2 = out_dir / "RECOVERYXLOG2"
    r = fetch(archive, name, str(target2))
    assert r.returncode not in (0, 1), r.stderr  # an error, not "end of archive"
    assert "truncated" in r.stderr or "corrupt" in r.stderr
    assert not target2.exists()
    assert sorted(os.listdir(str(out_dir))) == ["RECOVERYXLOG"]


def test_async_fetch_serves_replay_from_the_background_fetcher(pg, tmp_path):
    """wal-fetch --async as restore_command runs it: the first call starts
    the fetcher, which downloads the segments after it; the next calls are
    answered from its directory without touching the storage (whose URL
    is wrong for them); the end of the archive is still the call's answer."""
    import fcntl
    import json
    import time

    from ansible_collections.drkit.backup.plugins.module_utils.pg import wal_fetcher

    url = "file://%s/archive" % tmp_path
    segs = segments_of(pg, tmp_path, 3, tag="fetcher")
    for name, path in segs:
        assert run_drkit(["wal-push", "--storage-url", url, path, name]).returncode == 0
    pg_wal = tmp_path / "restored" / "pg_wal"
    pg_wal.mkdir(parents=True)
    spool = str(pg_wal / ".drkit-prefetch")
    flags = ["wal-fetch", "--async", "--prefetch", "3", "--async-idle", "5", "--json"]
    r = run_drkit(flags + ["--storage-url", url, segs[0][0], str(pg_wal / "RECOVERYXLOG")])
    assert r.returncode == 0, r.stderr
    assert wal_fetcher.worker(spool).running()
    deadline = time.time() + 60
    while not all(os.path.exists(os.path.join(spool, n)) for n, _p in segs[1:]) and time.time() < deadline:
        time.sleep(0.05)
    for name, path in segs[1:]:
        r = run_drkit(flags + ["--storage-url", "file://%s/nowhere" % tmp_path, name, str(pg_wal / "RECOVERYXLOG")])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["status"] == "prefetched"
        with open(path, "rb") as fh:
            assert sha((pg_wal / "RECOVERYXLOG").read_bytes()) == sha(fh.read())
    after = wal.segment_name(1, wal.segment_number(segs[-1][0]) + 1)
    r = run_drkit(flags + ["--storage-url", url, after, str(pg_wal / "RECOVERYXLOG")])
    assert r.returncode == 1, r.stderr
    # the recovery is over: its directory goes (as pg_pitr removes it), and the fetcher with it
    lock = os.open(os.path.join(spool, wal_fetcher.LOCK_NAME), os.O_RDONLY)
    try:
        wal_fetcher.remove(spool)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("the fetcher did not leave with its directory")
    finally:
        os.close(lock)
    assert not os.path.exists(spool), "the fetcher never recreates its directory"
    assert [n for n in os.listdir(str(pg_wal)) if n != "RECOVERYXLOG"] == []


# --------------------------------------------------------------------------
# read-ahead (spool): parallel pushes, same contract


def test_read_ahead_pushes_ready_segments_and_answers_from_markers(pg, tmp_path, s3, bucket):
    url = "s3://%s/ahead" % bucket
    cfg = {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
           "region": s3.region}
    segs = segments_of(pg, tmp_path, 3, tag="ahead")
    wal_dir = tmp_path / "pg_wal"
    (wal_dir / "archive_status").mkdir(parents=True)
    for name, path in segs:
        shutil.copyfile(path, str(wal_dir / name))
        (wal_dir / "archive_status" / (name + ".ready")).write_text("")
    spool = tmp_path / "spool"
    spool.mkdir()
    first = segs[0][0]
    r = run_drkit(["wal-push", "--storage-url", url, "--spool-dir", str(spool), "--read-ahead", "4",
                   str(wal_dir / first), first], config=cfg)
    assert r.returncode == 0, r.stderr
    st = storage.open_storage(url, **cfg)
    for name, _p in segs:
        assert st.stat(wal.wal_key(name)) is not None
    assert sorted(os.listdir(str(spool))) == sorted(n + ".pushed" for n, _p in segs[1:])
    # The next call is answered from the marker: no storage access at all
    # (the endpoint given here does not exist).
    second = segs[1][0]
    r = run_drkit(["wal-push", "--storage-url", url, "--spool-dir", str(spool), "--verbose",
                   str(wal_dir / second), second],
                  config=dict(cfg, endpoint_url="http://127.0.0.1:9"))
    assert r.returncode == 0, r.stderr
    assert "archived ahead" in r.stdout
    # A marker never vouches for different content: that goes through the full check.
    third = segs[2][0]
    with open(str(wal_dir / third), "r+b") as fh:
        fh.seek(8192 * 2)
        fh.write(b"\x01" * 64)
    r = run_drkit(["wal-push", "--storage-url", url, "--spool-dir", str(spool), str(wal_dir / third), third],
                  config=cfg)
    assert r.returncode == 5, r.stderr


# --------------------------------------------------------------------------
# racing writers: two wal-push processes of one name, released together at
# the moment their object becomes visible (tests/support/barrier_drkit.py),
# so that every round has both inside the window between "is the name free?"
# and "store it". Two clusters archiving into one repository, or a restored
# copy still archiving, do exactly this.

RACE_ROUNDS = 20
WAL_KEYS = r"^wal/[0-9A-F]{8}/"


def race_pushes(archive, tmp_path, url, files, name):
    """Two (or more) wal-push processes of ``name``, one per local file."""
    cmds = [["wal-push", "--verbose", "--storage-url", url, f, name] for f in files]
    return race(cmds, str(tmp_path / ("barrier-%s" % uuid.uuid4().hex[:8])), WAL_KEYS, config=archive[1])


def round_url(archive, i):
    return "%s/race-%02d" % (archive[0], i)


def different_copy(path, tmp_path):
    """The same segment name and header, different page content."""
    other = tmp_path / "other" / os.path.basename(path)
    other.parent.mkdir()
    shutil.copyfile(path, str(other))
    with open(str(other), "r+b") as fh:
        fh.seek(8192 * 3 + 100)
        fh.write(b"\xde\xad\xbe\xef" * 8)
    return str(other)


def test_racing_pushes_of_different_content_one_wins_the_other_is_refused(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1, tag="race")
    other = different_copy(path, tmp_path)
    content = {}
    for f in (path, other):
        with open(f, "rb") as fh:
            content[f] = fh.read()
    outcomes = []
    for i in range(RACE_ROUNDS):
        url = round_url(archive, i)
        results = race_pushes(archive, tmp_path, url, [path, other], name)
        st = storage.open_storage(url, **archive[1])
        stored = stored_raw(st, name) if st.stat(wal.wal_key(name)) is not None else None
        codes = [r.returncode for r in results]
        winners = [f for f, r in zip((path, other), results) if r.returncode == 0]
        if stored is None:
            outcomes.append("archive empty, exits %s" % codes)
        elif sorted(codes) != [0, 5]:
            outcomes.append("exits %s" % codes)
        elif stored != content[winners[0]]:
            outcomes.append("exit 0 for content that is not stored")
        else:
            loser = results[codes.index(5)]
            assert "different content" in loser.stderr and "left untouched" in loser.stderr, loser.stderr
            if archive[0].startswith("file://"):  # no temp file left, nothing else stored
                listed = sorted(os.listdir(url[len("file://"):] + "/wal/" + name[:8]))
                assert listed == [name + ".zst"], listed
            outcomes.append("one stored, one refused")
    summary = dict((o, outcomes.count(o)) for o in set(outcomes))
    assert outcomes == ["one stored, one refused"] * RACE_ROUNDS, summary


def test_racing_pushes_of_identical_content_both_succeed(pg, archive, tmp_path):
    (name, path), = segments_of(pg, tmp_path, 1, tag="same")
    copy = tmp_path / "copy" / name
    copy.parent.mkdir()
    shutil.copyfile(path, str(copy))
    with open(path, "rb") as fh:
        raw = fh.read()
    for i in range(RACE_ROUNDS // 4):
        url = round_url(archive, i)
        results = race_pushes(archive, tmp_path, url, [path, str(copy)], name)
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        msgs = sorted("already archived" in r.stdout for r in results)
        assert msgs == [False, True], [r.stdout for r in results]  # one stored it, one found it
        assert stored_raw(storage.open_storage(url, **archive[1]), name) == raw


def test_two_clusters_racing_for_an_empty_archive_one_claims_it(pg, other_cluster, archive, tmp_path):
    """Both first pushes find no wal/SYSTEM_IDENTIFIER and are released
    together at its write: the claim is create-only, so one cluster owns the
    archive and the other's push is refused before it stores anything."""
    (name, path), = segments_of(pg, tmp_path, 1, tag="mine")
    (oname, opath), = segments_of(other_cluster, tmp_path, 1, tag="theirs")
    sysids = {path: pg.psql("SELECT system_identifier FROM pg_control_system()"),
              opath: other_cluster.psql("SELECT system_identifier FROM pg_control_system()")}
    for i in range(RACE_ROUNDS // 4):
        url = round_url(archive, i)
        cmds = [["wal-push", "--storage-url", url, p, n] for p, n in ((path, name), (opath, oname))]
        results = race(cmds, str(tmp_path / ("barrier-%d" % i)), r"^wal/SYSTEM_IDENTIFIER$", config=archive[1])
        codes = [r.returncode for r in results]
        assert sorted(codes) == [0, 5], [r.stderr for r in results]
        winner, loser = ((path, name), (opath, oname)) if codes[0] == 0 else ((opath, oname), (path, name))
        assert "belongs to cluster" in results[codes.index(5)].stderr
        st = storage.open_storage(url, **archive[1])
        assert st.get_bytes("wal/SYSTEM_IDENTIFIER").decode().strip() == sysids[winner[0]]
        assert st.stat(wal.wal_key(winner[1])) is not None
        if loser[1] != winner[1]:
            assert st.stat(wal.wal_key(loser[1])) is None
