# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""server.py: the record of a setting changed for a moment (a fake client;
the kill -9 scenarios run against real redis-servers in
tests/integration/test_redis_snapshot.py)."""

import json

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import SourceError
from ansible_collections.drkit.backup.plugins.module_utils.redis.server import (TemporarySetting, ledger_dir,
                                                                                repair_settings)
from support.unit_helpers import dead_tag


class FakeClient(object):
    where = "127.0.0.1:6390"

    def __init__(self, **config):
        self.cp = {"host": "127.0.0.1", "port": 6390}
        self.config = config
        self.calls = []

    def config_get(self, name):
        return self.config.get(name)

    def call(self, *args):
        self.calls.append(args)
        if args[:2] == ("CONFIG", "SET"):
            self.config[args[2]] = args[3]


def left_by_a_dead_run(tmp_path, client, original, temporary):
    with TemporarySetting(client, "auto-aof-rewrite-percentage", temporary, str(tmp_path)):
        (record,) = list(tmp_path.glob("drkit-redis-settings-*.json"))
        data = json.loads(record.read_text())
    # what SIGKILL leaves: the record of a dead owner, the temporary value live
    data["owner"] = dead_tag()
    record.write_text(json.dumps(data))
    client.config["auto-aof-rewrite-percentage"] = str(temporary)
    return record


def test_the_original_is_recorded_before_the_change_and_put_back(tmp_path):
    client = FakeClient(**{"auto-aof-rewrite-percentage": "100"})
    with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path)) as t:
        (record,) = list(tmp_path.glob("drkit-redis-settings-*.json"))
        assert json.loads(record.read_text())["settings"] == {
            "auto-aof-rewrite-percentage": {"original": "100", "temporary": "0"}}
        assert oct(record.stat().st_mode & 0o777) == "0o600"
        assert t.original == "100" and client.config["auto-aof-rewrite-percentage"] == "0"
    assert client.config["auto-aof-rewrite-percentage"] == "100"
    assert list(tmp_path.iterdir()) == []


def test_a_dead_runs_setting_is_put_back_only_if_still_temporary(tmp_path):
    client = FakeClient(**{"auto-aof-rewrite-percentage": "100"})
    left_by_a_dead_run(tmp_path, client, "100", 0)
    notes = repair_settings(client, str(tmp_path))
    assert client.config["auto-aof-rewrite-percentage"] == "100"
    assert "put back to 100" in notes[0] and list(tmp_path.iterdir()) == []

    left_by_a_dead_run(tmp_path, client, "100", 0)
    client.config["auto-aof-rewrite-percentage"] = "50"  # someone set it since
    notes = repair_settings(client, str(tmp_path))
    assert client.config["auto-aof-rewrite-percentage"] == "50"
    assert "someone changed it since" in notes[0] and list(tmp_path.iterdir()) == []


def test_the_next_temporary_change_takes_the_recorded_original(tmp_path):
    client = FakeClient(**{"auto-aof-rewrite-percentage": "100"})
    left_by_a_dead_run(tmp_path, client, "100", 0)
    with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path)) as t:
        assert t.original == "100"  # not the 0 the dead run left
    assert client.config["auto-aof-rewrite-percentage"] == "100"


def test_a_live_runs_record_refuses_a_second_change(tmp_path):
    client = FakeClient(**{"auto-aof-rewrite-percentage": "100"})
    with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path)):
        with pytest.raises(SourceError, match="Another drkit run"):
            with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path)):
                pass
        assert repair_settings(client, str(tmp_path)) == []  # a live run's record is left alone
    assert client.config["auto-aof-rewrite-percentage"] == "100"


def test_the_state_directory(monkeypatch, tmp_path):
    assert ledger_dir("/srv/x") == "/srv/x"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert ledger_dir(None) == str(tmp_path / "drkit")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert ledger_dir(None) == "/home/someone/.local/state/drkit"


class RestartingClient(FakeClient):
    """The server restarts inside the block: the old connection fails, a new
    one finds the server's own value (its config file's), not drkit's."""

    def __init__(self, after_restart, **config):
        super(RestartingClient, self).__init__(**config)
        self.after_restart = after_restart
        self.connections = 1
        self.lost = False

    def restart(self):
        self.lost = True
        self.config["auto-aof-rewrite-percentage"] = self.after_restart

    def call(self, *args):
        if self.lost:
            raise SourceError("Redis at %s closed the connection" % self.where)
        return super(RestartingClient, self).call(*args)

    def close(self):
        self.lost = False

    def connect(self):
        self.connections += 1


def test_a_restarted_servers_own_value_is_left_and_the_runs_error_reported(tmp_path):
    client = RestartingClient("100", **{"auto-aof-rewrite-percentage": "100"})
    notes = []
    with pytest.raises(SourceError, match="closed the connection"):
        with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path), notes.append):
            client.restart()
            raise SourceError("Redis at %s closed the connection" % client.where)
    assert client.connections == 2
    assert client.config["auto-aof-rewrite-percentage"] == "100"
    assert any("the server restarted" in n and "left as it is" in n for n in notes), notes
    assert list(tmp_path.iterdir()) == []  # nothing left for the next run to "repair"


def test_a_value_still_temporary_after_reconnecting_is_put_back(tmp_path):
    client = RestartingClient("0", **{"auto-aof-rewrite-percentage": "100"})
    with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path)):
        client.restart()  # connection dropped, the server kept drkit's value
    assert client.config["auto-aof-rewrite-percentage"] == "100"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_put_back_does_not_hide_the_runs_own_error(tmp_path):
    class Gone(RestartingClient):
        def connect(self):
            raise SourceError("Cannot connect to Redis at %s" % self.where)

    client = Gone("100", **{"auto-aof-rewrite-percentage": "100"})
    notes = []
    with pytest.raises(ValueError, match="the run's own"):
        with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, str(tmp_path), notes.append):
            client.restart()
            raise ValueError("the run's own error")
    assert any("Could not put auto-aof-rewrite-percentage back to 100" in n for n in notes), notes
    assert list(tmp_path.glob("drkit-redis-settings-*.json"))  # kept: the next run tries again
    with pytest.raises(SourceError, match="Could not put"):  # with no error of its own, this is the error
        with TemporarySetting(Gone("100", **{"auto-aof-rewrite-percentage": "100"}), "auto-aof-rewrite-percentage",
                              0, str(tmp_path / "other")) as t:
            t.client.restart()
