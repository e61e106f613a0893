# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running external tools: argument lists (never a shell), bounded stderr,
and the threads that feed a process's stdin or drain its stdout.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import tempfile
import threading

from .errors import DrkitError, ToolError
from .stream import CHUNK

STDERR_LIMIT = 64 << 10


# --------------------------------------------------------------------------
# Runners and process handles


class ProcessHandle(object):
    """A running producer/consumer process. ``stdout``/``stdin`` are binary
    file objects (or None); stderr is collected to a temp file so a chatty
    tool can never block on a full pipe."""

    def __init__(self, argv, popen, stderr_file):
        self.argv = list(argv)
        self.name = os.path.basename(argv[0])
        self._p = popen
        self._stderr = stderr_file
        self.stdout = popen.stdout
        self.stdin = popen.stdin
        self.pid = popen.pid

    def poll(self):
        return self._p.poll()

    def wait(self, timeout=None):
        try:
            return self._p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ToolError("%s did not finish within %s s" % (self.name, timeout))

    @property
    def returncode(self):
        return self._p.returncode

    def stderr_text(self):
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            data = self._stderr.read(STDERR_LIMIT)
        except (OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace")

    def terminate(self):
        if self._p.poll() is None:
            try:
                self._p.terminate()
                self._p.wait(10)
            except subprocess.TimeoutExpired:
                self._p.kill()
                self._p.wait()
            except OSError:
                pass

    def close(self):
        self.terminate()
        for f in (self._p.stdout, self._p.stdin):
            if f is not None:
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
        try:
            self._stderr.close()
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def grow_pipe(fileobj):
    # A 1 MiB pipe halves the number of syscalls/wakeups on a fast producer.
    try:
        import fcntl  # pylint: disable=import-outside-toplevel
        fcntl.fcntl(fileobj.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
    except (ImportError, OSError, ValueError, AttributeError):
        pass


class LocalRunner(object):
    """Runs tools as local processes, always from an argument list.
    (container.runner.ContainerRunner runs them inside a container.)"""

    description = "local"
    shares_files = True  # the tool sees this machine's files (pgpass in memory, work_dir)

    def spawn(self, argv, env=None, stdin=False, stdout=True, cwd=None):
        stderr_file = tempfile.TemporaryFile(prefix="drkit-stderr-")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            p = subprocess.Popen(
                list(argv), env=full_env, cwd=cwd, close_fds=True,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=stderr_file)
        except OSError as e:
            stderr_file.close()
            raise ToolError("Could not start %s: %s" % (argv[0], e.strerror or e),
                            "Install it or set the path to its binaries (pg_bin_dir / PATH)")
        if stdout:
            grow_pipe(p.stdout)
        if stdin:
            grow_pipe(p.stdin)
        return ProcessHandle(argv, p, stderr_file)

    def run(self, argv, env=None, input_data=None, timeout=None, cwd=None):
        """Run to completion; returns (returncode, stdout bytes, stderr text)."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            p = subprocess.run(list(argv), env=full_env, input=input_data, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout, close_fds=True, check=False)
        except OSError as e:
            raise ToolError("Could not start %s: %s" % (argv[0], e.strerror or e),
                            "Install it or set the path to its binaries (pg_bin_dir / PATH)")
        except subprocess.TimeoutExpired:
            raise ToolError("%s did not finish within %s s" % (os.path.basename(argv[0]), timeout))
        return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def shares_files(runner):
    """Whether tools started by ``runner`` see this machine's files: a local
    process does, a tool in a container does not."""
    return getattr(runner, "shares_files", True)


def tool_version(runner, path, patterns=(), default=None, strict=True):
    """What ``path --version`` says (its output, stripped) or, with
    ``patterns`` (regular expressions tried in order), the first group of the
    first that matches; ``default`` when the tool exits non-zero or nothing
    matches. A tool that cannot be run raises the runner's ToolError, or
    gives ``default`` when not ``strict``."""
    try:
        rc, out, _err = runner.run([path, "--version"], timeout=30)
    except DrkitError:
        if strict:
            raise
        return default
    text = out.decode("utf-8", "replace").strip()
    if rc != 0:
        return default
    if not patterns:
        return text
    for pattern in patterns:
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return default


class ProcessFeeder(object):
    """consumer() that writes into a process's stdin and stops quietly when
    the process closes it (pg_restore --list stops after the TOC)."""

    def __init__(self, handle):
        self.handle = handle
        self.open = True
        self.fed = 0

    def __call__(self, data):
        if not self.open:
            return False
        try:
            self.handle.stdin.write(data)
            self.fed += len(data)
        except (BrokenPipeError, ValueError, OSError):
            self.open = False
            return False
        return True

    def close(self):
        if self.open:
            try:
                self.handle.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            self.open = False


class BackgroundReader(threading.Thread):
    """Drains a process's stdout into a bounded buffer, for short outputs such
    as ``pg_restore --list`` run while we feed its stdin."""

    def __init__(self, fileobj, limit=64 << 20):
        super(BackgroundReader, self).__init__()
        self.daemon = True
        self._f = fileobj
        self._limit = limit
        self.data = bytearray()
        self.truncated = False

    def run(self):
        while True:
            try:
                chunk = self._f.read(CHUNK)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            room = self._limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.truncated = True
