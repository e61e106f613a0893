# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""process.py: tool_version, the one `--version` reader of the PostgreSQL
and Redis code (through the runner, so a container runner works too)."""

import platform
import sys

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ToolError
from ansible_collections.drkit.backup.plugins.module_utils.core.process import LocalRunner, tool_version
from ansible_collections.drkit.backup.plugins.module_utils.redis.tools import VERSION_PATTERNS


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
