# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scratch.py: ScratchRedis (through tests/support/redis_server.py), the
parts that need no running server, plus the error path of a real one
(marked integration)."""

import os
import socket
import stat

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ToolError
from support.redis_server import ScratchRedis


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


# --------------------------------------------------------------------------
# error paths with a real server


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
