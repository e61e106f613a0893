# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A background worker started on demand by a short-lived command and kept
running between its calls: the asynchronous WAL pusher behind
``wal-push --async`` and the fetcher behind ``wal-fetch --async``.

One worker per directory, told by a lock file in it (``flock``): the
command takes the lock before it forks and the worker inherits it, so there
is no moment in which a starting worker looks absent, and the lock is
released by the kernel whenever the worker ends, however it ends. The lock
file names what the worker serves (a pg_wal directory), so that a command
for something else does not wait for a worker that will never answer it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import time

from .osutil import unlink_quietly

# How often a waiting command looks for its answer, and every how many looks
# whether the worker is still there.
POLL, LIVENESS_EVERY = 0.01, 10


def _try_lock(fd, mode):
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except (IOError, OSError) as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


class Worker(object):
    """The worker whose lock is ``directory/lock_name``."""

    def __init__(self, directory, lock_name):
        self.directory = directory
        self.lock_path = os.path.join(directory, lock_name)

    def running(self):
        """True while a worker holds the lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            # a shared probe: it cannot keep a worker from its lock (taken
            # before the worker exists, see start)
            return not _try_lock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def serving(self):
        """What the running worker serves (None if none runs)."""
        if not self.running():
            return None
        try:
            with open(self.lock_path) as fh:
                return fh.read().strip() or None
        except (IOError, OSError):
            return None

    def wait(self, ready_path, notes, timeout, clock=time.monotonic, sleep=time.sleep):
        """What a command waiting for the worker's answer about one file
        learns: 'ready' (``ready_path`` exists), the verdict of the first of
        ``notes`` ({path: verdict}, a note the worker left; consumed here),
        'gone' (no worker holds the lock) or 'timeout'."""
        deadline = clock() + timeout
        looks = 0
        while True:
            if os.path.exists(ready_path):
                return "ready"
            for path, verdict in notes.items():
                if unlink_quietly(path):
                    return verdict
            if clock() >= deadline:
                return "timeout"
            if looks % LIVENESS_EVERY == 0 and not self.running():
                # the answer may have come just before the worker left
                return "ready" if os.path.exists(ready_path) else "gone"
            looks += 1
            sleep(POLL)

    def start(self, serves, run):
        """Fork the worker, serving ``serves``, unless one runs; ``run()``
        is its body and returns its exit code. The caller must not have
        opened a network client or started a thread yet (only the forking
        thread survives a fork). Returns True when a worker was started."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False  # a full or read-only directory: the command works alone
        try:
            if not _try_lock(fd, fcntl.LOCK_EX):
                os.close(fd)
                return False  # one is running
            os.ftruncate(fd, 0)
            os.write(fd, (serves + "\n").encode("utf-8"))
            pid = os.fork()
        except OSError:
            # a full disk (the lock file cannot say what it serves) or no
            # process left to fork: the command works alone
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        if pid:
            os.close(fd)  # the worker's copy keeps the lock
            os.waitpid(pid, 0)  # the intermediate child exits at once
            return True
        # Intermediate child: a session of its own, then the worker's fork,
        # so that the worker is no child of the caller (nobody waits for it).
        code = 1
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            _detach()
            code = run()
        finally:
            os._exit(code or 0)


def _detach():
    os.chdir("/")
    os.umask(0o077)
    null = os.open(os.devnull, os.O_RDWR)
    # the caller's stdout/stderr (a server log's pipe) are not held open
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
