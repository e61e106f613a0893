#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Benchmark of the logical backup and restore paths on the sample dataset.

Prints one table (wall time, peak RSS, stored size) for:
  (a) pg_dump -Fc -f file           (default compression: what the audit runs today)
  (b) pg_dump -Fc -Z0 -f file       (the floor: dumping alone)
  (c) drkit pg-backup -> directory  (verification included)
  (d) drkit pg-backup -> SeaweedFS  (verification included)
and for restores of the same backup:
  (e) pg_restore -j N of a local dump file (raw)
  (f) drkit restore -j N from SeaweedFS (download + restore + row-count check)
  (g) drkit verify --level restore from SeaweedFS
then alternating restores of the same backup (medians of --restore-repeat):
  raw      pg_restore -j N of the dump already downloaded and decompressed
  tuned    the same with drkit's session settings for restores (PGOPTIONS:
           maintenance_work_mem, synchronous_commit), to show what they give
  drkit-dir  (--from-directory) drkit restore -j N of the (c) backup from
           the file:// storage: no S3 server sharing the cores
  after-get  (--after-get) raw again, but right after the stored object was
           read from SeaweedFS (and thrown away, untimed): what a download
           just before costs the restore on a machine that also runs the S3
           server
  by hand  what one does without drkit: download the stored object from
           SeaweedFS (boto3), zstd -d, pg_restore -j N (no checks)
  drkit    drkit restore -j N from SeaweedFS (sha256, row counts, rename
           into place)

Peak RSS is that of the measured process itself (our Python process, or
pg_dump/pg_restore), measured by GNU time; child tools are not added in.

Usage: .venv/bin/python benchmarks/pg_backup_bench.py [--scale 1.0] [--jobs 2] [--keep]
Not a test: numbers only, no assertions.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_measured(argv, env=None, stdout=subprocess.DEVNULL, want_json=False):
    """Run argv; returns (seconds, peak RSS in MiB of that process, returncode).

    GNU time measures the peak RSS: a child forked straight from this (large)
    Python process would be charged with our own memory at fork time."""
    full = dict(os.environ)
    full.update(env or {})
    timer = ["/usr/bin/time", "-f", "DRKIT_MAXRSS_KB %M"] if os.access("/usr/bin/time", os.X_OK) else []
    t0 = time.time()
    p = subprocess.run(timer + list(argv), env=full, stdout=subprocess.PIPE if want_json else stdout,
                       stderr=subprocess.PIPE, check=False)
    secs = time.time() - t0
    err = p.stderr.decode("utf-8", "replace")
    if p.returncode != 0:
        raise SystemExit("%s failed (%s): %s" % (argv[0], p.returncode, err[-2000:]))
    rss = float("nan")
    for line in err.splitlines():
        if line.startswith("DRKIT_MAXRSS_KB "):
            rss = int(line.split()[1]) / 1024.0
    if want_json:
        return secs, rss, json.loads(p.stdout.decode("utf-8"))
    return secs, rss, p.returncode


def med(values):
    return sorted(values)[len(values) // 2]


def dir_size(path):
    total = 0
    for dp, _dn, fns in os.walk(path):
        for f in fns:
            total += os.path.getsize(os.path.join(dp, f))
    return total


def restore_by_hand(cli, key, work, bindir, jobs, dbname, env):
    """Download the stored dump, zstd -d it (unless pg_dump compressed it
    itself), pg_restore -j it: the manual path from the same storage, without
    drkit's checks. Returns seconds."""
    zst = os.path.join(work, "hand.pgdump.zst")
    dump = os.path.join(work, "hand.pgdump")
    t0 = time.time()
    if key.endswith(".zst"):
        cli.download_file("bench", key, zst)
        subprocess.run(["zstd", "-q", "-d", "-f", zst, "-o", dump], check=True)
        os.unlink(zst)
    else:
        cli.download_file("bench", key, dump)
    subprocess.run([os.path.join(bindir, "pg_restore"), "-j", str(jobs), "-d", dbname, dump],
                   env=dict(os.environ, **env), check=True)
    secs = time.time() - t0
    os.unlink(dump)
    return secs


def stored_dump_key(cli):
    keys = [o["Key"] for o in cli.list_objects_v2(Bucket="bench", Prefix="pg/").get("Contents", [])
            if o["Key"].endswith((".pgdump.zst", ".pgdump"))]
    return sorted(keys)[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--pg-bin-dir", help="PostgreSQL to run and dump with (default: the system's 15); "
                    "build/pg-18.6.0/bin (scripts/bootstrap.sh) for pg_dump's own zstd")
    ap.add_argument("--drkit-work-dir", help="work_dir for drkit's restores (default: the benchmark's directory)")
    ap.add_argument("--after-get", action="store_true",
                    help="add the after-get case: raw pg_restore right after reading the object from SeaweedFS")
    ap.add_argument("--from-directory", action="store_true",
                    help="add the drkit-dir case: drkit restore from the file:// storage of case (c)")
    ap.add_argument("--restore-repeat", type=int, default=3,
                    help="alternating raw/drkit restore pairs for the median comparison")
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from _engine import load_engine  # noqa: E402
    load_engine()
    from drkit_engine.demo import sample_data  # noqa: E402
    from drkit_engine.pg.dump import session_options  # noqa: E402
    from drkit_engine.pg.scratch import ScratchPostgres  # noqa: E402
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from support.seaweedfs import SeaweedS3  # noqa: E402

    work = tempfile.mkdtemp(prefix="drkit-bench-")
    os.chmod(work, 0o755)
    pg = ScratchPostgres(os.path.join(work, "pg"), bin_dir=args.pg_bin_dir)
    s3 = SeaweedS3(os.path.join(work, "s3"))
    rows = []
    try:
        pg.start()
        s3.start()
        s3.create_bucket("bench")
        t0 = time.time()
        info = sample_data.generate(pg.conninfo("postgres"), scale=args.scale, seed=42, database="agentic_platform",
                                    progress=lambda m: sys.stderr.write("  %s\n" % m))
        sys.stderr.write("sample dataset: %.0f MB in %.1f s\n" % (info["size_bytes"] / 1e6, time.time() - t0))
        bindir = pg.bin_dir
        pg_version = subprocess.run([os.path.join(bindir, "pg_dump"), "--version"], check=True,
                                    stdout=subprocess.PIPE).stdout.decode().strip()
        env = dict(pg.env("agentic_platform"))
        s3env = dict(env)
        s3env.update(s3.env())
        drkit = [sys.executable, os.path.join(ROOT, "bin", "drkit")]
        drkit_work = args.drkit_work_dir or work
        # The raw tools connect through the Unix socket (PGHOST in env): so does drkit,
        # or the comparison would be TCP loopback against a socket (about 5% on a restore).
        login = ["--host", env["PGHOST"], "--port", str(pg.port), "--user", pg.superuser, "--pg-bin-dir", bindir]
        # Warm the cache so the first case is not penalised.
        subprocess.run([os.path.join(bindir, "psql"), "-qAtc",
                        "SELECT count(*) FROM mcp_documents.api_requests"], env=dict(os.environ, **env),
                       check=True, stdout=subprocess.DEVNULL)

        f_a = os.path.join(work, "a.pgdump")
        s, r, c = run_measured([os.path.join(bindir, "pg_dump"), "-Fc", "-f", f_a, "agentic_platform"], env)
        rows.append(("(a) pg_dump -Fc -f file", s, r, os.path.getsize(f_a)))
        os.unlink(f_a)

        f_b = os.path.join(work, "b.pgdump")
        s, r, c = run_measured([os.path.join(bindir, "pg_dump"), "-Fc", "-Z0", "-f", f_b, "agentic_platform"], env)
        rows.append(("(b) pg_dump -Fc -Z0 -f file", s, r, os.path.getsize(f_b)))

        store = os.path.join(work, "store")
        s, r, c = run_measured(drkit + ["pg-backup", "-q", "-d", "agentic_platform", "--storage-url",
                                        "file://" + store] + login, env)
        rows.append(("(c) drkit pg-backup -> directory", s, r, dir_size(store)))

        s, r, c = run_measured(drkit + ["pg-backup", "-q", "-d", "agentic_platform", "--storage-url",
                                        "s3://bench/pg"] + login, s3env)
        cli = s3.client()
        size_d = sum(o["Size"] for o in cli.list_objects_v2(Bucket="bench", Prefix="pg/").get("Contents", []))
        rows.append(("(d) drkit pg-backup -> SeaweedFS", s, r, size_d))

        # Restores of the same dump: raw pg_restore -j of the local file vs drkit.
        psql = [os.path.join(bindir, "psql"), "-qAt", "-d", "postgres", "-c"]

        def drop_now(name):
            # A restored database left behind gets autovacuumed (1 GB of new
            # rows) while the next case runs: drop it, and checkpoint.
            subprocess.run(psql + ["DROP DATABASE IF EXISTS %s" % name], env=dict(os.environ, **env), check=True)
            subprocess.run(psql + ["CHECKPOINT"], env=dict(os.environ, **env), check=True)
        subprocess.run(psql + ["CREATE DATABASE raw_restore TEMPLATE template0"], env=dict(os.environ, **env),
                       check=True)
        s, r, c = run_measured([os.path.join(bindir, "pg_restore"), "-j", str(args.jobs), "-d", "raw_restore",
                                f_b], env)
        rows.append(("(e) pg_restore -j%d local file (raw)" % args.jobs, s, r, None))
        drop_now("raw_restore")
        raw_restore = s
        # The same dump drkit stored (written by pg_dump to a pipe), restored raw.
        f_same = os.path.join(work, "same.pgdump")
        import zstandard  # noqa: E402
        stored_key = stored_dump_key(cli)
        with open(f_same, "wb") as out:
            body = cli.get_object(Bucket="bench", Key=stored_key)["Body"]
            if stored_key.endswith(".zst"):
                zstandard.ZstdDecompressor().copy_stream(body, out)
            else:
                shutil.copyfileobj(body, out, 1 << 20)
        subprocess.run(psql + ["CREATE DATABASE raw_restore2 TEMPLATE template0"], env=dict(os.environ, **env),
                       check=True)
        s, r, _rc = run_measured([os.path.join(bindir, "pg_restore"), "-j", str(args.jobs), "-d", "raw_restore2",
                                  f_same], env)
        rows.append(("(e2) pg_restore -j%d of drkit's dump, local (raw)" % args.jobs, s, r, None))
        drop_now("raw_restore2")
        raw_same = s
        timings = []
        s, r, res = run_measured(drkit + ["restore", "-q", "--json", "--storage-url", "s3://bench/pg",
                                          "--target-database", "drkit_restore", "-j", str(args.jobs),
                                          "--work-dir", drkit_work] + login, s3env, want_json=True)
        rows.append(("(f) drkit restore -j%d from SeaweedFS" % args.jobs, s, r, None))
        drop_now("drkit_restore")
        timings.append(("(f)", res["timings"]))
        drkit_restore = s
        s, r, res = run_measured(drkit + ["restore", "-q", "--json", "--storage-url", "s3://bench/pg",
                                          "--target-database", "drkit_restore1", "-j", "1"] + login, s3env,
                                 want_json=True)
        rows.append(("(f1) drkit restore -j1 streamed", s, r, None))
        drop_now("drkit_restore1")
        timings.append(("(f1)", res["timings"]))
        s, r, res = run_measured(drkit + ["verify", "-q", "--json", "--level", "restore", "--storage-url",
                                          "s3://bench/pg", "-j", str(args.jobs), "--work-dir", drkit_work] + login,
                                 s3env, want_json=True)
        rows.append(("(g) drkit verify --level restore -j%d" % args.jobs, s, r, None))
        timings.append(("(g)", res["timings"]))
        # Restore times swing with checkpoints and page cache: alternate raw and
        # drkit restores of the same dump and compare medians.
        pairs = []

        def one(kind, i):
            name = "rr_%s_%d" % (kind.replace("-", "_"), i)
            drop_now(name)
            if kind in ("drkit", "drkit-dir"):
                url = "file://" + store if kind == "drkit-dir" else "s3://bench/pg"
                secs, _r, res = run_measured(drkit + ["restore", "-q", "--json", "--storage-url", url,
                                                      "--target-database", name, "-j", str(args.jobs),
                                                      "--work-dir", drkit_work] + login, s3env, want_json=True)
                timings_i = res["timings"]
            else:
                subprocess.run(psql + ["CREATE DATABASE %s TEMPLATE template0" % name],
                               env=dict(os.environ, **env), check=True)
                timings_i = None
                if kind == "after-get":
                    body = cli.get_object(Bucket="bench", Key=stored_key)["Body"]
                    while body.read(1 << 20):
                        pass
                if kind in ("raw", "tuned", "after-get"):
                    secs = run_measured([os.path.join(bindir, "pg_restore"), "-j", str(args.jobs), "-d", name,
                                         f_same], dict(env, PGOPTIONS=session_options()) if kind == "tuned" else env)[0]
                else:
                    secs = restore_by_hand(cli, stored_key, work, bindir, args.jobs, name, env)
            drop_now(name)
            return secs, timings_i

        kinds = (["raw", "tuned", "hand", "drkit"] + (["after-get"] if args.after_get else [])
                 + (["drkit-dir"] if args.from_directory else []))
        for i in range(args.restore_repeat):
            got = {}
            shift = i % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:  # rotate the order from round to round
                got[kind] = one(kind, i)
            pairs.append((got["raw"][0], got["drkit"][0], got["drkit"][1], got["hand"][0], got["tuned"][0],
                          got["after-get"][0] if args.after_get else None,
                          got["drkit-dir"] if args.from_directory else None))
    finally:
        s3.stop()
        pg.destroy()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    a = rows[0]
    b = rows[1]
    print()
    print("sample dataset: scale %.2f, database %.0f MB, %d CPUs, %s"
          % (args.scale, info["size_bytes"] / 1e6, os.cpu_count(), pg_version))
    print("| case | wall s | peak RSS MiB | stored MB | vs (a) | vs (b) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s, r, size in rows:
        print("| %s | %.2f | %.0f | %s | %s | %s |" % (
            name, s, r, "%.1f" % (size / 1e6) if size else "-",
            "%.2fx" % (s / a[1]) if size else "-", "%.2fx" % (s / b[1]) if size else "-"))
    print()
    ratios = (drkit_restore / raw_same, drkit_restore / raw_restore)
    print("restore overhead: drkit restore -j%d / raw pg_restore -j%d of the same dump = %.2fx "
          "(of pg_dump's own file: %.2fx)" % ((args.jobs, args.jobs) + ratios))
    if pairs:
        raw_m = med([p[0] for p in pairs])
        drkit_m = med([p[1] for p in pairs])
        pgr_m = med([p[2].get("restore_seconds", 0) for p in pairs])
        hand_m = med([p[3] for p in pairs])
        tuned_m = med([p[4] for p in pairs])
        print("median of %d rotated rounds: raw pg_restore -j%d %.2f s; raw with drkit's settings (%s) %.2f s; "
              "by hand from SeaweedFS %.2f s; drkit restore -j%d %.2f s = %.2fx raw, %.2fx raw with the settings, "
              "%.2fx by hand; drkit's pg_restore steps %.2f s (%.2fx raw)"
              % (len(pairs), args.jobs, raw_m, session_options(), tuned_m, hand_m, args.jobs, drkit_m,
                 drkit_m / raw_m, drkit_m / tuned_m, drkit_m / hand_m, pgr_m, pgr_m / raw_m))
        print("rounds (raw / tuned / by hand / drkit s): %s" % "; ".join(
            "%.2f / %.2f / %.2f / %.2f" % (p[0], p[4], p[3], p[1]) for p in pairs))
        if args.after_get:
            after_m = med([p[5] for p in pairs])
            print("raw pg_restore -j%d right after reading the object from SeaweedFS: median %.2f s (%.2fx raw); "
                  "drkit's pg_restore steps / it = %.2fx; rounds: %s" % (
                      args.jobs, after_m, after_m / raw_m, pgr_m / after_m,
                      ", ".join("%.2f" % p[5] for p in pairs)))
        if args.from_directory:
            dir_m = med([p[6][0] for p in pairs])
            print("drkit restore -j%d from the file:// storage: median %.2f s = %.2fx raw; rounds: %s" % (
                args.jobs, dir_m, dir_m / raw_m, ", ".join("%.2f" % p[6][0] for p in pairs)))
    for name, t in timings + [("round %d" % (i + 1), p[2]) for i, p in enumerate(pairs)]:
        print("%s timings: download %.2f s, pg_restore %.2f s (pre-data %.2f s during the download, then waited "
              "%.2f s for it), row-count check %.2f s (%s)%s" % (
                  name, t.get("download_seconds", 0), t.get("restore_seconds", 0), t.get("pre_data_seconds", 0),
                  t.get("wait_seconds", 0), t.get("check_seconds", 0), t.get("row_count_method", "count"),
                  " (download streamed into pg_restore)" if t.get("streamed") else ""))


if __name__ == "__main__":
    main()
