# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rowcounts.py: how the row-count check spreads tables over connections, and
the row_count_method choices."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.pg.rowcounts import ROW_COUNT_METHOD, _spread


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
