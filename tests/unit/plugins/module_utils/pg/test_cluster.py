# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cluster.py: finding PostgreSQL's server programs, and quoting of
postgresql.conf values.

cluster.py: the one reader of postmaster.pid and the one way to run the
server's programs as its OS user, shared by PITR and ScratchPostgres.
"""

import os
import subprocess
import sys
import time

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.pg import cluster
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import (
    as_user,
    conf_quote,
    find_pg_bindir,
    pid_alive,
    pidfile_live,
    read_pidfile,
    server_env,
)
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres


def test_find_pg_bindir_has_the_server_programs():
    bindir = find_pg_bindir()
    for prog in ("postgres", "initdb", "pg_ctl", "psql", "pg_isready"):
        assert os.access(os.path.join(bindir, prog), os.X_OK), prog


def test_find_pg_bindir_names_the_package_when_missing():
    with pytest.raises(ConfigError) as exc:
        find_pg_bindir("99")
    assert "postgresql-99" in str(exc.value)


def test_conf_value_quoting():
    assert conf_quote(True) == "on"
    assert conf_quote(False) == "off"
    assert conf_quote(5) == "5"
    assert conf_quote("64MB") == "'64MB'"
    assert conf_quote("it's") == "'it''s'"
    assert conf_quote("cp %p /x/%f") == "'cp %p /x/%f'"


def pidfile(data_dir, pid, status=None):
    lines = [str(pid), str(data_dir), "1732000000", "54321", "/run/pg", "127.0.0.1", "  5432001    3"]
    if status:
        lines.append(status.ljust(8))
    (data_dir / "postmaster.pid").write_text("\n".join(lines) + "\n")


def lookalike():
    """A process whose command line says postgres (sleep under another name)."""
    proc = subprocess.Popen(["postgres-lookalike", "60"], executable="/bin/sleep")
    deadline = time.time() + 10
    while time.time() < deadline:
        with open("/proc/%d/cmdline" % proc.pid, "rb") as fh:
            if fh.read().startswith(b"postgres-lookalike"):  # exec'ed
                return proc
        time.sleep(0.01)
    raise AssertionError("sleep did not start")


def test_read_pidfile(tmp_path):
    assert read_pidfile(str(tmp_path)) == (None, None, None)
    pidfile(tmp_path, 4242)
    assert read_pidfile(str(tmp_path)) == (4242, 54321, None)  # written in steps: no status yet
    pidfile(tmp_path, 4242, "ready")
    assert read_pidfile(str(tmp_path)) == (4242, 54321, "ready")
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert read_pidfile(str(tmp_path)) == (None, None, None)


def test_pidfile_live_wants_a_live_postgres(tmp_path):
    pidfile(tmp_path, os.getpid())  # alive, but not a postgres
    assert pid_alive(os.getpid()) and pidfile_live(str(tmp_path)) is None
    fake = lookalike()
    try:
        pidfile(tmp_path, fake.pid)
        assert pidfile_live(str(tmp_path)) == fake.pid
    finally:
        fake.kill()
        fake.wait()
    assert not pid_alive(fake.pid) and pidfile_live(str(tmp_path)) is None


def test_scratch_postgres_reads_the_same_pidfile(tmp_path):
    server = ScratchPostgres(str(tmp_path / "base"), password="pw", bin_dir="/nonexistent")
    os.makedirs(server.data_dir)
    fake = lookalike()
    try:
        pidfile(tmp_path / "base" / "data", fake.pid, "ready")
        assert server.is_running()  # started by "someone else"
        server._proc = fake
        assert server._pidfile_status() == "ready"
    finally:
        server._proc = None
        fake.kill()
        fake.wait()
    assert not server.is_running()


def test_as_user_runs_as_the_clusters_os_user(monkeypatch):
    assert as_user(None) == {}
    assert as_user((os.geteuid(), os.getegid(), "/root")) == {}
    assert as_user((4242, 4343, "/var/lib/postgresql")) == {"user": 4242, "group": 4343, "extra_groups": []}
    # Python 3.8 has no user=/group= in subprocess: PITR's pg_ctl start failed
    # there with a TypeError before it used the scratch server's fallback
    monkeypatch.setattr(sys, "version_info", (3, 8, 18, "final", 0))
    kwargs = as_user((4242, 4343, "/var/lib/postgresql"))
    assert list(kwargs) == ["preexec_fn"] and callable(kwargs["preexec_fn"])


def test_server_env(monkeypatch):
    monkeypatch.setenv("PGSERVICE", "prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("LANGUAGE", "de")
    env = server_env("/var/lib/postgresql", "postgres")
    assert "PGSERVICE" not in env and "LANGUAGE" not in env and env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
    assert env["LC_ALL"] == "C.UTF-8" and env["HOME"] == "/var/lib/postgresql" and env["LOGNAME"] == "postgres"
    # the recovered server of pg_pitr: restore_command reads its config file, not our credentials
    env = server_env(drop_prefixes=cluster.RECOVERY_ENV_DROP)
    assert "AWS_SECRET_ACCESS_KEY" not in env and env.get("HOME") == os.environ.get("HOME")


def test_stop_server_says_whether_pg_ctl_stopped_it(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pg_ctl = bindir / "pg_ctl"
    pg_ctl.write_text("#!/bin/sh\necho \"$@\" > %s/args\nexit 1\n" % tmp_path)
    pg_ctl.chmod(0o755)
    assert cluster.stop_server(str(bindir), "/data", None, mode="immediate", timeout=5) is False
    assert (tmp_path / "args").read_text().split() == ["stop", "-D", "/data", "-m", "immediate", "-w", "-t", "5"]


@pytest.mark.parametrize("version", ["15", 15])
def test_find_pg_bindir_and_find_tool_share_one_search(tmp_path, monkeypatch, version):
    from ansible_collections.drkit.backup.plugins.module_utils.pg import client
    layouts = (str(tmp_path / "debian" / "%s" / "bin"), str(tmp_path / "rpm" / "pgsql-%s" / "bin"))
    monkeypatch.setattr(client, "BIN_LAYOUTS", layouts)
    monkeypatch.setattr(cluster, "BIN_LAYOUTS", layouts)
    for v, programs in (("9.6", ("postgres", "initdb", "pg_ctl", "pg_dump")), ("15", ("pg_dump",)),
                        ("16", ("postgres", "initdb", "pg_ctl", "pg_dump"))):
        d = tmp_path / "debian" / v / "bin"
        d.mkdir(parents=True)
        for p in programs:
            (d / p).write_text("")
            (d / p).chmod(0o755)
    rpm = tmp_path / "rpm" / "pgsql-15" / "bin"
    rpm.mkdir(parents=True)
    for p in ("postgres", "initdb", "pg_ctl"):
        (rpm / p).write_text("")
        (rpm / p).chmod(0o755)
    assert [os.path.basename(os.path.dirname(d)) for d in client.pg_bindirs(["pg_dump"])] == ["16", "15", "9.6"]
    assert cluster.find_pg_bindir(version) == str(rpm)  # 15's server programs are in the RPM layout only
    monkeypatch.setattr(cluster.shutil, "which", lambda _name: None)
    assert cluster.find_pg_bindir() == str(tmp_path / "debian" / "16" / "bin")
    assert client.find_tool("pg_dump", 150004) == str(tmp_path / "debian" / "15" / "bin" / "pg_dump")
    assert client.find_tool("pg_dump", 140010) == str(tmp_path / "debian" / "16" / "bin" / "pg_dump")
    with pytest.raises(client.ConfigError) as exc:
        client.find_tool("pg_dump", 170000)
    assert "PostgreSQL 17 or newer" in str(exc.value)


# --------------------------------------------------------------------------
# recovery settings: neutralised, stripped, passed on the command line


def test_neutral_recovery_settings_put_the_target_last():
    s = cluster.neutral_recovery_settings()
    assert all(s[k] == "" for k in cluster.TARGET_PARAMS) and s["primary_conninfo"] == ""
    s = cluster.neutral_recovery_settings("recovery_target_time", "2026-11-25 10:00:00+00")
    assert list(s)[-1] == "recovery_target_time" and s["recovery_target_time"] == "2026-11-25 10:00:00+00"
    with pytest.raises(ConfigError):
        cluster.neutral_recovery_settings("restore_command", "cp")


def test_strip_recovery_settings():
    text = ("# Do not edit this file manually!\n# recovery_target_time = 'a comment'\nwork_mem = '8MB'\n"
            "recovery_target_time = '2026-11-25 10:00:00+00'\n  restore_command='drkit wal-fetch %f %p' # x\n"
            "primary_slot_name 'slot'\nrecovery_target_timelines = 'not one'\n")
    kept, removed = cluster.strip_recovery_settings(text)
    assert kept == ("# Do not edit this file manually!\n# recovery_target_time = 'a comment'\nwork_mem = '8MB'\n"
                    "recovery_target_timelines = 'not one'\n")
    assert removed == [("recovery_target_time", "'2026-11-25 10:00:00+00'"),
                       ("restore_command", "'drkit wal-fetch %f %p'"), ("primary_slot_name", "'slot'")]


def test_server_options_keep_the_order_and_quote_for_the_shell():
    import shlex
    opts = cluster.server_options({"recovery_target_xid": "", "restore_command": "drkit wal-fetch '%f' %p",
                                   "hot_standby": True})
    words = shlex.split(opts)
    assert words == ["-c", "lc_messages=C", "-c", "logging_collector=off", "-c", "recovery_target_xid=",
                     "-c", "restore_command=drkit wal-fetch '%f' %p", "-c", "hot_standby=on"]
