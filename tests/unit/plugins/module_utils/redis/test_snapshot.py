# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""snapshot.py: the snapshot options are validated."""

import pytest

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import validate


def test_validate_options():
    assert validate({}) == ("rdb", 3, 600.0, 2000)
    for bad in ({"mode": "bgsave"}, {"compression_level": 25}, {"timeout": -1}, {"pause_timeout": 5}):
        with pytest.raises(ConfigError):
            validate(bad)
