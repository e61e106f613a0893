# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.backup_info and ``drkit list`` on backups made for real by
pg_backup (through Ansible), in a directory and in SeaweedFS S3: only
complete backups (with a manifest), newest first, filters, read-only."""

import json
import uuid

import pytest
from helpers import (drop_database, list_keys, open_multipart_uploads, pg_module_args, run_drkit, run_playbook,
                     s3_module_args, task)

INFO = "drkit.backup.backup_info"


@pytest.fixture(scope="module")
def two_databases(pg):
    names = ["app_%s" % uuid.uuid4().hex[:6], "crm_%s" % uuid.uuid4().hex[:6]]
    for n in names:
        pg.psql('CREATE DATABASE "%s"' % n)
        pg.psql("CREATE TABLE agents (id int PRIMARY KEY, doc jsonb);"
                "INSERT INTO agents SELECT g, jsonb_build_object('g', g) FROM generate_series(1, 500) g;", dbname=n)
    try:
        yield names
    finally:
        for n in names:
            drop_database(pg, n)


def storage(kind, tmp_path, bucket, s3):
    if kind == "file":
        return "file://%s/store" % tmp_path, {}
    return "s3://%s/team/pg" % bucket, s3_module_args(s3)


def delete_key(url, key, s3, tmp_path):
    if url.startswith("file://"):
        (tmp_path / "store" / key).unlink()
    else:
        bucket, prefix = url[len("s3://"):].split("/", 1)
        s3.client().delete_object(Bucket=bucket, Key="%s/%s" % (prefix, key))


def put_key(url, key, data, s3, tmp_path):
    if url.startswith("file://"):
        path = tmp_path / "store" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        bucket, prefix = url[len("s3://"):].split("/", 1)
        s3.client().put_object(Bucket=bucket, Key="%s/%s" % (prefix, key), Body=data)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_backup_info_lists_complete_backups_newest_first(pg, s3, bucket, two_databases, tmp_path, kind):
    app, crm = two_databases
    url, s3args = storage(kind, tmp_path, bucket, s3)
    pw = {"pg_password": pg.password}

    def backup(name, db):
        args = pg_module_args(pg, db)
        args.update(s3args, storage_url=url, login_password="{{ pg_password }}")
        return task("drkit.backup.pg_backup", name=name, **args)

    run = run_playbook([backup("app 1", app), backup("crm 1", crm), backup("app 2", app), backup("app 3", app)],
                       extra_vars=pw)
    assert run.rc == 0, run.describe()
    ids = dict((n, run.result(n)["backup_id"]) for n in ("app 1", "crm 1", "app 2", "app 3"))

    # "app 3" loses its manifest: from now on it is an incomplete backup.
    delete_key(url, "backups/%s/manifest.json" % ids["app 3"], s3, tmp_path)
    # Stray artifacts of a run that died before its manifest, and a corrupt manifest.
    put_key(url, "backups/20991231T235959Z-pg-logical-abcdef/database.pgdump.zst", b"partial", s3, tmp_path)
    corrupt = "20200101T000000Z-pg-logical-0badc0"
    put_key(url, "backups/%s/manifest.json" % corrupt, b"{not json", s3, tmp_path)
    keys_before = list_keys(url, s3)

    common = dict(s3args, storage_url=url)
    tasks = [task(INFO, name="all", **common), task(INFO, name="in check mode", _check_mode=True, **common)]
    if kind == "file":
        # Filtering happens after listing, the same for every backend: once is enough.
        tasks += [
            task(INFO, name="app only", database=app, **common),
            task(INFO, name="kind", kind="pg_logical", **common),
            task(INFO, name="redis", kind="redis_rdb", **common),
            task(INFO, name="newest", limit=1, **common),
            task(INFO, name="one", backup_id=ids["app 1"], **common),
            task(INFO, name="source", source="postgresql:%s:%d:%s" % (pg.host, pg.port, crm), **common),
        ]
    run = run_playbook(tasks)
    assert run.rc == 0, run.describe()

    def listed(name):
        return [b["backup_id"] for b in run.result(name)["backups"]]

    newest_first = [ids["app 2"], ids["crm 1"], ids["app 1"]]
    everything = run.result("all")
    assert listed("all") == newest_first  # incomplete and stray ones are not listed
    assert everything["count"] == 3 and everything["changed"] is False
    assert everything["latest"]["backup_id"] == ids["app 2"]
    finished = [b["finished_at"] for b in everything["backups"]]
    assert finished == sorted(finished, reverse=True)
    assert len(everything["problems"]) == 1 and everything["problems"][0].startswith(corrupt)
    assert listed("in check mode") == newest_first and run.result("in check mode")["changed"] is False
    if kind == "file":
        assert listed("app only") == [ids["app 2"], ids["app 1"]]
        assert listed("kind") == newest_first
        assert listed("redis") == [] and run.result("redis")["latest"] is None
        assert listed("newest") == [ids["app 2"]]
        assert listed("one") == [ids["app 1"]]
        assert listed("source") == [ids["crm 1"]]
    # each entry carries its manifest and a summary
    b = everything["backups"][0]
    assert b["manifest"]["backup_id"] == b["backup_id"] and b["kind"] == "pg_logical"
    assert b["source"]["database"] == app and b["artifacts"] == ["database.pgdump.zst"]
    assert b["size"] == b["manifest"]["artifacts"][0]["size"] and b["pinned"] is False
    # read-only
    assert list_keys(url, s3) == keys_before
    if kind == "s3":
        assert open_multipart_uploads(s3, bucket) == []
        assert s3.secret_key not in run.text

    # the CLI sees the same
    env = dict(s3.env()) if kind == "s3" else {}
    p = run_drkit(["list", "--storage-url", url, "--json"], env=env)
    assert p.returncode == 0, p.stderr
    assert [x["backup_id"] for x in json.loads(p.stdout)["backups"]] == newest_first
    p = run_drkit(["list", "--storage-url", url, "--database", crm], env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == ids["crm 1"] and crm in lines[0]
    assert "warning: %s" % corrupt in p.stderr  # the corrupt manifest is reported, not hidden


def test_backup_info_empty_and_failures(s3, bucket, tmp_path):
    missing = "drkit-missing-%s" % uuid.uuid4().hex[:8]
    wrong_secret = s3_module_args(s3)
    wrong_secret["secret_key"] = "{{ bad }}"
    (tmp_path / "empty").mkdir()
    run = run_playbook([
        task(INFO, name="empty dir", storage_url="file://%s/empty" % tmp_path),
        task(INFO, name="missing dir", _ignore_errors=True, storage_url="file://%s/never-written" % tmp_path),
        task(INFO, name="empty bucket", storage_url="s3://%s" % bucket, **s3_module_args(s3)),
        task(INFO, name="missing bucket", _ignore_errors=True, storage_url="s3://%s/x" % missing,
             **s3_module_args(s3)),
        task(INFO, name="wrong secret", _ignore_errors=True, storage_url="s3://%s" % bucket, **wrong_secret),
        task(INFO, name="bad url", _ignore_errors=True, storage_url="backups/here"),
    ], extra_vars={"bad": "bad-secret-%s" % uuid.uuid4().hex})
    for name in ("empty dir", "empty bucket"):
        res = run.result(name)
        assert not run.failed(name) and res["count"] == 0 and res["backups"] == [] and res["latest"] is None
    # a root that does not exist is an error naming it, not an empty storage; listing creates nothing
    assert run.failed("missing dir") and run.result("missing dir")["msg"].startswith(
        "The storage root file://%s/never-written does not exist" % tmp_path), run.result("missing dir")
    assert not (tmp_path / "never-written").exists()
    assert run.failed("missing bucket") and "does not exist" in run.result("missing bucket")["msg"]
    assert run.failed("wrong secret") and "access denied" in run.result("wrong secret")["msg"]
    assert "bad-secret-" not in run.text
    assert run.failed("bad url") and "Unsupported storage_url" in run.result("bad url")["msg"]
    p = run_drkit(["list", "--storage-url", "s3://%s/x" % missing], env=s3.env())
    assert p.returncode == 3 and "does not exist" in p.stderr


def test_reading_commands_refuse_a_file_root_that_does_not_exist(pg, tmp_path):
    """list, rotate, restore, verify and wal-fetch on a file:// root that does
    not exist (a typo, an unmounted file system): exit 2 naming it, where
    they used to read an empty storage (list and rotate exited 0). wal-fetch
    must not say "not archived" (exit 1): PostgreSQL would end the recovery
    there. A backup still creates the root, and then they read it."""
    root = tmp_path / "typo"
    url = "file://%s" % root
    conn = ["--host", pg.host, "--port", str(pg.port), "--user", pg.superuser]
    env = {"PGPASSWORD": pg.password}
    commands = {
        "list": ["list"],
        "rotate": ["rotate", "--keep-last", "1"],
        "restore": ["restore", "--target-database", "never_%s" % uuid.uuid4().hex[:6]] + conn,
        "verify": ["verify", "--level", "checksum"] + conn,
        "wal-fetch": ["wal-fetch", "000000010000000000000001", str(tmp_path / "seg")],
    }
    for name, argv in commands.items():
        p = run_drkit(argv + ["--storage-url", url], env=env)
        assert p.returncode == 2, (name, p.returncode, p.stderr)
        assert "drkit %s: error: The storage root %s does not exist. Check storage_url" % (name, url) in p.stderr, \
            (name, p.stderr)
        assert not root.exists()

    db = "root_%s" % uuid.uuid4().hex[:6]
    pg.psql('CREATE DATABASE "%s"' % db)
    try:
        pg.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)", dbname=db)
        p = run_drkit(["pg-backup", "-d", db, "--storage-url", url] + conn, env=env)
        assert p.returncode == 0, p.stderr
    finally:
        drop_database(pg, db)
    assert root.is_dir()
    p = run_drkit(["list", "--json", "--storage-url", url])
    assert p.returncode == 0 and json.loads(p.stdout)["count"] == 1, p.stderr
    p = run_drkit(["wal-fetch", "000000010000000000000001", str(tmp_path / "seg"), "--storage-url", url])
    assert p.returncode == 1, p.stderr  # now really "not archived"
