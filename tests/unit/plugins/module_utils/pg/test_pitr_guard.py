# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pitr_guard.py: the marker of an unfinished recovery, how a rerun names
it and when it refuses to take a directory over, and the private
directory of a run's secrets."""

import os
import socket

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import SafetyError
from ansible_collections.drkit.backup.plugins.module_utils.pg import pitr_guard as guard


def test_marker_round_trip(tmp_path):
    assert guard.read_marker(str(tmp_path)) is None
    m = guard.new_marker(backup_id="b1", target="latest")
    guard.write_marker(str(tmp_path), m)
    assert guard.read_marker(str(tmp_path)) == m
    assert oct((tmp_path / guard.MARKER).stat().st_mode & 0o777) == oct(0o600)
    assert m["pid"] == os.getpid() and m["host"] == socket.gethostname() and m["state"] == "restoring"
    (tmp_path / guard.MARKER).write_text("{not json")
    assert guard.read_marker(str(tmp_path)) == {}  # unreadable: still a marker
    guard.remove_marker(str(tmp_path))
    guard.remove_marker(str(tmp_path))
    assert not (tmp_path / guard.MARKER).exists()


def test_alive_means_this_very_process():
    m = guard.new_marker()
    assert guard.drkit_alive(m)
    assert not guard.drkit_alive(dict(m, pid_start="1"))  # a later process with the same pid
    assert not guard.drkit_alive(dict(m, host="elsewhere"))
    assert not guard.drkit_alive({})


def test_rerun_names_what_it_found_and_refuses_a_live_or_foreign_one(tmp_path):
    dead = dict(guard.new_marker(backup_id="b1"), pid_start="1", state="replaying")
    said = guard.check_takeover(str(tmp_path), dead)
    assert said.startswith("an interrupted drkit recovery (") and "state replaying" in said and "from b1" in said
    said = guard.check_takeover(str(tmp_path), dict(dead, error="Recovery FAILED: x"))
    assert said.startswith("a failed drkit recovery (") and "failed: Recovery FAILED: x" in said
    with pytest.raises(SafetyError) as exc:
        guard.check_takeover(str(tmp_path), guard.new_marker())
    assert "still running" in str(exc.value)
    with pytest.raises(SafetyError) as exc:
        guard.check_takeover(str(tmp_path), dict(dead, host="db9"))
    assert "another host" in str(exc.value)
    assert guard.check_takeover(str(tmp_path), {}).startswith("an interrupted drkit recovery")


def test_private_dir(tmp_path):
    path = guard.make_private_dir()
    try:
        assert os.path.basename(path).startswith(guard.PRIVATE_PREFIX + socket.gethostname())
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
    finally:
        guard.remove_private_dir(path)
    assert not os.path.exists(path)
    other = tmp_path / "keep-me"
    other.mkdir()
    guard.remove_private_dir(str(other))  # not one drkit made: left alone
    guard.remove_private_dir(None)
    assert other.is_dir()
