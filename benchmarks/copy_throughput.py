#!/usr/bin/env python3
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throughput of a repository copy (drkit copy) against copying the same
objects by hand with boto3, between two buckets of one SeaweedFS on
loopback (the second region), alternating within each round so that
machine noise hits all alike:

  drkit copy          every artifact checked against the manifest's size and
                      SHA-256 while it streams, read back and checked at the
                      destination, the manifest written last
  boto3               get_object streamed into upload_fileobj (boto3's managed
                      multipart transfer, its defaults), every object under
                      the backup's prefix: no check at all
  boto3 + checks      the same, hashing what streams through, then reading
                      the destination's object back and hashing it again: the
                      checks drkit makes, by hand

The backup is a logical one of a database of random (incompressible) bytea,
--megabytes MB, so the stored size is about that. WAL is not copied here
(--no-wal): its objects are small and one per segment (wal_archive_rate.py
measures that path). Prints a table of medians (paste it into
docs/benchmarks.md). Not a test: numbers only.

    .venv/bin/python benchmarks/copy_throughput.py --megabytes 1024 --rounds 3
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from pg_backup_bench import med, run_measured  # noqa: E402

# boto3 by hand, in a process of its own (so that its peak RSS is its own).
BY_HAND = r"""
import hashlib, json, os
import boto3
from botocore.config import Config
a = json.loads(os.environ["DRKIT_BENCH_COPY_SPEC"])  # not argv: it holds the secret key
cli = boto3.client("s3", endpoint_url=a["endpoint"], aws_access_key_id=a["key"], aws_secret_access_key=a["secret"],
                   region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


class Hashing:
    def __init__(self, body):
        self.body, self.sha = body, hashlib.sha256()

    def read(self, n=-1):
        data = self.body.read(n)
        self.sha.update(data)
        return data


total = 0
for page in cli.get_paginator("list_objects_v2").paginate(Bucket=a["src_bucket"], Prefix=a["prefix"]):
    for o in page.get("Contents", []):
        key = a["dst_prefix"] + o["Key"][len(a["prefix"]):]
        body = cli.get_object(Bucket=a["src_bucket"], Key=o["Key"])["Body"]
        stream = Hashing(body) if a["check"] else body
        cli.upload_fileobj(stream, a["dst_bucket"], key)
        if a["check"]:
            back = hashlib.sha256()
            for chunk in cli.get_object(Bucket=a["dst_bucket"], Key=key)["Body"].iter_chunks(1 << 20):
                back.update(chunk)
            if back.hexdigest() != stream.sha.hexdigest():
                sys.exit("%s differs at the destination" % key)
        total += o["Size"]
print(total)
"""


def make_database(pg, name, megabytes):
    import psycopg

    pg.psql('CREATE DATABASE "%s"' % name)
    pg.psql("CREATE TABLE blobs (id int PRIMARY KEY, payload bytea)", dbname=name)
    with psycopg.connect(**pg.conninfo(name)) as conn:
        with conn.cursor().copy("COPY blobs (id, payload) FROM STDIN") as copy:
            for i in range(megabytes * 4):
                copy.write_row((i, os.urandom(256 << 10)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--megabytes", type=int, default=512, help="size of the backup (random bytes, MB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg-bin-dir", help="PostgreSQL to run (default: the system's 15)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    from _engine import load_engine  # noqa: E402
    load_engine()
    from drkit_engine.pg.scratch import ScratchPostgres  # noqa: E402
    from support.seaweedfs import SeaweedS3  # noqa: E402

    work = tempfile.mkdtemp(prefix="drkit-copy-bench-")
    os.chmod(work, 0o755)
    pg = ScratchPostgres(os.path.join(work, "pg"), bin_dir=args.pg_bin_dir)
    s3 = SeaweedS3(os.path.join(work, "s3"))
    try:
        pg.start()
        s3.start()
        for bucket in ("region-a", "region-b"):
            s3.create_bucket(bucket)
        make_database(pg, "blobs", args.megabytes)
        env = dict(os.environ, **s3.env())
        env.update(pg.env("blobs"))
        drkit = [sys.executable, os.path.join(ROOT, "bin", "drkit")]
        run_measured(drkit + ["pg-backup", "-q", "-d", "blobs", "--storage-url", "s3://region-a/pg",
                              "--compression-level", "1", "--host", env["PGHOST"], "--port", str(pg.port),
                              "--user", pg.superuser], env)
        cli = s3.client()
        stored = sum(o["Size"] for o in cli.list_objects_v2(Bucket="region-a", Prefix="pg/").get("Contents", []))
        creds = s3.env()
        config = os.path.join(work, "copy.yml")
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"to_endpoint_url": s3.endpoint_url, "to_access_key": creds["AWS_ACCESS_KEY_ID"],
                       "to_secret_key": creds["AWS_SECRET_ACCESS_KEY"], "to_region": "us-east-1"}, fh)
        hand = {"endpoint": s3.endpoint_url, "key": creds["AWS_ACCESS_KEY_ID"],
                "secret": creds["AWS_SECRET_ACCESS_KEY"], "src_bucket": "region-a", "dst_bucket": "region-b",
                "prefix": "pg/"}
        cases = {"drkit copy": [], "boto3": [], "boto3 + checks": []}
        for r in range(args.rounds):
            for name in cases:
                dest = "r%d-%s/" % (r, uuid.uuid4().hex[:6])
                if name == "drkit copy":
                    argv = drkit + ["copy", "-q", "--config", config, "--storage-url", "s3://region-a/pg",
                                    "--to-storage-url", "s3://region-b/" + dest + "pg", "--no-wal"]
                else:
                    spec = dict(hand, dst_prefix=dest + "pg/", check=name != "boto3")
                    argv = [sys.executable, "-c", BY_HAND]
                secs, rss, _rc = run_measured(argv, dict(env, DRKIT_BENCH_COPY_SPEC=json.dumps(spec)) if
                                              name != "drkit copy" else env)
                cases[name].append((secs, rss))
                sys.stderr.write("round %d %-15s %.2f s  %.0f MiB\n" % (r + 1, name, secs, rss))
        print("copy of one %.0f MB backup between two SeaweedFS buckets, medians of %d rounds (%s)" % (
            stored / 1e6, args.rounds, subprocess.run(["nproc"], stdout=subprocess.PIPE, check=True,
                                                      universal_newlines=True).stdout.strip() + " cores"))
        print("")
        print("| | seconds | MB/s | peak RSS MiB |")
        print("|---|---:|---:|---:|")
        for name, runs in cases.items():
            secs = med([s for s, _m in runs])
            print("| %s | %.2f | %.0f | %.0f |" % (name, secs, stored / 1e6 / secs, med([m for _s, m in runs])))
    finally:
        s3.stop()
        pg.destroy()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
