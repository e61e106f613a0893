# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pitr.py without a server: which backup can reach a target, recovery
targets and settings, the recovery configuration, and the facts read from
the server log."""

import datetime

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import conf_quote
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import (
    FATAL_TARGET,
    READY_LINE,
    can_reach,
    configure_recovery,
    log_facts,
    recovery_settings,
    validate_target,
)
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import parse_lsn


def manifest(stop_time, stop_lsn="0/5000000", next_xid=900):
    return {"finished_at": stop_time, "data": {"stop_time": stop_time, "stop_lsn": stop_lsn, "next_xid": next_xid}}


def test_can_reach_is_conservative():
    m = manifest("2026-11-25T10:00:00.000000Z")
    t = validate_target("time", "2026-11-25T10:00:01Z")[1]
    assert can_reach(m, "time", t)
    assert not can_reach(m, "time", validate_target("time", "2026-11-25T09:59:59Z")[1])
    assert can_reach(m, "lsn", parse_lsn("0/5000000"))
    assert not can_reach(m, "lsn", parse_lsn("0/4FFFFFF"))
    assert can_reach(m, "xid", 900) and not can_reach(m, "xid", 899)
    assert can_reach(manifest("2026-11-25T10:00:00Z", next_xid=(1 << 32) + 900), "xid", 950)
    assert can_reach(m, "name", "before-migration") and can_reach(m, "latest", None)


def test_validate_target_and_settings():
    with pytest.raises(ConfigError):
        validate_target("time", None)
    with pytest.raises(ConfigError):
        validate_target("latest", "x")
    with pytest.raises(ConfigError):
        validate_target("yesterday", None)
    target, value = validate_target("time", "2026-11-25T14:30:00+02:00")
    s = recovery_settings(target, value)
    assert s["recovery_target_time"] == "2026-11-25 12:30:00.000000+00"
    assert s["recovery_target_action"] == "promote" and s["recovery_target_inclusive"] is True
    assert recovery_settings("immediate", None)["recovery_target"] == "immediate"
    assert recovery_settings("lsn", parse_lsn("0/3000060"), False)["recovery_target_lsn"] == "0/3000060"
    assert conf_quote("it's") == "'it''s'" and conf_quote(5432) == "5432"
    assert isinstance(value, datetime.datetime)


def test_configure_recovery_appends_last_wins(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "postgresql.auto.conf").write_text("restore_command = 'old'\n")
    created = configure_recovery(str(d), {"restore_command": "drkit wal-fetch %f %p", "port": 5433,
                                          "recovery_target_action": "promote"})
    text = (d / "postgresql.auto.conf").read_text()
    assert text.index("'old'") < text.index("drkit wal-fetch %f %p")
    assert "port = 5433" in text and (d / "recovery.signal").exists()
    assert sorted(created) == ["pg_hba.conf", "pg_ident.conf", "postgresql.conf"]
    with pytest.raises(ConfigError):
        configure_recovery(str(d), {"bad name; DROP": 1})


def test_log_facts():
    text = ("2026-11-25 21:44:54.8 UTC [1] LOG:  recovery stopping before commit of transaction 803, time "
            "2026-11-25 21:44:54.729764+00\n"
            "2026-11-25 21:44:54.8 UTC [1] LOG:  redo done at 0/5000110 system usage: CPU\n"
            "2026-11-25 21:44:54.8 UTC [1] LOG:  last completed transaction was at log time 2026-11-25 21:44:52+00\n"
            "drkit wal-fetch: error: Could not read wal/x: cannot connect\n"
            "2026-11-25 21:44:54.9 UTC [1] LOG:  selected new timeline ID: 2\n"
            "2026-11-25 21:44:55.0 UTC [1] FATAL:  recovery ended before configured recovery target was reached\n")
    f = log_facts(text)
    assert f["recovery_stop"].startswith("recovery stopping before commit of transaction 803")
    assert f["redo_done_lsn"] == "0/5000110" and f["new_timeline"] == 2
    assert f["wal_fetch_errors"] == ["Could not read wal/x: cannot connect"]
    assert FATAL_TARGET in f["fatal"][0]
    assert not READY_LINE.search("LOG:  database system is ready to accept read-only connections\n")
    assert READY_LINE.search("x LOG:  database system is ready to accept connections\n")
