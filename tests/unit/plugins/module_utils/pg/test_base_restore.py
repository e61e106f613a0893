# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""base_restore.py: which data directories a physical restore may write
into."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, SafetyError
from ansible_collections.drkit.backup.plugins.module_utils.pg.base_restore import check_data_directory


def test_check_data_directory(tmp_path):
    assert check_data_directory(str(tmp_path / "new")) == "absent"
    (tmp_path / "empty").mkdir()
    assert check_data_directory(str(tmp_path / "empty")) == "empty"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "PG_VERSION").write_text("15\n")
    with pytest.raises(SafetyError) as exc:
        check_data_directory(str(tmp_path / "used"))
    assert "PostgreSQL data directory" in str(exc.value)
    # a live "postmaster": this very process (its cmdline holds no "postgres",
    # so fake one with a pid whose cmdline does... skip when none runs)
    with pytest.raises(ConfigError):
        check_data_directory("relative/path")
