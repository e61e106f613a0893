#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replay speed of restore_command: the same base backup and the same WAL
(at least 1 GiB by default: pgbench -i after the backup), archived by both
tools into SeaweedFS over HTTPS on loopback, replayed to the end of the
archive and promoted, once per restore_command:

  drkit wal-fetch                             one process per segment, nothing ahead
  drkit wal-fetch --prefetch 4                parallel downloads inside each call
  drkit wal-fetch --prefetch 4 --async        the background fetcher (pg_pitr's default)
  pgbackrest archive-get                      synchronous
  pgbackrest archive-get, archive-async=y     its asynchronous queue, process-max = the cores

Each run starts from a fresh copy of the data directory pgBackRest restored
(the base backup), with only restore_command changed, and is timed from
pg_ctl start until pg_is_in_recovery() is false. Needs root and the Debian
package pgbackrest. Usage:
  .venv/bin/python benchmarks/wal_replay_rate.py [--scale 70] [--runs 3] [--keep]
Prints a table; not a test.
"""

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from physical_vs_pgbackrest import (  # noqa: E402
    DRKIT,
    PGPASSFILE,
    ScratchPostgres,
    TlsSeaweed,
    as_pg,
    chown_pg,
    free_port,
    make_scratch_dir,
    pgbackrest_repo_lines,
    require_pgbackrest,
    tear_down,
    wait_archived,
    wait_promoted,
    write,
    write_drkit_config,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=70, help="pgbench -i scale after the base backup (70: ~1.1 GiB WAL)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    pgbr_version = require_pgbackrest()
    cores = os.cpu_count()
    root = make_scratch_dir(prefix="drkit-bench-replay-")
    os.chmod(root, 0o755)
    s3 = TlsSeaweed(os.path.join(root, "s3"))
    servers = []
    try:
        s3.start()
        s3.create_bucket("bench")
        drkit_cfg = os.path.join(root, "drkit.yml")
        write_drkit_config(drkit_cfg, s3)
        drkit_url = "s3://bench/drkit"
        for d in ("log", "lock", "spool"):
            os.mkdir(os.path.join(root, "pgbr-" + d), 0o700)
            chown_pg(os.path.join(root, "pgbr-" + d))

        def pgbr_conf(name, data_dir, asynchronous, extra=()):
            path = os.path.join(root, name)
            write(path, "\n".join(pgbackrest_repo_lines(s3, "/pgbackrest", asynchronous) + [
                "start-fast=y",
                "log-path=%s/pgbr-log" % root, "lock-path=%s/pgbr-lock" % root,
                "spool-path=%s/pgbr-spool" % root, "log-level-console=warn", "repo1-retention-full=9",
                "[bench]", "pg1-path=%s" % data_dir, "pg1-user=postgres"] + list(extra) + [""]))
            return path

        pg = ScratchPostgres(os.path.join(root, "pg"), password="bench-pw", settings={
            "wal_level": "replica", "archive_mode": "on", "archive_timeout": 60, "max_wal_size": "4GB",
            "archive_command": "pgbackrest --config=%s --stanza=bench archive-push %%p && "
                               "%s wal-push --config %s --storage-url %s %%p %%f" % (
                                   os.path.join(root, "pgbackrest.conf"), DRKIT, drkit_cfg, drkit_url)})
        servers.append(pg)
        pg.start()
        conf = pgbr_conf("pgbackrest.conf", pg.data_dir, False,
                         ["pg1-port=%d" % pg.port, "pg1-socket-path=%s" % pg.socket_dir])
        pgpass = os.path.join(root, "pgpass")
        write(pgpass, "*:*:*:*:%s\n" % pg.password)
        PGPASSFILE["PGPASSFILE"] = pgpass
        as_pg(["pgbackrest", "--config=%s" % conf, "--stanza=bench", "stanza-create"])
        as_pg(["pgbackrest", "--config=%s" % conf, "--stanza=bench", "--type=full", "backup"])
        lsn0 = pg.psql("SELECT pg_current_wal_lsn()")
        t0 = time.time()
        as_pg([os.path.join(pg.bin_dir, "pgbench"), "-i", "-s", str(args.scale), "-q", "-h", pg.host, "-p",
               str(pg.port), "-U", "postgres", "postgres"])
        gen = time.time() - t0
        wal_bytes = int(pg.psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')" % lsn0))
        last = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
        wait_archived(pg, last, timeout=3600)
        pg.stop(mode="fast")
        servers.remove(pg)

        base = os.path.join(root, "base")
        os.mkdir(base, 0o700)
        chown_pg(base)
        as_pg(["pgbackrest", "--config=%s" % pgbr_conf("restore.conf", base, False), "--stanza=bench",
               "restore"])

        def drkit_fetch(flags):
            return "%s wal-fetch --config %s --storage-url %s %s %%f %%p" % (
                DRKIT, shlex.quote(drkit_cfg), drkit_url, " ".join(flags))

        def pgbr_fetch(asynchronous, tag):
            conf = pgbr_conf("get-%s.conf" % tag, os.path.join(root, "r-" + tag), asynchronous)
            return "pgbackrest --config=%s --stanza=bench archive-get %%f \"%%p\"" % conf

        methods = [
            ("drkit wal-fetch", lambda tag: drkit_fetch([])),
            ("drkit wal-fetch --prefetch 4", lambda tag: drkit_fetch(["--prefetch", "4"])),
            ("drkit wal-fetch --prefetch 4 --async", lambda tag: drkit_fetch(["--prefetch", "4", "--async"])),
            ("pgbackrest archive-get (sync)", lambda tag: pgbr_fetch(False, tag)),
            ("pgbackrest archive-get (archive-async=y, process-max=%d)" % cores, lambda tag: pgbr_fetch(True, tag)),
        ]
        times = dict((m[0], []) for m in methods)
        for run in range(args.runs):
            for i, (label, command) in enumerate(methods):
                tag = "%d-%d" % (run, i)
                data_dir = os.path.join(root, "r-" + tag)
                subprocess.run(["cp", "-a", base, data_dir], check=True)
                shutil.rmtree(os.path.join(root, "pgbr-spool"), ignore_errors=True)
                os.mkdir(os.path.join(root, "pgbr-spool"), 0o700)
                chown_pg(os.path.join(root, "pgbr-spool"))
                port = free_port()
                sock = os.path.join(root, "sock-" + tag)
                os.mkdir(sock, 0o700)
                chown_pg(sock)
                with open(os.path.join(data_dir, "postgresql.auto.conf"), "a") as fh:
                    fh.write("restore_command = '%s'\nrecovery_target_action = 'promote'\narchive_mode = off\n"
                             "port = %d\nunix_socket_directories = '%s'\nlisten_addresses = '127.0.0.1'\n" % (
                                 command(tag).replace("'", "''"), port, sock))
                t0 = time.time()
                as_pg([os.path.join(pg.bin_dir, "pg_ctl"), "start", "-D", data_dir, "-W", "-l",
                       os.path.join(sock, "server.log")])
                wait_promoted(port, pg.password)
                times[label].append(time.time() - t0)
                as_pg([os.path.join(pg.bin_dir, "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate", "-w"],
                      check=False)
                shutil.rmtree(data_dir, ignore_errors=True)
        mib = 1024.0 * 1024.0
        print()
        print("Replay to the end of the archive + promote: pgbench -i -s %d after the base backup (%.0f MiB of WAL "
              "in %.0f s), SeaweedFS over HTTPS on loopback, %d cores, %s; medians of %d runs" % (
                  args.scale, wal_bytes / mib, gen, cores, pgbr_version,
                  args.runs))
        print()
        print("| restore_command | replay s (median) | runs | MiB/s |")
        print("|---|---:|---|---:|")
        for label, _c in methods:
            med = statistics.median(times[label])
            print("| %s | %.1f | %s | %.0f |" % (label, med, " / ".join("%.1f" % t for t in times[label]),
                                                 wal_bytes / mib / med))
        print()
    finally:
        tear_down(servers, s3, root, args.keep)


if __name__ == "__main__":
    main()
