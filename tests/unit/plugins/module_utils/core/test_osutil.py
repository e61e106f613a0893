# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""osutil.py: check_traversable names the directory another user cannot enter."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.osutil import check_traversable


def test_check_traversable_names_the_blocking_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ConfigError) as exc:
        check_traversable(str(locked / "pg" / "data"), 65534, set())
    assert "cannot enter" in str(exc.value)
    assert "make_scratch_dir" in str(exc.value)
