# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the Redis tests: real scratch redis-servers, sample data,
restoring a backup BY HAND (independently of the engine) to check it."""

import io
import os
import random
import secrets
import subprocess
import tarfile
import time
from pathlib import Path

import zstandard

from support.redis_server import ScratchRedis


def start_redis(base_dir, password=None, appendonly=False, extra_args=None):
    """A started ScratchRedis (own dir, free loopback port); the caller destroys it."""
    server = ScratchRedis(str(base_dir), password=password, appendonly=appendonly,
                          extra_args=extra_args)
    server.start()
    return server


def new_password():
    return "pw-" + secrets.token_urlsafe(12)


def fill(server, n, seed=1, db=0, ttl_every=0, prefix="k"):
    """n keys of mixed types in ``db``; every ttl_every-th key gets a long
    TTL. Returns {key: value-as-dumped} of a sample for later comparison."""
    rnd = random.Random(seed)
    c = server.client(db=db)
    p = c.pipeline(transaction=False)
    for i in range(n):
        key = "%s:%d" % (prefix, i)
        kind = i % 5
        if kind == 0:
            p.hset(key, mapping={"a": str(i), "b": "x" * (i % 17)})
        elif kind == 1:
            p.rpush(key, *[str(i + j) for j in range(3)])
        elif kind == 2:
            p.sadd(key, str(i), str(i * 2))
        elif kind == 3:
            p.zadd(key, {str(i): i, "m": 1})
        else:
            p.set(key, "v%d-%s" % (i, rnd.random()))
        if ttl_every and i % ttl_every == 0:
            p.expire(key, 86400)
        if i % 5000 == 4999:
            p.execute()
    p.execute()
    c.close()


def dump_values(server, keys, db=0):
    """{key: DUMP payload} (type-independent value comparison)."""
    c = server.client(db=db)
    try:
        return dict((k, c.dump(k)) for k in keys)
    finally:
        c.close()


def sample_keys(n, count=200, seed=3, prefix="k"):
    rnd = random.Random(seed)
    return ["%s:%d" % (prefix, rnd.randrange(n)) for _i in range(count)]


def info(server, section):
    c = server.client()
    try:
        return c.info(section)
    finally:
        c.close()


def keyspace(server):
    return dict((db, {"keys": v["keys"], "expires": v["expires"]})
                for db, v in info(server, "keyspace").items())


def children(server):
    pid = server._proc.pid
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def wait_until(pred, timeout=30, interval=0.02, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s" % what)


def unpack_by_hand(data, compressed, dest):
    """Decompress an artifact's bytes; an RDB goes to dest/dump.rdb, an AOF
    tar is unpacked to dest/appendonlydir. Returns 'rdb' or 'aof'."""
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data) if compressed else data
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if raw[:5] == b"REDIS":
        (dest / "dump.rdb").write_bytes(raw)
        return "rdb"
    aof = dest / "appendonlydir"
    aof.mkdir()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for m in tar.getmembers():
            assert m.isfile() and m.name.startswith("aof/") and "/" not in m.name[4:], m.name
            (aof / m.name[4:]).write_bytes(tar.extractfile(m).read())
    return "aof"


def check_tool(name, path):
    """Run redis-check-rdb / redis-check-aof by hand; returns (rc, output)."""
    proc = subprocess.run([name, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    return proc.returncode, proc.stdout


def aof_manifest(aofdir):
    found = [p for p in Path(aofdir).iterdir() if p.name.endswith(".manifest")]
    assert len(found) == 1, found
    return found[0]


def base(tmp_path, name):
    p = Path(tmp_path) / name
    return str(p)


def env_without_secrets():
    e = dict(os.environ)
    for k in ("REDISCLI_AUTH", "PGPASSWORD"):
        e.pop(k, None)
    return e
