# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""standby.py: the standby's settings (the password only in the passfile),
the option checks that run before anything is touched, the lag report."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.pg import standby

SECRET = "s3cr:et\\pw"


def params(**extra):
    out = {"storage_url": "file:///srv/repo", "login_host": "db1.example", "port": 5432, "login_user": "replicator",
           "login_password": SECRET, "data_directory": "/srv/pg/standby", "standby_port": 5433,
           "drkit_command": "/usr/local/bin/drkit"}
    out.update(extra)
    return resolve(standby.OPTIONS, out)


def test_settings_name_the_passfile_never_the_password():
    s = standby.standby_settings(params(), "/srv/pg/standby.pgpass", "drkit wal-fetch %f %p")
    assert SECRET not in repr(s)
    assert s["primary_conninfo"].startswith("host=db1.example port=5432 user=replicator "
                                            "passfile=/srv/pg/standby.pgpass application_name=drkit_standby")
    assert s["primary_slot_name"] == "drkit_standby" and s["recovery_target_timeline"] == "latest"
    odd = standby.standby_settings(params(login_user="o'neil x"), "/p", "c")["primary_conninfo"]
    assert "user='o\\'neil x'" in odd


def test_passfile_is_0600_and_escapes(tmp_path):
    path = str(tmp_path / "standby.pgpass")
    standby.write_passfile(path, dict(params(), port=5432), None)
    assert oct((tmp_path / "standby.pgpass").stat().st_mode & 0o777) == oct(0o600)
    assert (tmp_path / "standby.pgpass").read_text() == "db1.example:5432:*:replicator:s3cr\\:et\\\\pw\n"


@pytest.mark.parametrize("extra, words", [
    ({"slot_name": "Bad-Slot"}, "not a valid slot name"),
    ({"settings": {"primary_conninfo": "x"}}, "may not set primary_conninfo"),
    ({"passfile": "/srv/pg/standby/pw"}, "inside the data directory"),
    ({"storage_url": "s3://bucket/pg", "access_key": "AK"}, "needs a lasting config file"),
])
def test_bad_input_is_refused_before_anything_is_touched(extra, words):
    with pytest.raises(ConfigError) as exc:
        standby.pg_standby(params(**extra))
    assert words in str(exc.value)


def test_lag_report():
    lag = standby.lag_report({"flush_lsn": "0/3000100", "replay_lag_seconds": 0.25},
                             {"replay_lsn": "0/3000000", "receive_lsn": "0/3000100", "receiver_status": "streaming",
                              "last_replayed_xact_time": "2026-12-03T10:00:00Z"})
    assert lag["replay_lag_bytes"] == 0x100 and lag["replay_lag_seconds"] == 0.25
    assert standby.lsn_diff("0/3000000", None) is None


def test_a_rejoin_failed_before_standby_signal_is_fenced_again(tmp_path):
    """No server: the fence goes back only where this run removed it and the
    directory is not yet a standby of the new primary."""
    from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ToolError
    from ansible_collections.drkit.backup.plugins.module_utils.pg import fencing

    def old_primary(name):
        d = tmp_path / name
        d.mkdir()
        (d / "postgresql.auto.conf").write_text("primary_conninfo = 'host=new passfile=/p'\n")
        return d

    failed = old_primary("failed-in-pg-rewind")
    error = ToolError("pg_rewind failed (exit 1)", "build the standby from the repository")
    standby._refence_after_failed_rejoin(str(failed), "/nonexistent/bin", None, True, error, lambda m: None)
    assert fencing.is_fenced(str(failed)) and (failed / "standby.signal").exists()
    auto = (failed / "postgresql.auto.conf").read_text()
    assert "archive_mode = off" in auto and "host=new" not in auto, auto
    assert error.details["fenced_again"] is True

    # a standby of the new primary already (standby.signal written): left as it is
    configured = old_primary("failed-while-catching-up")
    (configured / "standby.signal").write_text("")
    standby._refence_after_failed_rejoin(str(configured), "/nonexistent/bin", None, True, ToolError("x"),
                                         lambda m: None)
    assert not fencing.is_fenced(str(configured)) and "host=new" in (configured / "postgresql.auto.conf").read_text()

    # there was no fence to remove: none is made up
    unfenced = old_primary("never-fenced")
    standby._refence_after_failed_rejoin(str(unfenced), "/nonexistent/bin", None, False, ToolError("x"),
                                         lambda m: None)
    assert not fencing.is_fenced(str(unfenced)) and not (unfenced / "standby.signal").exists()
