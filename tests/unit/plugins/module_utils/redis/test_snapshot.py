# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""snapshot.py: the snapshot options are resolved and checked."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import OPTIONS


def test_snapshot_options():
    p = resolve(OPTIONS, {}, environ={})
    assert (p["mode"], p["compression_level"], p["compression_threads"], p["timeout"], p["pause_timeout"]) == \
        ("rdb", 3, 0, 600.0, 2000)
    assert (p["login_host"], p["login_port"], p["connect_timeout"]) == ("localhost", 6379, 10.0)
    for bad, message in (({"mode": "bgsave"}, "mode must be one of rdb, remote, aof, got 'bgsave'"),
                         ({"compression_level": 25}, "compression_level must be 1-19, got 25"),
                         ({"compression_level": 0}, "compression_level must be 1-19, got 0"),
                         ({"timeout": -1}, "timeout must be more than 0, got -1.0"),
                         ({"timeout": 0}, "timeout must be more than 0, got 0.0"),
                         ({"pause_timeout": 5}, "pause_timeout must be 10-60000, got 5"),
                         ({"login_port": 0}, "login_port must be 1-65535, got 0")):
        with pytest.raises(ConfigError) as e:
            resolve(OPTIONS, bad)
        assert message in str(e.value)
