# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every scratch server shares: free loopback ports, directories the
server's OS user can enter, process-group control, and a registry that stops
servers left running at interpreter exit.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import socket
import subprocess
import tempfile
import threading

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
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
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
