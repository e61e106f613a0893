# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sandbox.py: the parts that need no running server, plus the error paths
of the real ones (those start a server and are marked integration)."""

import os
import socket
import stat

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.osutil import check_traversable
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import (free_port, free_ports, make_scratch_dir,
                                                                                port_is_free)
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import conf_quote, find_pg_bindir
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from support.redis_server import ScratchRedis
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ToolError

IS_ROOT = os.geteuid() == 0


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    assert 1024 < port < 65536
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    finally:
        s.close()


def test_free_ports_are_distinct():
    ports = free_ports(20)
    assert len(set(ports)) == 20


def test_port_is_free_sees_a_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        assert not port_is_free(s.getsockname()[1])
    finally:
        s.close()


def test_find_pg_bindir_has_the_server_programs():
    bindir = find_pg_bindir()
    for prog in ("postgres", "initdb", "pg_ctl", "psql", "pg_isready"):
        assert os.access(os.path.join(bindir, prog), os.X_OK), prog


def test_find_pg_bindir_names_the_package_when_missing():
    with pytest.raises(ConfigError) as exc:
        find_pg_bindir("99")
    assert "postgresql-99" in str(exc.value)


def test_make_scratch_dir_is_traversable_not_listable(tmp_path):
    path = make_scratch_dir(parent=str(tmp_path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o711
    finally:
        os.rmdir(path)


def test_make_scratch_dir_default_is_reachable_by_other_users():
    path = make_scratch_dir()
    try:
        # nobody (65534) with no groups can enter it: every ancestor has o+x
        check_traversable(os.path.join(path, "data"), 65534, set())
    finally:
        os.rmdir(path)


def test_check_traversable_names_the_blocking_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ConfigError) as exc:
        check_traversable(str(locked / "pg" / "data"), 65534, set())
    assert "cannot enter" in str(exc.value)
    assert "make_scratch_dir" in str(exc.value)


@pytest.mark.skipif(not IS_ROOT, reason="the postgres OS user is only used when running as root")
def test_postgres_base_dir_below_root_only_dir_is_refused_before_anything_runs(tmp_path):
    # pytest's tmp_path is below /tmp/pytest-of-root (0700)
    base = tmp_path / "pg"
    pg = ScratchPostgres(str(base))
    with pytest.raises(ConfigError) as exc:
        pg.start()
    assert "cannot enter" in str(exc.value)
    assert not pg.is_running()


def test_conf_value_quoting():
    assert conf_quote(True) == "on"
    assert conf_quote(False) == "off"
    assert conf_quote(5) == "5"
    assert conf_quote("64MB") == "'64MB'"
    assert conf_quote("it's") == "'it''s'"
    assert conf_quote("cp %p /x/%f") == "'cp %p /x/%f'"


def test_postgres_connection_details_without_starting(tmp_path):
    pg = ScratchPostgres(str(tmp_path / "pg"), port=54999, password="s3cret", superuser="admin")
    assert pg.host == "127.0.0.1"
    assert pg.conninfo("app") == {"host": "127.0.0.1", "port": 54999, "user": "admin",
                                  "password": "s3cret", "dbname": "app"}
    assert pg.env("app") == {"PGHOST": "127.0.0.1", "PGPORT": "54999", "PGUSER": "admin",
                             "PGPASSWORD": "s3cret", "PGDATABASE": "app"}
    assert "s3cret" not in pg.dsn()
    assert pg.data_dir == str(tmp_path / "pg" / "data")
    assert pg.socket_dir == str(tmp_path / "pg" / "run")


def test_postgres_without_password_gets_a_random_one(tmp_path):
    a = ScratchPostgres(str(tmp_path / "a"))
    b = ScratchPostgres(str(tmp_path / "b"))
    assert a.password and b.password and a.password != b.password
    assert len(a.password) >= 20


def test_existing_data_dir_command_line_is_safe(tmp_path):
    pg = ScratchPostgres(str(tmp_path / "pitr"), port=55001, initdb=False,
                                 settings={"recovery_target_action": "promote"})
    assert pg.password is None
    # no password: clients go through the unix socket (trust, 0700 dir)
    assert pg.conninfo()["host"] == pg.socket_dir
    argv = pg._argv()
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]
    assert "port=55001" in pairs
    assert "listen_addresses=127.0.0.1" in pairs
    assert "unix_socket_directories=%s" % pg.socket_dir in pairs
    assert "archive_mode=off" in pairs  # never push WAL into the real archive
    assert "ssl=off" in pairs
    assert "hba_file=%s" % pg.hba_file in pairs
    assert "recovery_target_action=promote" in pairs


def test_stop_mode_is_checked(tmp_path):
    pg = ScratchPostgres(str(tmp_path / "pg"))
    with pytest.raises(ConfigError):
        pg.stop(mode="gently")


def test_redis_password_only_in_a_private_config_file(tmp_path):
    r = ScratchRedis(str(tmp_path / "r"), port=56001, password='pa"ss word')
    os.makedirs(r.dir)
    r._write_conf()
    assert stat.S_IMODE(os.stat(r.conf_file).st_mode) == 0o600
    text = open(r.conf_file).read()
    assert 'requirepass "pa\\"ss word"' in text
    assert "bind 127.0.0.1\n" in text
    assert 'save ""' in text
    assert "appendonly no" in text
    assert r._cli_env()["REDISCLI_AUTH"] == 'pa"ss word'


def test_redis_without_password_sends_no_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("REDISCLI_AUTH", "from-the-caller")
    r = ScratchRedis(str(tmp_path / "r"), port=56002)
    assert "REDISCLI_AUTH" not in r._cli_env()


# ---------------------------------------------------------------- error paths with real servers


@pytest.mark.integration
def test_postgres_port_in_use_fails_with_the_server_log(scratch_dir):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    pg = ScratchPostgres(str(scratch_dir / "pg"), port=port)
    try:
        with pytest.raises(ToolError) as exc:
            pg.start(timeout=30)
        msg = str(exc.value)
        assert "exited during start-up" in msg
        assert "could not bind" in msg or "could not create any TCP/IP sockets" in msg
        assert not pg.is_running()
    finally:
        s.close()
        pg.destroy()
    assert not os.path.exists(str(scratch_dir / "pg"))


@pytest.mark.integration
def test_redis_port_in_use_fails_with_the_log(scratch_dir):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    r = ScratchRedis(str(scratch_dir / "r"), port=s.getsockname()[1])
    try:
        with pytest.raises(ToolError) as exc:
            r.start(timeout=10)
        assert "Address already in use" in str(exc.value)
    finally:
        s.close()
        r.destroy()
