# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""verify.py: restored key counts compared with the backup's keyspace."""

from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import compare_keyspace


def test_compare_keyspace_rules():
    data = {"key_counts_exact": True,
            "keyspace": {"db0": {"keys": 100, "expires": 10}, "db1": {"keys": 5, "expires": 0}}}
    rows, problems, how = compare_keyspace(data, {"db0": {"keys": 95}, "db1": {"keys": 5}})
    assert problems == [] and how == "exact per database"  # 5 keys with a TTL expired before loading: fine
    _r, problems, _h = compare_keyspace(data, {"db0": {"keys": 89}, "db1": {"keys": 5}})
    assert problems and "db0" in problems[0]
    _r, problems, _h = compare_keyspace(data, {"db0": {"keys": 100}, "db1": {"keys": 5}, "db3": {"keys": 1}})
    assert problems == ["db3: expected 0 keys, restored 1"]
    approx = {"key_counts_exact": False, "keyspace": {"db0": {"keys": 7, "expires": 0}},
              "rdb": {"check": {"keys": 10, "expires": 0}}}
    assert compare_keyspace(approx, {"db0": {"keys": 10}})[1] == []
    assert compare_keyspace(approx, {"db0": {"keys": 9}})[1]
    aof = {"key_counts_exact": False, "keyspace": {"db0": {"keys": 7, "expires": 0}}}
    rows, problems, how = compare_keyspace(aof, {"db0": {"keys": 9}})
    assert problems == [] and how.startswith("not compared")
