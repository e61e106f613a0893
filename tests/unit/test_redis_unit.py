# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the Redis engine's pure parts (a fake server on a socket
pair stands in for Redis where only the protocol matters)."""

import socket
import threading

import pytest

from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import validate
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot_sync import PayloadReader
from ansible_collections.drkit.backup.plugins.module_utils.redis.tools import parse_aof_manifest, parse_check_output
from ansible_collections.drkit.backup.plugins.module_utils.redis import client as redis_client
from ansible_collections.drkit.backup.plugins.module_utils.redis import settings as redis_settings
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, SourceError
from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import read_redis_conf
from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import compare_keyspace


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


class FakeClient(object):
    def __init__(self, data):
        self.data = data

    def read_some(self, n):
        chunk, self.data = self.data[:min(n, 7)], self.data[min(n, 7):]
        if not chunk:
            raise SourceError("closed")
        return chunk


def _drain(reader):
    out = b""
    while True:
        d = reader.read(1 << 20)
        if not d:
            return out
        out += d


def test_payload_reader_length_and_eof_mark():
    assert _drain(PayloadReader(FakeClient(b"REDIS0011abcdefTRAILING"), length=15)) == b"REDIS0011abcdef"
    mark = b"m" * 40
    payload = b"REDIS0011" + b"x" * 100
    got = _drain(PayloadReader(FakeClient(payload + mark + b"*1\r\n$4\r\nPING\r\n"), eof_mark=mark))
    assert got == payload


def test_parse_check_output_and_aof_manifest():
    text = ("[offset 27] AUX FIELD redis-ver = '7.0.15'\n[offset 82] Selecting DB ID 0\n"
            "[offset 568990] Selecting DB ID 2\n\\o/ RDB looks OK! \\o/\n[info] 20002 keys read\n"
            "[info] 1 expires\n[info] 0 already expired\n")
    assert parse_check_output(text) == {"keys": 20002, "expires": 1, "already_expired": 0,
                                                     "dbs": [0, 2], "redis_ver": "7.0.15"}
    m = parse_aof_manifest('file appendonly.aof.2.base.rdb seq 2 type b\n'
                                        'file "odd name.aof.3.incr.aof" seq 3 type i\n'
                                        'file appendonly.aof.1.incr.aof seq 1 type h\n')
    assert [(e["file"], e["type"]) for e in m] == [("appendonly.aof.2.base.rdb", "b"),
                                                   ("odd name.aof.3.incr.aof", "i"),
                                                   ("appendonly.aof.1.incr.aof", "h")]
    with pytest.raises(IntegrityError):
        parse_aof_manifest("file ../../etc/passwd seq 1 type b\n")


def test_validate_options():
    assert validate({}) == ("rdb", 3, 600.0, 2000)
    for bad in ({"mode": "bgsave"}, {"compression_level": 25}, {"timeout": -1}, {"pause_timeout": 5}):
        with pytest.raises(ConfigError):
            validate(bad)


def test_save_rules_and_conf_parsing(tmp_path):
    assert redis_settings.normalise_save(["3600 1", "300 100"]) == "3600 1 300 100"
    assert redis_settings.normalise_save("900 1 60 10000") == "900 1 60 10000"
    assert redis_settings.normalise_save([]) == "" and redis_settings.normalise_save([""]) == ""
    assert redis_settings.normalise_save([[60, 10]]) == "60 10"
    for bad in (["3600"], ["x 1"], ["0 1"]):
        with pytest.raises(ConfigError):
            redis_settings.normalise_save(bad)
    conf = tmp_path / "redis.conf"
    conf.write_text('# comment\nsave 900 1\nsave 300 10\nappendonly YES\nappendfsync "everysec"\n'
                    'dir "/var/lib/redis"\ndbfilename dump.rdb\n')
    assert redis_settings.read_conf_values(str(conf), {"save", "appendonly", "appendfsync"}) == {
        "save": "900 1 300 10", "appendonly": "yes", "appendfsync": "everysec"}
    conf.write_text('save 900 1\nsave ""\n')
    assert redis_settings.read_conf_values(str(conf), {"save"}) == {"save": ""}
    conf.write_text('dir "/var/lib/redis"\nappendonly yes\nappenddirname "aofdir"\n')
    assert read_redis_conf(str(conf)) == {"dir": "/var/lib/redis", "appendonly": "yes", "appenddirname": "aofdir"}


def test_desired_settings_refuses_paths_and_secrets():
    assert redis_settings.desired_settings({"appendonly": True, "settings": {"aof_use_rdb_preamble": True}}) == {
        "appendonly": "yes", "aof-use-rdb-preamble": "yes"}
    for bad in ({}, {"appendfsync": "sometimes"}, {"settings": {"requirepass": "x"}},
                {"appendonly": True, "settings": {"appendonly": "no"}}):
        with pytest.raises(ConfigError):
            redis_settings.desired_settings(bad)


def test_compare_keyspace_rules():
    data = {"key_counts_exact": True,
            "keyspace": {"db0": {"keys": 100, "expires": 10}, "db1": {"keys": 5, "expires": 0}}}
    rows, problems, how = compare_keyspace(data, {"db0": {"keys": 95}, "db1": {"keys": 5}})
    assert problems == [] and how == "exact per database"  # 5 keys with a TTL expired before loading: fine
    _r, problems, _h = compare_keyspace(data, {"db0": {"keys": 89}, "db1": {"keys": 5}})
    assert problems and "db0" in problems[0]
    _r, problems, _h = compare_keyspace(data, {"db0": {"keys": 100}, "db1": {"keys": 5}, "db3": {"keys": 1}})
    assert problems == ["db3: expected 0 keys, restored 1"]
    approx = {"key_counts_exact": False, "keyspace": {"db0": {"keys": 7, "expires": 0}},
              "rdb": {"check": {"keys": 10, "expires": 0}}}
    assert compare_keyspace(approx, {"db0": {"keys": 10}})[1] == []
    assert compare_keyspace(approx, {"db0": {"keys": 9}})[1]
    aof = {"key_counts_exact": False, "keyspace": {"db0": {"keys": 7, "expires": 0}}}
    rows, problems, how = compare_keyspace(aof, {"db0": {"keys": 9}})
    assert problems == [] and how.startswith("not compared")
