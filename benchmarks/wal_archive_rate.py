#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL archive rate: how many 16 MiB segments per second each archive_command
stores, called the way PostgreSQL's archiver calls it (one file at a time, in
order, the next call only after the previous one returned 0; the status file
renamed .ready -> .done after each success), into SeaweedFS over HTTPS on
loopback. The segments are real: written by a PostgreSQL 15 cluster
(pg_logical_emit_message of md5 text, then pg_switch_wal), copied out once
and given to every method in a fresh pg_wal of its own.

Methods: drkit wal-push one process per segment; with --read-ahead; with
--async (the background pusher); pgBackRest archive-push synchronous and
with archive-async=y, process-max = the cores (as its users configure it for
speed). And drkit wal-stream, which is no archive_command: the same number of
segments written while it was stopped (its slot retains them), then the
time from its start until every one is stored (its sustained rate, process
start and connection included). Needs root and the Debian package pgbackrest. Usage:
  .venv/bin/python benchmarks/wal_archive_rate.py [--segments 64] [--runs 3] [--keep]
Prints a table; not a test.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from physical_vs_pgbackrest import (  # noqa: E402
    DRKIT,
    ScratchPostgres,
    TlsSeaweed,
    as_pg,
    chown_pg,
    make_scratch_dir,
    pgbackrest_repo_lines,
    require_pgbackrest,
    tear_down,
    write,
    write_drkit_config,
)


def make_segments(root, count):
    pg = ScratchPostgres(os.path.join(root, "pg"), password="bench-pw", settings={
        "wal_level": "replica", "max_wal_size": "4GB", "archive_mode": "off"})
    pg.start()
    src = os.path.join(root, "walsrc")
    os.mkdir(src, 0o755)
    names = []
    try:
        for _i in range(count):
            pg.psql("SELECT pg_logical_emit_message(false, 'bench', repeat(md5(random()::text), 400000))")
            name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
            shutil.copyfile(os.path.join(pg.data_dir, "pg_wal", name), os.path.join(src, name))
            names.append(name)
        pg.psql("CHECKPOINT")
    finally:
        pg.stop(mode="fast")
    return pg, src, names


def data_dir_for(root, label):
    return os.path.join(root, "pgdata-" + label)


def fresh_wal_dir(root, label, src, names, pg):
    """pgdata-LABEL/pg_wal with every segment .ready, and the cluster's
    pg_control (pgBackRest's async push reads pg_wal under pg1-path)."""
    data = data_dir_for(root, label)
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(os.path.join(data, "global"), 0o700)
    shutil.copyfile(os.path.join(pg.data_dir, "global", "pg_control"), os.path.join(data, "global", "pg_control"))
    wal_dir = os.path.join(data, "pg_wal")
    os.makedirs(os.path.join(wal_dir, "archive_status"))
    for n in names:
        shutil.copyfile(os.path.join(src, n), os.path.join(wal_dir, n))
        open(os.path.join(wal_dir, "archive_status", n + ".ready"), "w").close()
    subprocess.run(["chown", "-R", "postgres:", data], check=True)
    return wal_dir


def archiver(wal_dir, names, argv_for):
    """PostgreSQL's archiver loop; returns segments/s."""
    t0 = time.time()
    for n in names:
        _secs, p = as_pg(argv_for(os.path.join(wal_dir, n), n), check=False)
        if p.returncode != 0:
            raise SystemExit("archive command failed for %s: %s" % (n, (p.stderr + p.stdout).decode()[-2000:]))
        os.rename(os.path.join(wal_dir, "archive_status", n + ".ready"),
                  os.path.join(wal_dir, "archive_status", n + ".done"))
    return len(names) / (time.time() - t0)


def stream_catch_up(root, pg, s3, drkit_cfg, count, tag):
    """drkit wal-stream draining ``count`` segments its slot retained (written
    while it was stopped): the streamer's sustained rate, process start and
    connection included. Returns segments/s."""
    import signal

    slot = "bench_%s" % tag.replace("-", "_")
    pg.psql("SELECT pg_create_physical_replication_slot('%s', true)" % slot)
    names = []
    for _i in range(count):
        pg.psql("SELECT pg_logical_emit_message(false, 'bench', repeat(md5(random()::text), 400000))")
        names.append(pg.psql("SELECT pg_walfile_name(pg_switch_wal())"))
    spool = os.path.join(root, "stream-spool-" + tag)
    os.makedirs(spool, 0o700)
    chown_pg(spool)
    prefix = "stream-%s" % tag
    cfg = os.path.join(root, "stream-%s.yml" % tag)
    with open(drkit_cfg) as fh:
        base = fh.read()
    write(cfg, base + "login_host: 127.0.0.1\nport: %d\nlogin_user: postgres\nlogin_password: bench-pw\n"
          "slot_name: %s\nspool_dir: %s\nstorage_url: s3://bench/%s\n" % (pg.port, slot, spool, prefix))
    client = s3.client()
    wanted = set("%s/wal/%s/%s.zst" % (prefix, n[:8], n) for n in names)
    t0 = time.time()
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--"] + DRKIT.split() + ["wal-stream", "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            keys = set()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix + "/wal/"):
                keys.update(o["Key"] for o in page.get("Contents", []))
            if wanted <= keys:
                break
            if proc.poll() is not None:
                raise SystemExit("drkit wal-stream exited: %s" % proc.stderr.read().decode()[-2000:])
            time.sleep(0.05)
        secs = time.time() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        pg.psql("SELECT pg_drop_replication_slot('%s')" % slot)
    return count / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    pgbr_version = require_pgbackrest()
    cores = os.cpu_count()
    root = make_scratch_dir(prefix="drkit-bench-walrate-")
    os.chmod(root, 0o755)
    s3 = TlsSeaweed(os.path.join(root, "s3"))
    try:
        s3.start()
        s3.create_bucket("bench")
        pg, src, names = make_segments(root, args.segments)
        drkit_cfg = os.path.join(root, "drkit.yml")
        write_drkit_config(drkit_cfg, s3)

        def pgbr_conf(label, asynchronous):
            for d in ("log", "lock", "spool"):
                os.makedirs(os.path.join(root, "pgbr-%s-%s" % (label, d)), 0o700, exist_ok=True)
                chown_pg(os.path.join(root, "pgbr-%s-%s" % (label, d)))
            path = os.path.join(root, "pgbackrest-%s.conf" % label)
            write(path, "\n".join(pgbackrest_repo_lines(s3, "/pgbr-%s" % label, asynchronous) + [
                "log-path=%s/pgbr-%s-log" % (root, label), "lock-path=%s/pgbr-%s-lock" % (root, label),
                "spool-path=%s/pgbr-%s-spool" % (root, label), "log-level-console=warn", "log-level-file=warn",
                "[bench]", "pg1-path=%s" % data_dir_for(root, label), ""]))
            return path

        def drkit(extra):
            def argv_for(label):
                spool = os.path.join(root, "spool-" + label)
                os.makedirs(spool, 0o700, exist_ok=True)
                chown_pg(spool)
                url = "s3://bench/drkit-%s" % label
                flags = [a.replace("SPOOL", spool) for a in extra]
                return lambda path, name: DRKIT.split() + ["wal-push", "--config", drkit_cfg, "--storage-url", url] + \
                    flags + [path, name]
            return argv_for

        def pgbackrest(asynchronous):
            def argv_for(label):
                conf = pgbr_conf(label, asynchronous)
                as_pg(["pgbackrest", "--config=%s" % conf, "--stanza=bench", "--no-online", "stanza-create"])
                return lambda path, name: ["pgbackrest", "--config=%s" % conf, "--stanza=bench", "archive-push", path]
            return argv_for

        methods = [
            ("drkit wal-push (one process per segment)", drkit([])),
            ("drkit wal-push --read-ahead 4", drkit(["--spool-dir", "SPOOL", "--read-ahead", "4"])),
            ("drkit wal-push --async --read-ahead %d" % cores, drkit(["--spool-dir", "SPOOL", "--read-ahead",
                                                                      str(cores), "--async"])),
            ("drkit wal-push --async --read-ahead 4", drkit(["--spool-dir", "SPOOL", "--read-ahead", "4",
                                                             "--async"])),
            ("pgbackrest archive-push (sync, process-max=%d)" % cores, pgbackrest(False)),
            ("pgbackrest archive-push (archive-async=y, process-max=%d)" % cores, pgbackrest(True)),
        ]
        stream_label = "drkit wal-stream (draining its slot; not an archive_command)"
        rates = dict((m[0], []) for m in methods)
        rates[stream_label] = []
        for run in range(args.runs):
            for i, (label, make) in enumerate(methods):
                tag = "%d-%d" % (run, i)
                wal_dir = fresh_wal_dir(root, tag, src, names, pg)
                rates[label].append(archiver(wal_dir, names, make(tag)))
                # an async pusher leaves with its pg_wal
                shutil.rmtree(data_dir_for(root, tag), ignore_errors=True)
            pg.start()
            try:
                rates[stream_label].append(stream_catch_up(root, pg, s3, drkit_cfg, len(names), "%d-s" % run))
            finally:
                pg.stop(mode="fast")
        print()
        print("WAL archive rate: %d real 16 MiB segments, archiver loop (one call at a time, in order), "
              "SeaweedFS over HTTPS on loopback, zstd -3, %d cores; %s; medians of %d runs" % (
                  len(names), cores, pgbr_version, args.runs))
        print()
        print("| archive_command | segments/s (median) | runs | MiB/s of WAL |")
        print("|---|---:|---|---:|")
        for label in [m[0] for m in methods] + [stream_label]:
            med = statistics.median(rates[label])
            runs = " / ".join("%.2f" % r for r in rates[label])
            print("| %s | %.2f | %s | %.0f |" % (label, med, runs, med * 16))
        print()
    finally:
        tear_down([], s3, root, args.keep)


if __name__ == "__main__":
    main()
