# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""compression_by: pg_dump -- pg_dump 16+ compresses the custom format itself
with zstd and drkit stores the archive as it is (database.pgdump).

Runs against the newer PostgreSQL that scripts/bootstrap.sh unpacks
(fixture ``pg_newer``, PostgreSQL 18) and SeaweedFS; the refusal cases also
use the PostgreSQL 15 ``pg``."""

import subprocess
import uuid

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as st
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.restore import pg_restore_backup
from ansible_collections.drkit.backup.plugins.module_utils.pg.verify import pg_verify
from helpers import list_keys, pg_module_args, s3_module_args, table_row_counts

DATA_SQL = """
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Order Items" (id int PRIMARY KEY, what text);
CREATE TABLE public.notes (id serial PRIMARY KEY, body text, meta jsonb);
CREATE INDEX notes_meta ON public.notes USING gin (meta);
INSERT INTO "Sales"."Order Items" SELECT g, 'item ' || g FROM generate_series(1, 2500) g;
INSERT INTO public.notes (body, meta)
  SELECT repeat('note ' || g || ' ', 40), jsonb_build_object('g', g, 'even', g % 2 = 0)
  FROM generate_series(1, 6000) g;
"""


@pytest.fixture
def newer_db(pg_newer):
    name = "z_%s" % uuid.uuid4().hex[:10]
    pg_newer.psql('CREATE DATABASE "%s"' % name)
    pg_newer.psql(DATA_SQL, dbname=name)
    try:
        yield name
    finally:
        pg_newer.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def params_for(server, url, s3, **extra):
    params = pg_module_args(server, None)
    params.pop("database")
    params.update(storage_url=url, pg_bin_dir=server.bin_dir, **s3_module_args(s3))
    params.update(extra)
    return params


def fetch_object(s3, bucket, key, path):
    s3.client().download_file(bucket, key, str(path))
    return path


def test_pg_dump_compressed_backup_is_a_plain_archive_that_pg_restore_reads(pg_newer, newer_db, s3, bucket,
                                                                            scratch_dir):
    url = "s3://%s/pg" % bucket
    result = pg_backup(params_for(pg_newer, url, s3, database=newer_db))[1]
    m = mf.resolve(st.open_storage(url, **s3_module_args(s3)), result["backup_id"]).manifest
    art = m["artifacts"][0]
    assert art["name"] == "database.pgdump"
    assert art["compressed"] is False
    assert art["dump_compression"] == "zstd:3"
    assert m["options"]["compression_by"] == "pg_dump"
    assert "18." in m["tools"]["pg_dump"]
    # compressed by pg_dump: far smaller than the ~1.6 MB of table data
    assert art["size"] < 400000
    assert art["raw_size"] == art["size"]

    # What stands in storage is exactly what pg_restore reads, no drkit needed.
    local = fetch_object(s3, bucket, "pg/" + mf.artifact_key(result["backup_id"], "database.pgdump"),
                         scratch_dir / "as-stored.pgdump")
    listing = subprocess.run([pg_newer.bin_dir + "/pg_restore", "--list", str(local)], check=True,
                             stdout=subprocess.PIPE).stdout.decode()
    assert "Compression: zstd" in listing
    assert "TABLE DATA Sales Order Items" in listing
    sql = subprocess.run([pg_newer.bin_dir + "/pg_restore", "--data-only", "-t", "Order Items", "-f", "-",
                          str(local)], check=True, stdout=subprocess.PIPE).stdout.decode()
    assert "2500\titem 2500" in sql


@pytest.mark.parametrize("jobs", [1, 2])
def test_pg_dump_compressed_backup_restores_and_verifies(pg_newer, newer_db, s3, bucket, jobs):
    url = "s3://%s/pg" % bucket
    pg_backup(params_for(pg_newer, url, s3, database=newer_db))
    target = "r_%s" % uuid.uuid4().hex[:10]
    try:
        changed, res = pg_restore_backup(params_for(pg_newer, url, s3, target_database=target, jobs=jobs))
        assert changed and res["verified"]
        assert res["timings"]["streamed"] is (jobs == 1)
        assert table_row_counts(pg_newer, target) == table_row_counts(pg_newer, newer_db)
        assert pg_newer.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'notes_meta'", dbname=target) == "1"
    finally:
        pg_newer.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % target)
    for level in ("structure", "restore"):
        ok, out = pg_verify(params_for(pg_newer, url, s3, level=level, jobs=jobs))
        assert out["passed"] is True, out


def test_a_flipped_byte_fails_the_parallel_restore_before_anything_is_put_in_place(pg_newer, newer_db, s3, bucket):
    """jobs=2 on a plain archive: pg_restore starts once every byte is there
    and sha256 runs behind it; the mismatch still stops the restore before
    the rename, and no staging database is left."""
    url = "s3://%s/pg" % bucket
    bid = pg_backup(params_for(pg_newer, url, s3, database=newer_db))[1]["backup_id"]
    key = "pg/" + mf.artifact_key(bid, "database.pgdump")
    cli = s3.client()
    body = bytearray(cli.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01  # inside the data: pg_restore may well read it without complaint
    cli.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    target = "flip_%s" % uuid.uuid4().hex[:8]
    before = pg_newer.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
    with pytest.raises(IntegrityError) as ei:
        pg_restore_backup(params_for(pg_newer, url, s3, target_database=target, jobs=2))
    assert "database.pgdump" in str(ei.value) and "sha256" in str(ei.value)
    assert pg_newer.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database") == before


def test_compression_by_drkit_keeps_the_outer_zstd(pg_newer, newer_db, s3, bucket):
    url = "s3://%s/pg" % bucket
    result = pg_backup(params_for(pg_newer, url, s3, database=newer_db, compression_by="drkit"))[1]
    m = mf.resolve(st.open_storage(url, **s3_module_args(s3)), result["backup_id"]).manifest
    assert m["artifacts"][0]["name"] == "database.pgdump.zst"
    assert m["artifacts"][0]["compressed"] is True
    assert "dump_compression" not in m["artifacts"][0]
    assert m["options"]["compression_by"] == "drkit"


def test_an_older_pg_restore_is_refused_before_anything_is_created(pg, pg_newer, newer_db, s3, bucket):
    url = "s3://%s/pg" % bucket
    pg_backup(params_for(pg_newer, url, s3, database=newer_db))
    target = "r_%s" % uuid.uuid4().hex[:10]
    before = pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
    with pytest.raises(ConfigError) as e:
        pg_restore_backup(params_for(pg, url, s3, target_database=target, jobs=2))
    assert "compressed by pg_dump (zstd:3)" in e.value.message
    assert "pg_restore 16 or later" in e.value.hint
    assert pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database") == before


def test_compression_by_pg_dump_needs_pg_dump_16(pg, pg_database, s3, bucket):
    url = "s3://%s/pg" % bucket
    with pytest.raises(ConfigError) as e:
        pg_backup(params_for(pg, url, s3, database=pg_database, compression_by="pg_dump"))
    assert "needs pg_dump 16 or later" in e.value.message
    assert not [k for k in list_keys(url, s3) if "/backups/" in "/" + k]


def test_auto_on_postgresql_15_uses_drkits_zstd(pg, pg_database, s3, bucket):
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g", dbname=pg_database)
    url = "s3://%s/pg" % bucket
    result = pg_backup(params_for(pg, url, s3, database=pg_database))[1]
    m = mf.resolve(st.open_storage(url, **s3_module_args(s3)), result["backup_id"]).manifest
    assert m["artifacts"][0]["name"] == "database.pgdump.zst"
    assert m["options"]["compression_by"] == "drkit"
