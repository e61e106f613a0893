# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cli.py: the drkit CLI (config file, arguments and their precedence, exit
codes), bin/drkit as a process, and the --restore-setting flags."""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from ansible_collections.drkit.backup.plugins.module_utils import cli
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from support.spec_capture import engine_options
from support.unit_helpers import REPO, dead_tag

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


def test_main_list_wal_says_how_old_the_newest_archived_wal_is(capsys, tmp_path):
    url = "file://" + str(tmp_path)
    assert cli.main(["list", "--storage-url", url, "--wal"]) == 0
    assert capsys.readouterr().out.endswith("WAL archive: no WAL\n")
    seg = tmp_path / "wal" / "00000001" / "000000010000000000000005.zst"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"x")
    os.utime(str(seg), (time.time() - 7200, time.time() - 7200))
    assert cli.main(["list", "--storage-url", url, "--wal"]) == 0
    out = capsys.readouterr().out
    assert "WAL archive: newest 000000010000000000000005, stored 2 h ago (" in out, out
    assert cli.main(["list", "--storage-url", url, "--wal", "--json"]) == 0
    newest = json.loads(capsys.readouterr().out)["wal_archive"]["newest"]
    assert newest["name"] == "000000010000000000000005" and 7190 < newest["age_seconds"] < 7300


def test_main_list_wal_without_backups_reads_no_manifest(capsys, tmp_path, monkeypatch):
    """The rehearsal's RPO with PITR needs the WAL archive only: reading
    every manifest of a large repository for it was wasted work."""
    from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf

    url = "file://" + str(tmp_path)
    seg = tmp_path / "wal" / "00000001" / "000000010000000000000005.zst"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"x")

    def no_listing(*_args, **_kwargs):
        raise AssertionError("a manifest was read")
    monkeypatch.setattr(mf, "list_backups", no_listing)
    assert cli.main(["list", "--storage-url", url, "--wal", "--no-backups"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("WAL archive: newest 000000010000000000000005, stored "), out
    assert cli.main(["list", "--storage-url", url, "--wal", "--no-backups", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backups"] == [] and result["wal_archive"]["newest"]["name"] == "000000010000000000000005"
    # nothing to report at all is refused, naming the way out
    assert cli.main(["list", "--storage-url", url, "--no-backups"]) == 2
    assert "Set wal: true (--wal)" in capsys.readouterr().err


def test_main_runs_the_janitor_first_except_for_wal_commands_and_check_mode(capsys, tmp_path, monkeypatch):
    """Every command but wal-push/wal-fetch (per WAL file, run by the server)
    removes dead drkit processes' temp directories before it runs; a check
    run removes nothing."""
    tag = dead_tag()
    tmp = tmp_path / "tmp"
    leftover = tmp / ("drkit-restore-%s-abcd1234" % tag)
    leftover.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    store = tmp_path / "store"
    store.mkdir()
    url = "file://" + str(store)
    wal = tmp_path / "000000010000000000000001"
    wal.write_bytes(b"\0" * 16)
    cli.main(["wal-push", "--storage-url", url, str(wal), wal.name])
    assert cli.main(["rotate", "--storage-url", url, "--keep-last", "1", "--dry-run"]) == 0
    assert leftover.exists()
    assert cli.main(["list", "--storage-url", url]) == 0
    assert not leftover.exists()
    assert "removed %s, left by dead drkit process %s" % (leftover, tag.split("_")[1]) in capsys.readouterr().err


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


def test_cli_restore_setting_flags_become_a_mapping(tmp_path):
    def params(*argv, **config):
        path = write(tmp_path / "c.yml", json.dumps(config), 0o600)
        return cli.merged(cli.build_parser().parse_args(["restore", "--config", path] + list(argv)))
    got = params("--restore-setting", "maintenance_work_mem=1GB", "--restore-setting", " synchronous_commit = ")
    assert got["restore_settings"] == {"maintenance_work_mem": "1GB", "synchronous_commit": ""}
    # from a config file: kept as it is; flags replace it
    assert params(restore_settings={"a": "b"})["restore_settings"] == {"a": "b"}
    assert params("--restore-setting", "c=d", restore_settings={"a": "b"})["restore_settings"] == {"c": "d"}
    with pytest.raises(ConfigError) as ei:
        params("--restore-setting", "maintenance_work_mem")
    assert "--restore-setting 'maintenance_work_mem' is not NAME=VALUE" in str(ei.value)


@pytest.mark.parametrize("command", ["pitr", "standby"])
def test_cli_set_flags_go_over_the_config_files_settings(command, monkeypatch):
    seen = {}
    target = {"pitr": "pg.pitr.pg_pitr", "standby": "pg.standby.pg_standby"}[command]
    module, func = target.rsplit(".", 1)
    monkeypatch.setattr("ansible_collections.drkit.backup.plugins.module_utils.%s.%s" % (module, func),
                        lambda params, **_kw: seen.update(params) or (False, {}))
    run = getattr(cli, "cmd_" + command)
    run(argparse.Namespace(progress=None),
        {"settings": {"a": "1", "b": "2"}, "settings_list": ["b = 3", "c="]})
    assert seen["settings"] == {"a": "1", "b": "3", "c": ""} and "settings_list" not in seen
    with pytest.raises(ConfigError) as ei:
        run(argparse.Namespace(progress=None), {"settings_list": ["work_mem"]})
    assert "--set 'work_mem' is not NAME=VALUE" in str(ei.value)


# --------------------------------------------------------------------------
# flags, config-file keys and environment variables from the option registry


def _sample(opt):
    """A valid value for an option and the argv that sets it."""
    flag = opt.flags[0] if opt.flags else None
    if opt.type == "bool":
        return (True, [flag]) if flag else (False, [opt.off_flags[0]])
    if opt.choices and opt.type == "list":
        return [opt.choices[0]], [flag, opt.choices[0]]
    if opt.choices:
        return opt.choices[-1], [flag, str(opt.choices[-1])]
    if opt.type == "int":
        value = opt.max if opt.max is not None else (opt.min or 0) + 2
        return value, [flag, str(value)]
    if opt.type == "float":
        return 2.5, [flag, "2.5"]
    if opt.type == "list" and opt.split:
        return ["run", "it now"], [flag, "run 'it now'"]
    if opt.type == "list":
        return ["a", "b"], [flag, "a", flag, "b"]
    if opt.type == "dict":
        return {"a": "b"}, [flag, "a=b"]
    return "/v", [flag, "/v"]


def _merged(argv, tmp_path, config=None, env=None, monkeypatch=None):
    args = ["--config", write(tmp_path / ("c%d.yml" % len(os.listdir(str(tmp_path)))), json.dumps(config), 0o600)] \
        if config is not None else []
    return cli.merged(cli.build_parser().parse_args(argv[:1] + args + argv[1:]))


@pytest.fixture
def clean_env(monkeypatch):
    for options in engine_options().values():
        for opt in options:
            for var in opt.env:
                monkeypatch.delenv(var, raising=False)
    return monkeypatch


# commands that read no repository (failover promotes a standby)
NO_STORAGE = ("failover", "standby-check")
POSITIONALS = {"wal-push": ["pg_wal/X", "000000010000000000000001"], "wal-fetch": ["000000010000000000000001", "X"]}


@pytest.mark.parametrize("command", [c[0] for c in cli.COMMANDS])
def test_each_flag_and_its_config_key_and_aliases_give_the_same_value(command, tmp_path, clean_env):
    options = [c[2] for c in cli.COMMANDS if c[0] == command][0]()
    tail = POSITIONALS.get(command, [])
    for opt in options:
        if not (opt.flags or opt.off_flags):
            continue
        value, argv = _sample(opt)
        by_flag = _merged([command] + argv + tail, tmp_path)[opt.name]
        assert by_flag == value, (command, argv)
        for key in opt.names:
            by_config = _merged([command] + tail, tmp_path, config={key: value})[opt.name]
            assert by_config == value, (command, key)
        for flag in opt.flags[1:]:
            assert _merged([command] + [flag] + argv[1:] + tail, tmp_path)[opt.name] == value, (command, flag)


def test_login_port_is_the_postgresql_port_as_flag_and_config_key(tmp_path, clean_env):
    for command in ("pg-backup", "verify", "restore"):
        assert _merged([command, "--login-port", "5433"], tmp_path)["port"] == 5433
        assert _merged([command, "--port", "5433"], tmp_path)["port"] == 5433
        params = _merged([command], tmp_path, config={"login_port": 5434, "host": "db"})
        assert (params["port"], params["login_host"]) == (5434, "db") and "login_port" not in params
        # the flag wins over the config file's alias
        assert _merged([command, "--port", "5433"], tmp_path, config={"login_port": 5434})["port"] == 5433
    assert _merged(["redis-snapshot", "--port", "6380"], tmp_path)["login_port"] == 6380
    with pytest.raises(ConfigError) as e:
        _merged(["pg-backup"], tmp_path, config={"port": 5432, "login_port": 5433})
    assert "port and login_port are the same option" in str(e.value)


def test_defaults_come_from_the_registry(tmp_path, clean_env):
    p = _merged(["pg-backup", "-d", "db"], tmp_path)
    assert (p["port"], p["login_host"], p["jobs"], p["compression_level"], p["compression_threads"], p["format"],
            p["mode"], p["row_counts"], p["validate_certs"]) == (5432, "localhost", 1, 3, 0, "custom", "logical",
                                                                 True, True)
    p = _merged(["wal-push", "X", "000000010000000000000001"], tmp_path)
    assert (p["compression_level"], p["read_ahead"]) == (3, 0)
    assert _merged(["wal-fetch", "000000010000000000000001", "X"], tmp_path)["prefetch"] == 0
    p = _merged(["redis-snapshot"], tmp_path)
    assert (p["login_port"], p["timeout"], p["pause_timeout"], p["connect_timeout"]) == (6379, 600.0, 2000, 10.0)


def test_environment_fallbacks_are_those_of_the_command(tmp_path, clean_env):
    clean_env.setenv("PGPASSWORD", "pg-secret")
    clean_env.setenv("REDISCLI_AUTH", "redis-secret")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    clean_env.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://s3.local")
    for command in ("pg-backup", "verify", "restore"):
        assert _merged([command], tmp_path)["login_password"] == "pg-secret"
    for command in ("redis-snapshot", "redis-restore"):
        assert _merged([command], tmp_path)["login_password"] == "redis-secret"
    for command in [c[0] for c in cli.COMMANDS if c[0] not in NO_STORAGE]:
        tail = POSITIONALS.get(command, [])
        p = _merged([command] + tail, tmp_path)
        assert (p["secret_key"], p["region"], p["endpoint_url"]) == ("aws-secret", "eu-central-1", "http://s3.local")
    clean_env.setenv("AWS_REGION", "us-east-1")  # listed first, so it wins
    assert _merged(["list"], tmp_path)["region"] == "us-east-1"


def test_precedence_flag_config_environment_default(tmp_path, clean_env):
    assert _merged(["list"], tmp_path)["region"] is None
    clean_env.setenv("AWS_REGION", "env")
    assert _merged(["list"], tmp_path)["region"] == "env"
    assert _merged(["list"], tmp_path, config={"region": "config"})["region"] == "config"
    assert _merged(["list", "--region", "flag"], tmp_path, config={"region": "config"})["region"] == "flag"
    # a config key set to null is unset
    assert _merged(["list"], tmp_path, config={"region": None})["region"] == "env"


def test_config_keys_of_other_commands_pass_through(tmp_path, clean_env):
    # one job file serves pg-backup, verify and rotate
    config = {"database": "app", "kind": "pg_logical", "keep_daily": 7, "format": "custom", "jobs": 2}
    p = _merged(["rotate"], tmp_path, config=config)
    assert (p["kind"], p["database"], p["keep_daily"], p["jobs"], p["format"]) == ("pg_logical", "app", 7, 2, "custom")


@pytest.mark.parametrize("config, text", [
    ({"login_pasword": "x"}, "unknown key 'login_pasword' (did you mean 'login_password'?)"),
    ({"storage_ulr": "file:///x", "keep_dayly": 3},
     "unknown keys 'keep_dayly' (did you mean 'keep_daily'?), 'storage_ulr' (did you mean 'storage_url'?)"),
    ({"zzz_nothing_like_it": 1}, "unknown key 'zzz_nothing_like_it'. No drkit command reads it"),
    ({"quiet": True}, "unknown key 'quiet'"),  # a flag only: in a file it did nothing
    ({"1": "x"}, "unknown key '1'"),
])
def test_config_keys_no_command_knows_are_refused(config, text, tmp_path, clean_env):
    with pytest.raises(ConfigError) as ei:
        _merged(["pg-backup"], tmp_path, config=config)
    assert text in str(ei.value) and "Config file %s" % tmp_path in str(ei.value), str(ei.value)


def test_a_yaml_key_that_is_not_a_string_is_unknown(tmp_path, clean_env):
    path = write(tmp_path / "c.yml", "1: x\nstorage_url: file:///x\n", 0o600)
    with pytest.raises(ConfigError) as ei:
        cli.merged(cli.build_parser().parse_args(["list", "--config", path]))
    assert "unknown key 1." in str(ei.value)


def test_config_keys_of_any_command_and_their_flags_are_known(tmp_path, clean_env):
    """One job file serves pg-backup, verify and rotate: the keys the roles
    write, aliases, and the other flags of a command (check, dry_run) pass."""
    config = {"job_name": "pg_app", "database": "app", "source_database": "app", "kind": "pg_logical",
              "storage_url": "file:///x", "login_host": "db", "port": 5432, "login_user": "u", "format": "custom",
              "jobs": 1, "compression_level": 3, "compression_by": "auto", "metrics_dir": "/m", "checks": [],
              "prune_wal": False, "keep_last": 3, "keep_daily": 7, "login_password": "s", "db": "app",
              "aws_secret_key": "k", "dry_run": True, "check": True, "checks_file": "/c.yml", "verbose": True}
    for command in ("pg-backup", "verify", "rotate", "list"):
        _merged([command], tmp_path, config=config)
    keys = cli.known_config_keys()
    for _name, _text, options, _extras, _run in cli.COMMANDS:
        assert set(n for o in options() for n in o.names) <= keys
    assert not {"config", "json", "quiet", "func", "options", "help"} & keys


@pytest.mark.parametrize("argv, config, text", [
    (["pg-backup", "--jobs", "0"], None, "jobs must be at least 1, got 0"),
    (["pg-backup", "--compression-level", "30"], None, "compression_level must be 1-19, got 30"),
    (["pg-backup"], {"compression_level": 0}, "compression_level must be 1-19, got 0"),
    (["pg-backup"], {"login_port": 0}, "port must be 1-65535, got 0"),
    (["verify", "-j", "-1"], None, "jobs must be at least 1, got -1"),
    (["restore", "--jobs", "0", "--target-database", "t"], None, "jobs must be at least 1, got 0"),
    (["redis-snapshot", "--timeout", "0"], None, "timeout must be more than 0, got 0.0"),
    (["redis-snapshot", "--pause-timeout", "5"], None, "pause_timeout must be 10-60000, got 5"),
    (["redis-snapshot", "--connect-timeout", "0"], None, "connect_timeout must be more than 0, got 0.0"),
    (["redis-snapshot", "--compression-threads", "-2"], None, "compression_threads must be -1 to 256, got -2"),
    (["wal-push", "--compression-level", "0", "p", "000000010000000000000001"], None,
     "compression_level must be 1-19, got 0"),
    (["wal-fetch", "--prefetch", "-1", "000000010000000000000001", "p"], None, "prefetch must be at least 0, got -1"),
    (["rotate", "--keep-daily", "-5"], None, "keep_daily must be 0 or more, or -1 for unlimited, got -5"),
    (["pitr", "--port", "0", "--data-directory", "/x"], None, "port must be 1-65535, got 0"),
    (["pitr", "--timeout", "0", "--data-directory", "/x"], None, "timeout must be more than 0, got 0.0"),
])
def test_main_refuses_out_of_range_values_with_exit_2(argv, config, text, tmp_path, capsys, clean_env):
    url = "file://%s/store" % tmp_path
    extra = ["--config", write(tmp_path / "c.yml", json.dumps(config), 0o600)] if config else []
    assert cli.main(argv[:1] + ["--storage-url", url, "-d", "db"][:4 if argv[0] == "pg-backup" else 2]
                    + extra + argv[1:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drkit %s: error: %s" % (argv[0], text)), err
    assert not os.path.exists(os.path.join(str(tmp_path), "store"))


def test_secret_keys_cover_every_secret_option_and_alias():
    for name, options in engine_options().items():
        for opt in options:
            if opt.secret:
                assert set(opt.names) <= set(cli.SECRET_KEYS), (name, opt.names)


def test_a_world_readable_config_with_an_aliased_secret_is_refused(tmp_path):
    path = write(tmp_path / "c.yml", "aws_secret_key: hunter2\n", 0o644)
    with pytest.raises(ConfigError) as e:
        cli.load_config(path)
    assert "readable by others" in str(e.value) and "hunter2" not in str(e.value)


def test_wal_push_builds_only_its_own_flags_and_imports_no_other_command():
    code = ("import sys; sys.path.insert(0, %r); import runpy; "
            "m = runpy.run_path(%r, run_name='drkit_loader'); m['load_engine'](); "
            "from drkit_engine import cli; p = cli.build_parser(only='wal-push'); "
            "a = p.parse_args(['wal-push', '--compression-level', '5', 'p', '000000010000000000000001']); "
            "print(a.compression_level, sorted(n for n in sys.modules if n.startswith('drkit_engine.') and "
            "n.split('.')[1] in ('pg', 'redis', 'repo', 'demo')))") % (REPO, DRKIT)
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    level, modules = p.stdout.split(" ", 1)
    assert level == "5"
    assert "drkit_engine.pg.pitr" not in modules and "drkit_engine.redis" not in modules
    assert "drkit_engine.repo.rotate" not in modules and "drkit_engine.pg.backup" not in modules


# --------------------------------------------------------------------------
# drkit list for people


def test_list_prints_human_sizes_and_ages_one_line_per_backup_id_first():
    now = 1764000000.0  # 2025-11-24T16:00:00Z
    rows = [
        {"backup_id": "20251124T130000Z-pg-logical-aaaaaa", "kind": "pg_logical",
         "finished_at": "2025-11-24T13:00:00.000000Z", "size": 1288490189, "source": {"database": "app"},
         "pinned": True},
        {"backup_id": "20251112T160000Z-redis-rdb-bbbbbb", "kind": "redis_rdb",
         "finished_at": "2025-11-12T16:00:00.000000Z", "size": 512, "source": {"host": "10.0.0.5"},
         "artifacts_missing": True},
    ]
    lines = cli.list_table(rows, now).splitlines()
    assert len(lines) == 2 and [ln.split()[0] for ln in lines] == [r["backup_id"] for r in rows]
    assert "3 h ago" in lines[0] and "1.2 GiB" in lines[0] and lines[0].endswith("app  [pinned]")
    assert "12 d ago" in lines[1] and "512 B" in lines[1] and "[ARTIFACTS MISSING]" in lines[1]
    assert "1288490189" not in lines[0] and "2025-11-24T13" not in lines[0]


def test_list_shows_an_unreadable_time_as_it_is():
    rows = [{"backup_id": "x", "kind": "pg_logical", "finished_at": "yesterday", "size": 1, "source": {}}]
    assert "yesterday" in cli.list_table(rows, 0.0)
