# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""client.py: RESP encoding, INFO parsing, replies of every type and errors
that never echo arguments (a fake server on a socket pair stands in for
Redis where only the protocol matters), and the connection parameters."""

import socket
import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, SourceError
from ansible_collections.drkit.backup.plugins.module_utils.redis import client as redis_client


def test_encode_and_parse_info():
    assert redis_client.encode(["SET", b"k\r\n", 5]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n"
    info = redis_client.parse_info("# Persistence\r\nrdb_saves:3\r\nrdb_last_bgsave_status:ok\r\n"
                                   "mem_fragmentation_ratio:1.25\r\n# Keyspace\r\n"
                                   "db0:keys=10,expires=2,avg_ttl=5\r\ndb12:keys=1,expires=0,avg_ttl=0\r\n")
    assert info["rdb_saves"] == 3 and info["rdb_last_bgsave_status"] == "ok"
    assert info["mem_fragmentation_ratio"] == 1.25
    assert redis_client.keyspace(info) == {"db0": {"keys": 10, "expires": 2}, "db12": {"keys": 1, "expires": 0}}


class FakeServer(threading.Thread):
    """Answers each command from a script of raw replies."""

    def __init__(self, sock, replies):
        super(FakeServer, self).__init__()
        self.daemon = True
        self.sock = sock
        self.replies = list(replies)
        self.received = b""

    def run(self):
        for r in self.replies:
            self.received += self.sock.recv(65536)
            self.sock.sendall(r)


def client_pair(replies):
    a, b = socket.socketpair()
    srv = FakeServer(b, replies)
    srv.start()
    c = redis_client.RedisClient({"host": "fake", "port": 1, "user": None, "password": None, "tls": False,
                                  "tls_ca_cert": None, "tls_cert": None, "tls_key": None,
                                  "tls_validate_certs": True, "connect_timeout": 5})
    c.sock = a
    return c, srv


def test_replies_of_every_type_and_errors_never_echo_arguments():
    c, srv = client_pair([b"+OK\r\n", b":42\r\n", b"$-1\r\n", b"*2\r\n$3\r\nabc\r\n*1\r\n:1\r\n",
                          b"-NOPERM this user has no permissions to run the 'config|set' command\r\n"])
    assert c.execute("PING") == "OK"
    assert c.execute("INCR", "x") == 42
    assert c.execute("GET", "nope") is None
    assert c.execute("X") == [b"abc", [1]]
    with pytest.raises(SourceError) as e:
        c.call("CONFIG", "SET", "requirepass", "s3cr3t-value")
    assert "CONFIG SET" in str(e.value) and "s3cr3t-value" not in str(e.value)
    assert "lacks permission" in str(e.value)
    srv.join(5)


class ResetSocket(object):
    """A connection the server reset (a restart under load): recv and send fail."""

    def recv(self, _size):
        raise ConnectionResetError(104, "Connection reset by peer")

    def sendall(self, _data):
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("call", ["read", "send"])
def test_a_reset_connection_is_a_closed_connection_not_a_failed_one(call):
    c, _srv = client_pair([])
    c.sock = ResetSocket()
    with pytest.raises(SourceError) as e:
        if call == "read":
            c.read_line()
        else:
            c.send(["PING"])
    assert "Redis at fake:1 closed the connection" in str(e.value)
    assert e.value.details.get("retryable") is True


def test_conn_params_rules(monkeypatch):
    monkeypatch.delenv("REDISCLI_AUTH", raising=False)
    cp = redis_client.conn_params({})
    assert (cp["host"], cp["port"], cp["password"], cp["tls"]) == ("localhost", 6379, None, False)
    monkeypatch.setenv("REDISCLI_AUTH", "from-env")
    assert redis_client.conn_params({})["password"] == "from-env"
    assert redis_client.conn_params({"login_password": "given"})["password"] == "given"
    monkeypatch.delenv("REDISCLI_AUTH")
    with pytest.raises(ConfigError):
        redis_client.conn_params({"login_user": "backup"})
    with pytest.raises(ConfigError):
        redis_client.conn_params({"tls": True, "tls_cert": "/x.pem"})
    with pytest.raises(ConfigError):
        redis_client.conn_params({"tls_ca_cert": "/ca.pem"})
