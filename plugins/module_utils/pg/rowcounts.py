# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Row counts: taken from pg_dump's own snapshot at backup time, compared
table by table after a restore (PostgreSQL's insert counters, confirmed by
count(*) where they differ, or count(*) everywhere).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

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


class RowCounter(threading.Thread):
    """Counts rows of every dumped table inside the exporting transaction,
    i.e. in pg_dump's own snapshot, while pg_dump runs."""

    def __init__(self, conn, tables):
        super(RowCounter, self).__init__()
        self.daemon = True
        self.conn = conn
        self.tables = tables
        self.counts = {}
        self.error = None

    def run(self):
        try:
            from psycopg import sql  # pylint: disable=import-outside-toplevel
            with self.conn.cursor() as cur:
                for schema, table in self.tables:
                    cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table)))
                    self.counts["%s.%s" % (schema, table)] = cur.fetchone()[0]
        except Exception as e:  # pylint: disable=broad-except
            self.error = e


ROW_COUNT_METHODS = ("stats", "count")
ROW_COUNT_METHOD = Option(
    "row_count_method", "str", default="stats", choices=ROW_COUNT_METHODS, flags=("--row-count-method",),
    help="stats: PostgreSQL's insert counters, count(*) where they differ (default); count: count(*) on every table",
    hint="stats (PostgreSQL's insert counters, count(*) where they differ) or count")


def count_rows(cp, dbname, tables, jobs=1):
    """Exact row counts for 'schema.table' names; a missing table counts as None.

    ``tables`` may map names to the expected counts: with ``jobs`` > 1 the
    tables are then spread over that many connections by size (biggest
    first onto the least loaded), as pg_restore -j spreads its work."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT n.nspname, c.relname FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')")
            # Keys are "schema.table" and either part may hold a dot: look
            # the parts up in the catalog rather than splitting the key.
            present = {}
            for schema, table in cur.fetchall():
                present.setdefault("%s.%s" % (schema, table), (schema, table))
        out = dict((name, None) for name in tables if name not in present)
        groups = _spread([n for n in sorted(tables) if n in present], tables, jobs)
        errors = []

        def count_in_own_connection(names):
            try:
                own = connect(cp, dbname, autocommit=True)
                try:
                    out.update(_count(own, names, present))
                finally:
                    own.close()
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)  # raised by the calling thread below

        threads = [threading.Thread(target=count_in_own_connection, args=(g,)) for g in groups[1:]]
        for t in threads:
            t.start()
        try:
            out.update(_count(conn, groups[0], present))
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


def _count(conn, names, present):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    out = {}
    with conn.cursor() as cur:
        for name in names:
            schema, table = present[name]
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(ident(schema), ident(table)))
            out[name] = cur.fetchone()[0]
    return out


def inserted_rows(cp, dbname, names, wait=5.0):
    """Rows PostgreSQL's statistics counted into each table (with its
    partitions or inheritance children, as count(*) sees them) since the
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
                name = "%s.%s" % (schema, table)
                if name in names and inserted is not None and changed == 0 and seen:
                    out[name] = int(inserted)
            return out
    finally:
        conn.close()


def restored_counts(cp, dbname, expected, jobs=1, method="stats"):
    """Row counts of the restored tables to compare with ``expected``.

    ``count`` runs count(*) on every table. ``stats`` takes what COPY
    inserted from PostgreSQL's counters (free, where count(*) reads every
    page again) and runs count(*) only on tables where that differs from the
    manifest, so a mismatch is always confirmed by a real count.
    Returns (counts, number of tables counted with count(*))."""
    counts = inserted_rows(cp, dbname, expected) if method == "stats" else {}
    agreed = dict((name, n) for name, n in counts.items() if n == expected[name])
    rest = dict((name, n) for name, n in expected.items() if name not in agreed)
    if rest:
        agreed.update(count_rows(cp, dbname, rest, jobs))
    return agreed, len(rest)


def compare_counts(expected, actual):
    """Per-table comparison rows and the list of mismatches."""
    rows, problems = [], []
    for name in sorted(expected):
        got = actual.get(name)
        ok = got == expected[name]
        rows.append({"table": name, "expected": expected[name], "actual": got, "ok": ok})
        if not ok:
            problems.append("%s: expected %s rows, restored %s" % (
                name, expected[name], "no table" if got is None else got))
    return rows, problems
