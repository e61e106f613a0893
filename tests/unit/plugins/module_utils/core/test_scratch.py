# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scratch.py: free loopback ports, and scratch directories that other users
(the postgres OS user) can traverse but not list.

scratch.py: ScratchServer, the lifecycle ScratchPostgres, ScratchRedis
and the tests' SeaweedS3 share, on a tiny TCP server.
"""

import os
import signal
import socket
import stat
import sys

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import scratch
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ToolError
from ansible_collections.drkit.backup.plugins.module_utils.core.osutil import check_traversable
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import (
    ScratchServer,
    free_port,
    free_ports,
    make_scratch_dir,
    port_is_free,
    tail_file,
)


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    assert 1024 < port < 65536
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    finally:
        s.close()


def test_free_ports_are_distinct():
    ports = free_ports(20)
    assert len(set(ports)) == 20


def test_port_is_free_sees_a_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        assert not port_is_free(s.getsockname()[1])
    finally:
        s.close()


def test_port_of_a_server_that_just_closed_a_connection_is_free():
    """The server side closed first (PostgreSQL does on Terminate): its port
    holds a TIME_WAIT socket, which a server binding with SO_REUSEADDR (as
    PostgreSQL does) ignores; a rerun of drkit pitr saw "port in use"."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL's
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _addr = listener.accept()
    served.close()  # the server closes first: TIME_WAIT on its port
    client.recv(1)
    client.close()
    listener.close()
    assert port_is_free(port)


def test_make_scratch_dir_is_traversable_not_listable(tmp_path):
    path = make_scratch_dir(parent=str(tmp_path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o711
    finally:
        os.rmdir(path)


def test_make_scratch_dir_default_is_reachable_by_other_users():
    path = make_scratch_dir()
    try:
        # nobody (65534) with no groups can enter it: every ancestor has o+x
        check_traversable(os.path.join(path, "data"), 65534, set())
    finally:
        os.rmdir(path)


SERVER = r"""
import signal, socket, sys, time
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[2] == "crash":
    print("FATAL: could not bind: Address already in use", flush=True)
    sys.exit(3)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(5)
print("listening", flush=True)
while True:
    time.sleep(1)
"""


class Tiny(ScratchServer):
    what = "tiny"
    ready_what = "listen"
    stop_timeout = 2
    poll_interval = 0.02

    def __init__(self, base_dir, port=None, behaviour="normal"):
        super(Tiny, self).__init__(base_dir, port)
        self.behaviour = behaviour
        self.launches = 0

    def _prepare(self):
        os.makedirs(self.base_dir, exist_ok=True)

    def _command(self):
        self.launches += 1
        behaviour = self.behaviour if not isinstance(self.behaviour, list) else self.behaviour.pop(0)
        return [sys.executable, "-c", SERVER, str(self.port), behaviour], {"cwd": self.base_dir}

    def _output_file(self):
        return os.path.join(self.base_dir, "log")

    def _ready(self):
        try:
            socket.create_connection((self.host, self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def _port_taken(self):
        return "Address already in use" in tail_file(self._output_file())

    def _log_tail(self):
        return "Log:\n" + tail_file(self._output_file())


def test_start_stop_destroy_and_the_exit_registry(tmp_path):
    with Tiny(str(tmp_path / "t")) as t:
        assert t.is_running() and t.port and t in scratch._LIVE
        assert repr(t) == "<Tiny 127.0.0.1:%d %s>" % (t.port, t.base_dir)
        assert "--- start " in open(t._output_file()).read()  # each launch is marked in the log
        t.stop()
        assert not t.is_running() and t not in scratch._LIVE
        t.start()
        assert t.is_running()
    assert not os.path.exists(str(tmp_path / "t")) and t not in scratch._LIVE


def test_a_server_that_ignores_sigterm_is_killed(tmp_path):
    t = Tiny(str(tmp_path / "t"), behaviour="stubborn").start()
    proc = t._proc
    t.stop(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL and not t.is_running()
    t.destroy()


def test_exit_during_start_up_says_so_with_the_log_and_a_taken_port_is_retried(tmp_path):
    free = scratch.free_port()
    t = Tiny(str(tmp_path / "t"), port=free, behaviour="crash")
    with pytest.raises(ToolError) as exc:
        t.start(timeout=10)
    assert "tiny in %s exited during start-up (exit 3)" % t.base_dir in str(exc.value)
    assert "Address already in use" in str(exc.value) and t.port == free and t.launches == 1  # a given port: once
    assert t not in scratch._LIVE
    # a port of our choosing that was taken meanwhile: another one
    t = Tiny(str(tmp_path / "u"), behaviour=["crash", "normal"]).start(timeout=10)
    assert t.is_running() and t.launches == 2
    t.destroy()


def test_detach_and_stop_modes(tmp_path):
    t = Tiny(str(tmp_path / "t")).start()
    proc = t._proc
    with pytest.raises(ConfigError):
        t.stop(mode="gently")
    assert t.detach() is t and t not in scratch._LIVE and not t.is_running()
    assert proc.poll() is None  # it outlives the object
    proc.kill()
    proc.wait()
