# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scratch.py: ScratchPostgres, the parts that need no running server, plus
the error paths of a real one (those start a server and are marked
integration)."""

import os
import socket

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ToolError
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres

IS_ROOT = os.geteuid() == 0


@pytest.mark.skipif(not IS_ROOT, reason="the postgres OS user is only used when running as root")
def test_postgres_base_dir_below_root_only_dir_is_refused_before_anything_runs(tmp_path):
    # pytest's tmp_path is below /tmp/pytest-of-root (0700)
    base = tmp_path / "pg"
    pg = ScratchPostgres(str(base))
    with pytest.raises(ConfigError) as exc:
        pg.start()
    assert "cannot enter" in str(exc.value)
    assert not pg.is_running()


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


# --------------------------------------------------------------------------
# error paths with a real server


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
