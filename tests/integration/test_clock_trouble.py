# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clock trouble and forged manifests (the fault-injection suite, docs/failure-promises.md
"Clocks and forged manifests"): which backups count for rotation, ``list`` and the
choice of ``latest`` by restore and verify.

Real backups are taken by the engine from the ``pg`` fixture into a directory and
into SeaweedFS S3; a clock ahead or behind is a real one, libfaketime's, on file://
(S3 request signing refuses clocks more than 15 minutes off, so on S3 the
manifests are forged, with small offsets).  The rule under test (docs/retention.md,
"Which backups count"): a backup counts only when its manifest is intact and its
artifacts are stored with their recorded sizes, and its finished_at is no later
than the storage's time of the manifest plus 15 minutes; a backup that does not
count is reported, never newest, never fills a keep slot and is never deleted."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo import rotate as rot
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.restore import pg_restore_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from helpers import DRKIT, drop_database, pg_module_args, run_drkit, s3_module_args, table_row_counts

UTC = dt.timezone.utc
ROWS = 20


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def small_db(pg):
    name = "clock_%s" % uuid.uuid4().hex[:8]
    pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, note text);"
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %d) g" % ROWS, dbname=name)
    try:
        yield name
    finally:
        drop_database(pg, name)


def faketime():
    path = shutil.which("faketime")
    if path is None:
        pytest.fail("faketime is not installed: apt-get install faketime (scripts/bootstrap.sh installs it)")
    return path


class Repo(object):
    """One storage location, and how the tests write to it."""

    def __init__(self, pg, db, url, s3=None, root=None):
        self.pg, self.db, self.url, self.s3, self.root = pg, db, url, s3, root
        self.options = s3_module_args(s3) if url.startswith("s3://") else {}
        self.storage = open_storage(url, **self.options)

    def params(self, **extra):
        p = pg_module_args(self.pg, self.db)
        p.pop("database")
        p.update(self.options, storage_url=self.url)
        p.update(extra)
        return p

    def backup(self, clock=None):
        """A real logical backup; ``clock``: libfaketime's offset for the
        whole drkit process (file:// only), e.g. '+2d', '-3h'."""
        if clock is None:
            return pg_backup(self.params(database=self.db))[1]["backup_id"]
        assert self.url.startswith("file://"), "S3 refuses requests signed with a clock that far off"
        argv = [faketime(), "-f", clock, sys.executable, str(DRKIT), "pg-backup", "--json", "--quiet",
                "--host", self.pg.host, "--port", str(self.pg.port), "--user", self.pg.superuser,
                "--database", self.db, "--storage-url", self.url]
        env = dict(os.environ, PGPASSWORD=self.pg.password)
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["backup_id"]

    def manifest(self, bid):
        return mf.load_manifest(self.storage, bid)

    def forge(self, template, finished, artifacts=False, sealed=True):
        """A copy of a real backup's manifest under a new id, finished at
        ``finished``: without its artifacts (as in the hostile test), or
        with copies of them.  ``sealed``: with a valid digest (as drkit on a
        host with a wild clock, or a forger, writes it); otherwise without
        one, as manifests written before the digest."""
        doc = json.loads(self.storage.get_bytes(mf.manifest_key(template)))
        bid = mf.new_backup_id("pg_logical", finished)
        doc.update(backup_id=bid, finished_at=mf.isoformat(finished),
                   started_at=mf.isoformat(finished - dt.timedelta(seconds=5)))
        doc.pop(mf.DIGEST, None)
        if artifacts:
            for a in doc["artifacts"]:
                self.storage.put_bytes(mf.artifact_key(bid, a["name"]),
                                       self.storage.get_bytes(mf.artifact_key(template, a["name"])))
        body = mf.Manifest(doc).to_json() if sealed else json.dumps(doc).encode()
        self.storage.put_bytes(mf.manifest_key(bid), body)
        return bid

    def with_manifest(self):
        """Every backup id that has a manifest, counted or not."""
        return sorted(b for b, infos in mf.scan_objects(self.storage).items()
                      if mf.manifest_key(b) in [i.key for i in infos])

    def counted(self):
        return [e.backup_id for e in mf.list_backups(self.storage)[0]]

    def stored_as_of(self, bid, when):
        """file://: every object of a backup as if written at ``when``."""
        for info in self.storage.list(mf.backup_prefix(bid)):
            t = when.timestamp()
            os.utime(os.path.join(self.root, *info.key.split("/")), (t, t))

    def drkit(self, args, metrics_dir=None):
        env = self.s3.env() if self.url.startswith("s3://") else {}
        extra = ["--metrics-dir", str(metrics_dir)] if metrics_dir else []
        return run_drkit(list(args) + ["--storage-url", self.url] + extra, env=env)


def file_repo(pg, db, tmp_path, name="store"):
    root = tmp_path / name
    root.mkdir(mode=0o700)
    return Repo(pg, db, "file://%s" % root, root=str(root))


def s3_repo(pg, db, s3, bucket, prefix="pg"):
    return Repo(pg, db, "s3://%s/%s" % (bucket, prefix), s3=s3)


@pytest.fixture(params=["file", "s3"])
def repo(request, pg, small_db, tmp_path):
    if request.param == "file":
        return file_repo(pg, small_db, tmp_path)
    return s3_repo(pg, small_db, request.getfixturevalue("s3"), request.getfixturevalue("bucket"))


@pytest.fixture
def file_store(pg, small_db, tmp_path):
    return file_repo(pg, small_db, tmp_path)


def ids_of(items):
    return [i["backup_id"] for i in items]


def now():
    return dt.datetime.now(UTC)


# --------------------------------------------------------------------------
# forged manifests dated 2097-2099, without artifacts


def test_forged_future_manifests_neither_count_nor_are_deleted(repo, tmp_path):
    genuine = [repo.backup() for _i in range(3)]  # oldest first
    forged = [repo.forge(genuine[-1], dt.datetime(year, 6, 1, tzinfo=UTC), sealed=year != 2098)
              for year in (2097, 2098, 2099)]
    everything = repo.with_manifest()

    r = repo.drkit(["rotate", "--keep-last", "3", "--dry-run"])
    assert r.returncode == 0, r.stderr
    assert "would delete 0 of 3 backups" in r.stdout, r.stdout
    assert "3 backups not counted and left alone" in r.stdout
    for bid in forged:
        line = [x for x in r.stdout.splitlines() if x.startswith("warning: %s " % bid)]
        assert line and "does not count and was left alone: artifacts missing" in line[0], r.stdout
        assert "dated in the future" in line[0]

    metrics = tmp_path / "metrics"
    r = repo.drkit(["rotate", "--keep-last", "3", "--json"], metrics_dir=metrics)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["deleted"] == [] and ids_of(res["kept"]) == genuine[::-1]
    assert dict((i["backup_id"], i["reasons"]) for i in res["kept"])[genuine[-1]] == [
        "last", "newest backup (safety)"]
    assert sorted(ids_of(res["not_counted"])) == sorted(forged)
    assert repo.with_manifest() == everything, "a backup was deleted"
    assert 'drkit_rotate_not_counted_backups{drkit_job="rotate"} 3' in (metrics / "drkit_rotate.prom").read_text()

    # The policy still applies to the genuine backups; the forged ones stay.
    res = json.loads(repo.drkit(["rotate", "--keep-last", "2", "--json"]).stdout)
    assert ids_of(res["deleted"]) == [genuine[0]] and sorted(ids_of(res["not_counted"])) == sorted(forged)
    assert repo.counted() == [genuine[2], genuine[1]]
    assert repo.with_manifest() == sorted(set(everything) - {genuine[0]})

    # list marks them
    r = repo.drkit(["list"])
    assert r.returncode == 0, r.stderr
    rows = dict((line.split()[0], line) for line in r.stdout.splitlines())
    for bid in forged:
        assert "[ARTIFACTS MISSING]" in rows[bid] and "[DATED IN THE FUTURE]" in rows[bid]
        assert "warning: %s does not count: artifacts missing" % bid in r.stderr
    for bid in genuine[1:]:
        assert "[" not in rows[bid]
    listed = json.loads(repo.drkit(["list", "--json"]).stdout)
    assert listed["latest"]["backup_id"] == genuine[2] and listed["not_counted"] == 3
    assert dict((b["backup_id"], b["digest"]) for b in listed["backups"])[forged[1]] is False

    # verify and restore choose the newest genuine backup and say what they passed over
    _changed, res = pg_verify(repo.params(level="checksum"))
    assert res["backup_id"] == genuine[2] and res["passed"] is True
    assert [p.split(":")[0] for p in res["passed_over"]] == forged[::-1]


# --------------------------------------------------------------------------
# a genuine backup taken with the clock ahead / behind (libfaketime, file://)


def test_backup_taken_with_the_clock_ahead_is_reported_and_left_alone(file_store, pg, restored):
    repo = file_store
    a, b = repo.backup(), repo.backup()
    ahead = repo.backup(clock="+2d")
    assert repo.manifest(ahead).finished > now() + dt.timedelta(days=1)
    d, e = repo.backup(), repo.backup()  # the genuinely newest backups

    _changed, plan = rot.rotate(repo.params(keep_last=2), check_mode=True)
    assert ids_of(plan["kept"]) == [e, d] and sorted(ids_of(plan["deleted"])) == sorted([a, b])
    (nc,) = plan["not_counted"]
    assert nc["backup_id"] == ahead and "dated in the future" in nc["reasons"][0]
    assert "later than its storage time" in nc["reasons"][0]

    rot.rotate(repo.params(keep_last=2))
    assert repo.counted() == [e, d]
    assert repo.with_manifest() == sorted([ahead, d, e])
    assert repo.storage.exists(mf.artifact_key(ahead, repo.manifest(ahead)["artifacts"][0]["name"]))

    target = "clock_%s" % uuid.uuid4().hex[:8]
    restored.append(target)
    _changed, res = pg_restore_backup(repo.params(target_database=target))
    assert res["backup_id"] == e and res["passed_over"][0].startswith(ahead + ": finished_at ")
    assert table_row_counts(pg, target) == {"public.t": ROWS}

    r = repo.drkit(["list"])
    row = [x for x in r.stdout.splitlines() if x.startswith(ahead)][0]
    assert "[DATED IN THE FUTURE]" in row and "[ARTIFACTS MISSING]" not in row
    # named by its id it is still there to be restored
    assert mf.resolve(repo.storage, ahead).backup_id == ahead


def test_backup_taken_with_the_clock_behind_is_not_rotated_away(file_store):
    """A clock behind makes a backup look older than it is.  That cannot be
    told from a copied repository, so the backup counts with the time it
    records; but it was stored after the newest one, and rotation keeps it."""
    repo = file_store
    a = repo.backup(clock="-3h")
    b = repo.backup(clock="-2h")
    for bid in (a, b):  # taken three and two hours ago: stored then too
        repo.stored_as_of(bid, repo.manifest(bid).finished + dt.timedelta(seconds=1))
    behind = repo.backup(clock="-2d")  # taken now, on a host whose clock is two days behind
    assert repo.manifest(behind).finished < now() - dt.timedelta(days=1)

    assert repo.counted() == [b, a, behind]  # it counts, with the time it records
    _changed, plan = rot.rotate(repo.params(keep_last=1), check_mode=True)
    kept = dict((i["backup_id"], i["reasons"]) for i in plan["kept"])
    assert list(kept) == [b, behind] and ids_of(plan["deleted"]) == [a] and plan["not_counted"] == []
    assert kept[behind] == ["stored last (safety: stored after the newest backup, so its clock was behind)"]
    rot.rotate(repo.params(keep_last=1))
    assert repo.counted() == [b, behind]


# --------------------------------------------------------------------------
# small offsets (S3 signing allows 15 minutes of skew): forged, with artifacts


def test_small_offsets_within_and_beyond_the_tolerance(repo):
    g1, g2 = repo.backup(), repo.backup()
    near = repo.forge(g2, now() + dt.timedelta(minutes=10), artifacts=True)
    far = repo.forge(g2, now() + dt.timedelta(minutes=30), artifacts=True)

    _changed, plan = rot.rotate(repo.params(keep_last=2), check_mode=True)
    assert ids_of(plan["kept"]) == [near, g2] and ids_of(plan["deleted"]) == [g1]
    assert ids_of(plan["not_counted"]) == [far]

    _changed, res = pg_verify(repo.params(level="checksum"))
    assert res["backup_id"] == near and [p.split(":")[0] for p in res["passed_over"]] == [far]

    listed = json.loads(repo.drkit(["list", "--json"]).stdout)
    flags = dict((b["backup_id"], (b["counted"], b["future_dated"], b["artifacts_missing"]))
                 for b in listed["backups"])
    assert flags == {g1: (True, False, []), g2: (True, False, []), near: (True, False, []),
                     far: (False, True, [])}
    assert listed["latest"]["backup_id"] == near


# --------------------------------------------------------------------------
# a copied repository: storage times long after finished_at are fine


def copy_repository(src, dst):
    """Every object of src written again under dst (new storage times)."""
    for info in src.storage.list(""):
        dst.storage.put_bytes(info.key, src.storage.get_bytes(info.key))


@pytest.mark.parametrize("target", ["file", "s3"])
def test_a_copied_repository_rotates_and_restores_normally(request, pg, small_db, tmp_path, restored, target):
    """The backups were taken 30, 20 and 10 days ago (by the clock of the
    host that took them) and the repository is copied today, to another
    directory or into a bucket: every storage time is weeks after the
    finished_at it holds.  (This passes without the clock rule too: it
    proves the rule is one-sided.)"""
    src = file_repo(pg, small_db, tmp_path, "original")
    taken = [src.backup(clock="-%dd" % days) for days in (30, 20, 10)]
    if target == "file":
        copy = file_repo(pg, small_db, tmp_path, "copy")
    else:
        copy = s3_repo(pg, small_db, request.getfixturevalue("s3"), request.getfixturevalue("bucket"), "copy")
    copy_repository(src, copy)
    assert copy.counted() == taken[::-1]
    stored = copy.storage.stat(mf.manifest_key(taken[2])).mtime
    assert stored > copy.manifest(taken[2]).finished.timestamp() + 9 * 86400

    target_db = "copy_%s" % uuid.uuid4().hex[:8]
    restored.append(target_db)
    _changed, res = pg_restore_backup(copy.params(target_database=target_db))
    assert res["backup_id"] == taken[2] and res["passed_over"] == []
    assert table_row_counts(pg, target_db) == {"public.t": ROWS}

    _changed, res = rot.rotate(copy.params(keep_last=2))
    assert ids_of(res["deleted"]) == [taken[0]] and res["not_counted"] == []
    assert copy.counted() == [taken[2], taken[1]]


# --------------------------------------------------------------------------
# a missing artifact: restore says which backup it could restore, verify fails the damaged one


def test_latest_with_a_missing_artifact(repo, pg, restored, tmp_path):
    older, newer = repo.backup(), repo.backup()
    art = repo.manifest(newer)["artifacts"][0]["name"]
    repo.storage.delete([mf.artifact_key(newer, art)])

    # restore: refused before anything is created, naming the backup it could restore
    target = "miss_%s" % uuid.uuid4().hex[:8]
    restored.append(target)
    with pytest.raises(IntegrityError) as ei:
        pg_restore_backup(repo.params(target_database=target))
    assert str(ei.value).startswith("Backup %s, the newest, cannot be restored: artifacts missing or truncated: "
                                    "%s (missing)" % (newer, art))
    assert "The newest backup that can be is %s" % older in ei.value.hint
    databases = pg.psql("SELECT datname FROM pg_database")
    assert target not in databases and "__drkit_restore_" not in databases
    _changed, res = pg_restore_backup(repo.params(target_database=target, backup_id=older))
    assert res["backup_id"] == older and table_row_counts(pg, target) == {"public.t": ROWS}

    # verify: the newest backup is the one to verify, and the verification fails it, on record
    metrics = tmp_path / "metrics"
    with pytest.raises(IntegrityError) as ei:
        pg_verify(repo.params(level="checksum", metrics_dir=str(metrics)))
    assert "Backup %s failed verification" % newer in str(ei.value)
    assert ei.value.details["record_key"].startswith(mf.backup_prefix(newer) + "verify-")
    prom = (metrics / ("drkit_pg_%s.prom" % repo.db)).read_text()
    assert 'drkit_verify_last_status{drkit_job="pg_%s",kind="pg_logical"} 0' % repo.db in prom

    r = repo.drkit(["list"])
    assert r.returncode == 0
    rows = dict((line.split()[0], line) for line in r.stdout.splitlines())
    assert "[ARTIFACTS MISSING]" in rows[newer] and "[ARTIFACTS MISSING]" not in rows[older]
    assert json.loads(repo.drkit(["list", "--json"]).stdout)["latest"]["backup_id"] == older
    # rotation leaves the damaged backup for a human, and it does not fill a keep slot
    _changed, plan = rot.rotate(repo.params(keep_last=1), check_mode=True)
    assert ids_of(plan["kept"]) == [older] and plan["deleted"] == [] and ids_of(plan["not_counted"]) == [newer]
