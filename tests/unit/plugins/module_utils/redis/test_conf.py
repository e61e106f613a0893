# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""conf.py: the one redis.conf parser of redis_restore and
redis_persistence, on quoting, escapes, save rules and includes."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.redis.conf import read_conf, split_args
from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import read_redis_conf
from ansible_collections.drkit.backup.plugins.module_utils.redis.settings import read_conf_values

ALL = {"dir", "dbfilename", "appendonly", "appendfsync", "appenddirname", "appendfilename", "save", "include"}


@pytest.mark.parametrize("line, args", [
    (b"save 900 1", [b"save", b"900", b"1"]),
    (b'dir "/var/lib/redis"', [b"dir", b"/var/lib/redis"]),
    (b"dir '/var/lib/my redis'", [b"dir", b"/var/lib/my redis"]),
    (b'save ""', [b"save", b""]),
    (b'requirepass "a\\"b\\\\c"', [b"requirepass", b'a"b\\c']),
    (b"x 'it\\'s'", [b"x", b"it's"]),
    (b'dir "/srv/donn\\xc3\\xa9es"', [b"dir", "/srv/données".encode("utf-8")]),
    (b'x "tab\\there"', [b"x", b"tab\there"]),
    (b'x ab"cd"', [b"x", b"abcd"]),  # a quote may open inside a word, as in Redis
    (b"  spaced   out  ", [b"spaced", b"out"]),
    (b'x "open', None), (b"x 'open", None), (b'x "a"b', None),  # Redis refuses these lines
])
def test_split_args_like_redis(line, args):
    assert split_args(line) == args


def test_read_conf(tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_bytes(b'# comment\n   # indented comment\n\nsave 900 1\nSAVE 300 10\nappendonly YES\n'
                     b'appendfsync "everysec"\ndir "/var/lib/redis"\ndbfilename dump.rdb\n'
                     b'include /etc/redis/other.conf\ndir /var/lib/redis2\n')
    assert read_conf(str(conf), ALL) == {
        "save": "900 1 300 10", "appendonly": "yes", "appendfsync": "everysec", "dir": "/var/lib/redis2",
        "dbfilename": "dump.rdb", "include": "/etc/redis/other.conf"}  # last wins; include is not followed
    assert read_conf(str(conf), {"save"}) == {"save": "900 1 300 10"}
    conf.write_bytes(b'save 900 1\nsave ""\n')
    assert read_conf(str(conf), {"save"}) == {"save": ""}
    conf.write_bytes(b'save ""\nsave 3600 1\n')
    assert read_conf(str(conf), {"save"}) == {"save": "3600 1"}
    conf.write_bytes(b'dir "/unbalanced\n')  # Redis would not start with it; shown as it stands
    assert read_conf(str(conf), {"dir"}) == {"dir": '"/unbalanced'}


def test_a_rewritten_config_with_escaped_bytes(tmp_path):
    # CONFIG REWRITE quotes dir and escapes what is not printable ASCII:
    # the restore must find the real directory, not '/srv/donn\\xc3\\xa9es'
    conf = tmp_path / "redis.conf"
    conf.write_bytes(b'dir "/srv/donn\\xc3\\xa9es"\ndbfilename "dump \\"today\\".rdb"\nappendonly no\n')
    assert read_redis_conf(str(conf)) == {"dir": "/srv/données", "dbfilename": 'dump "today".rdb',
                                          "appendonly": "no"}
    assert read_conf_values(str(conf), {"dir"}) == {"dir": "/srv/données"}


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError):
        read_redis_conf(str(tmp_path / "missing.conf"))
    with pytest.raises(OSError):  # redis_persistence notes it and compares live values only
        read_conf_values(str(tmp_path / "missing.conf"), {"save"})
