# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tools.py: redis-check-rdb's output and the AOF manifest, parsed."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.redis.tools import parse_aof_manifest, parse_check_output


def test_parse_check_output_and_aof_manifest():
    text = ("[offset 27] AUX FIELD redis-ver = '7.0.15'\n[offset 82] Selecting DB ID 0\n"
            "[offset 568990] Selecting DB ID 2\n\\o/ RDB looks OK! \\o/\n[info] 20002 keys read\n"
            "[info] 1 expires\n[info] 0 already expired\n")
    assert parse_check_output(text) == {"keys": 20002, "expires": 1, "already_expired": 0,
                                        "dbs": [0, 2], "redis_ver": "7.0.15"}
    m = parse_aof_manifest('file appendonly.aof.2.base.rdb seq 2 type b\n'
                           'file "odd name.aof.3.incr.aof" seq 3 type i\n'
                           'file appendonly.aof.1.incr.aof seq 1 type h\n')
    assert [(e["file"], e["type"]) for e in m] == [("appendonly.aof.2.base.rdb", "b"),
                                                   ("odd name.aof.3.incr.aof", "i"),
                                                   ("appendonly.aof.1.incr.aof", "h")]
    with pytest.raises(IntegrityError):
        parse_aof_manifest("file ../../etc/passwd seq 1 type b\n")
