# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""settings.py: save rules, values read from redis.conf, and the persistence
settings that may be asked for (no paths, no secrets)."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.redis import settings as redis_settings
from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import read_redis_conf


def test_save_rules_and_conf_parsing(tmp_path):
    assert redis_settings.normalise_save(["3600 1", "300 100"]) == "3600 1 300 100"
    assert redis_settings.normalise_save("900 1 60 10000") == "900 1 60 10000"
    assert redis_settings.normalise_save([]) == "" and redis_settings.normalise_save([""]) == ""
    assert redis_settings.normalise_save([[60, 10]]) == "60 10"
    for bad in (["3600"], ["x 1"], ["0 1"]):
        with pytest.raises(ConfigError):
            redis_settings.normalise_save(bad)
    conf = tmp_path / "redis.conf"
    conf.write_text('# comment\nsave 900 1\nsave 300 10\nappendonly YES\nappendfsync "everysec"\n'
                    'dir "/var/lib/redis"\ndbfilename dump.rdb\n')
    assert redis_settings.read_conf_values(str(conf), {"save", "appendonly", "appendfsync"}) == {
        "save": "900 1 300 10", "appendonly": "yes", "appendfsync": "everysec"}
    conf.write_text('save 900 1\nsave ""\n')
    assert redis_settings.read_conf_values(str(conf), {"save"}) == {"save": ""}
    conf.write_text('dir "/var/lib/redis"\nappendonly yes\nappenddirname "aofdir"\n')
    assert read_redis_conf(str(conf)) == {"dir": "/var/lib/redis", "appendonly": "yes", "appenddirname": "aofdir"}


def test_desired_settings_refuses_paths_and_secrets():
    assert redis_settings.desired_settings({"appendonly": True, "settings": {"aof_use_rdb_preamble": True}}) == {
        "appendonly": "yes", "aof-use-rdb-preamble": "yes"}
    for bad in ({}, {"appendfsync": "sometimes"}, {"settings": {"requirepass": "x"}},
                {"appendonly": True, "settings": {"appendonly": "no"}}):
        with pytest.raises(ConfigError):
            redis_settings.desired_settings(bad)
