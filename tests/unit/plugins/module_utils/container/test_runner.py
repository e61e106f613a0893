# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""container/runner.py's exec handle on a socket pair standing in for the
Engine's hijacked exec connection (the multiplexed stream of the Engine
API: an 8-byte header per frame): stdout comes out as a pipe, stderr is
kept apart, stdin goes in and its end is a half-close, the exit code is
the Engine's. The real Engine: tests/integration/test_containers.py."""

import io
import socket
import struct
import tarfile
import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.container.runner import ContainerRunner, ExecHandle
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import SourceError, ToolError


def frame(stream, data):
    return struct.pack(">BxxxL", stream, len(data)) + data


class FakeEngine(object):
    """exec_inspect answers "running" ``running`` times, then the exit code."""

    def __init__(self, exit_code=0, running=0):
        self.exit_code = exit_code
        self.running = running

    def exec_inspect(self, exec_id):
        if self.running:
            self.running -= 1
            return {"Running": True, "ExitCode": None}
        return {"Running": False, "ExitCode": self.exit_code}


def handle_pair(exit_code=0, stdin=False, stdout=True, running=0):
    ours, engine = socket.socketpair()
    runner = ContainerRunner(FakeEngine(exit_code, running), "db", "unix:///x")
    return ExecHandle(runner, ["/usr/lib/postgresql/15/bin/pg_dump", "-Fc"], "exec1", ours, stdin, stdout), engine


def test_stdout_is_demultiplexed_into_a_pipe_and_stderr_kept_apart():
    handle, engine = handle_pair(exit_code=0)
    big = bytes(range(256)) * 8192  # 2 MiB: more than a pipe holds, read while it flows

    def engine_side():
        engine.sendall(frame(1, b"PGDMP") + frame(2, b"pg_dump: warning: x\n") + frame(1, big))
        engine.close()

    t = threading.Thread(target=engine_side)
    t.start()
    with handle:
        data = handle.stdout.read()
        t.join(10)
        assert handle.wait(5) == 0
        assert data == b"PGDMP" + big
        assert handle.stderr_text() == "pg_dump: warning: x\n"
        assert handle.name == "pg_dump"


def test_stdin_goes_in_and_its_end_is_a_half_close():
    handle, engine = handle_pair(exit_code=3, stdin=True, stdout=False)
    received = bytearray()

    def engine_side():
        while True:
            chunk = engine.recv(65536)
            if not chunk:
                break
            received.extend(chunk)
        # the tool saw the end of its input: it answers and exits
        engine.sendall(frame(2, b"pg_restore: error: bad input\n"))
        engine.close()

    t = threading.Thread(target=engine_side)
    t.start()
    with handle:
        handle.stdin.write(b"a" * 300000)
        handle.stdin.close()
        t.join(10)
        assert handle.wait(5) == 3
        assert bytes(received) == b"a" * 300000
        assert "bad input" in handle.stderr_text()


def test_the_exit_code_waits_for_the_engine_to_record_it():
    handle, engine = handle_pair(exit_code=1, running=3)
    engine.close()
    with handle:
        assert handle.wait(5) == 1


def test_a_tool_that_does_not_finish_in_time_is_named():
    handle, engine = handle_pair()
    with handle:
        with pytest.raises(ToolError) as err:
            handle.wait(0.2)
        assert "pg_dump in container db did not finish within 0.2 s" in str(err.value)
    engine.close()


def test_closing_an_unfinished_handle_ends_the_stream():
    handle, engine = handle_pair()
    handle.close()
    assert engine.recv(10) == b""  # the Engine sees the connection go: the tool's stdio ends
    engine.close()


# --------------------------------------------------------------------------
# a file out of the archive API (a tar of that one file, in chunks)


class FakeArchive(object):
    def __init__(self, tar_bytes, chunk):
        self.tar_bytes = tar_bytes
        self.chunk = chunk

    def get_archive(self, container, path, chunk_size=None):
        data = self.tar_bytes
        return (data[i:i + self.chunk] for i in range(0, len(data), self.chunk)), {"name": path, "mode": 0o644}


def one_file_tar(name, payload, kind=tarfile.REGTYPE):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(payload) if kind == tarfile.REGTYPE else 0
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


@pytest.mark.parametrize("chunk", [1, 7, 512, 10240, 1 << 20])
def test_a_container_file_streams_out_of_the_archive_whatever_the_chunks(chunk):
    payload = bytes(range(256)) * 400 + b"REDIS-END"
    runner = ContainerRunner(FakeArchive(one_file_tar("dump.rdb", payload), chunk), "redis", "unix:///x")
    with runner.open_file("/data/dump.rdb") as fh:
        assert (fh.size, fh.mtime, fh.name) == (len(payload), 1700000000, "dump.rdb")
        parts = []
        while True:
            data = fh.read(4096)
            if not data:
                break
            parts.append(data)
    assert b"".join(parts) == payload


def test_a_container_path_that_is_not_a_regular_file_is_named():
    runner = ContainerRunner(FakeArchive(one_file_tar("data", b"", tarfile.DIRTYPE), 512), "redis", "unix:///x")
    with pytest.raises(SourceError) as err:
        runner.open_file("/data")
    assert "/data in container redis is not a regular file" in str(err.value)
