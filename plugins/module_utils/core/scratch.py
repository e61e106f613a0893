# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every scratch server shares: free loopback ports, directories the
server's OS user can enter, process-group control, a registry that stops
servers left running at interpreter exit, and their lifecycle
(ScratchServer: start on a free port, wait until it answers, stop, destroy,
context manager).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from .errors import ConfigError, ToolError

LOOPBACK = "127.0.0.1"
LOG_TAIL_BYTES = 4000

# --------------------------------------------------------------------------
# helpers


def free_port(host=LOOPBACK):
    """A TCP port that is free on ``host`` right now (the kernel's choice)."""
    return free_ports(1, host)[0]


def free_ports(count, host=LOOPBACK):
    """``count`` distinct free TCP ports. All sockets are held open until all
    ports are chosen, so the kernel never hands out the same port twice."""
    socks = []
    try:
        for _dummy in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port, host=LOOPBACK):
    """Whether a server could listen on ``port`` now. With SO_REUSEADDR, as
    PostgreSQL and Redis bind: a listener makes it taken, connections of a
    server that just stopped (TIME_WAIT) do not."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def make_scratch_dir(prefix="drkit-scratch-", parent=None):
    """A new empty directory (mode 0711) that the ``postgres`` OS user can
    traverse, below ``parent`` or the system temp directory. The caller
    removes it (``ScratchPostgres.destroy()`` does)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o711)
    return path


def tail_file(path, limit=LOG_TAIL_BYTES):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def clean_env(extra=None, drop_prefixes=("PG",)):
    """os.environ without libpq variables (a stray PGSERVICE or PGSSLMODE in
    the caller's environment must not redirect our tools), plus ``extra``."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(drop_prefixes))
    env.update(extra or {})
    return env


def wait_proc(proc, timeout):
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def kill_group(proc, sig):
    """Signal the process group of ``proc`` (it was started in its own
    session), falling back to the process alone."""
    try:
        os.killpg(proc.pid, sig)
    except (OSError, ProcessLookupError):
        try:
            proc.send_signal(sig)
        except (OSError, ProcessLookupError):
            pass


# servers that are still running at interpreter exit get stopped
_LIVE = set()
_LIVE_LOCK = threading.Lock()


def register_live(server):
    with _LIVE_LOCK:
        _LIVE.add(server)


def unregister_live(server):
    with _LIVE_LOCK:
        _LIVE.discard(server)


@atexit.register
def _stop_all():
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        try:
            server.stop(mode="immediate")
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# --------------------------------------------------------------------------
# the lifecycle


class ScratchServer(object):
    """A server process of our own on a free loopback port: started in its
    own session, registered to be stopped at interpreter exit, stopped with
    a signal and killed if it does not go, removed with its base directory
    by destroy(); a context manager (start, then destroy).

    Subclasses (pg.scratch.ScratchPostgres, redis.scratch.ScratchRedis) say
    what runs and when it is up: _prepare() before the first launch,
    _command() -> (argv, Popen keyword arguments), _output_file(), _ready(),
    _port_taken() (the log says the port was taken meanwhile: try another),
    _log_tail(), _where(); and may change how ports are chosen
    (_pick_port) and how it stops (stop_signals, _signal, _escalate,
    _stop_other). tests/support/seaweedfs.py's SeaweedS3 is one too."""

    what = "server"
    ready_what = "answer"
    start_timeout = 60
    stop_timeout = 30
    start_attempts = 3
    poll_interval = 0.1
    # first signal per stop mode (pg_ctl's words)
    stop_signals = {"smart": signal.SIGTERM, "fast": signal.SIGTERM, "immediate": signal.SIGKILL}

    def __init__(self, base_dir, port=None):
        self.base_dir = os.path.abspath(base_dir)
        self.host = LOOPBACK
        self._port_given = port is not None
        self.port = port
        self._proc = None

    # -- what subclasses say ---------------------------------------------

    def _prepare(self):
        pass

    def _pick_port(self):
        self.port = free_port()

    def _command(self):
        raise NotImplementedError

    def _ready(self):
        raise NotImplementedError

    def _port_taken(self):
        return False

    def _adopt(self):
        """start() found the server running already."""

    def _where(self):
        return self.base_dir

    def _log_tail(self):
        return ""

    def _output_file(self):
        """Where the process's stdout and stderr go."""
        raise NotImplementedError

    def _signal(self, proc, sig):
        kill_group(proc, sig)

    def _escalate(self, proc):
        """It did not stop in time."""
        kill_group(proc, signal.SIGKILL)
        proc.wait()

    def _stop_other(self, mode, timeout):
        """stop() without a process of ours: a server another object left."""

    # -- the lifecycle ---------------------------------------------------

    def start(self, timeout=None):
        """Start the server and wait until it answers; ToolError with the tail
        of its log when it does not. A port of our choosing that another
        process takes meanwhile is replaced by another free one."""
        timeout = self.start_timeout if timeout is None else timeout
        if self.is_running():
            self._adopt()
            return self
        self._prepare()
        attempts = 1 if self._port_given else self.start_attempts
        for attempt in range(attempts):
            if not self._port_given:
                self._pick_port()
            try:
                self._launch(timeout)
                return self
            except ToolError:
                if attempt + 1 < attempts and self._port_taken():
                    continue
                raise
        return self  # pragma: no cover

    def _launch(self, timeout):
        argv, kwargs = self._command()
        try:
            with open(self._output_file(), "ab") as out:
                out.write(("\n--- start %s port %s ---\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), self.port)).encode())
                out.flush()
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                              start_new_session=True, close_fds=True, **kwargs)
        except OSError as exc:
            raise ToolError("Could not start %s: %s" % (argv[0], exc))
        register_live(self)
        deadline = time.time() + timeout
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                unregister_live(self)
                raise ToolError("%s in %s exited during start-up (exit %s). %s"
                                % (self.what, self._where(), rc, self._log_tail()))
            if self._ready():
                return
            if time.time() > deadline:
                self.stop(mode="immediate")
                raise ToolError("%s in %s did not %s within %ss. %s"
                                % (self.what, self._where(), self.ready_what, timeout, self._log_tail()))
            time.sleep(self.poll_interval)

    def is_running(self):
        return self._proc is not None and self._proc.poll() is None

    def detach(self):
        """Let the server outlive this object and this process: no stop at
        interpreter exit."""
        self._proc = None
        unregister_live(self)
        return self

    def stop(self, mode="fast", timeout=None):
        """Stop the server: mode smart|fast|immediate."""
        if mode not in self.stop_signals:
            raise ConfigError("Unknown stop mode %r" % mode, "Use %s" % ", ".join(sorted(self.stop_signals)))
        timeout = self.stop_timeout if timeout is None else timeout
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                self._signal(proc, self.stop_signals[mode])
                if not wait_proc(proc, timeout):
                    self._escalate(proc)
            self._proc = None
        else:
            self._stop_other(mode, timeout)
        unregister_live(self)

    def destroy(self):
        """Stop (fast) and remove base_dir."""
        try:
            self.stop(mode="fast")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()
        return False

    def __repr__(self):
        return "<%s %s:%s %s>" % (type(self).__name__, self.host, self.port, self._where())
