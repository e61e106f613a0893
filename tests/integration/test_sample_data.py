# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sample dataset generator, against the real scratch PostgreSQL of
tests/conftest.py: shape (3 schemas, 36 tables, foreign keys, indexes,
sequences), determinism, realistic compressibility, and the concurrent
write load."""

import sys
import threading
import time
import uuid

import psycopg
import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.demo import sample_data
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, SafetyError, ToolError

SCALE = 0.01
SEED = 7

EXPECTED = {
    "l02_runtime": {"agent_state", "checkpoints"},
    "mcp_contexts": {"active_sessions", "checkpoints", "context_conflicts"},
    "mcp_documents": {"agents", "api_requests", "alerts", "datasets"},
}


def _name(prefix):
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


def _drop(pg, name):
    if pg.is_running():
        pg.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def _connect(pg, dbname):
    ci = pg.conninfo(dbname)
    return psycopg.connect(host=ci["host"], port=ci["port"], user=ci["user"], password=ci["password"],
                           dbname=ci["dbname"], autocommit=True)


def _copy_out(conn, table):
    buf = bytearray()
    with conn.cursor() as cur:
        with cur.copy("COPY %s TO STDOUT" % table) as cp:
            for block in cp:
                buf += block
    return bytes(buf)


def _fingerprint(conn, table):
    with conn.cursor() as cur:
        cur.execute("SELECT md5(string_agg(t::text, '|' ORDER BY 1)) FROM %s t" % table)
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def sample(pg):
    """One small dataset for the read-only checks of this module."""
    name = _name("sample")
    messages = []
    result = sample_data.generate(pg.conninfo(), scale=SCALE, seed=SEED, database=name, progress=messages.append)
    try:
        yield name, result, messages
    finally:
        _drop(pg, name)


# ---------------------------------------------------------------- no server


def test_api_constants():
    assert sample_data.SCHEMAS == ["mcp_documents", "mcp_contexts", "l02_runtime"]
    assert len(sample_data.TABLES) == 36 == len(set(sample_data.TABLES))
    per_schema = {}
    for qname in sample_data.TABLES:
        schema, table = qname.split(".")
        per_schema.setdefault(schema, set()).add(table)
    assert {s: len(t) for s, t in per_schema.items()} == {"mcp_documents": 27, "mcp_contexts": 7, "l02_runtime": 2}
    for schema, tables in EXPECTED.items():
        assert tables <= per_schema[schema]


def test_tables_listed_in_dependency_order():
    order = {t: i for i, t in enumerate(sample_data.TABLES)}
    for t in sample_data._TABLES:  # noqa: SLF001 - the schema spec itself
        for _col, ref, _refcol in t.fks:
            if ref != t.qname:
                assert order[ref] < order[t.qname], "%s listed before its parent %s" % (t.qname, ref)


def test_generated_rows_fit_their_tables():
    """Every generator emits exactly one COPY line per row with the table's
    column count (no stray tab or newline in the text)."""
    for t in sample_data._TABLES:  # noqa: SLF001
        lines = sample_data.rows_text(t.qname, seed=SEED, scale=SCALE, start=1, stop=50)
        assert lines, t.qname
        for line in lines:
            assert "\n" not in line and "\r" not in line
            assert line.count("\t") == len(t.columns) - 1, (t.qname, line[:200])


def test_row_counts_depend_on_scale_only():
    small, big = sample_data.row_counts(0.01), sample_data.row_counts(1.0)
    assert set(small) == set(big) == set(sample_data.TABLES)
    assert all(n > 0 for n in small.values())
    assert sum(big.values()) > 50 * sum(small.values()) / 2
    big4 = sum(big["mcp_documents.%s" % t] for t in ("api_requests", "document_chunks", "audit_log"))
    assert big4 + big["mcp_contexts.session_events"] > 0.5 * sum(big.values())


def test_missing_psycopg_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match="psycopg"):
        sample_data.generate({"host": "127.0.0.1", "port": 1, "user": "x", "password": None, "dbname": "postgres"},
                             scale=SCALE, database="never_created")


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"scale": "lots"}, {"database": ""}, {"database": "postgres"}])
def test_bad_arguments(kwargs):
    args = dict(scale=SCALE, database="never_created")
    args.update(kwargs)
    with pytest.raises(ConfigError):
        sample_data.generate({"host": "127.0.0.1", "port": 1, "user": "x", "password": None, "dbname": "postgres"},
                             **args)


# ---------------------------------------------------------------- shape


def test_creates_36_tables_in_3_schemas(pg, sample):
    name, result, messages = sample
    rows = pg.psql("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                   "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
                   "ORDER BY 1", dbname=name).splitlines()
    assert sorted(rows) == sorted(sample_data.TABLES)
    assert result["database"] == name
    assert set(result["tables"]) == set(sample_data.TABLES)
    assert result["size_bytes"] > 5 * 1024 * 1024
    assert messages and any("api_requests" in m for m in messages)


def test_every_table_has_rows_and_counts_match(pg, sample):
    name, result = sample[:2]
    counts = sample_data.table_row_counts(pg.conninfo(), name)
    assert counts == result["tables"] == sample_data.row_counts(SCALE)
    assert all(n > 0 for n in counts.values()), counts


def test_foreign_keys_indexes_and_types(pg, sample):
    name = sample[0]
    fks = set(pg.psql("SELECT conrelid::regclass || '->' || confrelid::regclass FROM pg_constraint "
                      "WHERE contype = 'f'", dbname=name).splitlines())
    assert len(fks) >= 40
    for edge in ("mcp_documents.api_requests->mcp_documents.agents",
                 "mcp_documents.workflow_runs->mcp_documents.workflows",
                 "mcp_documents.document_chunks->mcp_documents.documents",
                 "mcp_contexts.session_events->mcp_contexts.active_sessions",
                 "l02_runtime.agent_state->mcp_documents.agents",
                 "l02_runtime.checkpoints->mcp_contexts.checkpoints"):
        assert edge in fks
    # every table has a primary key; a few secondary indexes exist
    assert pg.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace::regnamespace::text "
                   "IN ('mcp_documents', 'mcp_contexts', 'l02_runtime')", dbname=name) == "36"
    assert int(pg.psql("SELECT count(*) FROM pg_indexes WHERE schemaname LIKE 'mcp%' OR schemaname = 'l02_runtime'",
                       dbname=name)) >= 60
    types = pg.psql("SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema IN "
                    "('mcp_documents', 'mcp_contexts', 'l02_runtime')", dbname=name).splitlines()
    for t in ("jsonb", "timestamp with time zone", "uuid", "inet", "bytea", "ARRAY", "numeric", "USER-DEFINED"):
        assert t in types
    # the foreign keys are enforced
    with pytest.raises(ToolError, match="foreign key"):
        pg.psql("INSERT INTO mcp_documents.api_requests (request_id, agent_id, method, path, status_code, latency_ms) "
                "VALUES (gen_random_uuid(), -1, 'GET', '/', 200, 1)", dbname=name)


def test_sequences_follow_the_loaded_ids(pg, sample):
    name, result = sample[:2]
    n = result["tables"]["mcp_documents.agents"]
    new_id = pg.psql("INSERT INTO mcp_documents.teams (name, slug) VALUES ('t', 'seq-check') RETURNING id; "
                     "DELETE FROM mcp_documents.teams WHERE slug = 'seq-check'", dbname=name)
    assert int(new_id.split()[0]) == result["tables"]["mcp_documents.teams"] + 1
    assert int(pg.psql("SELECT max(id) FROM mcp_documents.agents", dbname=name)) == n


def test_text_compresses_like_real_data(pg, sample):
    """zstd -3 squeezes the data 2-10x: not filler, not random bytes."""
    name = sample[0]
    conn = _connect(pg, name)
    try:
        total_raw = total_packed = 0
        for table in sample_data.TABLES:
            raw = _copy_out(conn, table)
            packed = len(zstandard.ZstdCompressor(level=3).compress(raw))
            total_raw += len(raw)
            total_packed += packed
            if len(raw) > 500000:  # the big ones on their own too
                assert 2.0 < len(raw) / packed < 10.0, (table, len(raw) / packed)
        assert total_raw > 5 * 1024 * 1024
        assert 2.5 < total_raw / total_packed < 6.0, total_raw / total_packed
        text = _copy_out(conn, "(SELECT content FROM mcp_documents.document_chunks)")
        assert 2.0 < len(text) / len(zstandard.ZstdCompressor(level=3).compress(text)) < 10.0
        assert len(set(text.split())) > 1000  # a vocabulary, not one repeated word
    finally:
        conn.close()


# ---------------------------------------------------------------- determinism and safety


def test_deterministic_for_a_seed(pg, sample):
    name, result = sample[:2]
    same, other = _name("sample_same"), _name("sample_other")
    try:
        again = sample_data.generate(pg.conninfo(), scale=SCALE, seed=SEED, database=same)
        third = sample_data.generate(pg.conninfo(), scale=SCALE, seed=SEED + 1, database=other)
        assert again["tables"] == result["tables"] == third["tables"]
        assert sample_data.table_row_counts(pg.conninfo(), same) == sample_data.table_row_counts(pg.conninfo(), name)
        a, b, c = _connect(pg, name), _connect(pg, same), _connect(pg, other)
        try:
            for table in ("mcp_documents.api_requests", "mcp_contexts.session_events", "l02_runtime.agent_state"):
                assert _fingerprint(a, table) == _fingerprint(b, table)
                assert _fingerprint(a, table) != _fingerprint(c, table)
        finally:
            for conn in (a, b, c):
                conn.close()
    finally:
        _drop(pg, same)
        _drop(pg, other)


def test_existing_dataset_needs_replace(pg, sample):
    name = sample[0]
    with pytest.raises(SafetyError, match="replace"):
        sample_data.generate(pg.conninfo(), scale=SCALE, seed=SEED, database=name)


def test_into_existing_empty_database_and_replace(pg, pg_database):
    first = sample_data.generate(pg.conninfo(), scale=SCALE, seed=1, database=pg_database, create_database=False)
    assert sum(first["tables"].values()) > 0
    pg.psql("INSERT INTO mcp_documents.teams (name, slug) VALUES ('extra', 'extra-team')", dbname=pg_database)
    again = sample_data.generate(pg.conninfo(), scale=SCALE, seed=1, database=pg_database, create_database=False,
                                 replace=True)
    assert sample_data.table_row_counts(pg.conninfo(), pg_database) == again["tables"]


# ---------------------------------------------------------------- write load


@pytest.fixture
def loaded_db(pg):
    name = _name("sample_load")
    sample_data.generate(pg.conninfo(), scale=SCALE, seed=SEED, database=name)
    try:
        yield name
    finally:
        _drop(pg, name)


def test_write_load_changes_rows(pg, loaded_db):
    before = sample_data.table_row_counts(pg.conninfo(), loaded_db)
    versions = int(pg.psql("SELECT sum(version) FROM l02_runtime.agent_state", dbname=loaded_db))
    stats = sample_data.write_load(pg.conninfo(), loaded_db, seconds=2.0, seed=3)
    after = sample_data.table_row_counts(pg.conninfo(), loaded_db)
    assert stats["transactions"] > 20
    assert stats["inserts"] > 0 and stats["updates"] > 0
    assert stats["inserts"] + stats["updates"] + stats["deletes"] >= stats["transactions"]
    assert 1.9 <= stats["seconds"] < 10
    for table, ops in stats["tables"].items():
        assert after[table] - before[table] == ops["insert"] - ops["delete"], table
    assert after != before
    assert int(pg.psql("SELECT sum(version) FROM l02_runtime.agent_state", dbname=loaded_db)) == \
        versions + stats["tables"]["l02_runtime.agent_state"]["update"]


def test_write_load_stops_on_event_and_honours_rate(pg, loaded_db):
    stop = threading.Event()
    out = {}
    th = threading.Thread(target=lambda: out.update(
        sample_data.write_load(pg.conninfo(), loaded_db, stop_event=stop, rate=20)))
    th.start()
    time.sleep(1.5)
    stop.set()
    th.join(10)
    assert not th.is_alive()
    assert 5 <= out["transactions"] <= 45, out
    with pytest.raises(ConfigError):
        sample_data.write_load(pg.conninfo(), loaded_db)
