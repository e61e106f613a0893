# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Row counts: taken from pg_dump's own snapshot at backup time, compared
table by table after a restore (PostgreSQL's insert counters, confirmed by
count(*) where they differ, or count(*) everywhere).

A table is the pair (schema, table) everywhere, never a "schema.table"
string: "a.b".c and a."b.c" are two tables. The manifest holds
``data.table_rows``, a list of {"schema", "table", "rows"}; manifests of
format version 1 held ``data.row_counts`` keyed "schema.table", which
``expected_counts`` still reads (see ``_legacy_counts``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import threading
import time

from ..core.errors import IntegrityError
from ..core.options import Option
from .client import connect, ident

TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _count_table(cur, schema, table):
    """count(*) of one table, both names quoted as identifiers."""
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(ident(schema), ident(table)))
    return cur.fetchone()[0]


class RowCounter(threading.Thread):
    """Counts rows of every dumped table inside the exporting transaction,
    i.e. in pg_dump's own snapshot, while pg_dump runs: {(schema, table): rows}."""

    def __init__(self, conn, tables):
        super(RowCounter, self).__init__()
        self.daemon = True
        self.conn = conn
        self.tables = tables
        self.counts = {}
        self.error = None

    def run(self):
        try:
            with self.conn.cursor() as cur:
                for schema, table in self.tables:
                    self.counts[(schema, table)] = _count_table(cur, schema, table)
        except Exception as e:  # pylint: disable=broad-except
            self.error = e


ROW_COUNT_METHODS = ("stats", "count")
ROW_COUNT_METHOD = Option(
    "row_count_method", "str", default="stats", choices=ROW_COUNT_METHODS, flags=("--row-count-method",),
    help="stats: PostgreSQL's insert counters, count(*) where they differ (default); count: count(*) on every table",
    hint="stats (PostgreSQL's insert counters, count(*) where they differ) or count")


# --------------------------------------------------------------------------
# in the manifest

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


def qualified_name(schema, table):
    """schema.table for people, each part double-quoted unless it is a plain
    lower-case name, as psql shows it: "a.b".c and a."b.c" stay apart."""
    def part(name):
        return name if _PLAIN.match(name) else '"%s"' % name.replace('"', '""')
    return "%s.%s" % (part(schema), part(table))


def manifest_rows(counts):
    """{(schema, table): rows} -> the manifest's ``data.table_rows``: a list
    of {"schema", "table", "rows"} in (schema, table) order."""
    return [{"schema": s, "table": t, "rows": counts[(s, t)]} for s, t in sorted(counts)]


def expected_counts(data, cp, dbname):
    """The row counts a backup's manifest recorded, {(schema, table): rows},
    and notes for the verification; (None, []) if it recorded none
    (row_counts was off). ``data``: the manifest's ``data``; ``cp``/``dbname``:
    the restored database, in whose catalog an old manifest's "schema.table"
    keys are looked up."""
    rows = data.get("table_rows")
    if rows is not None:
        return _table_rows(rows), []
    legacy = data.get("row_counts")
    if not legacy:
        return None, []
    if not isinstance(legacy, dict):
        raise IntegrityError("The manifest's row_counts is not a mapping", "The manifest is damaged")
    conn = connect(cp, dbname, autocommit=True)
    try:
        present = _catalog(conn)
    finally:
        conn.close()
    return _legacy_counts(legacy, present)


def _table_rows(rows):
    out = {}
    for r in rows if isinstance(rows, list) else [rows]:
        if not (isinstance(r, dict) and isinstance(r.get("schema"), str) and isinstance(r.get("table"), str)
                and isinstance(r.get("rows"), int) and not isinstance(r["rows"], bool)):
            raise IntegrityError("The manifest's table_rows holds a malformed entry %r" % (r,),
                                 "The manifest is damaged")
        key = (r["schema"], r["table"])
        if key in out:
            raise IntegrityError("The manifest's table_rows lists %s twice" % qualified_name(*key),
                                 "The manifest is damaged")
        out[key] = r["rows"]
    return out


def _legacy_counts(legacy, present):
    """Format version 1: {"schema.table": rows}. A key names the table of
    the restored database whose schema and name joined by a dot give it;
    when two do ("a.b".c and a."b.c"), the one pg_dump's table list ordered
    last, as that is the count the old backup kept (its counter wrote the key
    table by table in (schema, table) order); the other cannot be checked
    and a note says so. A key no table gives stays a missing table."""
    by_name = {}
    for key in sorted(present):
        by_name.setdefault("%s.%s" % key, []).append(key)
    out, notes = {}, []
    for name, rows in sorted(legacy.items()):
        if not isinstance(rows, int) or isinstance(rows, bool):
            raise IntegrityError("The manifest's row_counts holds %r for %s" % (rows, name),
                                 "The manifest is damaged")
        candidates = by_name.get(name)
        if not candidates:
            schema, _dot, table = name.partition(".")
            out[(schema, table)] = rows
            continue
        out[candidates[-1]] = rows
        if len(candidates) > 1:
            notes.append("the manifest (format version 1) keys row counts by \"schema.table\": %s share the "
                         "key %s, only %s was checked" % (
                             " and ".join(qualified_name(*c) for c in candidates), name,
                             qualified_name(*candidates[-1])))
    return out, notes


# --------------------------------------------------------------------------
# after a restore


def _catalog(conn):
    """Every table and partitioned table of the database: {(schema, table)}."""
    with conn.cursor() as cur:
        cur.execute("SELECT n.nspname, c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')")
        return set(cur.fetchall())


def count_rows(cp, dbname, tables, jobs=1):
    """Exact row counts of (schema, table) pairs; a missing table counts as None.

    ``tables`` may map the pairs to the expected counts: with ``jobs`` > 1
    the tables are then spread over that many connections by size (biggest
    first onto the least loaded), as pg_restore -j spreads its work."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        present = _catalog(conn)
        out = dict((key, None) for key in tables if key not in present)
        groups = _spread([k for k in sorted(tables) if k in present], tables, jobs)
        errors = []

        def count_in_own_connection(keys):
            try:
                own = connect(cp, dbname, autocommit=True)
                try:
                    out.update(_count(own, keys))
                finally:
                    own.close()
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)  # raised by the calling thread below

        threads = [threading.Thread(target=count_in_own_connection, args=(g,)) for g in groups[1:]]
        for t in threads:
            t.start()
        try:
            out.update(_count(conn, groups[0]))
        finally:
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    finally:
        conn.close()
    return out


def _spread(names, weights, jobs):
    groups = [[] for _dummy in range(max(1, min(int(jobs or 1), len(names))))]
    loads = [0] * len(groups)
    weight = weights.get if isinstance(weights, dict) else (lambda name: 0)
    for name in sorted(names, key=lambda n: -(weight(n) or 0)):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += (weight(name) or 0) + 1
    return groups


def _count(conn, keys):
    with conn.cursor() as cur:
        return dict(((schema, table), _count_table(cur, schema, table)) for schema, table in keys)


def inserted_rows(cp, dbname, tables, wait=5.0):
    """Rows PostgreSQL's statistics counted into each (schema, table) (with
    its partitions or inheritance children, as count(*) sees them) since the
    database was created: after pg_restore into a new database, what COPY
    loaded. Only tables whose counters show inserts alone are returned; an
    empty dict when counters are off or the loading sessions are still there."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW track_counts")
            if cur.fetchone()[0] != "on":
                return {}
            # A session flushes its counters before it leaves pg_stat_activity.
            deadline = time.time() + wait
            while True:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
                if cur.fetchone()[0] == 0:
                    break
                if time.time() > deadline:
                    return {}
                time.sleep(0.01)
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("""
                WITH RECURSIVE tree(root, rel) AS (
                    SELECT oid, oid FROM pg_class WHERE relkind IN ('r', 'p')
                    UNION
                    SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel)
                SELECT n.nspname, c.relname, sum(s.n_tup_ins), sum(s.n_tup_upd + s.n_tup_del), count(s.relid)
                FROM tree t JOIN pg_class c ON c.oid = t.root JOIN pg_namespace n ON n.oid = c.relnamespace
                LEFT JOIN pg_stat_all_tables s ON s.relid = t.rel
                GROUP BY 1, 2""")
            out = {}
            for schema, table, inserted, changed, seen in cur.fetchall():
                key = (schema, table)
                if key in tables and inserted is not None and changed == 0 and seen:
                    out[key] = int(inserted)
            return out
    finally:
        conn.close()


def restored_counts(cp, dbname, expected, jobs=1, method="stats"):
    """Row counts of the restored tables to compare with ``expected``
    ({(schema, table): rows}).

    ``count`` runs count(*) on every table. ``stats`` takes what COPY
    inserted from PostgreSQL's counters (free, where count(*) reads every
    page again) and runs count(*) only on tables where that differs from the
    manifest, so a mismatch is always confirmed by a real count.
    Returns (counts, number of tables counted with count(*))."""
    counts = inserted_rows(cp, dbname, expected) if method == "stats" else {}
    agreed = dict((key, n) for key, n in counts.items() if n == expected[key])
    rest = dict((key, n) for key, n in expected.items() if key not in agreed)
    if rest:
        agreed.update(count_rows(cp, dbname, rest, jobs))
    return agreed, len(rest)


def compare_counts(expected, actual):
    """Per-table comparison rows ({"schema", "table", "name": both for
    people, "expected", "actual", "ok"}) and the list of mismatches."""
    rows, problems = [], []
    for key in sorted(expected):
        got = actual.get(key)
        ok = got == expected[key]
        name = qualified_name(*key)
        rows.append({"schema": key[0], "table": key[1], "name": name, "expected": expected[key], "actual": got,
                     "ok": ok})
        if not ok:
            problems.append("%s: expected %s rows, restored %s" % (
                name, expected[key], "no table" if got is None else got))
    return rows, problems
