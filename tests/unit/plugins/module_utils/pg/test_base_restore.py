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


def test_a_new_data_directory_needs_an_existing_parent(tmp_path):
    target = tmp_path / "a" / "b" / "data"
    with pytest.raises(ConfigError) as exc:
        check_data_directory(str(target))
    msg = str(exc.value)
    assert "The parent directory %s of data_directory %s does not exist (%s is missing)" % (
        target.parent, target, tmp_path / "a") in msg
    assert "mkdir -p %s" % target.parent in msg
    assert not (tmp_path / "a").exists()


def test_a_new_data_directory_needs_a_parent_this_user_may_write(tmp_path, monkeypatch):
    # root writes anywhere: the answer of access(2) is what is faked here
    import os
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: path != str(tmp_path))
    with pytest.raises(ConfigError) as exc:
        check_data_directory(str(tmp_path / "data"))
    assert "The parent directory %s of data_directory %s is not writable by this run's user" % (
        tmp_path, tmp_path / "data") in str(exc.value)
