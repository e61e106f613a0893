# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.pg_restore against real PostgreSQL 15 and SeaweedFS S3 on
loopback (tests/conftest.py).

A restore over a non-empty database without force is refused and changes
nothing (content checksums before/after); force swaps the restored copy in,
keep_old keeps the old one; a backup taken under a write load restores to
exactly the manifest's row counts; ``before`` picks the newest backup at or
before a time; jobs=2 works for both dump formats; a failed restore leaves
no staging database and the target as it was."""

import json
import os
import shutil
import threading
import time
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.demo import sample_data
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, IntegrityError,
                                                                               NotFoundError, SafetyError, ToolError)
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.restore import pg_restore_backup
from helpers import (
    SmallTmpfs,
    drop_database,
    engine_params,
    file_root,
    make_blob_database,
    make_sample_database,
    recorded_counts,
    run_playbook,
    set_recorded_count,
    table_row_counts,
    task,
)

PG_RESTORE = "drkit.backup.pg_restore"

# A small database with awkward identifiers: mixed case, spaces, a dot in a
# table name and in a schema name (the manifest keeps schema and table apart).
TINY_SQL = """
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Order Items" (id int PRIMARY KEY, what text);
CREATE TABLE public."a.b" (id int);
CREATE SCHEMA "dot.schema";
CREATE TABLE "dot.schema".t (id int);
CREATE TABLE public.plain (id serial PRIMARY KEY, v text);
INSERT INTO "Sales"."Order Items" SELECT g, 'item ' || g FROM generate_series(1, 37) g;
INSERT INTO public."a.b" SELECT g FROM generate_series(1, 5) g;
INSERT INTO "dot.schema".t SELECT g FROM generate_series(1, 3) g;
INSERT INTO public.plain (v) SELECT 'v' || g FROM generate_series(1, %d) g;
"""


def take_backup(pg, db, url, s3=None, **extra):
    return pg_backup(engine_params(pg, url, s3, database=db, **extra))[1]


def databases(pg):
    return set(line for line in pg.psql("SELECT datname FROM pg_database").splitlines() if line)


def staging_leftovers(pg):
    return sorted(d for d in databases(pg) if "__drkit_restore_" in d)


def content_checksum(pg, dbname):
    """md5 over every user table's rows (sorted), plus the list of tables:
    changes if anything in the database's data or table set changes."""
    tables = pg.psql(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        dbname=dbname).splitlines()
    parts = []
    for t in tables:
        parts.append(t + "=" + pg.psql("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                       "FROM %s x" % t, dbname=dbname).strip())
    return "\n".join(parts)


@pytest.fixture
def tiny_db(pg):
    name = "tiny_%s" % uuid.uuid4().hex[:8]
    pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql(TINY_SQL % 11, dbname=name)
    try:
        yield name
    finally:
        drop_database(pg, name)


@pytest.fixture
def cleanup(pg):
    """Databases a test creates by restoring; dropped afterwards."""
    names = []
    yield names
    for n in names:
        drop_database(pg, n)
    for n in databases(pg):
        if any(n.startswith(p + "__drkit_") for p in names):
            drop_database(pg, n)


# --------------------------------------------------------------------------
# refuse / check mode / force / keep_old, through Ansible


def test_refuse_check_mode_force_and_keep_old(pg, s3, bucket, tiny_db, pg_database, cleanup):
    url = "s3://%s/pg" % bucket
    bak = take_backup(pg, tiny_db, url, s3)
    expected = recorded_counts(bak["manifest"])
    assert expected == {"Sales.Order Items": 37, "public.a.b": 5, "dot.schema.t": 3, "public.plain": 11}

    # the target: a non-empty database with other content
    target = pg_database
    cleanup.append(target)
    pg.psql("CREATE TABLE precious (id int PRIMARY KEY, note text); "
            "INSERT INTO precious SELECT g, md5(g::text) FROM generate_series(1, 50) g", dbname=target)
    before_sum = content_checksum(pg, target)
    before_dbs = databases(pg)
    fresh = "fresh_%s" % uuid.uuid4().hex[:8]
    cleanup.append(fresh)

    args = engine_params(pg, url, s3, target_database=target)
    args.update(login_password="{{ pg_password }}", secret_key="{{ s3_secret }}")
    secrets = {"pg_password": pg.password, "s3_secret": s3.secret_key}
    run = run_playbook([
        task(PG_RESTORE, name="refused", _ignore_errors=True, **args),
        task(PG_RESTORE, name="refused in check mode", _check_mode=True, _ignore_errors=True, **args),
        task(PG_RESTORE, name="force in check mode", _check_mode=True, **dict(args, force=True)),
        task(PG_RESTORE, name="new in check mode", _check_mode=True, **dict(args, target_database=fresh)),
    ], extra_vars=secrets)
    assert pg.password not in run.text and s3.secret_key not in run.text
    for name in ("refused", "refused in check mode"):
        assert run.failed(name), run.describe()
        msg = run.result(name)["msg"]
        assert "Database %s exists and is not empty; refusing to restore over it" % target in msg, msg
        assert "Nothing was changed" in msg and "force: true" in msg
    res = run.result("force in check mode")
    assert res["changed"] is True and res["target_non_empty"] is True and res["backup_id"] == bak["backup_id"]
    assert "replacing the existing database" in res["msg"]
    res = run.result("new in check mode")
    assert res["target_exists"] is False and "Would restore %s into %s" % (bak["backup_id"], fresh) in res["msg"]
    # nothing touched: same content, no new database (no staging copy, no 'fresh')
    assert content_checksum(pg, target) == before_sum
    assert databases(pg) == before_dbs

    run = run_playbook([
        task(PG_RESTORE, name="force keep_old", **dict(args, force=True, keep_old=True)),
        task(PG_RESTORE, name="force again", **dict(args, force=True)),
    ], extra_vars=secrets)
    assert run.rc == 0, run.describe()
    kept = run.result("force keep_old")
    assert kept["changed"] is True and kept["verified"] is True
    assert kept["old_database"].startswith(target + "__drkit_old_")
    cleanup.append(kept["old_database"])
    assert dict(("%s.%s" % (t["schema"], t["table"]), t["actual"]) for t in kept["tables"]) == expected
    again = run.result("force again")
    assert again["old_database"] is None
    # the target now holds the backup, with quoted identifiers intact
    assert table_row_counts(pg, target) == expected
    # the old copy was kept, untouched
    assert content_checksum(pg, kept["old_database"]) == before_sum
    # the second swap dropped what it replaced; no staging copy anywhere
    assert databases(pg) - before_dbs == set([kept["old_database"]])
    assert staging_leftovers(pg) == []


def test_empty_existing_target_is_replaced_without_force(pg, tmp_storage_url, tiny_db, pg_database):
    bak = take_backup(pg, tiny_db, tmp_storage_url)
    _changed, res = pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=pg_database))
    assert res["target_exists"] is True and res["target_non_empty"] is False and res["old_database"] is None
    assert table_row_counts(pg, pg_database) == recorded_counts(bak["manifest"])
    assert staging_leftovers(pg) == [] and not [d for d in databases(pg) if "__drkit_old" in d]


# --------------------------------------------------------------------------
# consistency under a write load


@pytest.fixture
def loaded_db(pg):
    name = "wl_%s" % uuid.uuid4().hex[:8]
    counts = make_sample_database(pg, name, scale=0.005, seed=31)
    try:
        yield name, counts
    finally:
        drop_database(pg, name)


def test_backup_under_write_load_restores_exact_manifest_counts(pg, tmp_path, tmp_storage_url, loaded_db, cleanup):
    db, initial = loaded_db
    stop = threading.Event()
    load = {}

    def run_load():
        load["stats"] = sample_data.write_load(pg.conninfo("postgres"), db, stop_event=stop, seed=3)

    thread = threading.Thread(target=run_load)
    thread.start()
    try:
        time.sleep(1.0)  # the load is well under way when pg_dump takes its snapshot
        bak = take_backup(pg, db, tmp_storage_url)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert load["stats"]["transactions"] > 10 and load["stats"]["inserts"] > 0, load
    recorded = recorded_counts(bak["manifest"])
    live = table_row_counts(pg, db)
    # the load ran before the snapshot and after it
    assert recorded != initial
    assert live != recorded

    target = "wl_restored_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    work = tmp_path / "work"
    work.mkdir()
    # jobs=2 on a custom-format dump: decompressed to work_dir first
    _changed, res = pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=target, jobs=2,
                                                    work_dir=str(work)))
    assert res["timings"]["streamed"] is False and res["verified"] is True
    assert table_row_counts(pg, target) == recorded
    assert list(work.iterdir()) == []


# --------------------------------------------------------------------------
# before, directory format, failures


def test_before_selects_newest_backup_at_or_before(pg, tmp_path, tiny_db, cleanup):
    url = "file://%s/store" % tmp_path
    first = take_backup(pg, tiny_db, url, format="directory", jobs=2)
    pg.psql("INSERT INTO public.plain (v) SELECT 'w' || g FROM generate_series(1, 20) g", dbname=tiny_db)
    second = take_backup(pg, tiny_db, url, format="directory", jobs=2)
    assert recorded_counts(first["manifest"])["public.plain"] == 11
    assert recorded_counts(second["manifest"])["public.plain"] == 31
    t_first = first["manifest"]["finished_at"]
    t_second = second["manifest"]["finished_at"]
    assert t_first < t_second

    midway = mf.parse_time(t_second) - (mf.parse_time(t_second) - mf.parse_time(t_first)) / 2
    cases = [(t_first, first), (mf.isoformat(midway), first),
             (t_second, second), ("2999-01-01T00:00:00Z", second)]
    for before, want in cases:
        target = "bf_%s" % uuid.uuid4().hex[:8]
        cleanup.append(target)
        _changed, res = pg_restore_backup(engine_params(pg, url, target_database=target, before=before,
                                                        jobs=2, work_dir=str(tmp_path)))
        assert res["backup_id"] == want["backup_id"], before
        assert res["timings"]["streamed"] is False
        assert table_row_counts(pg, target) == recorded_counts(want["manifest"])
    with pytest.raises(NotFoundError) as ei:
        pg_restore_backup(engine_params(pg, url, target_database="never_%s" % uuid.uuid4().hex[:6],
                                        before="2000-01-01T00:00:00Z"))
    assert "finished at or before 2000-01-01T00:00:00Z" in str(ei.value)
    # the directory dumps were unpacked below work_dir and removed again
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_failed_restore_leaves_no_staging_and_target_untouched(pg, tmp_storage_url, tiny_db, pg_database):
    bak = take_backup(pg, tiny_db, tmp_storage_url)
    bid = bak["backup_id"]
    key = file_root(tmp_storage_url) / mf.manifest_key(bid)
    man = json.loads(key.read_text())
    set_recorded_count(man, "public.plain", 12)
    key.write_bytes(mf.Manifest(man).to_json())  # sealed again
    pg.psql("CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1), (2)", dbname=pg_database)
    before_sum = content_checksum(pg, pg_database)
    before_dbs = databases(pg)
    with pytest.raises(IntegrityError) as ei:
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=pg_database, force=True))
    msg = str(ei.value)
    assert "public.plain: expected 12 rows, restored 11" in msg and "target was not touched" in msg, msg
    assert content_checksum(pg, pg_database) == before_sum
    assert databases(pg) == before_dbs and staging_leftovers(pg) == []

    # a damaged artifact: refused while streaming, nothing left either
    set_recorded_count(man, "public.plain", 11)
    key.write_bytes(mf.Manifest(man).to_json())  # sealed again
    art = file_root(tmp_storage_url) / mf.artifact_key(bid, "database.pgdump.zst")
    data = art.read_bytes()
    art.write_bytes(data[:-200])
    # named by its id, the damage shows while streaming (latest is refused earlier: docs/retention.md)
    with pytest.raises(IntegrityError) as ei:
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=pg_database, force=True, backup_id=bid))
    assert "size %d bytes, manifest says %d" % (len(data) - 200, len(data)) in str(ei.value)
    assert content_checksum(pg, pg_database) == before_sum
    assert databases(pg) == before_dbs and staging_leftovers(pg) == []


def test_cli_restore(pg, tmp_path, tmp_storage_url, tiny_db, cleanup):
    """`drkit restore` runs the same engine; the password comes from the
    environment, never a flag."""
    from helpers import run_drkit

    bak = take_backup(pg, tiny_db, tmp_storage_url)
    target = "cli_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    base = ["restore", "--storage-url", tmp_storage_url, "--host", pg.host, "--port", str(pg.port),
            "--user", pg.superuser, "--target-database", target, "--json"]
    env = {"PGPASSWORD": pg.password}
    proc = run_drkit(base + ["--check"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["target_exists"] is False and target not in databases(pg)
    proc = run_drkit(base, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["backup_id"] == bak["backup_id"] and out["duration"] > 0
    assert table_row_counts(pg, target) == recorded_counts(bak["manifest"])
    proc = run_drkit(base, env=env)  # now non-empty: refused, exit code 10
    assert proc.returncode == 10 and "refusing to restore over it" in proc.stderr, proc.stderr
    assert pg.password not in proc.stdout + proc.stderr
    assert os.environ.get("PGPASSWORD") != pg.password  # the test did not leak it into its own env


def test_long_non_ascii_target_names(pg, tmp_storage_url, tiny_db, cleanup):
    """PostgreSQL cuts names at 63 BYTES: the staging and old-copy names
    must fit in bytes, or their random parts are cut and they collide."""
    bak = take_backup(pg, tiny_db, tmp_storage_url)
    target = "é" * 31  # 62 bytes
    cleanup.append(target)
    pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=target))
    _changed, res = pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=target, force=True,
                                                    keep_old=True))
    old = res["old_database"]
    cleanup.append(old)
    assert "__drkit_old_" in old and len(old.encode("utf-8")) <= 63 and old.startswith("é")
    assert old in databases(pg)  # the name PostgreSQL stored is the name reported
    assert table_row_counts(pg, target) == table_row_counts(pg, old) == recorded_counts(bak["manifest"])
    assert staging_leftovers(pg) == []
    with pytest.raises(ConfigError, match="longer than 63 bytes"):
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database="é" * 32))


# --------------------------------------------------------------------------
# parallel restore: pre-data during the download, row counts from statistics

TREE_SQL = """
CREATE TABLE public.measure (id int, at date NOT NULL, v text) PARTITION BY RANGE (at);
CREATE TABLE public.measure_2025 PARTITION OF public.measure
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY HASH (id);
CREATE TABLE public.measure_2025_a PARTITION OF public.measure_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.measure_2025_b PARTITION OF public.measure_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE public.measure_2026 PARTITION OF public.measure FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.measure SELECT g, DATE '2025-01-01' + g % 700, 'x' FROM generate_series(1, 500) g;
CREATE TABLE public.animal (id int, name text);
CREATE TABLE public.dog (barks bool) INHERITS (public.animal);
INSERT INTO public.animal SELECT g, 'a' FROM generate_series(1, 7) g;
INSERT INTO public.dog SELECT g, 'd', true FROM generate_series(1, 4) g;
"""


def test_parallel_restore_counts_from_statistics_across_partitions_and_inheritance(
        pg, tmp_path, tmp_storage_url, tiny_db, cleanup):
    pg.psql(TREE_SQL, dbname=tiny_db)
    bak = take_backup(pg, tiny_db, tmp_storage_url)
    recorded = recorded_counts(bak["manifest"])
    # count(*) on an inheritance parent includes its children, as in the manifest
    assert recorded["public.animal"] == 11 and recorded["public.dog"] == 4
    assert sum(recorded["public.measure_%s" % p] for p in ("2025_a", "2025_b", "2026")) == 500
    work = tmp_path / "work"
    work.mkdir()

    target = "st_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    _changed, res = pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=target, jobs=2,
                                                    work_dir=str(work)))
    t = res["timings"]
    assert t["streamed"] is False and t["row_count_method"] == "stats"
    assert t["tables_scanned"] == 0, res["tables"]  # every table agreed with the statistics
    assert t["pre_data_seconds"] > 0 and t["wait_seconds"] >= 0 and t["restore_seconds"] >= t["pre_data_seconds"]
    assert res["verified"] and [r["name"] for r in res["tables"] if not r["ok"]] == []
    assert table_row_counts(pg, target) == recorded
    assert list(work.iterdir()) == []

    target2 = "sc_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target2)
    _changed, res = pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=target2, jobs=2,
                                                    row_count_method="count"))
    assert res["timings"]["tables_scanned"] == len(recorded) and res["verified"]

    # a manifest that disagrees: the statistics say 7+4, count(*) confirms it before refusing
    key = file_root(tmp_storage_url) / mf.manifest_key(bak["backup_id"])
    man = json.loads(key.read_text())
    set_recorded_count(man, "public.animal", 12)
    key.write_bytes(mf.Manifest(man).to_json())  # sealed again
    before_dbs = databases(pg)
    with pytest.raises(IntegrityError) as ei:
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database="never_%s" % uuid.uuid4().hex[:6],
                                        jobs=2, work_dir=str(work)))
    assert "public.animal: expected 12 rows, restored 11" in str(ei.value)
    assert databases(pg) == before_dbs and staging_leftovers(pg) == [] and list(work.iterdir()) == []


def test_restore_settings_reach_pg_restore_and_a_refusal_stops_the_download(
        pg, tmp_path, tmp_storage_url, tiny_db, pg_database, cleanup):
    take_backup(pg, tiny_db, tmp_storage_url)
    work = tmp_path / "work"
    work.mkdir()
    before_dbs = databases(pg)
    # a value the server refuses: it can only fail if it reached pg_restore's sessions
    with pytest.raises(ToolError) as ei:
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database="bad_%s" % uuid.uuid4().hex[:6],
                                        jobs=2, work_dir=str(work), restore_settings={"work_mem": "lots"}))
    assert 'invalid value for parameter "work_mem"' in str(ei.value), str(ei.value)
    assert databases(pg) == before_dbs and list(work.iterdir()) == []
    with pytest.raises(ConfigError) as ei:
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database="x",
                                        restore_settings={"work_mem": "1 MB"}))
    assert "restore_settings: work_mem='1 MB'" in str(ei.value)

    target = "ok_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    _changed, res = pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=target, jobs=2,
                                                    restore_settings={"maintenance_work_mem": "",
                                                                      "work_mem": "8MB"}))
    assert res["verified"] and table_row_counts(pg, target)["public.plain"] == 11

    # a refusal (non-empty target, no force) after the download started: nothing left in work_dir
    pg.psql("CREATE TABLE precious (id int)", dbname=pg_database)
    with pytest.raises(SafetyError):
        pg_restore_backup(engine_params(pg, tmp_storage_url, target_database=pg_database, jobs=2,
                                        work_dir=str(work)))
    assert list(work.iterdir()) == [] and staging_leftovers(pg) == []


# --------------------------------------------------------------------------
# row counts keyed by (schema, table), through the CLI

# "a.b".c and a."b.c" (and "x.y".z and x."y.z") both join to one
# "schema.table" string; names that need quoting: a dot, a double quote,
# spaces, upper case, non-ASCII, and two names that differ only in case.
ODD_SQL = """
CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (id int);
CREATE SCHEMA a; CREATE TABLE a."b.c" (id int);
CREATE SCHEMA "x.y"; CREATE TABLE "x.y".z (id int);
CREATE SCHEMA x; CREATE TABLE x."y.z" (id int);
CREATE SCHEMA "Größe ""Ω"" x"; CREATE TABLE "Größe ""Ω"" x"."Tab. mit ""Leer"" zeichen" (id int);
CREATE TABLE public."UPPER" (id int);
CREATE TABLE public.upper (id int);
INSERT INTO "a.b".c SELECT generate_series(1, 10);
INSERT INTO a."b.c" SELECT generate_series(1, 20);
INSERT INTO "x.y".z SELECT generate_series(1, 3);
INSERT INTO x."y.z" SELECT generate_series(1, 4);
INSERT INTO "Größe ""Ω"" x"."Tab. mit ""Leer"" zeichen" SELECT generate_series(1, 5);
INSERT INTO public."UPPER" SELECT generate_series(1, 6);
INSERT INTO public.upper SELECT generate_series(1, 7);
"""
# The keys of a format version 1 manifest (before data.table_rows).
V1_KEYS = ("format", "backup_id", "kind", "started_at", "finished_at", "duration_seconds", "source", "tools",
           "compression", "encryption", "options", "labels", "artifacts", "data")


def _legacy_copy(url, manifest, edit=None):
    """The backup again under a new id with a format version 1 manifest, as
    drkit wrote them before (data.row_counts keyed "schema.table", the table
    counted last winning a shared key); returns its id."""
    root = file_root(url)
    bid = mf.new_backup_id("pg_logical")
    (root / mf.backup_prefix(bid)).mkdir(parents=True)
    for a in manifest["artifacts"]:
        shutil.copyfile(str(root / mf.artifact_key(manifest["backup_id"], a["name"])),
                        str(root / mf.artifact_key(bid, a["name"])))
    old = dict((k, manifest[k]) for k in V1_KEYS)
    old.update(version=1, backup_id=bid, data=dict(manifest["data"]))
    rows = old["data"].pop("table_rows")
    old["data"]["row_counts"] = dict(("%s.%s" % (r["schema"], r["table"]), r["rows"]) for r in rows)
    (edit or (lambda counts: None))(old["data"]["row_counts"])
    (root / mf.manifest_key(bid)).write_text(json.dumps(old))
    return bid


def test_tables_whose_names_join_alike_keep_their_own_row_counts(pg, tmp_path, tmp_storage_url, cleanup):
    from helpers import run_drkit

    db = "odd_%s" % uuid.uuid4().hex[:8]
    cleanup.append(db)
    pg.psql('CREATE DATABASE "%s"' % db)
    pg.psql(ODD_SQL, dbname=db)
    source = table_row_counts(pg, db, pairs=True)
    assert (source[("a.b", "c")], source[("a", "b.c")], len(source)) == (10, 20, 7)
    config = dict(login_host=pg.host, port=pg.port, login_user=pg.superuser, login_password=pg.password,
                  storage_url=tmp_storage_url)

    def drkit(*args):
        proc = run_drkit(list(args) + ["--json"], config=config, tmp_dir=tmp_path)
        return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr)

    rc, out = drkit("pg-backup", "-d", db)
    assert rc == 0, out
    manifest = out["manifest"]
    assert manifest["version"] == 2 and "row_counts" not in manifest["data"]
    assert dict(((r["schema"], r["table"]), r["rows"]) for r in manifest["data"]["table_rows"]) == source

    rc, out = drkit("verify", "--level", "restore", "--backup-id", manifest["backup_id"])
    assert rc == 0, out
    assert dict(((t["schema"], t["table"]), t["actual"]) for t in out["tables"] if t["ok"]) == source
    names = set(t["name"] for t in out["tables"])
    assert {'"a.b".c', 'a."b.c"', '"Größe ""Ω"" x"."Tab. mit ""Leer"" zeichen"', 'public."UPPER"',
            "public.upper"} <= names, names

    target = "odd_restored_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    work = tmp_path / "work"
    work.mkdir()
    rc, out = drkit("restore", "--backup-id", manifest["backup_id"], "--target-database", target, "-j", "2",
                    "--work-dir", str(work))
    assert rc == 0, out
    assert out["verified"] and all(t["ok"] for t in out["tables"]) and len(out["tables"]) == 7
    assert table_row_counts(pg, target, pairs=True) == source

    # An old manifest still reads: the shared key holds the count of the
    # table counted last ("a.b".c after a."b.c"), which is the one checked.
    legacy = _legacy_copy(tmp_storage_url, manifest)
    rc, out = drkit("verify", "--level", "restore", "--backup-id", legacy)
    assert rc == 0, out
    checked = dict(((t["schema"], t["table"]), t["actual"]) for t in out["tables"] if t["ok"])
    assert checked == dict((k, v) for k, v in source.items() if k not in (("a", "b.c"), ("x", "y.z")))
    assert any('a."b.c" and "a.b".c share the key a.b.c, only "a.b".c was checked' in f
               for f in out["findings"]), out["findings"]
    target2 = "odd_legacy_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target2)
    rc, out = drkit("restore", "--backup-id", legacy, "--target-database", target2)
    assert rc == 0, out
    assert table_row_counts(pg, target2, pairs=True) == source
    # ... and a wrong count in it is still found
    wrong = _legacy_copy(tmp_storage_url, manifest, edit=lambda counts: counts.update({"public.upper": 8}))
    rc, out = drkit("verify", "--level", "restore", "--backup-id", wrong)
    assert rc == 8 and "public.upper: expected 8 rows, restored 7" in out, out


# --------------------------------------------------------------------------
# disk full: the local copy of a parallel restore, on a real small tmpfs

MiB = 1 << 20


@pytest.fixture(scope="module")
def blob_backups(pg, tmp_path_factory):
    """A database of ~3 MB random bytes, backed up in both formats."""
    db = "blob_%s" % uuid.uuid4().hex[:8]
    counts = make_blob_database(pg, db, 3)
    url = "file://%s" % tmp_path_factory.mktemp("blob-store")
    try:
        backups = {"custom": take_backup(pg, db, url), "directory": take_backup(pg, db, url, format="directory")}
    finally:
        drop_database(pg, db)
    return url, counts, backups


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_restore_into_a_full_work_dir_is_a_clear_disk_full_error(pg, tmp_path, blob_backups, cleanup, fmt):
    """restore -j 2 downloads (custom) or unpacks (directory) the dump into
    work_dir: a full one is exit 3 naming the directory and what to do, not
    a traceback (custom) or "the backup is damaged" (directory); nothing is
    left, and the next run with room succeeds."""
    from helpers import run_drkit

    url, counts, backups = blob_backups
    bak = backups[fmt]
    (art,) = bak["manifest"]["artifacts"]
    assert art["raw_size"] > 2 * MiB
    target = "full_%s" % uuid.uuid4().hex[:8]
    cleanup.append(target)
    before = databases(pg)
    with SmallTmpfs(tmp_path / "work", MiB) as work:
        argv = ["restore", "--storage-url", url, "--backup-id", bak["backup_id"], "--target-database", target,
                "-j", "2", "--work-dir", str(work.path), "--host", pg.host, "--port", str(pg.port),
                "--user", pg.superuser, "--json"]
        proc = run_drkit(argv, env={"PGPASSWORD": pg.password})
        assert proc.returncode == 3, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "drkit restore: error: The file system of %s is full: no room for the local copy of %s" % (
            work.path, art["name"]) in proc.stderr, proc.stderr
        assert "point work_dir at a file system with room for it" in proc.stderr
        assert "or run with jobs: 1 (streamed into pg_restore, no local copy)" in proc.stderr
        assert work.contents() == [] and databases(pg) == before and staging_leftovers(pg) == []

        work.resize(64 * MiB)
        proc = run_drkit(argv, env={"PGPASSWORD": pg.password})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["verified"] is True
        assert table_row_counts(pg, target) == counts
        assert work.contents() == [] and staging_leftovers(pg) == []
