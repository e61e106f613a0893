#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover under load: RTO and RPO of `drkit failover`, planned and unplanned.

Each run: a PostgreSQL 15 primary archiving (drkit wal-push) into a file://
repository, a physical base backup, a standby built by `drkit standby` from
the repository (archive, then streaming from a slot). Then pgbench runs
(write-heavy, --clients connections) while a client commits one numbered row
every --tick seconds and logs each number once its COMMIT returned. After
--seconds:

  planned     drkit failover --mode planned (stop, wait for the shutdown
              checkpoint on the standby, fence, promote, write)
  unplanned   every primary process gets SIGKILL, then drkit failover
              --mode unplanned with the old data directory (fence, promote,
              exact loss from its WAL)

Columns:
  RTO s       decision to the first write through the multi-host endpoint
  promote s   pg_promote's share of it
  lost        acknowledged rows of the client missing on the new primary
  exact       lost transactions drkit counted in the old WAL (all of pgbench's too)
  bound s     unplanned: the loss window drkit stated (safe_before .. fence)
  rejoin s    then the old primary made a standby of the new one with `drkit standby --rewind`
              (CHECKPOINT + pg_rewind s / until it streams and caught up s; after a planned
              failover there is nothing to rewind)

Needs root (servers run as the postgres OS user). Usage:
  .venv/bin/python benchmarks/failover_bench.py [--runs 3] [--seconds 20] [--clients 4] [--tick 0.01]
Not a test: numbers only, no assertions.
"""

import argparse
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

DRKIT = "%s %s" % (shlex.quote(sys.executable), shlex.quote(os.path.join(ROOT, "bin", "drkit")))

from _engine import load_engine  # noqa: E402

load_engine()
from _pgload import Committer, pg_dir, write_secret  # noqa: E402
from drkit_engine.core.scratch import free_port, make_scratch_dir  # noqa: E402
from drkit_engine.pg import cluster  # noqa: E402
from drkit_engine.pg.failover import pg_failover  # noqa: E402
from drkit_engine.pg.scratch import ScratchPostgres  # noqa: E402
from drkit_engine.pg.standby import pg_standby  # noqa: E402

BIN = cluster.find_pg_bindir("15")
PASSWORD = "bench-pw"


def psql(port, sql):
    return subprocess.run([os.path.join(BIN, "psql"), "-X", "-qAt", "-h", "127.0.0.1", "-p", str(port), "-U",
                           "postgres", "-d", "postgres", "-c", sql], stdout=subprocess.PIPE, check=True,
                          env=dict(os.environ, PGPASSWORD=PASSWORD)).stdout.decode().strip()


def one_run(mode, args, root, run_no):
    base = pg_dir(os.path.join(root, "%s-%d" % (mode, run_no)), 0o755)
    repo = pg_dir(os.path.join(base, "repo"), 0o755)
    url = "file://" + repo
    cfg = os.path.join(base, "drkit.yml")
    pg = ScratchPostgres(os.path.join(base, "primary"), password=PASSWORD, bin_dir=BIN, settings={
        "wal_level": "replica", "archive_mode": "on", "archive_timeout": 60, "autovacuum": "off",
        "wal_log_hints": "on",
        "archive_command": "%s wal-push --config %s %%p %%f" % (DRKIT, cfg)})
    pg.start()
    write_secret(cfg, "storage_url: %s\nlogin_host: 127.0.0.1\nport: %d\nlogin_user: postgres\n"
                      "login_password: %s\nmode: physical\n" % (url, pg.port, PASSWORD))
    standby_dir = os.path.join(pg_dir(os.path.join(base, "standby"), 0o755), "data")
    standby_port = free_port()
    rejoined_port = free_port()
    try:
        pg.psql("CREATE TABLE acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        subprocess.run([os.path.join(BIN, "pgbench"), "-i", "-q", "-s", "5", "-h", "127.0.0.1", "-p",
                        str(pg.port), "-U", "postgres", "postgres"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(os.environ, PGPASSWORD=PASSWORD))
        subprocess.run("runuser -u postgres -- %s pg-backup -q --config %s" % (DRKIT, cfg), shell=True, check=True,
                       stdout=subprocess.DEVNULL)
        params = {"storage_url": url, "login_host": "127.0.0.1", "port": pg.port, "login_password": PASSWORD,
                  "data_directory": standby_dir, "standby_port": standby_port, "drkit_command": DRKIT}
        _c, built = pg_standby(params)
        bench = subprocess.Popen([os.path.join(BIN, "pgbench"), "-n", "-c", str(args.clients), "-T", "3600", "-h",
                                  "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "postgres"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=dict(os.environ, PGPASSWORD=PASSWORD))
        client = Committer(pg.port, PASSWORD, args.tick)
        client.start()
        time.sleep(args.seconds)
        fparams = {"login_host": "127.0.0.1", "port": pg.port, "login_password": PASSWORD,
                   "standby_port": standby_port, "primary_data_directory": pg.data_dir, "mode": mode}
        if mode == "unplanned":
            postmaster = pg._proc.pid
            kids = subprocess.run(["pgrep", "-P", str(postmaster)], stdout=subprocess.PIPE, check=False)
            for pid in [postmaster] + [int(x) for x in kids.stdout.split()]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pg._proc.wait()
            pg._proc = None
        _c, result = pg_failover(fparams)
        client.stop.set()
        client.join(30)
        bench.kill()
        bench.wait()
        if mode == "planned":
            pg._proc = None
        present = set(int(x) for x in psql(standby_port, "SELECT id FROM acks").split())
        lost = [i for i, _t in client.acked if i not in present]
        rpo = result["rpo"]
        _c, rejoin = pg_standby(dict(params, data_directory=pg.data_dir, port=standby_port, rewind=True,
                                     standby_port=rejoined_port, slot_name="old_primary",
                                     application_name="old_primary"))
        return {"rewind": rejoin["rewind_seconds"], "rejoin_catch_up": rejoin["catch_up_seconds"],
                "rewound": rejoin["rewound"],
                "rto": result["rto_seconds"], "promote": result["promote_seconds"], "lost": len(lost),
                "acked": len(client.acked), "exact": rpo.get("lost_transactions"),
                "bound": rpo.get("rpo_bound_seconds"), "archive_files": built["archive_segments_replayed"],
                "catch_up": built["catch_up_seconds"]}
    finally:
        for data_dir in (standby_dir, pg.data_dir):  # the new primary; the old one rejoined as its standby
            subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(BIN, "pg_ctl"), "stop", "-D", data_dir,
                            "-m", "immediate"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pg.destroy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--tick", type=float, default=0.01)
    args = ap.parse_args()
    root = make_scratch_dir(prefix="drkit-failover-bench-")
    os.chmod(root, 0o755)
    try:
        print("| mode | run | RTO s | promote s | acked | lost | exact | bound s | standby catch-up s | rejoin s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for mode in ("planned", "unplanned"):
            rtos = []
            for n in range(1, args.runs + 1):
                r = one_run(mode, args, root, n)
                rtos.append(r["rto"])
                print("| %s | %d | %.2f | %.2f | %d | %d | %s | %s | %.1f | %.2f / %.2f%s |" % (
                    mode, n, r["rto"], r["promote"], r["acked"], r["lost"], r["exact"],
                    "-" if r["bound"] is None else "%.2f" % r["bound"], r["catch_up"], r["rewind"],
                    r["rejoin_catch_up"], "" if r["rewound"] else " (no rewind needed)"))
                sys.stdout.flush()
            print("| %s | median | %.2f | | | | | | | |" % (mode, statistics.median(rtos)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
