# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg/client.py without a server: error lines in a tool's stderr,
check_tool_result, ToolEnv's pgpass in memory, conn_params, connection
errors, find_tool and tool_major."""

import os
import tempfile

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ToolError
from ansible_collections.drkit.backup.plugins.module_utils.pg import client
from ansible_collections.drkit.backup.plugins.module_utils.pg.client import (
    ToolEnv,
    check_tool_result,
    conn_params,
    connection_error,
    find_tool,
    stderr_errors,
    tool_major,
)
from support.unit_helpers import PG15, PG16, PG18

# --------------------------------------------------------------------------
# tool output


def test_stderr_errors_picks_error_lines_only():
    text = "\n".join([
        "pg_dump: warning: there are circular foreign-key constraints on this table:",
        "pg_dump: error: query failed: ERROR:  permission denied for table secrets",
        "pg_dump: detail: Query was: LOCK TABLE public.secrets IN ACCESS SHARE MODE",
        "FATAL:  terminating connection due to administrator command",
        "pg_dump: reading schemas",
        "PANIC: could not write to file",
        "the word error without a colon is harmless",
        "NOTICE:  table has an error_count column",
    ])
    assert stderr_errors(text) == [
        "pg_dump: error: query failed: ERROR:  permission denied for table secrets",
        "FATAL:  terminating connection due to administrator command",
        "PANIC: could not write to file",
    ]
    assert stderr_errors("") == []


def test_check_tool_result_exit_zero_with_error_line_fails():
    with pytest.raises(ToolError) as e:
        check_tool_result("pg_dump", 0, "pg_dump: error: Dumping the contents of table \"t\" failed\n",
                          "dumping database app")
    msg = str(e.value)
    assert "pg_dump failed while dumping database app (exit code 0)" in msg
    assert 'Dumping the contents of table "t" failed' in msg
    assert "Nothing was recorded as a backup" in msg


def test_check_tool_result_nonzero_and_signal():
    with pytest.raises(ToolError) as e:
        check_tool_result("pg_dump", 1, "some unexpected text\n", "dumping database app")
    assert "(exit code 1): some unexpected text" in str(e.value)
    with pytest.raises(ToolError) as e:
        check_tool_result("pg_dump", -9, "", "dumping database app")
    assert "killed by signal 9" in str(e.value)
    with pytest.raises(ToolError) as e:
        check_tool_result("pg_dump", 2, "", "dumping database app")
    assert "no message" in str(e.value)


def test_check_tool_result_success_with_warnings():
    check_tool_result("pg_dump", 0, "pg_dump: warning: there are circular foreign-key constraints\n",
                      "dumping")


# --------------------------------------------------------------------------
# connection parameters and the password of the client tools


@pytest.mark.parametrize("password,line", [
    ("plain", "*:*:*:*:plain"),
    ("with:colon", "*:*:*:*:with\\:colon"),
    ("back\\slash", "*:*:*:*:back\\\\slash"),
    ("both\\:x", "*:*:*:*:both\\\\\\:x"),
    ("sp ace#$'\"é", "*:*:*:*:sp ace#$'\"é"),
])
def test_pgpass_in_memory_escaped_0600_and_closed(password, line, tmp_path, monkeypatch):
    """The pgpass file exists only in memory (a kill -9 used to leave
    drkit-pg-*/pgpass in the temp directory): nothing is written to any
    directory, the password is in no environment variable, the descriptor
    is closed afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cp = conn_params({"login_password": password, "login_host": "db", "port": 5433})
    with ToolEnv(cp, "app") as tenv:
        path = tenv.env["PGPASSFILE"]
        assert path.startswith("/proc/%d/fd/" % os.getpid())
        fd = int(path.rsplit("/", 1)[1])
        assert os.readlink(path).startswith("/memfd:drkit-pgpass")
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"  # libpq ignores a group/world-readable one
        with open(path, encoding="utf-8") as fh:
            assert fh.read() == line + "\n"
        assert tenv.env["PGPASSWORD"] == ""  # an inherited one must not win
        assert password not in "".join(tenv.env.values())
        assert (tenv.env["PGHOST"], tenv.env["PGPORT"], tenv.env["PGDATABASE"]) == ("db", "5433", "app")
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        os.fstat(fd)


def test_without_memory_files_the_password_goes_in_the_child_env(monkeypatch):
    monkeypatch.setattr(client, "memory_file", lambda data, name: None)
    with ToolEnv(conn_params({"login_password": "pw"}), "app") as tenv:
        assert tenv.env["PGPASSWORD"] == "pw" and "PGPASSFILE" not in tenv.env
    assert "PGPASSWORD" not in os.environ or os.environ["PGPASSWORD"] != "pw"


def test_a_tool_in_a_container_gets_the_password_in_its_env_not_a_memory_file(monkeypatch):
    # drkit's /proc/<pid>/fd/N does not exist in the container's mount namespace
    def no_memory_file(data, name):
        raise AssertionError("a memory file for a tool that cannot open it")
    monkeypatch.setattr(client, "memory_file", no_memory_file)
    with ToolEnv(conn_params({"login_password": "pw"}), "app", local=False) as tenv:
        assert tenv.env["PGPASSWORD"] == "pw" and "PGPASSFILE" not in tenv.env


class InContainer(object):
    shares_files = False
    description = "container db"

    def __init__(self):
        self.asked = []

    def locate(self, name, candidates):
        self.asked.append((name, list(candidates)))
        return candidates[0], "%s (PostgreSQL) 15.14" % name


def test_locate_tool_in_a_container_tries_the_server_s_major_then_path():
    runner = InContainer()
    assert client.locate_tool(runner, "pg_dump", 150014) == ("/usr/lib/postgresql/15/bin/pg_dump",
                                                             "pg_dump (PostgreSQL) 15.14")
    client.locate_tool(runner, "pg_restore", 150014, "/opt/pg/bin")
    client.locate_tool(runner, "pg_dump")
    assert runner.asked == [
        ("pg_dump", ["/usr/lib/postgresql/15/bin/pg_dump", "/usr/pgsql-15/bin/pg_dump", "pg_dump"]),
        ("pg_restore", ["/opt/pg/bin/pg_restore"]),
        ("pg_dump", ["pg_dump"])]


def test_no_password_no_pgpass_file():
    with ToolEnv(conn_params({}), "app") as tenv:
        assert "PGPASSFILE" not in tenv.env and tenv.env["PGPASSWORD"] == ""


@pytest.mark.parametrize("port", ["abc", 0, 70000, -1])
def test_conn_params_port_validation(port):
    with pytest.raises(ConfigError):
        conn_params({"port": port})


def test_conn_params_defaults():
    cp = conn_params({"login_host": "h", "port": "5433", "login_user": None})
    assert (cp["login_host"], cp["port"], cp["login_user"]) == ("h", 5433, "postgres")


def test_connection_error_messages():
    cp = conn_params({"login_host": "h", "port": 5433, "login_user": "u"})
    e = connection_error(cp, "db", Exception('FATAL:  password authentication failed for user "u"'))
    assert "Cannot log in to PostgreSQL as u@h:5433/db" in str(e) and "login_password" in str(e)
    e = connection_error(cp, "db", Exception("connection failed: Connection refused"))
    assert "Cannot connect to PostgreSQL at h:5433" in str(e) and "login_host and port" in str(e)
    e = connection_error(cp, "nope", Exception('FATAL:  database "nope" does not exist'))
    assert "Database 'nope' does not exist" in str(e)


# --------------------------------------------------------------------------
# the tools


def test_find_tool_with_bin_dir(tmp_path):
    tool = tmp_path / "pg_dump"
    tool.write_text("#!/bin/sh\n")
    os.chmod(str(tool), 0o755)
    assert find_tool("pg_dump", 150000, str(tmp_path)) == str(tool)
    with pytest.raises(ConfigError) as e:
        find_tool("pg_restore", 150000, str(tmp_path))
    assert "pg_bin_dir" in str(e.value)


def test_tool_major_reads_debian_and_plain_version_strings():
    assert [tool_major(v) for v in (PG15, PG16, PG18, "unknown", "")] == [15, 16, 18, 0, 0]
