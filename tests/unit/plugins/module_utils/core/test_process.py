# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""process.py: the local runner (output streamed, stderr bounded and never
blocking, environment added, missing tool and timeout as ToolErrors),
ProcessFeeder and BackgroundReader, with real processes.

process.py: tool_version, the one `--version` reader of the PostgreSQL
and Redis code (through the runner, so a container runner works too).
"""

import os
import platform
import sys

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ToolError
from ansible_collections.drkit.backup.plugins.module_utils.core.process import (
    STDERR_LIMIT,
    BackgroundReader,
    LocalRunner,
    ProcessFeeder,
    tool_version,
)
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import PipelineSink, pump
from ansible_collections.drkit.backup.plugins.module_utils.redis.tools import VERSION_PATTERNS


def test_spawn_streams_stdout_and_collects_stderr(fs):
    r = LocalRunner()
    code = "import sys; sys.stdout.buffer.write(b'x' * 3000000); sys.stderr.write('warning: note\\n')"
    with r.spawn([sys.executable, "-c", code]) as h:
        with fs.writer("k") as w:
            sink = PipelineSink(w, [])
            assert pump(h.stdout, sink) == 3000000
            sink.close()
        assert h.wait(10) == 0
        assert h.stderr_text() == "warning: note\n"
        assert h.name == os.path.basename(sys.executable)
    assert fs.stat("k").size == 3000000


def test_spawn_env_is_added_not_replacing():
    r = LocalRunner()
    rc, out, err = r.run([sys.executable, "-c", "import os; print(os.environ['DRKIT_X'], 'PATH' in os.environ)"],
                         env={"DRKIT_X": "1"})
    assert (rc, out, err) == (0, b"1 True\n", "")


def test_chatty_stderr_never_blocks_and_is_bounded():
    r = LocalRunner()
    code = "import sys; sys.stderr.write('e' * 1000000); print('done')"
    with r.spawn([sys.executable, "-c", code]) as h:
        assert h.stdout.read() == b"done\n"
        assert h.wait(20) == 0
        assert len(h.stderr_text()) == STDERR_LIMIT


def test_missing_tool_is_a_tool_error():
    with pytest.raises(ToolError) as e:
        LocalRunner().spawn(["/nonexistent/pg_dump"])
    assert "Could not start /nonexistent/pg_dump" in str(e.value) and "pg_bin_dir" in str(e.value)
    with pytest.raises(ToolError):
        LocalRunner().run(["/nonexistent/pg_dump"])


def test_run_timeout():
    with pytest.raises(ToolError) as e:
        LocalRunner().run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert "did not finish within 0.5 s" in str(e.value)


def test_close_terminates_a_running_producer():
    h = LocalRunner().spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    h.close()
    assert h.returncode is not None and h.returncode < 0


# --------------------------------------------------------------------------
# feeder and reader


def test_process_feeder_stops_quietly_when_consumer_closes_stdin():
    r = LocalRunner()
    # Reads 10 bytes then exits: later writes hit a closed pipe.
    h = r.spawn([sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read(10))"],
                stdin=True)
    with h:
        reader = BackgroundReader(h.stdout)
        reader.start()
        feeder = ProcessFeeder(h)
        results = [feeder(b"y" * 65536) for _i in range(200)]
        feeder.close()
        assert h.wait(10) == 0
        reader.join(10)
    assert results[-1] is False and feeder.open is False
    assert bytes(reader.data) == b"y" * 10


def test_background_reader_limit():
    r = LocalRunner()
    with r.spawn([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'z' * 500000)"]) as h:
        reader = BackgroundReader(h.stdout, limit=1000)
        reader.start()
        reader.join(10)
        h.wait(10)
    assert len(reader.data) == 1000 and reader.truncated


class Runner(object):
    def __init__(self, rc=0, out=b"", error=None):
        self.rc, self.out, self.error, self.argv = rc, out, error, None

    def run(self, argv, timeout=None, **_kw):
        self.argv = argv
        if self.error:
            raise self.error
        return self.rc, self.out, ""


def test_pg_style_whole_text():
    r = Runner(out=b"pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n")
    assert tool_version(r, "/usr/lib/postgresql/15/bin/pg_dump", default="unknown") == \
        "pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
    assert r.argv == ["/usr/lib/postgresql/15/bin/pg_dump", "--version"]
    assert tool_version(Runner(rc=1, out=b"usage"), "pg_dump", default="unknown") == "unknown"
    with pytest.raises(ToolError):  # pg_backup fails on a tool it cannot run, as before
        tool_version(Runner(error=ToolError("Could not start pg_dump")), "pg_dump", default="unknown")


def test_redis_style_patterns_and_tolerance():
    out = b"Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=abc\n"
    assert tool_version(Runner(out=out), "redis-check-rdb", VERSION_PATTERNS, strict=False) == "7.0.15"
    assert tool_version(Runner(out=b"redis-check-rdb 6.2.14\n"), "x", VERSION_PATTERNS, strict=False) == "6.2.14"
    assert tool_version(Runner(out=b"no version here"), "x", VERSION_PATTERNS, strict=False) is None
    assert tool_version(Runner(error=ToolError("Could not start")), "x", VERSION_PATTERNS, strict=False) is None


def test_a_real_tool():
    assert tool_version(LocalRunner(), sys.executable, (r"Python (\S+)",)) == platform.python_version()
    with pytest.raises(ToolError):
        tool_version(LocalRunner(), "/nonexistent/tool")


# --------------------------------------------------------------------------
# a memory file (a pgpass in memory) reaches the tool, and a wrapper's child


def test_a_memory_file_reaches_a_child_and_the_child_of_a_wrapper_that_closes_descriptors():
    """pg_bin_dir may hold wrapper scripts that run the real tool as a child
    with its descriptors closed (subprocess' default): the path names drkit's
    descriptor, so the tool still reads it (a descriptor passed to the direct
    child only, as first written, left the wrapped pg_basebackup without its
    password)."""
    from ansible_collections.drkit.backup.plugins.module_utils.core.osutil import memory_file, memory_file_path

    fd = memory_file(b"for the tool\n")
    try:
        env = {"PGPASSFILE": memory_file_path(fd)}
        read = "import os; print(open(os.environ['PGPASSFILE']).read().strip())"
        rc, out, err = LocalRunner().run([sys.executable, "-c", read], env=env)
        assert (rc, out) == (0, b"for the tool\n"), err
        wrapper = ("import subprocess, sys; "
                   "sys.exit(subprocess.run([sys.executable, '-c', %r], close_fds=True).returncode)" % read)
        rc, out, err = LocalRunner().run([sys.executable, "-c", wrapper], env=env)
        assert (rc, out) == (0, b"for the tool\n"), err
    finally:
        os.close(fd)
