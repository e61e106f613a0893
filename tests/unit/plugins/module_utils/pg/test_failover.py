# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""failover.py: the loss bound from the standby's last view, the endpoint,
the fence written into an old primary's data directory, the refusals."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.pg import failover, fencing
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf

T = mf.parse_time("2026-12-03T10:00:00Z").timestamp()


def test_bound_from_a_standby_that_had_everything_the_primary_reported():
    b = failover.loss_bound({"receiver_flushed_lsn": "0/5000100", "latest_end_lsn": "0/5000100",
                             "latest_end_time": "2026-12-03T10:00:00Z"}, T + 2.5)
    assert b["safe_before"] == "2026-12-03T10:00:00Z" and b["rpo_bound_seconds"] == 2.5
    assert b["known_unreceived_bytes"] == 0


def test_bound_when_the_standby_was_behind_falls_back_to_its_last_replayed_commit():
    b = failover.loss_bound({"receiver_flushed_lsn": "0/5000000", "latest_end_lsn": "0/5000100",
                             "latest_end_time": "2026-12-03T10:00:05Z",
                             "last_replayed_xact_time": "2026-12-03T10:00:00Z"}, T + 10)
    assert b["known_unreceived_bytes"] == 0x100
    assert b["safe_before"] == "2026-12-03T10:00:00Z" and b["rpo_bound_seconds"] == 10


def test_endpoint_default_and_bad_entries():
    cp = {"login_host": "db1", "port": 5432}
    assert failover.endpoint_hosts({"endpoint": None, "standby_host": "db2", "standby_port": 5433}, cp) == [
        ("db1", 5432), ("db2", 5433)]
    with pytest.raises(ConfigError):
        failover.endpoint_hosts({"endpoint": "db1:5432,db2", "standby_host": "x", "standby_port": 1}, cp)


def test_fence_makes_a_restart_a_standby_that_archives_nothing(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("work_mem = '8MB'\nprimary_conninfo = 'host=x'\n")
    done = fencing.fence(str(tmp_path), "/nonexistent", None, "test", lambda m: None)
    assert "standby.signal" in done and (tmp_path / "standby.signal").exists()
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert "work_mem = '8MB'" in text and "host=x" not in text
    assert text.strip().endswith("restore_command = ''") and "archive_mode = off" in text
    # fencing twice keeps one fence block
    fencing.fence(str(tmp_path), "/nonexistent", None, "again", lambda m: None)
    assert (tmp_path / "postgresql.auto.conf").read_text().count("archive_mode = off") == 1
    assert (tmp_path / fencing.FENCE_MARKER).exists() and fencing.is_fenced(str(tmp_path))


def test_unfence_removes_the_block_and_the_file_and_keeps_the_rest(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("work_mem = '8MB'\n")
    assert not fencing.is_fenced(str(tmp_path)) and not fencing.unfence(str(tmp_path), None)
    fencing.fence(str(tmp_path), "/nonexistent", None, "test", lambda m: None)
    assert fencing.unfence(str(tmp_path), None)
    assert (tmp_path / "postgresql.auto.conf").read_text() == "work_mem = '8MB'\n"
    assert not (tmp_path / fencing.FENCE_MARKER).exists() and not fencing.is_fenced(str(tmp_path))
    assert (tmp_path / "standby.signal").exists()  # the caller decides what the server becomes


def test_planned_needs_the_primary_data_directory():
    with pytest.raises(ConfigError) as exc:
        failover.pg_failover({"standby_port": 5433, "mode": "planned"})
    assert "primary_data_directory" in str(exc.value)
