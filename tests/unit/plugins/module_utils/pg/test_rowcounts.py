# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rowcounts.py: how the row-count check spreads tables over connections,
the row_count_method choices, and row counts keyed by (schema, table) in the
manifest, in old manifests and in the comparison."""

import json

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.pg.rowcounts import (ROW_COUNT_METHOD, _legacy_counts,
                                                                                _spread, _table_rows,
                                                                                compare_counts, expected_counts,
                                                                                manifest_rows, qualified_name)


def test_spread_puts_the_biggest_tables_on_different_connections():
    weights = {"a.big": 1000000, "a.big2": 900000, "a.mid": 50000, "a.s1": 10, "a.s2": 5}
    groups = _spread(sorted(weights), weights, 2)
    assert len(groups) == 2
    assert sorted(sum(groups, [])) == sorted(weights)  # every table exactly once
    assert ("a.big" in groups[0]) != ("a.big" in groups[1])
    assert not ({"a.big", "a.big2"} <= set(groups[0]) or {"a.big", "a.big2"} <= set(groups[1]))


def test_spread_never_opens_more_connections_than_tables_or_fewer_than_one():
    assert _spread(["x.t"], {"x.t": 3}, 8) == [["x.t"]]
    assert _spread([], {}, 4) == [[]]
    assert _spread(["x.a", "x.b"], ["x.a", "x.b"], 1) == [["x.a", "x.b"]]


def test_row_count_method_choices():
    def method(params):
        return resolve([ROW_COUNT_METHOD], params)["row_count_method"]
    assert method({}) == "stats"
    assert method({"row_count_method": "count"}) == "count"
    with pytest.raises(ConfigError) as ei:
        method({"row_count_method": "guess"})
    assert "'guess'" in str(ei.value) and "stats, count" in str(ei.value)


# --------------------------------------------------------------------------
# (schema, table) keys: the manifest's table_rows, old manifests, comparison


def test_tables_whose_names_join_alike_stay_apart_in_the_manifest():
    counts = {("a.b", "c"): 10, ("a", "b.c"): 20, ("public", "t"): 0}
    rows = manifest_rows(counts)
    assert rows == [{"schema": "a", "table": "b.c", "rows": 20}, {"schema": "a.b", "table": "c", "rows": 10},
                    {"schema": "public", "table": "t", "rows": 0}]
    assert _table_rows(json.loads(json.dumps(rows))) == counts


@pytest.mark.parametrize("rows,fragment", [
    ({"a.b.c": 1}, "malformed entry"),
    ([{"schema": "a", "table": "b"}], "malformed entry"),
    ([{"schema": "a", "table": "b", "rows": "1"}], "malformed entry"),
    ([{"schema": "a", "table": "b", "rows": True}], "malformed entry"),
    ([{"schema": "a", "table": 1, "rows": 1}], "malformed entry"),
    ([{"schema": "a", "table": "b", "rows": 1}, {"schema": "a", "table": "b", "rows": 2}], "lists a.b twice"),
])
def test_a_damaged_table_rows_is_refused(rows, fragment):
    with pytest.raises(IntegrityError) as ei:
        _table_rows(rows)
    assert fragment in str(ei.value)


def test_expected_counts_of_a_new_manifest_need_no_database():
    data = {"table_rows": [{"schema": "a.b", "table": "c", "rows": 10}], "row_counts": {"ignored": 1}}
    assert expected_counts(data, cp=None, dbname=None) == ({("a.b", "c"): 10}, [])
    assert expected_counts({}, cp=None, dbname=None) == (None, [])
    assert expected_counts({"row_counts": {}}, cp=None, dbname=None) == (None, [])  # row_counts was off
    assert expected_counts({"table_rows": []}, cp=None, dbname=None) == ({}, [])  # a database without tables


def test_an_old_manifest_is_read_against_the_restored_catalog():
    present = {("a.b", "c"), ("a", "b.c"), ("Sales", "Order Items"), ("public", "a.b"), ("dot.schema", "t")}
    legacy = {"a.b.c": 10, "Sales.Order Items": 37, "public.a.b": 5, "dot.schema.t": 3, "gone.table": 4}
    counts, notes = _legacy_counts(legacy, present)
    # the shared key held the count of the table counted last in (schema, table) order
    assert counts == {("a.b", "c"): 10, ("Sales", "Order Items"): 37, ("public", "a.b"): 5,
                      ("dot.schema", "t"): 3, ("gone", "table"): 4}
    assert notes == ['the manifest (format version 1) keys row counts by "schema.table": a."b.c" and "a.b".c '
                     'share the key a.b.c, only "a.b".c was checked']
    with pytest.raises(IntegrityError):
        _legacy_counts({"a.b": "many"}, present)


def test_comparison_rows_carry_schema_and_table_apart():
    expected = {("a.b", "c"): 10, ("a", "b.c"): 20, ("x", "gone"): 1}
    rows, problems = compare_counts(expected, {("a.b", "c"): 10, ("a", "b.c"): 21})
    assert rows == [
        {"schema": "a", "table": "b.c", "name": 'a."b.c"', "expected": 20, "actual": 21, "ok": False},
        {"schema": "a.b", "table": "c", "name": '"a.b".c', "expected": 10, "actual": 10, "ok": True},
        {"schema": "x", "table": "gone", "name": "x.gone", "expected": 1, "actual": None, "ok": False}]
    assert problems == ['a."b.c": expected 20 rows, restored 21', "x.gone: expected 1 rows, restored no table"]


@pytest.mark.parametrize("schema,table,name", [
    ("public", "plain_1$", "public.plain_1$"),
    ("Sales", "Order Items", '"Sales"."Order Items"'),
    ("a.b", "c", '"a.b".c'),
    ('we"ird', "größe", '"we""ird"."größe"'),
    ("1st", "_ok", '"1st"._ok'),
])
def test_qualified_names_quote_what_needs_it(schema, table, name):
    assert qualified_name(schema, table) == name
