# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a database's client tools inside its container: ``docker exec``
through the Engine API, with the same interface as core.process.LocalRunner
(spawn, run), so every producer (pg_dump, pg_restore, later redis-cli and
redis-check-rdb) streams through the exec's socket into the same pipeline.

Nothing is written inside the container: the tool's stdout comes out of the
exec socket (Docker's multiplexed stream, demultiplexed by the SDK's
frames_iter) into a local pipe that the pipeline reads like a process's
stdout; stderr goes to a local temp file; a restore's data goes in through
the exec's stdin, whose end is a half-close of the socket.

The tool runs as the container's default user, with only the environment
drkit gives it (never drkit's own); a password goes in that environment
(PGPASSWORD), the only way to a tool in another mount namespace that does
not touch its disk or argv.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import socket
import tarfile
import tempfile
import threading
import time

from ..core.errors import SourceError, ToolError
from ..core.process import STDERR_LIMIT, BackgroundReader, LocalRunner, grow_pipe
from ..core.stream import CHUNK
from .client import docker_settings, inspect_container, open_client

# "executable file not found" / "no such file": the exec could not start the tool
NOT_STARTED = (126, 127)
EXIT_POLL = 0.05


class PathMissing(SourceError):
    """A path that does not exist in the container (the Engine's 404)."""


class _ExecStdin(object):
    """The exec's stdin: writes go into the socket, close() half-closes it,
    which the Engine passes on to the tool as end of input."""

    def __init__(self, sock):
        self._sock = sock
        self.closed = False

    def write(self, data):
        self._sock.sendall(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class ExecHandle(object):
    """A tool running in a container, shaped like core.process.ProcessHandle:
    ``stdout`` (a local pipe) and ``stdin`` are binary file objects or None,
    wait() returns the exit code, stderr_text() the start of its stderr."""

    def __init__(self, runner, argv, exec_id, sock, stdin, stdout):
        self.argv = list(argv)
        self.name = posixpath.basename(argv[0])
        self.pid = None
        self.exec_id = exec_id
        self.returncode = None
        self._runner = runner
        self._keep = sock  # the SDK keeps the HTTP response alive through it
        self._sock = getattr(sock, "_sock", sock)
        self._sock.settimeout(None)  # a dump may be silent for long (locks, big tables)
        self._stderr = tempfile.TemporaryFile(prefix="drkit-stderr-")
        self.error = None
        self.stdin = _ExecStdin(self._sock) if stdin else None
        self.stdout = None
        self._out = None
        if stdout:
            r, w = os.pipe()
            self.stdout = os.fdopen(r, "rb")
            grow_pipe(self.stdout)
            self._out = w
        self._pump = threading.Thread(target=self._demux, name="drkit-exec-%s" % self.name)
        self._pump.daemon = True
        self._pump.start()

    def _demux(self):
        from docker.utils.socket import STDERR, STDOUT, frames_iter  # pylint: disable=import-outside-toplevel
        try:
            for stream, data in frames_iter(self._sock, tty=False):
                if stream == STDOUT and self._out is not None:
                    self._write_out(data)
                elif stream == STDERR or stream not in (STDOUT, STDERR):
                    self._stderr.write(data)
        except (OSError, ValueError) as e:
            self.error = e
        finally:
            self._close_out()

    def _write_out(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._out, view):]
        except OSError:
            # nobody reads stdout any more (the pipeline failed): drop the rest
            self._close_out()

    def _close_out(self):
        if self._out is not None:
            try:
                os.close(self._out)
            except OSError:
                pass
            self._out = None

    def _exit_code(self, deadline):
        while True:
            info = self._runner.client.exec_inspect(self.exec_id)
            if not info.get("Running"):
                return info.get("ExitCode")
            if time.time() > deadline:
                return None
            time.sleep(EXIT_POLL)

    def poll(self):
        if self.returncode is None and not self._pump.is_alive():
            self.returncode = self._exit_code(time.time() + 10)
        return self.returncode

    def wait(self, timeout=None):
        self._pump.join(timeout)
        if self._pump.is_alive():
            raise ToolError("%s in %s did not finish within %s s" % (self.name, self._runner.description, timeout))
        if self.returncode is None:
            # the stream ends as the tool exits; the Engine records the code a moment later
            self.returncode = self._exit_code(time.time() + 30)
            if self.returncode is None:
                raise ToolError("%s in %s closed its output but the Docker Engine still reports it running" % (
                    self.name, self._runner.description))
        return self.returncode

    def stderr_text(self):
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            data = self._stderr.read(STDERR_LIMIT)
        except (OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace")

    def terminate(self):
        """Close the exec's socket: the tool's stdin ends and its output has
        nowhere to go, so it stops (the Engine API has no way to signal an
        exec's process)."""
        if self._pump.is_alive():
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._pump.join(10)

    def close(self):
        self.terminate()
        for f in (self.stdout, self.stdin):
            if f is not None:
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
        for f in (self._sock, self._keep, self._stderr):
            try:
                f.close()
            except (OSError, ValueError, AttributeError):
                pass
        self._close_out()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _ChunkReader(object):
    """read(n) over an iterator of byte chunks (the Engine's archive stream)."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0

    def read(self, n=-1):
        parts, want = [], n
        while want != 0:
            if self._pos >= len(self._buf):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buf, self._pos = chunk, 0
            end = len(self._buf) if want < 0 else min(len(self._buf), self._pos + want)
            parts.append(self._buf[self._pos:end])
            if want > 0:
                want -= end - self._pos
            self._pos = end
        return b"".join(parts)


class ContainerFile(object):
    """One file of a container, streamed out of the Engine's archive API
    (GET /containers/{id}/archive: a tar of that one file, read with tarfile
    as it arrives): read(), ``size``, ``mtime`` (the container's clock); a
    context manager."""

    def __init__(self, response, tar, member):
        self._response = response
        self._tar = tar
        self._fh = tar.extractfile(member)
        self.size = member.size
        self.mtime = member.mtime
        self.name = member.name

    def read(self, n=-1):
        return self._fh.read(n)

    def close(self):
        for closer in (self._fh.close, self._tar.close, getattr(self._response, "close", None)):
            if closer:
                try:
                    closer()
                except (OSError, ValueError, tarfile.TarError):
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class ContainerRunner(object):
    """Runs tools inside one container, from argument lists (paths are the
    container's), with the same spawn/run interface as LocalRunner.
    ``shares_files`` is False: the tool sees none of drkit's files."""

    shares_files = False

    def __init__(self, client, container, docker_host, user=None):
        self.client = client
        self.container = container
        self.docker_host = docker_host
        self.user = user or ""
        self.info = None

    @property
    def description(self):
        return "container %s" % self.container

    def check(self):
        """Inspect the container and refuse one that is missing, stopped,
        paused, restarting or unhealthy (SourceError naming it)."""
        self.info = inspect_container(self.client, self.container, self.docker_host)
        return self.info

    def facts(self):
        """What the manifest records of the container."""
        info = self.info or self.check()
        return {"name": info.get("Name", "").lstrip("/") or self.container, "id": info.get("Id"),
                "image": (info.get("Config") or {}).get("Image")}

    def spawn(self, argv, env=None, stdin=False, stdout=True, cwd=None):
        from docker.errors import DockerException  # pylint: disable=import-outside-toplevel
        environment = ["%s=%s" % (k, v) for k, v in sorted((env or {}).items())]
        try:
            exec_id = self.client.exec_create(self.container, list(argv), stdout=bool(stdout), stderr=True,
                                              stdin=bool(stdin), tty=False, environment=environment,
                                              workdir=cwd, user=self.user)["Id"]
            sock = self.client.exec_start(exec_id, detach=False, tty=False, socket=True)
        except DockerException as e:
            self.check()  # a container that went away or stopped says so by name
            raise ToolError("Could not run %s in %s: %s" % (argv[0], self.description, str(e).strip()[:500]),
                            "Check that the container runs and has %s" % argv[0])
        return ExecHandle(self, argv, exec_id, sock, stdin, stdout)

    def run(self, argv, env=None, input_data=None, timeout=None, cwd=None):
        """Run to completion; returns (returncode, stdout bytes, stderr text)."""
        handle = self.spawn(argv, env=env, stdin=input_data is not None, stdout=True, cwd=cwd)
        with handle:
            reader = BackgroundReader(handle.stdout)
            reader.start()
            if input_data is not None:
                try:
                    handle.stdin.write(input_data)
                except OSError:
                    pass  # the tool stopped reading; its exit code says why
                handle.stdin.close()
            rc = handle.wait(timeout)
            reader.join(timeout)
            return rc, bytes(reader.data), handle.stderr_text()

    def open_file(self, path):
        """A ContainerFile streaming ``path`` (inside the container) out of the
        Engine's archive API: nothing copied in the container, no local copy.
        SourceError naming the container and the path when it is not a
        regular file there."""
        from docker.errors import DockerException, NotFound  # pylint: disable=import-outside-toplevel
        try:
            chunks, stat = self.client.get_archive(self.container, path, chunk_size=CHUNK)
        except NotFound:
            raise PathMissing("%s does not exist in container %s" % (path, self.container),
                              "Check that the container is the server's own (its data directory is there)")
        except DockerException as e:
            raise SourceError("Cannot read %s from %s: %s" % (path, self.description, str(e).strip()[:300]),
                              "Check docker_host and that the container runs")
        tar = tarfile.open(fileobj=_ChunkReader(chunks), mode="r|")
        member = tar.next()
        if member is None or not member.isfile():
            tar.close()
            raise SourceError("%s in container %s is not a regular file (%s)" % (
                path, self.container, stat.get("linkTarget") or "mode %o" % stat.get("mode", 0)),
                "Point the server's dir/dbfilename at a regular file")
        return ContainerFile(chunks, tar, member)

    def locate(self, name, candidates, runs=None):
        """The first of ``candidates`` (paths or names, in the container) that
        runs ``--version`` successfully, or for which ``runs(rc)`` is true (a
        tool without --version): (path, version text). ToolError naming the
        container and the tool when none does."""
        tried = []
        for path in candidates:
            rc, out, err = self.run([path, "--version"], timeout=60)
            if rc == 0 or (runs is not None and runs(rc)):
                return path, out.decode("utf-8", "replace").strip()
            said = (err.strip() or out.decode("utf-8", "replace").strip()).splitlines()
            tried.append("%s (%s)" % (path, said[-1][:200] if said else "exit code %s" % rc))
        raise ToolError("%s is not in container %s: tried %s" % (name, self.container, "; ".join(tried)),
                        "Use an image that has %s (the database's own client tools), or set pg_bin_dir to "
                        "where it is inside the container" % name)


def open_runner(params):
    """Where a command's tools run: inside ``params["container"]`` through
    the Docker Engine API (the container checked first), else as local
    processes."""
    if not params.get("container"):
        return LocalRunner()
    s = docker_settings(params)
    runner = ContainerRunner(open_client(s), s["container"], s["docker_host"])
    runner.check()
    return runner
