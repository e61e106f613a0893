#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: drkit redis-snapshot against the raw "BGSAVE + copy" it
replaces, on a scratch redis-server (loopback, free port, own directory)
holding ~1 million keys.

Rows (median of --runs, alternating so both see the same cache state):
  raw       BGSAVE, poll INFO persistence until done (50 ms, as drkit), cp dump.rdb
  rdb       drkit redis-snapshot --mode rdb  -> file:// (zstd, sha256, redis-check-rdb,
            read back, manifest); a separate process, Python start-up included
  remote    drkit redis-snapshot --mode remote (RDB over SYNC, no local copy)
  aof       drkit redis-snapshot --mode aof (AOF on; pin, copy, redis-check-aof, tar)
  verify    drkit redis-verify --level restore (download, check, load into a scratch server)

Usage: .venv/bin/python benchmarks/redis_snapshot.py [--keys 1000000] [--value-size 64] [--runs 3]
Not a test: numbers only, no assertions.
"""

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRKIT = os.path.join(ROOT, "bin", "drkit")


def load_sandbox():

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from _engine import load_engine  # noqa: E402 pylint: disable=import-error
    load_engine()
    from drkit_engine.redis import scratch  # noqa: E402 pylint: disable=import-error
    return scratch


def populate(client, keys, value_size):
    """DEBUG POPULATE for the bulk (strings), plus 10% hashes, lists and sets
    so the RDB is not only one encoding."""
    client.execute_command("DEBUG", "POPULATE", int(keys * 0.9), "key", value_size)
    p = client.pipeline(transaction=False)
    rest = keys - int(keys * 0.9)
    for i in range(rest):
        k = "other:%d" % i
        if i % 3 == 0:
            p.hset(k, mapping={"a": "x" * 20, "b": str(i), "c": "y" * 10})
        elif i % 3 == 1:
            p.rpush(k, "a", "b", str(i))
        else:
            p.sadd(k, str(i), str(i + 1), "z")
        if i % 10000 == 9999:
            p.execute()
    p.execute()


def raw_bgsave_copy(client, rdb_path, dest):
    t0 = time.time()
    saves = client.info("persistence")["rdb_saves"]
    client.bgsave()
    while True:
        p = client.info("persistence")
        if not p["rdb_bgsave_in_progress"] and p["rdb_saves"] > saves:
            assert p["rdb_last_bgsave_status"] == "ok"
            break
        time.sleep(0.05)
    shutil.copyfile(rdb_path, dest)
    return time.time() - t0


def drkit(args, env):
    t0 = time.time()
    proc = subprocess.run([sys.executable, DRKIT] + args + ["--quiet"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("drkit %s failed: %s" % (args[0], proc.stderr))
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--value-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    sandbox = load_sandbox()
    work = tempfile.mkdtemp(prefix="drkit-redis-bench-")
    password = secrets.token_urlsafe(16)
    server = sandbox.ScratchRedis(os.path.join(work, "redis"), password=password, appendonly=True,
                                  extra_args=["--enable-debug-command", "yes"])
    server.start()
    try:
        import redis  # pylint: disable=import-outside-toplevel
        client = redis.Redis(host=server.host, port=server.port, password=password, socket_timeout=300)
        t0 = time.time()
        populate(client, args.keys, args.value_size)
        client.bgrewriteaof()
        while client.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.1)
        print("populated %d keys in %.1f s; used_memory %s" % (
            client.dbsize(), time.time() - t0, client.info("memory")["used_memory_human"]))
        env = dict(os.environ, REDISCLI_AUTH=password)
        env.pop("PGPASSWORD", None)
        storage = os.path.join(work, "storage")
        os.mkdir(storage)
        url = "file://" + storage
        conn = ["--host", server.host, "--port", str(server.port), "--storage-url", url]
        times = dict((k, []) for k in ("raw", "rdb", "remote", "aof", "verify"))
        for i in range(args.runs):
            times["raw"].append(raw_bgsave_copy(client, server.rdb_path, os.path.join(work, "copy.rdb")))
            times["rdb"].append(drkit(["redis-snapshot", "--mode", "rdb"] + conn, env))
            times["remote"].append(drkit(["redis-snapshot", "--mode", "remote"] + conn, env))
            times["aof"].append(drkit(["redis-snapshot", "--mode", "aof"] + conn, env))
            if i == 0:
                times["verify"].append(drkit(["redis-verify", "--level", "restore", "--storage-url", url], env))
        rdb_size = os.path.getsize(server.rdb_path)
        stored = {}
        for root, _dirs, files in os.walk(storage):
            for f in files:
                if f.endswith(".zst"):
                    stored[f] = os.path.getsize(os.path.join(root, f))
        raw = statistics.median(times["raw"])
        print()
        print("Redis %s, %d keys, RDB %.1f MiB, %d CPUs, load average %.1f, %d runs" % (
            client.info("server")["redis_version"], args.keys, rdb_size / 2.0 ** 20, os.cpu_count(),
            os.getloadavg()[0], args.runs))
        print()
        print("| what | median s | min-max s | vs raw (median) |")
        print("|---|---:|---:|---:|")
        labels = {"raw": "raw BGSAVE + cp dump.rdb", "rdb": "drkit redis-snapshot --mode rdb",
                  "remote": "drkit redis-snapshot --mode remote", "aof": "drkit redis-snapshot --mode aof",
                  "verify": "drkit redis-verify --level restore"}
        for k in ("raw", "rdb", "remote", "aof", "verify"):
            m = statistics.median(times[k])
            print("| %s | %.2f | %.2f-%.2f | %.2fx |" % (labels[k], m, min(times[k]), max(times[k]), m / raw))
        print()
        print("stored sizes (zstd -3): %s" % ", ".join("%s %.1f MiB" % (k, v / 2.0 ** 20)
                                                       for k, v in sorted(stored.items())))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


if __name__ == "__main__":
    main()
