# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.pg_backup through Ansible for real: a PostgreSQL 15 cluster
and SeaweedFS S3 on loopback (tests/conftest.py).

Every successful backup is restored BY HAND here (hashlib, zstandard,
pg_restore into a new database), never through the engine, and each
table's row count is compared with the manifest and with the source.
Every failure must leave no manifest, no artifact and no open multipart
upload."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import scratch as sandbox
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from support.barrier_drkit import race
from helpers import (BUILD_COLLECTIONS, DRKIT, SmallTmpfs, ansible_environment, drop_database, fetch_artifact,
                     file_root, list_keys, make_blob_database, make_sample_database,
                     open_multipart_uploads, pg_module_args, read_proc, recorded_counts, restore_by_hand, run_drkit,
                     run_playbook, s3_module_args, step_until, table_row_counts, task, temp_upload_over,
                     wait_for_child)

ID_RE = re.compile(r"^\d{8}T\d{6}Z-pg-logical-[0-9a-f]{6}$")
PG_BACKUP = "drkit.backup.pg_backup"


@pytest.fixture(scope="module")
def source_db(pg):
    """The sample dataset (agentic_platform shape) at a small scale; read-only
    for every test of this module."""
    name = "src_%s" % uuid.uuid4().hex[:8]
    counts = make_sample_database(pg, name, scale=0.005, seed=11)
    assert len(counts) >= 30 and sum(counts.values()) > 0
    try:
        yield name, counts
    finally:
        drop_database(pg, name)


def storage_url_for(kind, tmp_path, bucket):
    if kind == "file":
        return "file://%s/backups-root" % tmp_path
    return "s3://%s/pg/prod" % bucket


def backup_args(pg, db, url, s3, **extra):
    args = pg_module_args(pg, db)
    args["storage_url"] = url
    if url.startswith("s3://"):
        args.update(s3_module_args(s3))
    # secrets reach the play as extra vars, like a vault would
    args["login_password"] = "{{ pg_password }}"
    if "secret_key" in args:
        args["secret_key"] = "{{ s3_secret }}"
    args.update(extra)
    return args


def secrets_vars(pg, s3):
    return {"pg_password": pg.password, "s3_secret": s3.secret_key}


def assert_no_secret(run, pg, s3):
    assert pg.password not in run.text
    assert s3.secret_key not in run.text


def assert_nothing_left(url, s3, bucket):
    """No manifest, no artifact, no temp file, no open multipart upload."""
    assert [k for k in list_keys(url, s3) if k.startswith("backups/")] == []
    if url.startswith("s3://"):
        assert open_multipart_uploads(s3, bucket) == []
    else:
        root = file_root(url)
        # not even an empty backups/<id>/ directory
        leftovers = [str(p) for p in root.rglob("*")] if root.exists() else []
        assert leftovers == []


def check_restore(pg, tmp_path, url, s3, result, source_counts, restored, jobs=1):
    """Download, check, decompress and pg_restore the artifact by hand;
    compare every table's row count with the manifest and the source."""
    manifest = result["manifest"]
    (artifact,) = manifest["artifacts"]
    fmt = manifest["options"]["format"]
    data = fetch_artifact(url, result["backup_id"], artifact, s3=s3)
    target = "restored_%s" % uuid.uuid4().hex[:8]
    restored.append(target)
    work = tmp_path / target
    work.mkdir()
    restore_by_hand(pg, data, fmt, target, work, jobs=jobs)
    got = table_row_counts(pg, target)
    assert recorded_counts(manifest) == source_counts
    assert got == source_counts
    return got


# --------------------------------------------------------------------------
# check mode


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_check_mode_writes_nothing(pg, s3, bucket, source_db, tmp_path, kind):
    db, _counts = source_db
    url = storage_url_for(kind, tmp_path, bucket)
    run = run_playbook([task(PG_BACKUP, **backup_args(pg, db, url, s3))], extra_vars=secrets_vars(pg, s3),
                       check=True)
    assert run.rc == 0, run.describe()
    res = run.result(PG_BACKUP)
    assert res["changed"] is True and res.get("backup_id") is None
    assert res["msg"].startswith("Would back up database %s (PostgreSQL 15" % db)
    if kind == "file":
        assert not file_root(url).exists()  # the probe removed what it wrote, even the directory
        assert list_keys(url, s3) == []
    else:
        # the storage contract's probe object, create-only and left for the lifecycle rule
        assert list_keys(url, s3) == [res["probe"]] and res["probe"].startswith("probe/")
        assert open_multipart_uploads(s3, bucket) == []
    assert_no_secret(run, pg, s3)


def test_check_mode_reports_what_would_fail(pg, s3, bucket, source_db, tmp_path):
    """Check mode reaches the server and the storage (read-only), so it
    fails where the real run would."""
    db, _counts = source_db
    url = storage_url_for("s3", tmp_path, bucket)
    cases = {
        "missing bucket": (dict(storage_url="s3://drkit-missing-%s/x" % uuid.uuid4().hex[:8]), "does not exist"),
        "wrong password": (dict(login_password="wrong-%s" % uuid.uuid4().hex), "Cannot log in"),
        "wrong s3 secret": (dict(secret_key="wrong-%s" % uuid.uuid4().hex), "access denied"),
    }
    tasks = []
    for name, (override, _msg) in cases.items():
        args = backup_args(pg, db, url, s3)
        args.update(override)
        tasks.append(task(PG_BACKUP, name=name, _ignore_errors=True, **args))
    run = run_playbook(tasks, extra_vars=secrets_vars(pg, s3), check=True)
    for name, (_override, msg) in cases.items():
        assert run.failed(name), "%s did not fail in check mode\n%s" % (name, run.describe())
        assert msg in run.result(name)["msg"], run.result(name)["msg"]
    assert_nothing_left(url, s3, bucket)


# --------------------------------------------------------------------------
# real runs, restored by hand


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_custom_format_backup_restores_with_identical_row_counts(
        pg, s3, bucket, source_db, tmp_path, restored, kind):
    db, counts = source_db
    url = storage_url_for(kind, tmp_path, bucket)
    metrics_dir = tmp_path / "metrics"
    args = backup_args(pg, db, url, s3, metrics_dir=str(metrics_dir), job_name="pg_src",
                       labels={"purpose": "test"})
    run = run_playbook([task(PG_BACKUP, name="first", **args), task(PG_BACKUP, name="second", **args)],
                       extra_vars=secrets_vars(pg, s3))
    assert run.rc == 0, run.describe()
    first, second = run.result("first"), run.result("second")
    assert_no_secret(run, pg, s3)

    # results
    for res in (first, second):
        assert res["changed"] is True
        assert ID_RE.match(res["backup_id"])
        m = res["manifest"]
        (art,) = m["artifacts"]
        assert art["name"] == "database.pgdump.zst"
        assert res["size"] == art["size"] > 0 and res["sha256"] == art["sha256"]
        assert res["duration"] > 0 and res["manifest_key"] == "backups/%s/manifest.json" % res["backup_id"]
        assert m["kind"] == "pg_logical" and m["backup_id"] == res["backup_id"]
        assert m["source"]["database"] == db and m["source"]["port"] == pg.port
        assert m["source"]["server_version_num"] // 10000 == 15
        assert m["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL) 15")
        assert m["compression"] == {"algorithm": "zstd", "level": 3}
        assert m["options"]["format"] == "custom" and m["labels"] == {"purpose": "test"}
        assert m["data"]["toc_entries"] > len(counts)  # pg_restore --list ran on the stored object
        assert art["raw_size"] > art["size"]  # compressed by the pipeline, not by pg_dump
        assert m["started_at"] <= m["finished_at"]
    # idempotence does not apply to a backup: each run makes a new one
    assert first["backup_id"] != second["backup_id"]

    # storage: exactly the two backups, manifest next to the artifact
    keys = list_keys(url, s3)
    assert keys == sorted("backups/%s/%s" % (r["backup_id"], n) for r in (first, second)
                          for n in ("database.pgdump.zst", "manifest.json"))
    if kind == "s3":
        assert open_multipart_uploads(s3, bucket) == []
        stored = json.loads(s3.client().get_object(Bucket=bucket, Key="pg/prod/" + first["manifest_key"])
                            ["Body"].read())
    else:
        root = file_root(url)
        for p in root.rglob("*"):
            assert (p.stat().st_mode & 0o777) == (0o700 if p.is_dir() else 0o600), p
        stored = json.loads((root / first["manifest_key"]).read_text())
    assert stored == first["manifest"]

    # metrics of the job
    prom = (metrics_dir / "drkit_pg_src.prom").read_text()
    assert re.search(r'^drkit_backup_last_status\{drkit_job="pg_src",kind="pg_logical"\} 1$', prom, re.M)
    assert re.search(r'^drkit_backup_size_bytes\{[^}]*\} %d$' % second["size"], prom, re.M)

    check_restore(pg, tmp_path, url, s3, second, counts, restored)


def test_directory_format_with_two_jobs_restores(pg, s3, bucket, source_db, tmp_path, restored):
    db, counts = source_db
    url = storage_url_for("s3", tmp_path, bucket)
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    run = run_playbook([task(PG_BACKUP, **backup_args(pg, db, url, s3, format="directory", jobs=2,
                                                      work_dir=str(work_dir)))],
                       extra_vars=secrets_vars(pg, s3))
    assert run.rc == 0, run.describe()
    res = run.result(PG_BACKUP)
    m = res["manifest"]
    assert m["options"]["format"] == "directory" and m["options"]["jobs"] == 2
    assert [a["name"] for a in m["artifacts"]] == ["database.dir.tar.zst"]
    assert list(work_dir.iterdir()) == []  # the local dump copy was removed
    assert open_multipart_uploads(s3, bucket) == []
    check_restore(pg, tmp_path, url, s3, res, counts, restored, jobs=2)


def test_schema_filter_and_no_row_counts(pg, s3, bucket, source_db, tmp_path, restored):
    db, counts = source_db
    url = storage_url_for("file", tmp_path, bucket)
    run = run_playbook([
        # mcp_documents is self-contained (only the other schemas reference it);
        # nothing references alerts
        task(PG_BACKUP, name="filtered", **backup_args(pg, db, url, s3, schemas=["mcp_documents"],
                                                       exclude_tables=["mcp_documents.alerts"])),
        task(PG_BACKUP, name="uncounted", **backup_args(pg, db, url, s3, row_counts=False)),
    ], extra_vars=secrets_vars(pg, s3))
    assert run.rc == 0, run.describe()
    res = run.result("filtered")
    expected = dict((k, v) for k, v in counts.items()
                    if k.startswith("mcp_documents.") and k != "mcp_documents.alerts")
    assert expected and recorded_counts(res["manifest"]) == expected
    (art,) = res["manifest"]["artifacts"]
    target = "restored_%s" % uuid.uuid4().hex[:8]
    restored.append(target)
    restore_by_hand(pg, fetch_artifact(url, res["backup_id"], art), "custom", target, tmp_path)
    assert table_row_counts(pg, target) == expected
    uncounted = run.result("uncounted")["manifest"]
    assert "table_rows" not in uncounted["data"] and "row_counts" not in uncounted["data"]
    assert uncounted["options"]["row_counts"] is False


def test_password_with_pgpass_special_characters(pg, s3, bucket, source_db, tmp_path):
    """A role whose password holds ':' and '\\' (escaped in the pgpass file)
    can back up; the password shows nowhere."""
    db, counts = source_db
    role = "bk_%s" % uuid.uuid4().hex[:6]
    password = "p:a\\ss:%s\\" % uuid.uuid4().hex[:6]
    pg.psql("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'" % (role, password.replace("'", "''")))
    try:
        url = storage_url_for("file", tmp_path, bucket)
        args = backup_args(pg, db, url, s3, login_user=role, login_password="{{ role_pw }}",
                           schemas=["l02_runtime"])
        run = run_playbook([task(PG_BACKUP, **args)], extra_vars={"role_pw": password})
        assert run.rc == 0, run.describe()
        res = run.result(PG_BACKUP)
        assert recorded_counts(res["manifest"]) == dict(
            (k, v) for k, v in counts.items() if k.startswith("l02_runtime."))
        assert password not in run.text
    finally:
        pg.psql("DROP ROLE %s" % role)


# --------------------------------------------------------------------------
# failures: a clear message, nothing that looks like a backup


def test_failures_leave_nothing(pg, s3, bucket, source_db, tmp_path):
    db, _counts = source_db
    url = storage_url_for("s3", tmp_path, bucket)
    wrong = "Wr0ng-%s" % uuid.uuid4().hex
    dead_port = sandbox.free_port()
    missing_bucket = "drkit-missing-%s" % uuid.uuid4().hex[:10]
    file_url = storage_url_for("file", tmp_path, bucket)
    cases = {
        "wrong password": (dict(login_password="{{ wrong_pw }}"), "Cannot log in to PostgreSQL"),
        "unreachable host": (dict(port=dead_port), "Cannot connect to PostgreSQL at %s:%d: connection failed: "
                             "connection to server at \"%s\", port %d failed: Connection refused. Check login_host"
                             % (pg.host, dead_port, pg.host, dead_port)),
        "missing database": (dict(database="no_such_db"), "Database 'no_such_db' does not exist"),
        "missing bucket": (dict(storage_url="s3://%s/x" % missing_bucket), "does not exist"),
        "relative path": (dict(storage_url="var/backups"), "Unsupported storage_url 'var/backups'"),
        "file host": (dict(storage_url="file://var/backups"), "names a host"),
        "unknown scheme": (dict(storage_url="gs://bucket/x"), "Unsupported storage_url"),
        "s3 without bucket": (dict(storage_url="s3:///prefix"), "has no bucket name"),
        "bad format": (dict(format="tar"), "value of format must be one of"),
        "jobs without directory": (dict(jobs=2), "jobs > 1 needs format: directory"),
        "wrong s3 secret": (dict(secret_key="{{ wrong_pw }}"), "access denied"),
        "missing work_dir": (dict(format="directory", work_dir=str(tmp_path / "nope")), "is not a directory"),
    }
    tasks = []
    for name, (override, _msg) in cases.items():
        args = backup_args(pg, db, url, s3)
        args.update(override)
        tasks.append(task(PG_BACKUP, name=name, _ignore_errors=True, **args))
    run = run_playbook(tasks, extra_vars=dict(secrets_vars(pg, s3), wrong_pw=wrong))
    for name, (_override, msg) in cases.items():
        assert run.failed(name), "%s did not fail\n%s" % (name, run.describe())
        res = run.result(name)
        assert msg in res["msg"], "%s: %s" % (name, res["msg"])
        assert "backup_id" not in res
    # the messages say what to do
    assert "login_password" in run.result("wrong password")["msg"]
    assert "Create the bucket" in run.result("missing bucket")["msg"]
    assert "access_key/secret_key" in run.result("wrong s3 secret")["msg"]
    # no secret anywhere in what Ansible printed or returned
    assert wrong not in run.text
    assert_no_secret(run, pg, s3)
    # and nothing stored, nothing created
    assert_nothing_left(url, s3, bucket)
    assert not file_root(file_url).exists()
    assert missing_bucket not in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]
    assert not os.path.exists("var")


# --------------------------------------------------------------------------
# option values: refused with the option and its range named, by both front
# doors, before anything connects or is written; login_port for PostgreSQL


REFUSED = {
    "jobs 0": (dict(jobs=0), ["--jobs", "0"], "jobs must be at least 1, got 0"),
    "jobs -1": (dict(jobs=-1, format="directory"), ["--jobs", "-1", "--format", "directory"],
                "jobs must be at least 1, got -1"),
    "compression_level 30": (dict(compression_level=30), ["--compression-level", "30"],
                             "compression_level must be 1-19, got 30"),
    "compression_level 0": (dict(compression_level=0), ["--compression-level", "0"],
                            "compression_level must be 1-19, got 0"),
    "compression_threads -2": (dict(compression_threads=-2), ["--compression-threads", "-2"],
                               "compression_threads must be -1 to 256, got -2"),
    "port 70000": (dict(port=70000), ["--port", "70000"], "port must be 1-65535, got 70000"),
}


def test_module_refuses_out_of_range_values(pg, s3, bucket, source_db, tmp_path):
    db, _counts = source_db
    url = storage_url_for("file", tmp_path, bucket)
    tasks = []
    for name, (override, _flags, _msg) in REFUSED.items():
        tasks.append(task(PG_BACKUP, name=name, _ignore_errors=True, **backup_args(pg, db, url, s3, **override)))
    run = run_playbook(tasks, extra_vars=secrets_vars(pg, s3))
    for name, (_override, _flags, msg) in REFUSED.items():
        assert run.failed(name), "%s was accepted\n%s" % (name, run.describe())
        res = run.result(name)
        assert msg in res["msg"], "%s: %s" % (name, res["msg"])
        assert res.get("error") == "ConfigError" and "backup_id" not in res
    assert "default 3" in run.result("compression_level 0")["msg"]
    assert_no_secret(run, pg, s3)
    assert not file_root(url).exists()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_cli_refuses_out_of_range_values_with_exit_2(pg, source_db, tmp_path, name):
    db, _counts = source_db
    _override, flags, msg = REFUSED[name]
    url = "file://%s/backups-root" % tmp_path
    p = run_drkit(["pg-backup", "--host", pg.host, "--port", str(pg.port), "--user", pg.superuser, "-d", db,
                   "--storage-url", url] + flags, config={"login_password": pg.password}, tmp_dir=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.startswith("drkit pg-backup: error: ") and msg in p.stderr, p.stderr
    assert p.stdout == "" and pg.password not in p.stderr
    assert not file_root(url).exists()
    if name.startswith("compression_level"):
        assert "default 3" in p.stderr


def test_cli_refuses_out_of_range_values_from_the_config_file(pg, source_db, tmp_path):
    db, _counts = source_db
    url = "file://%s/backups-root" % tmp_path
    p = run_drkit(["pg-backup", "--storage-url", url, "-d", db],
                  config=dict(login_host=pg.host, port=pg.port, login_password=pg.password, jobs=0),
                  tmp_dir=tmp_path)
    assert p.returncode == 2 and "jobs must be at least 1, got 0" in p.stderr, p.stderr


def test_one_job_file_serves_backup_verify_and_rotate_but_a_typo_is_refused(pg, source_db, tmp_path):
    """The roles write one config file per job, read by pg-backup, verify
    and rotate: each reads it, the keys of the others pass. A key no drkit
    command knows (login_pasword) is refused by each, exit 2, naming it and
    the closest known key, before anything connects or is written."""
    db, _counts = source_db
    url = "file://%s/store" % tmp_path
    job = {"job_name": "pg_job", "database": db, "source_database": db, "kind": "pg_logical", "storage_url": url,
           "login_host": pg.host, "port": pg.port, "login_user": pg.superuser, "login_password": pg.password,
           "format": "custom", "jobs": 1, "compression_level": 3, "compression_by": "auto",
           "metrics_dir": str(tmp_path / "metrics"), "checks": [], "prune_wal": False, "keep_last": 2}
    for argv in (["pg-backup"], ["verify", "--level", "checksum"], ["rotate"]):
        p = run_drkit(argv, config=job, tmp_dir=tmp_path)
        assert p.returncode == 0, (argv, p.stderr)
    assert len([k for k in list_keys(url) if k.endswith("/manifest.json")]) == 1

    typo = dict(job)
    typo["login_pasword"] = typo.pop("login_password")
    for argv in (["pg-backup"], ["verify", "--level", "checksum"], ["rotate"]):
        p = run_drkit(argv, config=typo, tmp_dir=tmp_path)
        assert p.returncode == 2, (argv, p.stderr)
        assert "unknown key 'login_pasword' (did you mean 'login_password'?)" in p.stderr, p.stderr
        assert pg.password not in p.stdout + p.stderr
    assert len([k for k in list_keys(url) if k.endswith("/manifest.json")]) == 1  # nothing new


def test_login_port_backs_up_through_the_module_and_the_cli(pg, s3, bucket, source_db, tmp_path, restored):
    """community.postgresql spells the port login_port: the module, a drkit
    config file and the --login-port flag all take it."""
    db, counts = source_db
    url = storage_url_for("file", tmp_path, bucket)
    args = backup_args(pg, db, url, s3)
    args["login_port"] = args.pop("port")
    run = run_playbook([task(PG_BACKUP, **args)], extra_vars=secrets_vars(pg, s3))
    assert run.rc == 0, run.describe()
    module_result = run.result(PG_BACKUP)
    assert module_result["manifest"]["source"]["port"] == pg.port

    by_config = run_drkit(["pg-backup", "--json", "--storage-url", url, "-d", db],
                          config=dict(login_host=pg.host, login_port=pg.port, login_user=pg.superuser,
                                      login_password=pg.password), tmp_dir=tmp_path)
    assert by_config.returncode == 0, by_config.stderr
    by_flag = run_drkit(["pg-backup", "--json", "--storage-url", url, "-d", db, "--host", pg.host,
                         "--login-port", str(pg.port), "--user", pg.superuser],
                        config={"login_password": pg.password}, tmp_dir=tmp_path)
    assert by_flag.returncode == 0, by_flag.stderr
    for p in (by_config, by_flag):
        res = json.loads(p.stdout)
        assert res["manifest"]["source"]["port"] == pg.port
        assert recorded_counts(res["manifest"]) == counts
    check_restore(pg, tmp_path, url, s3, json.loads(by_flag.stdout), counts, restored)


@pytest.fixture
def tiny_fs(tmp_path):
    """A small tmpfs: writes fail with ENOSPC. Needs root (mount)."""
    mounted = []

    def mount(size):
        mounted.append(SmallTmpfs(tmp_path / "tiny", size))
        return mounted[-1].path

    yield mount
    for m in mounted:
        m.__exit__()


def test_disk_full_leaves_nothing(pg, s3, bucket, source_db, tmp_path, tiny_fs):
    db, _counts = source_db
    # How big is the stored backup? Take one elsewhere, then give the tmpfs half.
    ref_url = storage_url_for("file", tmp_path, bucket)
    run = run_playbook([task(PG_BACKUP, **backup_args(pg, db, ref_url, s3))], extra_vars=secrets_vars(pg, s3))
    assert run.rc == 0, run.describe()
    size = run.result(PG_BACKUP)["size"]
    assert size > 256 << 10, "the sample is too small to fill a tmpfs meaningfully"
    mnt = tiny_fs(max(size // 2, 128 << 10))

    url = "file://%s/backups" % mnt
    work_dir = mnt
    run = run_playbook([
        task(PG_BACKUP, name="storage full", _ignore_errors=True, **backup_args(pg, db, url, s3)),
        # directory format: pg_dump itself runs out of space in work_dir
        task(PG_BACKUP, name="work_dir full", _ignore_errors=True,
             **backup_args(pg, db, storage_url_for("s3", tmp_path, bucket), s3, format="directory",
                           work_dir=str(work_dir))),
    ], extra_vars=secrets_vars(pg, s3), env={"TMPDIR": str(tmp_path)})
    assert run.failed("storage full") and run.failed("work_dir full"), run.describe()
    msg = run.result("storage full")["msg"]
    assert "file system is full" in msg and "free space or point storage_url elsewhere" in msg, msg
    msg = run.result("work_dir full")["msg"]
    assert "The file system of %s is full: no room for the uncompressed directory-format dump of %s" % (
        work_dir, db) in msg and "point work_dir at a file system with room for it" in msg, msg
    # nothing left: no manifest, no artifact, no temp file, the work dir emptied
    assert [str(p) for p in mnt.rglob("*") if p.is_file()] == []
    assert list((mnt / "backups").rglob("*")) == []  # no empty backups/<id>/ either
    assert_nothing_left(storage_url_for("s3", tmp_path, bucket), s3, bucket)


def test_directory_dump_into_a_full_work_dir_exits_3_and_the_next_run_succeeds(pg, tmp_path, restored):
    """pg_dump -Fd writes the whole uncompressed dump into work_dir first: a
    full one is a disk-full error (exit 3) naming the directory and what to
    do, not a pg_dump failure; nothing is stored, the work dir is emptied,
    the failure is in the metrics, and the next run with room succeeds."""
    mib = 1 << 20
    db = "dfull_%s" % uuid.uuid4().hex[:8]
    counts = make_blob_database(pg, db, 3)
    restored.append(db)
    url = "file://%s/store" % tmp_path
    metrics = tmp_path / "metrics"
    with SmallTmpfs(tmp_path / "work", mib) as work:
        argv = ["pg-backup", "--json", "-d", db, "--storage-url", url, "--format", "directory", "--jobs", "2",
                "--work-dir", str(work.path), "--metrics-dir", str(metrics)]
        config = dict(login_host=pg.host, port=pg.port, login_user=pg.superuser, login_password=pg.password)
        proc = run_drkit(argv, config=config, tmp_dir=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert "Traceback" not in proc.stderr
        assert ("drkit pg-backup: error: The file system of %s is full: no room for the uncompressed "
                "directory-format dump of %s (pg_dump -Fd)" % (work.path, db)) in proc.stderr, proc.stderr
        assert "point work_dir at a file system with room for it" in proc.stderr
        assert work.contents() == [] and list_keys(url) == []
        prom = "".join(p.read_text() for p in metrics.glob("*.prom"))
        assert 'drkit_backup_last_status{drkit_job="pg_%s",kind="pg_logical"} 0' % db in prom, prom

        work.resize(64 * mib)
        proc = run_drkit(argv, config=config, tmp_dir=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert recorded_counts(json.loads(proc.stdout)["manifest"]) == counts
        assert work.contents() == []


# --------------------------------------------------------------------------
# pg_dump killed midway (through the CLI, as cron would run it)


@pytest.fixture(scope="module")
def big_db(pg):
    """~25 MB of incompressible bytea: the dump outlives several 8 MiB parts."""
    name = "big_%s" % uuid.uuid4().hex[:8]
    make_blob_database(pg, name, 25)
    try:
        yield name
    finally:
        drop_database(pg, name)


@pytest.mark.parametrize("kind,victim", [("s3", "pg_dump"), ("file", "pg_dump"), ("s3", "drkit")])
def test_killed_midway(pg, s3, bucket, big_db, tmp_path, kind, victim):
    """victim=pg_dump: SIGKILL of pg_dump mid-upload. victim=drkit: SIGTERM
    of drkit itself (a systemd timeout): it must clean up as well."""
    url = storage_url_for(kind, tmp_path, bucket)
    config = {"login_host": pg.host, "port": pg.port, "login_user": pg.superuser,
              "login_password": pg.password, "database": big_db, "storage_url": url,
              "compression_level": 1}
    if kind == "s3":
        config.update(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key,
                      region=s3.region)
    cfg = tmp_path / "drkit.yml"
    fd = os.open(str(cfg), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)  # JSON is YAML
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    proc = subprocess.Popen([sys.executable, str(DRKIT), "pg-backup", "--json", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())))
    reader.start()
    try:
        # the dumping pg_dump, not a short "pg_dump --version"
        pid = wait_for_child(proc.pid, "pg_dump", match=b"--snapshot=")
        os.kill(pid, signal.SIGSTOP)
        # the password is not in pg_dump's argv nor in its environment
        assert pg.password.encode() not in read_proc(pid, "cmdline")
        assert pg.password.encode() not in read_proc(pid, "environ")

        def upload_in_progress():
            if kind == "s3":
                return bool(open_multipart_uploads(s3, bucket))
            return temp_upload_over(file_root(url), 4 << 20)

        # pg_dump runs in small steps until part of the dump is stored, so
        # the kill lands mid-upload, deterministically.
        step_until(pid, upload_in_progress)
        if victim == "pg_dump":
            os.kill(pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGTERM)
            time.sleep(0.2)
            os.kill(pid, signal.SIGCONT)  # so it can act on drkit's SIGTERM
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(60)
    stderr = out["stderr"].decode()
    if victim == "pg_dump":
        assert proc.returncode == 6, stderr  # ToolError
        assert "pg_dump failed while dumping database %s" % big_db in stderr
        assert "killed by signal 9" in stderr
    else:
        assert proc.returncode == 143, stderr
        assert "Interrupted by signal 15" in stderr and "Nothing was recorded as a backup" in stderr
        assert read_proc(pid, "stat") == b""  # pg_dump was stopped and reaped, not orphaned
    assert out["stdout"] == b""
    assert pg.password not in stderr
    assert_nothing_left(url, s3, bucket)


# --------------------------------------------------------------------------
# documentation


@pytest.mark.parametrize("module", ["pg_backup", "backup_info", "pg_verify", "redis_snapshot"])
def test_ansible_doc_renders(tmp_path, module):
    env = ansible_environment(str(tmp_path))
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "drkit.backup." + module],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "[WARNING]" not in p.stderr and "ERROR" not in p.stderr, p.stderr
    text = p.stdout
    assert str(BUILD_COLLECTIONS) in text or "drkit.backup." + module in text
    for heading in ("OPTIONS", "EXAMPLES", "RETURN VALUES"):
        assert heading in text, heading
    for option in ("storage_url", "endpoint_url", "secret_key", "validate_certs"):
        assert option in text
    if module == "pg_backup":
        for word in ("login_host", "login_password", "database", "format", "jobs", "backup_id", "sha256",
                     "duration", "manifest", "check_mode", "compression_level", "compression_threads"):
            assert word in text, word
    fragments = {"pg_verify": ("backup_id", "before", "latest", "source_database"),  # drkit.backup.backup_selector
                 "redis_snapshot": ("compression_level", "compression_threads")}  # drkit.backup.compression
    for word in fragments.get(module, ()):
        assert word in text, word


# --------------------------------------------------------------------------
# racing writers


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_two_backups_released_together_at_their_manifests_both_count(pg, s3, bucket, source_db, tmp_path, kind):
    """Two drkit pg-backup runs of one database, held just before their
    manifest write (tests/support/barrier_drkit.py) and released together:
    unique ids, each manifest written create-only, both backups complete."""
    db, counts = source_db
    url = storage_url_for(kind, tmp_path, bucket)
    cfg = dict(login_host=pg.host, port=pg.port, login_user=pg.superuser, login_password=pg.password)
    if kind == "s3":
        cfg.update(s3_module_args(s3))
    cmd = ["pg-backup", "--json", "--storage-url", url, "-d", db]
    results = race([cmd, cmd], str(tmp_path / "barrier"), r"/manifest\.json$", config=cfg)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    ids = sorted(json.loads(r.stdout)["backup_id"] for r in results)
    assert ids[0] != ids[1]
    st = open_storage(url, **(s3_module_args(s3) if kind == "s3" else {}))
    entries, problems = mf.list_backups(st)
    assert sorted(e.backup_id for e in entries) == ids and problems == []
    for e in entries:
        assert recorded_counts(e.manifest) == counts
        for art in e.manifest["artifacts"]:
            assert st.stat(mf.artifact_key(e.backup_id, art["name"])).size == art["size"]
