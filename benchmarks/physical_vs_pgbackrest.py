#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit physical backups and PITR against pgBackRest, in one run.

Same PostgreSQL 15 cluster (sample dataset at --scale), same SeaweedFS,
both tools with zstd level 3 and one compression process. The cluster's
archive_command feeds both archives (``pgbackrest archive-push %p && drkit
wal-push ...``), so each tool's backup waits for its own WAL, as it would in
production.

pgBackRest's S3 driver only speaks HTTPS, so SeaweedFS gets a self-signed
certificate on loopback and BOTH tools go through its HTTPS port (drkit
with ca_bundle, pgBackRest with repo1-storage-verify-tls=n).

Prints one table:
  full backup     pgbackrest backup --type=full      vs drkit pg-backup --mode physical
  restore (files) pgbackrest restore                 vs drkit pitr --no-start
  PITR (promoted) pgbackrest restore + pg_ctl start  vs drkit pitr (its recovery_seconds: replay to the
                  end of the archive, check, replay again from the restartpoint, pg_ctl promote)
  wal push rate   pgbackrest archive-push (sync)     vs drkit wal-push, and drkit wal-push --read-ahead 4

Needs root (the servers and both tools run as the postgres OS user) and the
Debian package pgbackrest. Usage:
  .venv/bin/python benchmarks/physical_vs_pgbackrest.py [--scale 0.25] [--segments 24] [--keep]
Not a test: numbers only, no assertions.
"""

import argparse
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

DRKIT = "%s %s" % (shlex.quote(sys.executable), shlex.quote(os.path.join(ROOT, "bin", "drkit")))

from _engine import load_engine  # noqa: E402

load_engine()
from drkit_engine.demo import sample_data  # noqa: E402
from drkit_engine.core.scratch import free_port, make_scratch_dir  # noqa: E402
from drkit_engine.pg.scratch import ScratchPostgres  # noqa: E402
from support.seaweedfs import SeaweedS3  # noqa: E402
from support.tls import TestCA  # noqa: E402

PG = pwd.getpwnam("postgres")


def as_pg(argv, env=None, timeout=7200, check=True, cwd="/"):
    t0 = time.time()
    p = subprocess.run(argv, user=PG.pw_uid, group=PG.pw_gid, extra_groups=[], env=env or clean_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, cwd=cwd, check=False)
    secs = time.time() - t0
    if check and p.returncode != 0:
        output = (p.stderr + p.stdout).decode("utf-8", "replace")[-3000:]
        raise SystemExit("%s failed (%d): %s" % (" ".join(argv[:3]), p.returncode, output))
    return secs, p


PGPASSFILE = {}


def clean_env(extra=None):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(("PG", "AWS_")))
    env.update({"HOME": PG.pw_dir, "LC_ALL": "C.UTF-8"})
    env.update(PGPASSFILE)  # pgBackRest logs in through libpq: the scratch cluster wants a password
    env.update(extra or {})
    return env


def chown_pg(path):
    os.chown(path, PG.pw_uid, PG.pw_gid)


def write(path, text, mode=0o600, owner_pg=True):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if owner_pg:
        chown_pg(path)


class TlsSeaweed(SeaweedS3):
    """SeaweedFS with an HTTPS S3 port as well, its certificate signed by a
    CA made here (a self-signed server certificate is refused by rustls, the
    TLS stack of obstore: a CA certificate is no end-entity certificate)."""

    def __init__(self, base_dir):
        super(TlsSeaweed, self).__init__(base_dir, tls=TestCA(base_dir + "-ca"))
        os.chmod(base_dir + "-ca", 0o755)  # the CA file is read by the postgres OS user

    @property
    def cert(self):
        return self.tls.ca_file

    @property
    def https_port(self):
        return self.ports["s3.port.https"]

    @property
    def https_url(self):
        return self.https_endpoint_url


def require_pgbackrest():
    """Root and the Debian package pgbackrest, or exit; its version string."""
    if os.geteuid() != 0:
        raise SystemExit("run as root (servers and tools run as the postgres OS user)")
    if not shutil.which("pgbackrest"):
        raise SystemExit("pgbackrest is not installed: apt-get install pgbackrest")
    return subprocess.run(["pgbackrest", "version"], check=False, stdout=subprocess.PIPE).stdout.decode().strip()


def write_drkit_config(path, s3):
    """drkit's config for the HTTPS SeaweedFS (0600, owned by postgres)."""
    write(path, "endpoint_url: %s\naccess_key: %s\nsecret_key: %s\nregion: us-east-1\nca_bundle: %s\n" % (
        s3.https_url, s3.access_key, s3.secret_key, s3.cert))
    return path


def pgbackrest_repo_lines(s3, repo_path, asynchronous=False):
    """pgBackRest's [global] repository lines for the same SeaweedFS, as its
    users configure it for speed: zstd 3, one process per core."""
    return ["[global]", "repo1-type=s3", "repo1-s3-endpoint=127.0.0.1", "repo1-storage-port=%d" % s3.https_port,
            "repo1-s3-bucket=bench", "repo1-s3-key=%s" % s3.access_key, "repo1-s3-key-secret=%s" % s3.secret_key,
            "repo1-s3-region=us-east-1", "repo1-s3-uri-style=path", "repo1-storage-verify-tls=n",
            "repo1-path=%s" % repo_path, "compress-type=zst", "compress-level=3", "process-max=%d" % os.cpu_count(),
            "archive-async=%s" % ("y" if asynchronous else "n")]


def tear_down(servers, s3, root, keep):
    for s in servers:
        try:
            s.stop(mode="immediate")
        except Exception:  # noqa: BLE001
            pass
    s3.destroy()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("kept", root)


def wait_archived(pg, segment, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        last = pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last and last[:24] >= segment:
            return
        time.sleep(0.2)
    raise SystemExit("segment %s not archived: %s" % (segment, pg.psql("SELECT * FROM pg_stat_archiver")))


def wait_promoted(port, password, timeout=3600):
    import psycopg
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                                 dbname="postgres", connect_timeout=2) as c:
                if c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False:
                    return
        except psycopg.Error:
            pass
        time.sleep(0.1)
    raise SystemExit("server on %d not promoted" % port)


def dir_size(path):
    total = 0
    for dp, _dn, fn in os.walk(path):
        for f in fn:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


def bucket_size(s3, bucket, prefix):
    c = s3.client()
    total = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(o["Size"] for o in page.get("Contents", ()))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--segments", type=int, default=24, help="WAL segments for the push-rate test")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    pgbr_version = require_pgbackrest()

    root = make_scratch_dir(prefix="drkit-bench-phys-")
    os.chmod(root, 0o755)
    s3 = TlsSeaweed(os.path.join(root, "s3"))
    servers = []
    try:
        s3.start()
        s3.create_bucket("bench")
        drkit_cfg = os.path.join(root, "drkit.yml")
        write_drkit_config(drkit_cfg, s3)
        drkit_url = "s3://bench/drkit"
        for d in ("pgbr-log", "pgbr-lock", "pgbr-spool", "spool"):
            os.mkdir(os.path.join(root, d), 0o700)
            chown_pg(os.path.join(root, d))
        pgbr_conf = os.path.join(root, "pgbackrest.conf")

        pg = ScratchPostgres(os.path.join(root, "pg"), password="bench-pw", settings={
            "wal_level": "replica", "archive_mode": "on", "archive_timeout": 60, "max_wal_size": "4GB",
            "archive_command": "pgbackrest --config=%s --stanza=bench archive-push %%p && "
                               "%s wal-push --config %s --storage-url %s %%p %%f" % (
                                   pgbr_conf, DRKIT, drkit_cfg, drkit_url)})
        servers.append(pg)
        pg.start()
        pgpass = os.path.join(root, "pgpass")
        write(pgpass, "*:*:*:*:%s\n" % pg.password)
        PGPASSFILE["PGPASSFILE"] = pgpass
        write(pgbr_conf, "\n".join(pgbackrest_repo_lines(s3, "/pgbackrest") + [
            "start-fast=y",
            "log-path=%s/pgbr-log" % root, "lock-path=%s/pgbr-lock" % root, "spool-path=%s/pgbr-spool" % root,
            "log-level-console=warn", "repo1-retention-full=9",
            "[bench]", "pg1-path=%s" % pg.data_dir, "pg1-port=%d" % pg.port, "pg1-socket-path=%s" % pg.socket_dir,
            "pg1-user=postgres", ""]))
        as_pg(["pgbackrest", "--config=%s" % pgbr_conf, "--stanza=bench", "stanza-create"])

        t0 = time.time()
        sample_data.generate(pg.conninfo("postgres"), scale=args.scale, seed=7, database="agentic_platform")
        gen = time.time() - t0
        db_size = int(pg.psql("SELECT pg_database_size('agentic_platform')"))
        cluster_size = dir_size(pg.data_dir)
        wait_archived(pg, pg.psql("SELECT pg_walfile_name(pg_switch_wal())"))
        rows = []

        # -- full backups
        t_br, _p = as_pg(["pgbackrest", "--config=%s" % pgbr_conf, "--stanza=bench", "--type=full", "backup"])
        br_size = bucket_size(s3, "bench", "pgbackrest/backup/")
        env = clean_env()
        import json

        def drkit_backup(threads):
            t0 = time.time()
            p = subprocess.run(sys.executable.split() + [
                os.path.join(ROOT, "bin", "drkit"), "pg-backup", "--mode", "physical", "--config", drkit_cfg,
                "--storage-url", drkit_url, "--host", "127.0.0.1", "--port", str(pg.port), "--quiet", "--json",
                "--compression-threads", str(threads)],
                env=dict(env, PGPASSWORD=pg.password), check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            secs = time.time() - t0
            if p.returncode != 0:
                raise SystemExit("drkit pg-backup failed: %s" % p.stderr.decode()[-3000:])
            return secs, json.loads(p.stdout)
        t_dk, backup = drkit_backup(0)
        rows.append(("full backup", t_br, t_dk, br_size, backup["size"]))
        t_dk1, backup1 = drkit_backup(1)
        rows.append(("full backup, drkit --compression-threads 1", t_br, t_dk1, br_size, backup1["size"]))

        # some WAL after the backups, so that recovery has something to replay
        pg.psql("CREATE TABLE bench_after AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g",
                "agentic_platform")
        wait_archived(pg, pg.psql("SELECT pg_walfile_name(pg_switch_wal())"))

        # -- restore of the files
        br_dir = os.path.join(root, "r-pgbr")
        dk_dir = os.path.join(root, "r-drkit")
        os.mkdir(br_dir, 0o700)
        chown_pg(br_dir)
        t_br, _p = as_pg(["pgbackrest", "--config=%s" % pgbr_conf, "--stanza=bench", "--pg1-path=%s" % br_dir,
                          "restore"])
        t0 = time.time()
        p = subprocess.run(sys.executable.split() + [os.path.join(ROOT, "bin", "drkit"), "pitr", "--config",
                                                     drkit_cfg, "--storage-url", drkit_url, "--target", "latest",
                                                     "--data-directory", dk_dir, "--no-start", "--quiet",
                                                     "--wal-config", drkit_cfg, "--drkit-command", DRKIT],
                           env=env, check=False,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t_dk = time.time() - t0
        if p.returncode != 0:
            raise SystemExit("drkit pitr failed: %s" % p.stderr.decode()[-3000:])
        rows.append(("restore (files only)", t_br, t_dk, None, None))

        # -- recovery to the end of the archive, until promoted
        def start_and_time(data_dir, port, extra_conf):
            with open(os.path.join(data_dir, "postgresql.auto.conf"), "a") as fh:
                fh.write(extra_conf)
            sock = os.path.join(os.path.dirname(data_dir), "sock-%d" % port)
            os.mkdir(sock, 0o700)
            chown_pg(sock)
            t0 = time.time()
            as_pg([os.path.join(pg.bin_dir, "pg_ctl"), "start", "-D", data_dir, "-W", "-l",
                   os.path.join(data_dir, "bench.log"), "-o",
                   "-c port=%d -c unix_socket_directories=%s -c listen_addresses=127.0.0.1 -c archive_mode=off" % (
                       port, sock)])
            wait_promoted(port, pg.password)
            secs = time.time() - t0
            as_pg([os.path.join(pg.bin_dir, "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate", "-w"], check=False)
            return secs
        r_br = start_and_time(br_dir, free_port(), "")
        # drkit's replay as drkit pitr does it: to the end of the archive and shut
        # down, checked, again with a pause, pg_ctl promote (docs/pitr.md)
        dk_full = os.path.join(root, "r-drkit-full")
        sock = os.path.join(root, "sock-drkit-full")
        os.mkdir(sock, 0o700)
        chown_pg(sock)
        p = subprocess.run(sys.executable.split() + [os.path.join(ROOT, "bin", "drkit"), "pitr", "--config",
                                                     drkit_cfg, "--storage-url", drkit_url, "--target", "latest",
                                                     "--data-directory", dk_full, "--port", str(free_port()),
                                                     "--set", "unix_socket_directories=%s" % sock,
                                                     "--set", "listen_addresses=127.0.0.1", "--json", "--quiet",
                                                     "--drkit-command", DRKIT], env=env, check=False,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise SystemExit("drkit pitr failed: %s" % p.stderr.decode()[-3000:])
        r_dk = json.loads(p.stdout)["recovery_seconds"]
        as_pg([os.path.join(pg.bin_dir, "pg_ctl"), "stop", "-D", dk_full, "-m", "immediate", "-w"], check=False)
        rows.append(("replay to latest + promote", r_br, r_dk, None, None))
        rows.append(("PITR total (restore + replay)", rows[-2][1] + r_br, rows[-2][2] + r_dk, None, None))

        # -- WAL push rate: real segments, one command per segment like the archiver
        wal_src = os.path.join(root, "walsrc")
        os.mkdir(wal_src, 0o755)
        names = []
        for _i in range(args.segments):
            pg.psql("SELECT pg_logical_emit_message(false, 'bench', repeat(md5(random()::text), 200000))")
            name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
            shutil.copyfile(os.path.join(pg.data_dir, "pg_wal", name), os.path.join(wal_src, name))
            names.append(name)
        rates = {}
        for label, prefix, extra in (("drkit wal-push", "rate-a", []),
                                     ("drkit wal-push --read-ahead 4", "rate-b", ["--read-ahead", "4"])):
            wal_dir = os.path.join(root, "pg_wal-" + prefix)
            os.makedirs(os.path.join(wal_dir, "archive_status"))
            for n in names:
                shutil.copyfile(os.path.join(wal_src, n), os.path.join(wal_dir, n))
                open(os.path.join(wal_dir, "archive_status", n + ".ready"), "w").close()
            spool = os.path.join(root, "spool-" + prefix)
            os.mkdir(spool)
            if extra:
                extra = ["--spool-dir", spool] + extra
            t0 = time.time()
            for n in names:
                p = subprocess.run(sys.executable.split() + [os.path.join(ROOT, "bin", "drkit"), "wal-push",
                                                             "--config", drkit_cfg, "--storage-url",
                                                             "s3://bench/%s" % prefix] + extra +
                                   [os.path.join(wal_dir, n), n], env=env, check=False, stderr=subprocess.PIPE)
                if p.returncode != 0:
                    raise SystemExit("wal-push failed: %s" % p.stderr.decode()[-2000:])
                os.rename(os.path.join(wal_dir, "archive_status", n + ".ready"),
                          os.path.join(wal_dir, "archive_status", n + ".done"))
            rates[label] = len(names) / (time.time() - t0)
        # pgBackRest archive-push of the same segments, into a second stanza's repo path
        conf2 = pgbr_conf + ".rate"
        with open(pgbr_conf) as fh:
            text = fh.read().replace("repo1-path=/pgbackrest", "repo1-path=/pgbackrest-rate")
        write(conf2, text)
        as_pg(["pgbackrest", "--config=%s" % conf2, "--stanza=bench", "stanza-create"])
        wal_dir = os.path.join(root, "pg_wal-pgbr")
        os.makedirs(os.path.join(wal_dir, "archive_status"))
        for n in names:
            shutil.copyfile(os.path.join(wal_src, n), os.path.join(wal_dir, n))
        os.system("chown -R postgres: %s" % shlex.quote(wal_dir))
        t0 = time.time()
        for n in names:
            as_pg(["pgbackrest", "--config=%s" % conf2, "--stanza=bench", "archive-push", os.path.join(wal_dir, n)])
        rates["pgbackrest archive-push (sync)"] = len(names) / (time.time() - t0)

        # -- the table
        mib = 1024.0 * 1024.0
        print()
        print("drkit physical vs %s -- sample dataset scale %s: database %.0f MiB, cluster %.0f MiB "
              "(generated in %.0f s); SeaweedFS over HTTPS on loopback; zstd level 3; pgBackRest "
              "process-max = the %d cores" % (
                  pgbr_version, args.scale, db_size / mib, cluster_size / mib, gen, os.cpu_count()))
        print()
        print("| step | pgBackRest | drkit | drkit / pgBackRest |")
        print("|---|---:|---:|---:|")
        for name, a, b, sa, sb in rows:
            size = ""
            if sa is not None:
                size = " (stored %.0f / %.0f MiB)" % (sa / mib, sb / mib)
            print("| %s%s | %.1f s | %.1f s | %.2f |" % (name, size, a, b, b / a if a else 0))
        print()
        print("| WAL push, %d segments of 16 MiB, one command each | segments/s |" % len(names))
        print("|---|---:|")
        for k, v in rates.items():
            print("| %s | %.2f |" % (k, v))
        print()
    finally:
        tear_down(servers, s3, root, args.keep)


if __name__ == "__main__":
    main()
