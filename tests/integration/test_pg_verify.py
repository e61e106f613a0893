# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.pg_verify against real PostgreSQL 15 and SeaweedFS S3 on
loopback (tests/conftest.py).

Good backups pass at every level; a flipped byte, a truncated or deleted
artifact and an edited manifest fail with a message naming the object and
what differed, and leave a verification record saying ``fail``; the scratch
database (drkit_verify_*) is gone after success, failure and SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest
import yaml
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
from support.barrier_drkit import race
from helpers import (
    DRKIT,
    SmallTmpfs,
    drop_database,
    engine_params,
    find_children,
    list_keys,
    make_blob_database,
    make_sample_database,
    run_playbook,
    s3_module_args,
    set_recorded_count,
    task,
)

PG_VERIFY = "drkit.backup.pg_verify"
ARTIFACT = "database.pgdump.zst"


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def source_db(pg):
    """Small sample dataset, read-only for every test here."""
    name = "vsrc_%s" % uuid.uuid4().hex[:8]
    counts = make_sample_database(pg, name, scale=0.005, seed=23)
    try:
        yield name, counts
    finally:
        drop_database(pg, name)


def storage_url_for(kind, tmp_path, bucket):
    if kind == "file":
        return "file://%s/store" % tmp_path
    return "s3://%s/pg" % bucket


def take_backup(pg, s3, db, url, **extra):
    _changed, res = pg_backup(engine_params(pg, url, s3, database=db, **extra))
    return res


def module_args(pg, url, s3, **extra):
    """Module args with the secrets as template references (extra vars)."""
    args = engine_params(pg, url, s3, **extra)
    args["login_password"] = "{{ pg_password }}"
    if "secret_key" in args:
        args["secret_key"] = "{{ s3_secret }}"
    return args


def secret_vars(pg, s3):
    return {"pg_password": pg.password, "s3_secret": s3.secret_key}


def _s3_key(url, key):
    prefix = urlsplit(url).path.strip("/")
    return urlsplit(url).netloc, ("%s/%s" % (prefix, key) if prefix else key)


def get_object(url, key, s3=None):
    if url.startswith("file://"):
        with open(os.path.join(urlsplit(url).path, key), "rb") as fh:
            return fh.read()
    b, k = _s3_key(url, key)
    return s3.client().get_object(Bucket=b, Key=k)["Body"].read()


def put_object(url, key, data, s3=None):
    if url.startswith("file://"):
        with open(os.path.join(urlsplit(url).path, key), "wb") as fh:
            fh.write(data)
        return
    b, k = _s3_key(url, key)
    s3.client().put_object(Bucket=b, Key=k, Body=data)


def delete_object(url, key, s3=None):
    if url.startswith("file://"):
        os.unlink(os.path.join(urlsplit(url).path, key))
        return
    b, k = _s3_key(url, key)
    s3.client().delete_object(Bucket=b, Key=k)


def records(url, backup_id, s3=None):
    """Verification records of a backup, oldest first. Their names hold the
    time to the second only, so order by the recorded start time."""
    keys = [k for k in list_keys(url, s3) if k.startswith("backups/%s/verify-" % backup_id)]
    recs = [json.loads(get_object(url, k, s3).decode("utf-8")) for k in keys]
    return sorted(recs, key=lambda r: r["started_at"])


def scratch_databases(pg, prefix="drkit_verify"):
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE '%s%%' ORDER BY 1" % prefix)
    return [line for line in out.splitlines() if line]


def read_metrics(metrics_dir):
    (name,) = [n for n in os.listdir(metrics_dir) if n.endswith(".prom")]
    with open(os.path.join(metrics_dir, name)) as fh:
        return fh.read()


def all_databases(pg):
    return set(line for line in pg.psql("SELECT datname FROM pg_database").splitlines() if line)


# --------------------------------------------------------------------------
# good backups pass


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_checksum_and_structure_levels_pass_and_leave_records(pg, s3, bucket, source_db, tmp_path, fmt):
    db, _counts = source_db
    url = storage_url_for("s3", tmp_path, bucket)
    bak = take_backup(pg, s3, db, url, format=fmt)
    metrics_dir = str(tmp_path / "metrics")
    before = all_databases(pg)
    for level in ("checksum", "structure"):
        _changed, res = pg_verify(engine_params(pg, url, s3, backup_id=bak["backup_id"], level=level,
                                                metrics_dir=metrics_dir))
        assert res["passed"] is True and res["level"] == level and res["findings"] == []
        assert res["backup_id"] == bak["backup_id"]
    assert all_databases(pg) == before  # these levels never create a database
    recs = records(url, bak["backup_id"], s3)
    assert [(r["level"], r["result"]) for r in recs] == [("checksum", "pass"), ("structure", "pass")]
    assert all(r["backup_age_seconds"] >= 0 and r["duration_seconds"] > 0 for r in recs)
    # the manifest is never rewritten by verification
    man = json.loads(get_object(url, mf.manifest_key(bak["backup_id"]), s3).decode("utf-8"))
    assert man == bak["manifest"]
    prom = read_metrics(metrics_dir)
    assert 'drkit_verify_last_status{drkit_job="pg_%s",kind="pg_logical"} 1' % db in prom
    assert "drkit_verify_last_success_timestamp_seconds{" in prom


def test_restore_level_through_ansible_with_sql_checks(pg, s3, source_db, tmp_path, tmp_storage_url):
    db, counts = source_db
    url = tmp_storage_url
    bak = take_backup(pg, s3, db, url)
    metrics_dir = str(tmp_path / "metrics")
    checks = [{"name": "agents present", "sql": "SELECT count(*) FROM mcp_documents.agents", "min": 1},
              {"name": "agents exact", "sql": "SELECT count(*) FROM mcp_documents.agents",
               "equals": counts["mcp_documents.agents"]},
              "SELECT count(*) > 0 FROM mcp_documents.users"]
    args = module_args(pg, url, s3, level="restore", checks=checks, metrics_dir=metrics_dir)
    dbs = all_databases(pg)
    # check mode first (resolves the backup, reads and writes nothing), then for real
    run = run_playbook([task(PG_VERIFY, name="check", _check_mode=True, **args),
                        task(PG_VERIFY, name="real", **args)], extra_vars=secret_vars(pg, s3))
    assert run.rc == 0, run.describe()
    assert pg.password not in run.text
    res = run.result("check")
    assert res["backup_id"] == bak["backup_id"] and res["passed"] is None and "Would verify" in res["msg"]
    res = run.result("real")
    assert res["passed"] is True and res["level"] == "restore" and res["findings"] == []
    assert res["backup_id"] == bak["backup_id"] and res["changed"] is True
    # every table compared, every count equal to the manifest (and the source)
    assert dict(("%s.%s" % (t["schema"], t["table"]), t["actual"]) for t in res["tables"]) == counts
    assert all(t["ok"] for t in res["tables"]) and len(res["tables"]) == len(counts)
    assert [(c["name"], c["ok"]) for c in res["checks"]] == [
        ("agents present", True), ("agents exact", True), ("SELECT count(*) > 0 FROM mcp_documents.users", True)]
    assert res["timings"]["restore_seconds"] > 0 and res["timings"]["streamed"] is True
    # the scratch database existed under a drkit_verify_ name and is gone
    assert res["scratch_database"].startswith("drkit_verify_")
    assert scratch_databases(pg) == [] and all_databases(pg) == dbs
    # one record only: check mode wrote none
    (rec,) = records(url, bak["backup_id"])
    assert rec["result"] == "pass" and rec["level"] == "restore" and len(rec["tables"]) == len(counts)
    assert res["record_key"] in list_keys(url)
    prom = read_metrics(metrics_dir)
    for series in ("drkit_verify_last_status", "drkit_verify_duration_seconds",
                   "drkit_restore_duration_seconds", "drkit_backup_age_at_verify_seconds"):
        assert series + "{" in prom, prom
    assert 'drkit_verify_last_status{drkit_job="pg_%s",kind="pg_logical"} 1' % db in prom


# --------------------------------------------------------------------------
# damaged backups fail precisely


def _flip(data):
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def _edit_manifest(url, backup_id, s3, edit):
    """Edit a manifest and seal it again with a valid digest, as a forger
    would: these tests are about what verification finds in the data (an
    edit that leaves the digest alone is refused on reading, see
    test_an_edited_manifest_is_refused_before_anything_is_restored)."""
    key = mf.manifest_key(backup_id)
    man = json.loads(get_object(url, key, s3).decode("utf-8"))
    edit(man)
    put_object(url, key, mf.Manifest(man).to_json(), s3)
    return man


@pytest.mark.parametrize("kind,damage", [("file", "flip"), ("file", "truncate"), ("file", "delete"),
                                         ("file", "manifest_sha256"), ("s3", "flip")])
def test_damaged_artifact_fails_at_checksum_level(pg, s3, bucket, source_db, tmp_path, kind, damage):
    db, _counts = source_db
    url = storage_url_for(kind, tmp_path, bucket)
    bak = take_backup(pg, s3, db, url)
    bid = bak["backup_id"]
    art = bak["manifest"]["artifacts"][0]
    assert art["name"] == ARTIFACT
    key = mf.artifact_key(bid, ARTIFACT)
    data = get_object(url, key, s3)
    if damage == "flip":
        put_object(url, key, _flip(data), s3)
        expect = ["sha256 ", ", manifest says %s" % art["sha256"]]
    elif damage == "truncate":
        put_object(url, key, data[:len(data) - 1000], s3)
        expect = ["size %d bytes, manifest says %d" % (len(data) - 1000, len(data))]
    elif damage == "delete":
        delete_object(url, key, s3)
        expect = ["Artifact %s of backup %s is missing" % (ARTIFACT, bid)]
    else:
        fake = "0" * 64
        _edit_manifest(url, bid, s3, lambda m: m["artifacts"][0].update(sha256=fake))
        expect = ["sha256 %s, manifest says %s" % (art["sha256"], fake)]
    with pytest.raises(IntegrityError) as ei:
        pg_verify(engine_params(pg, url, s3, backup_id=bid, level="checksum"))
    msg = str(ei.value)
    assert "Backup %s failed verification at level checksum" % bid in msg
    assert ARTIFACT in msg, msg
    for e in expect:
        assert e in msg, msg
    if damage != "delete":
        assert "Stored object %s" % key in msg and "does not match its manifest" in msg
    (rec,) = records(url, bid, s3)
    assert rec["result"] == "fail" and rec["level"] == "checksum"
    assert any(ARTIFACT in f for f in rec["findings"])
    assert ei.value.details["record_key"].startswith("backups/%s/verify-" % bid)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_artifact_fails_at_restore_level_and_drops_scratch(pg, s3, source_db, tmp_storage_url, damage):
    """Streamed restore: pg_restore may have loaded part of the data when the
    damage shows; the scratch database must still be dropped."""
    db, _counts = source_db
    bak = take_backup(pg, s3, db, tmp_storage_url)
    bid = bak["backup_id"]
    key = mf.artifact_key(bid, ARTIFACT)
    data = get_object(tmp_storage_url, key)
    put_object(tmp_storage_url, key, data[:len(data) // 2] if damage == "truncate" else _flip(data))
    dbs = all_databases(pg)
    with pytest.raises(IntegrityError) as ei:
        pg_verify(engine_params(pg, tmp_storage_url, s3, level="restore"))
    msg = str(ei.value)
    assert "Stored object %s" % key in msg, msg
    assert ("size %d bytes, manifest says %d" % (len(data) // 2, len(data)) in msg if damage == "truncate"
            else "manifest says %s" % bak["manifest"]["artifacts"][0]["sha256"] in msg), msg
    assert scratch_databases(pg) == [] and all_databases(pg) == dbs
    (rec,) = records(tmp_storage_url, bid)
    assert rec["result"] == "fail" and rec["level"] == "restore"


def test_edited_row_count_and_failing_checks_fail_at_restore_level(pg, s3, source_db, tmp_path, tmp_storage_url):
    db, counts = source_db
    bak = take_backup(pg, s3, db, tmp_storage_url)
    bid = bak["backup_id"]
    real = counts["mcp_documents.agents"]
    _edit_manifest(tmp_storage_url, bid, s3,
                   lambda m: set_recorded_count(m, "mcp_documents.agents", real + 1))
    # checksum level does not look at data facts: it still passes
    assert pg_verify(engine_params(pg, tmp_storage_url, s3, level="checksum"))[1]["passed"] is True
    metrics_dir = str(tmp_path / "metrics")
    dbs = all_databases(pg)
    params = engine_params(pg, tmp_storage_url, s3, level="restore", metrics_dir=metrics_dir, checks=[
        {"name": "no agents at all", "sql": "SELECT count(*) FROM mcp_documents.agents", "equals": 0},
        {"name": "broken sql", "sql": "SELECT count(*) FROM no_such_table"}])
    with pytest.raises(IntegrityError) as ei:
        pg_verify(params)
    msg = str(ei.value)
    assert "mcp_documents.agents: expected %d rows, restored %d" % (real + 1, real) in msg, msg
    assert "check 'no agents at all' failed (value %d)" % real in msg, msg
    assert "check 'broken sql' failed: " in msg and "no_such_table" in msg, msg
    assert scratch_databases(pg) == [] and all_databases(pg) == dbs
    recs = records(tmp_storage_url, bid)
    assert [(r["level"], r["result"]) for r in recs] == [("checksum", "pass"), ("restore", "fail")]
    bad = [t for t in recs[1]["tables"] if not t["ok"]]
    assert bad == [{"schema": "mcp_documents", "table": "agents", "name": "mcp_documents.agents",
                    "expected": real + 1, "actual": real, "ok": False}]
    assert [c["ok"] for c in recs[1]["checks"]] == [False, False]
    prom = read_metrics(metrics_dir)
    assert 'drkit_verify_last_status{drkit_job="pg_%s",kind="pg_logical"} 0' % db in prom
    assert "drkit_verify_last_success_timestamp_seconds" not in prom


def test_unreadable_manifest_is_a_clear_error(pg, s3, source_db, tmp_storage_url):
    db, _counts = source_db
    bak = take_backup(pg, s3, db, tmp_storage_url)
    bid = bak["backup_id"]
    key = mf.manifest_key(bid)
    put_object(tmp_storage_url, key, get_object(tmp_storage_url, key)[:-40])
    with pytest.raises(IntegrityError) as ei:
        pg_verify(engine_params(pg, tmp_storage_url, s3, backup_id=bid, level="checksum"))
    msg = str(ei.value)
    assert "%s of %s is not valid JSON" % (key, tmp_storage_url) in msg, msg
    assert ei.value.hint and "corrupt" in ei.value.hint
    # no record can be written for a backup whose manifest cannot be read
    assert records(tmp_storage_url, bid) == []


def test_an_edited_manifest_is_refused_before_anything_is_restored(pg, s3, source_db, tmp_storage_url):
    """The manifest's digest: row counts emptied by an edit left a
    restore-level verification nothing to compare, and it passed."""
    db, _counts = source_db
    bak = take_backup(pg, s3, db, tmp_storage_url)
    bid = bak["backup_id"]
    key = mf.manifest_key(bid)
    man = json.loads(get_object(tmp_storage_url, key).decode("utf-8"))
    assert man["data"]["table_rows"] and man[mf.DIGEST]
    man["data"]["table_rows"] = []
    put_object(tmp_storage_url, key, json.dumps(man, indent=2, sort_keys=True).encode("utf-8"))
    dbs = all_databases(pg)
    for selector in ({}, {"backup_id": bid}):
        with pytest.raises(IntegrityError) as ei:
            pg_verify(engine_params(pg, tmp_storage_url, s3, level="restore", **selector))
        msg = str(ei.value)
        assert "%s of %s does not match its manifest_sha256: it was changed after drkit wrote it" % (
            key, tmp_storage_url) in msg, msg
    assert records(tmp_storage_url, bid) == [] and all_databases(pg) == dbs


# --------------------------------------------------------------------------
# SIGTERM during the test-restore


@pytest.fixture(scope="module")
def bigger_backup(pg, s3, tmp_path_factory):
    """A backup big enough that its restore runs for a couple of seconds."""
    name = "vbig_%s" % uuid.uuid4().hex[:8]
    make_sample_database(pg, name, scale=0.05, seed=5)
    url = "file://%s" % tmp_path_factory.mktemp("big-store")
    try:
        bak = take_backup(pg, s3, name, url)
    finally:
        drop_database(pg, name)  # only the backup is needed from here on
    return url, bak


def drkit_popen(tmp_path, pg, args):
    """bin/drkit with the password in a 0600 --config file (never argv)."""
    cfg = tmp_path / "drkit.yml"
    if not cfg.exists():
        fd = os.open(str(cfg), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump({"login_password": pg.password}, fh)
    argv = [sys.executable, str(DRKIT)] + list(args) + [
        "--config", str(cfg), "--host", pg.host, "--port", str(pg.port), "--user", pg.superuser]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


@pytest.mark.parametrize("command", ["verify", "restore"])
def test_sigterm_during_restore_drops_scratch(pg, bigger_backup, tmp_path, command):
    """SIGTERM while pg_restore loads data: exit code 143, the scratch
    (verify, streamed with jobs=1) or staging (restore, jobs=2 from a local
    copy) database is dropped, pg_restore does not outlive drkit."""
    url, bak = bigger_backup
    work = tmp_path / "work"
    work.mkdir()
    if command == "verify":
        prefix = "drkit_verify_"
        args = ["verify", "--level", "restore", "--jobs", "1"]
    else:
        target = "sig_%s" % uuid.uuid4().hex[:8]
        prefix = target + "__drkit_restore"
        args = ["restore", "--target-database", target, "--jobs", "2"]
    before = all_databases(pg)
    proc = drkit_popen(tmp_path, pg, args + ["--storage-url", url, "--backup-id", bak["backup_id"],
                                             "--work-dir", str(work)])
    try:
        # Wait until pg_restore runs and COPYs rows into the scratch database.
        deadline = time.time() + 60
        scratch = []
        while time.time() < deadline and proc.poll() is None:
            scratch = scratch_databases(pg, prefix)
            if scratch and find_children(proc.pid, "pg_restore"):
                copying = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
                                  "AND query LIKE 'COPY%%'" % scratch[0])
                if copying.strip() != "0":
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "drkit %s finished before it could be stopped: %s" % (
            command, proc.communicate()[1][-2000:])
        assert scratch, "no scratch database appeared"
        restorers = find_children(proc.pid, "pg_restore")
        assert restorers
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "by signal 15" in err, err
    assert scratch_databases(pg, prefix) == [], "scratch database left behind: %s" % err
    assert all_databases(pg) == before
    assert list(work.iterdir()) == []  # the local copy (jobs=2) is removed too
    time.sleep(0.5)
    for pid in restorers:  # the pg_restore child did not outlive drkit
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z"
    if command == "verify":
        assert records(url, bak["backup_id"]) == []  # stopped: no verdict recorded


def test_cli_verify_check_mode_and_before(pg, s3, source_db, tmp_path, tmp_storage_url):
    db, _counts = source_db
    first = take_backup(pg, s3, db, tmp_storage_url)
    second = take_backup(pg, s3, db, tmp_storage_url)
    keys = list_keys(tmp_storage_url)
    proc = drkit_popen(tmp_path, pg, ["verify", "--storage-url", tmp_storage_url, "--level", "restore",
                                      "--check", "--json"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert res["backup_id"] == second["backup_id"] and res["passed"] is None
    assert list_keys(tmp_storage_url) == keys  # check mode wrote no record
    proc = drkit_popen(tmp_path, pg, ["verify", "--storage-url", tmp_storage_url, "--level", "checksum",
                                      "--before", first["manifest"]["finished_at"], "--json"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["backup_id"] == first["backup_id"]
    assert [r["result"] for r in records(tmp_storage_url, first["backup_id"])] == ["pass"]
    assert pg.password not in out + err


# --------------------------------------------------------------------------
# disk full: the local copy of a parallel test-restore, on a real small tmpfs


def test_restore_level_with_a_full_work_dir_is_a_clear_disk_full_error(pg, s3, tmp_path, tmp_storage_url):
    """verify --level restore -j 2 downloads the dump into work_dir first: a
    full one is exit 3 naming the directory, not a traceback; no scratch
    database, no verdict recorded (the backup was not judged), nothing left
    in work_dir; the next run with room passes."""
    mib = 1 << 20
    db = "vfull_%s" % uuid.uuid4().hex[:8]
    make_blob_database(pg, db, 3)
    try:
        bak = take_backup(pg, s3, db, tmp_storage_url)
    finally:
        drop_database(pg, db)
    (art,) = bak["manifest"]["artifacts"]
    assert art["raw_size"] > 2 * mib
    before = all_databases(pg)
    with SmallTmpfs(tmp_path / "work", mib) as work:
        args = ["verify", "--storage-url", tmp_storage_url, "--level", "restore", "--jobs", "2",
                "--work-dir", str(work.path), "--json"]
        proc = drkit_popen(tmp_path, pg, args)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 3, err
        assert "Traceback" not in err
        assert "drkit verify: error: The file system of %s is full: no room for the local copy of %s" % (
            work.path, art["name"]) in err, err
        assert work.contents() == [] and scratch_databases(pg) == [] and all_databases(pg) == before
        assert records(tmp_storage_url, bak["backup_id"]) == []

        work.resize(64 * mib)
        proc = drkit_popen(tmp_path, pg, args)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert json.loads(out)["passed"] is True
        assert work.contents() == [] and scratch_databases(pg) == []
        assert [r["result"] for r in records(tmp_storage_url, bak["backup_id"])] == ["pass"]

# racing writers


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_two_verifications_at_once_keep_both_records(pg, s3, bucket, source_db, tmp_path, kind):
    """Two drkit verify runs of one backup, held just before their record
    write and released together: each record under its own key, create-only."""
    db, _counts = source_db
    url = storage_url_for(kind, tmp_path, bucket)
    bak = take_backup(pg, s3, db, url)
    cfg = dict(login_host=pg.host, port=pg.port, login_user=pg.superuser, login_password=pg.password)
    if kind == "s3":
        cfg.update(s3_module_args(s3))
    cmd = ["verify", "--level", "checksum", "--storage-url", url, "--backup-id", bak["backup_id"]]
    results = race([cmd, cmd], str(tmp_path / "barrier"), r"/verify-[^/]*\.json$", config=cfg)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    recs = records(url, bak["backup_id"], s3)
    assert [r["result"] for r in recs] == ["pass", "pass"]
