#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RPO under load: how much acknowledged work a lost host costs.

For each archiving method, a PostgreSQL 15 cluster gets a physical base
backup into SeaweedFS, then runs pgbench (write-heavy, --rate-limited off)
while a client commits one numbered row every --tick seconds and logs each
number once its COMMIT returned. After --seconds the host is lost: every
server process is killed with SIGKILL, the data directory (pg_wal included)
is deleted, and in the streaming case the archiver (drkit wal-stream and its
pg_receivewal, as if on the same host) is killed with SIGKILL too. Then
`drkit pitr` recovers to the end of the archive, and the client's log is
compared with what came back:

  lost     acknowledged rows missing after recovery
  RPO s    the loss time minus the commit time of the newest row recovered
           (what the loss cost, in time; 0 when nothing acknowledged is lost)
  WAL MB   where the recovered server's WAL ends (how much WAL the run wrote)

Methods:
  archive_command   archive_command = drkit wal-push, archive_timeout 60 (the
                    postgresql_wal_archive role's defaults)
  stream            drkit wal-stream, partial_interval 10 (its default)

Needs root (servers run as the postgres OS user). Usage:
  .venv/bin/python benchmarks/rpo_under_load.py [--seconds 90] [--runs 3] [--load pgbench|light]
      [--methods archive_command,stream]
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
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

DRKIT = "%s %s" % (shlex.quote(sys.executable), shlex.quote(os.path.join(ROOT, "bin", "drkit")))

from _engine import load_engine  # noqa: E402

load_engine()
from _pgload import PG, Committer, pg_dir, write_secret  # noqa: E402
from drkit_engine.core.scratch import free_port, make_scratch_dir  # noqa: E402
from drkit_engine.pg import cluster  # noqa: E402
from drkit_engine.pg.scratch import ScratchPostgres  # noqa: E402
from support.seaweedfs import SeaweedS3  # noqa: E402

BIN = cluster.find_pg_bindir("15")


def server_pids(pg):
    with open(os.path.join(pg.data_dir, "postmaster.pid")) as fh:
        postmaster = int(fh.readline())
    children = subprocess.run(["pgrep", "-P", str(postmaster)], stdout=subprocess.PIPE, check=False).stdout.split()
    return [postmaster] + [int(c) for c in children]


def lose_host(pg, archiver):
    """SIGKILL to every server process at once (and the archiver's group),
    then the data directory goes, pg_wal included."""
    pids = server_pids(pg)
    if archiver is not None:
        os.killpg(archiver.pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t_loss = time.time()
    if archiver is not None:
        archiver.wait()
    time.sleep(1)
    shutil.rmtree(pg.data_dir)
    return t_loss


def one_run(method, args, s3, root, run_no):
    base = pg_dir(os.path.join(root, "%s-%d" % (method, run_no)))
    url = "s3://bench/%s-%d" % (method, run_no)
    cfg = os.path.join(base, "drkit.yml")
    settings = {"wal_level": "replica", "max_wal_size": "2GB", "fsync": "on"}
    if method == "archive_command":
        settings.update({"archive_mode": "on", "archive_timeout": 60,
                         "archive_command": "%s wal-push --config %s %%p %%f" % (DRKIT, cfg)})
    else:
        settings.update({"archive_mode": "off"})
    pg = ScratchPostgres(os.path.join(base, "pg"), password="bench-pw", bin_dir=BIN, settings=settings)
    pg.start()
    write_secret(cfg, "storage_url: %s\nendpoint_url: %s\naccess_key: %s\nsecret_key: %s\nregion: %s\n"
                      "login_host: 127.0.0.1\nport: %d\nlogin_user: postgres\nlogin_password: %s\n" % (
                          url, s3.endpoint_url, s3.access_key, s3.secret_key, s3.region, pg.port, pg.password))
    archiver = None
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(("PG", "AWS_")))
    try:
        pg.psql("CREATE TABLE acks (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        subprocess.run([os.path.join(BIN, "pgbench"), "-i", "-q", "-s", str(args.pgbench_scale), "-h", "127.0.0.1",
                        "-p", str(pg.port), "-U", "postgres", "postgres"], env=dict(env, PGPASSWORD=pg.password),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if method == "stream":
            spool = pg_dir(os.path.join(base, "spool"))
            archiver = subprocess.Popen(["runuser", "-u", "postgres", "--"] + shlex.split(DRKIT) + [
                "wal-stream", "--config", cfg, "--spool-dir", spool], env=env, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "wal-stream.log"), "w"))
            deadline = time.time() + 60
            streaming = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'drkit_wal_stream'"
            while pg.psql(streaming) != "1":
                if time.time() > deadline or archiver.poll() is not None:
                    raise SystemExit("the archiver did not start: see %s/wal-stream.log" % base)
                time.sleep(0.2)
        subprocess.run(["runuser", "-u", "postgres", "--"] + shlex.split(DRKIT) + [
            "pg-backup", "--config", cfg, "--mode", "physical", "--wal-wait-timeout", "300"],
            env=env, check=True, stdout=subprocess.DEVNULL)
        client = Committer(pg.port, pg.password, args.tick)
        load = None if args.load == "light" else subprocess.Popen(
            [os.path.join(BIN, "pgbench"), "-c", "2", "-j", "2", "-T", str(args.seconds + 30), "-n", "-h",
             "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "postgres"],
            env=dict(env, PGPASSWORD=pg.password), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        client.start()
        time.sleep(args.seconds)
        t_loss = lose_host(pg, archiver)
        client.stop.set()
        client.join(10)
        if load is not None:
            load.kill()
            load.wait()
        data = pg_dir(os.path.join(base, "restored"))
        os.rmdir(data)
        run_dir = pg_dir(os.path.join(base, "run"))
        port = free_port()
        t0 = time.time()
        p = subprocess.run(shlex.split(DRKIT) + [
            "pitr", "--config", cfg, "--target", "latest", "--data-directory", data, "--port", str(port),
            "--set", "unix_socket_directories=%s" % run_dir, "--set", "listen_addresses=127.0.0.1",
            "--drkit-command", DRKIT, "--json", "--quiet"], env=env, check=False, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise SystemExit("drkit pitr failed: %s" % p.stderr.decode()[-3000:])
        recovery = time.time() - t0
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=pg.password, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            got = set(r[0] for r in conn.execute("SELECT id FROM acks").fetchall())
            wal_bytes = int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0])
        cluster.stop_server(BIN, data, (PG.pw_uid, PG.pw_gid), mode="fast")
        acked = client.acked
        lost = [n for n, _t in acked if n not in got]
        recovered_times = [t for n, t in acked if n in got]
        rpo = t_loss - max(recovered_times) if recovered_times else float("nan")
        if not lost:
            rpo = 0.0
        return {"acked": len(acked), "lost": len(lost), "rpo": rpo, "recovery": recovery,
                "wal_mb": wal_bytes / 1e6 if wal_bytes else 0.0}
    finally:
        if archiver is not None and archiver.poll() is None:
            os.killpg(archiver.pid, signal.SIGKILL)
        try:
            pg.destroy()
        except Exception:  # pylint: disable=broad-except
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=90, help="load before the host is lost (default 90)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tick", type=float, default=0.05, help="seconds between the logged commits (default 0.05)")
    ap.add_argument("--pgbench-scale", type=int, default=5)
    ap.add_argument("--load", choices=("pgbench", "light"), default="pgbench",
                    help="pgbench -c2 at full speed beside the logged commits, or the logged commits alone "
                         "(little WAL: the worst case for archive_command, whose segments fill slowly)")
    ap.add_argument("--methods", default="archive_command,stream")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the servers and drkit run as the postgres OS user")
    root = make_scratch_dir(prefix="drkit-bench-rpo-")
    os.chmod(root, 0o755)
    s3 = SeaweedS3(os.path.join(root, "s3"))
    rows = {}
    try:
        s3.start()
        s3.create_bucket("bench")
        for run_no in range(args.runs):
            for method in args.methods.split(","):
                r = one_run(method, args, s3, root, run_no)
                rows.setdefault(method, []).append(r)
                print("%s run %d: acked %d, lost %d, RPO %.1f s, recovery %.1f s, WAL %.0f MB" % (
                    method, run_no + 1, r["acked"], r["lost"], r["rpo"], r["recovery"], r["wal_mb"]), flush=True)
    finally:
        s3.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("RPO under load (%s): %s for %d s, a commit logged every %.2f s, then the host lost (SIGKILL, data "
          "directory and pg_wal deleted)" % (args.load, "pgbench -c2 at full speed" if args.load == "pgbench"
                                             else "no other load", args.seconds, args.tick))
    print("| method | runs | acknowledged | lost (median) | RPO s (median) | RPO s (runs) | recovery s (median) "
          "| WAL MB (median) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for method, rs in rows.items():
        print("| %s | %d | %d | %d | %.1f | %s | %.1f | %.0f |" % (
            method, len(rs), statistics.median(r["acked"] for r in rs), statistics.median(r["lost"] for r in rs),
            statistics.median(r["rpo"] for r in rs), " / ".join("%.1f" % r["rpo"] for r in rs),
            statistics.median(r["recovery"] for r in rs), statistics.median(r["wal_mb"] for r in rs)))


if __name__ == "__main__":
    main()
