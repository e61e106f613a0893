# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cli.py: the drkit CLI (config file, arguments and their precedence, exit
codes), bin/drkit as a process, and the --restore-setting flags."""

import json
import os
import signal
import subprocess
import sys

import pytest
from ansible_collections.drkit.backup.plugins.module_utils import cli
from ansible_collections.drkit.backup.plugins.module_utils.cli import _restore_settings
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from support.unit_helpers import REPO

DRKIT = os.path.join(REPO, "bin", "drkit")


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    # cli.main() installs SIGTERM/SIGHUP handlers; keep them out of pytest.
    saved = dict((s, signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGHUP))
    yield
    for s, h in saved.items():
        signal.signal(s, h)


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
# --restore-setting NAME=VALUE


def test_cli_restore_setting_flags_become_a_mapping():
    params = {"restore_settings": ["maintenance_work_mem=1GB", " synchronous_commit = "]}
    _restore_settings(params)
    assert params["restore_settings"] == {"maintenance_work_mem": "1GB", "synchronous_commit": ""}
    params = {"restore_settings": {"a": "b"}}  # from a config file: kept as it is
    _restore_settings(params)
    assert params["restore_settings"] == {"a": "b"}
    with pytest.raises(ConfigError) as ei:
        _restore_settings({"restore_settings": ["maintenance_work_mem"]})
    assert "NAME=VALUE" in str(ei.value)
