# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""errors.py, the drkit CLI (arguments, config file, exit codes) and the
PostgreSQL tool helpers in postgres.py that need no server."""

import json
import os
import signal
import subprocess
import sys

import pytest
from ansible_collections.drkit.backup.plugins.module_utils import cli
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, ConflictError, DrkitError,
                                                                               IntegrityError, NotFoundError,
                                                                               SafetyError, SourceError, StorageError,
                                                                               ToolError, WaitTimeout)
from ansible_collections.drkit.backup.plugins.module_utils.pg.client import (ToolEnv, check_tool_result, conn_params,
                                                                             connection_error, find_tool, stderr_errors)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DRKIT = os.path.join(REPO, "bin", "drkit")


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    # cli.main() installs SIGTERM/SIGHUP handlers; keep them out of pytest.
    saved = dict((s, signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGHUP))
    yield
    for s, h in saved.items():
        signal.signal(s, h)


# --------------------------------------------------------------------------
# errors


def test_message_and_hint():
    e = StorageError("Could not write x.", "Free some space")
    assert str(e) == "Could not write x. Free some space"
    assert e.args == ("Could not write x. Free some space",)
    assert str(ConfigError("Bad")) == "Bad"
    assert ToolError("x", details={"rc": 1}).details == {"rc": 1}


def test_exit_codes_are_distinct_and_nonzero():
    classes = [DrkitError, ConfigError, StorageError, NotFoundError,
               ConflictError, ToolError, SourceError, IntegrityError,
               WaitTimeout, SafetyError]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes) and 0 not in codes
    assert issubclass(NotFoundError, StorageError)
    assert issubclass(ConflictError, StorageError)
    assert all(issubclass(c, DrkitError) for c in classes)


# --------------------------------------------------------------------------
# config file


def write(path, text, mode):
    path.write_text(text)
    os.chmod(str(path), mode)
    return str(path)


@pytest.mark.parametrize("secret", cli.SECRET_KEYS)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_config_with_secrets_must_be_private(tmp_path, secret, mode):
    path = write(tmp_path / "drkit.yml", "%s: hunter2\nstorage_url: file:///x\n" % secret, mode)
    with pytest.raises(ConfigError) as e:
        cli.load_config(path)
    msg = str(e.value)
    assert "holds secrets but is readable by others" in msg and "chmod 600 %s" % path in msg
    assert "hunter2" not in msg


def test_private_config_with_secrets_is_read(tmp_path):
    path = write(tmp_path / "drkit.yml", "login_password: hunter2\nport: 5433\n", 0o600)
    assert cli.load_config(path) == {"login_password": "hunter2", "port": 5433}


def test_readable_config_without_secrets_is_fine(tmp_path):
    path = write(tmp_path / "drkit.yml", "storage_url: file:///x\nlogin_password:\n", 0o644)
    assert cli.load_config(path)["storage_url"] == "file:///x"


@pytest.mark.parametrize("text,fragment", [("[1, 2]", "must hold a mapping"), ("a: [", "not valid YAML")])
def test_bad_config_files(tmp_path, text, fragment):
    path = write(tmp_path / "drkit.yml", text, 0o600)
    with pytest.raises(ConfigError) as e:
        cli.load_config(path)
    assert fragment in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        cli.load_config(str(tmp_path / "nope.yml"))
    assert "Cannot read config file" in str(e.value)


def test_empty_config_and_no_config(tmp_path):
    assert cli.load_config(write(tmp_path / "e.yml", "", 0o600)) == {}
    assert cli.load_config(None) == {}


# --------------------------------------------------------------------------
# arguments and precedence


def test_flags_win_over_config_and_config_over_environment(tmp_path, monkeypatch):
    path = write(tmp_path / "drkit.yml",
                 "storage_url: file:///from-config\nport: 6000\nlogin_password: from-config\n", 0o600)
    monkeypatch.setenv("PGPASSWORD", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    args = cli.build_parser().parse_args(["pg-backup", "--config", path, "--port", "7000", "-d", "db"])
    params = cli.merged(args)
    assert params["port"] == 7000  # flag
    assert params["storage_url"] == "file:///from-config"  # config
    assert params["login_password"] == "from-config"  # explicit config beats the env fallback
    assert params["secret_key"] == "env-secret"  # env fallback when not configured
    assert params["region"] == "eu-west-1"
    assert params["database"] == "db"
    for internal in ("config", "func", "json", "quiet"):
        assert internal not in params


def test_environment_fallback_for_password(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-env")
    args = cli.build_parser().parse_args(["pg-backup", "-d", "db"])
    assert cli.merged(args)["login_password"] == "from-env"


@pytest.mark.parametrize("flag", ["--password", "--login-password", "--secret-key", "--access-key",
                                  "--login_password", "--session-token"])
def test_secrets_are_never_flags(flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["pg-backup", "-d", "db", flag, "x"])
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_repeated_filters_become_lists():
    args = cli.build_parser().parse_args(["pg-backup", "-d", "db", "--schema", "a", "--schema", "b",
                                          "--exclude-table", "t", "--no-row-counts", "--no-validate-certs"])
    params = cli.merged(args)
    assert params["schemas"] == ["a", "b"] and params["exclude_tables"] == ["t"]
    assert params["row_counts"] is False and params["validate_certs"] is False
    assert "check" not in params  # not given: the module default applies


def test_main_without_command_exits_2(capsys):
    assert cli.main([]) == 2
    assert "pg-backup" in capsys.readouterr().err


def test_main_maps_errors_to_exit_codes(capsys, tmp_path):
    assert cli.main(["pg-backup", "--storage-url", "file:///x"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("drkit pg-backup: error: database is required")
    assert cli.main(["list", "--storage-url", "relative/path"]) == 2
    assert "Unsupported storage_url" in capsys.readouterr().err


def test_main_list_empty_and_json(capsys, tmp_path):
    url = "file://" + str(tmp_path)
    assert cli.main(["list", "--storage-url", url]) == 0
    assert capsys.readouterr().out == "no complete backups in %s\n" % url
    assert cli.main(["list", "--storage-url", url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backups"] == [] and result["count"] == 0 and result["storage"] == url


# --------------------------------------------------------------------------
# bin/drkit as a process


def run_bin(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, DRKIT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=e, timeout=60, check=False)


def test_bin_drkit_runs_from_the_checkout(tmp_path):
    p = run_bin("list", "--storage-url", "file://" + str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["count"] == 0


def test_bin_drkit_failure_exit_code_and_reason_on_stderr(tmp_path):
    p = run_bin("pg-backup", "-d", "db", "--storage-url", "ftp://x/y")
    assert p.returncode == 2
    assert "Unsupported storage_url 'ftp://x/y'" in p.stderr and p.stdout == ""


def test_bin_drkit_refuses_world_readable_secret_config(tmp_path):
    path = write(tmp_path / "c.yml", "login_password: hunter2\n", 0o644)
    p = run_bin("pg-backup", "-d", "db", "--storage-url", "file://" + str(tmp_path), "--config", path)
    assert p.returncode == 2
    assert "readable by others" in p.stderr and "hunter2" not in p.stderr + p.stdout


def test_bin_drkit_is_executable_with_python_on_path():
    assert os.access(DRKIT, os.X_OK)
    with open(DRKIT) as fh:
        assert fh.readline().strip() == "#!/usr/bin/env python3"


# --------------------------------------------------------------------------
# postgres.py helpers


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


@pytest.mark.parametrize("password,line", [
    ("plain", "*:*:*:*:plain"),
    ("with:colon", "*:*:*:*:with\\:colon"),
    ("back\\slash", "*:*:*:*:back\\\\slash"),
    ("both\\:x", "*:*:*:*:both\\\\\\:x"),
    ("sp ace#$'\"", "*:*:*:*:sp ace#$'\""),
])
def test_pgpass_file_escaping_mode_and_cleanup(password, line):
    cp = conn_params({"login_password": password, "login_host": "db", "port": 5433})
    with ToolEnv(cp, "app") as tenv:
        path = tenv.env["PGPASSFILE"]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
        with open(path) as fh:
            assert fh.read() == line + "\n"
        assert tenv.env["PGPASSWORD"] == ""  # an inherited one must not win
        assert password not in "".join(v for k, v in tenv.env.items() if k != "PGPASSFILE")
        assert (tenv.env["PGHOST"], tenv.env["PGPORT"], tenv.env["PGDATABASE"]) == ("db", "5433", "app")
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))


def test_no_password_no_pgpass_file():
    with ToolEnv(conn_params({}), "app") as tenv:
        assert "PGPASSFILE" not in tenv.env


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


def test_find_tool_with_bin_dir(tmp_path):
    tool = tmp_path / "pg_dump"
    tool.write_text("#!/bin/sh\n")
    os.chmod(str(tool), 0o755)
    assert find_tool("pg_dump", 150000, str(tmp_path)) == str(tool)
    with pytest.raises(ConfigError) as e:
        find_tool("pg_restore", 150000, str(tmp_path))
    assert "pg_bin_dir" in str(e.value)
