#!/usr/bin/env python3
"""The README's first command: the DR rehearsal on localhost with embedded
defaults. A sandbox PostgreSQL on 127.0.0.1 with the sample dataset is backed
up to a local directory (or, with --s3, to a local SeaweedFS started here on
loopback), restored into a scratch database, verified, and reported.

Usage: scripts/demo.sh [--s3] [--scale 0.05] [-- extra ansible-playbook args]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3", action="store_true", help="back up to a local SeaweedFS instead of a directory")
    ap.add_argument("--scale", default="0.05", help="sample dataset scale (1.0 is about 1 GB)")
    ap.add_argument("--work-dir", default="/tmp/drkit-rehearsal")
    ap.add_argument("extra", nargs="*", help="extra ansible-playbook arguments (after --)")
    args = ap.parse_args()

    collections = os.path.join(ROOT, "build", "collections", "ansible_collections", "drkit")
    os.makedirs(collections, exist_ok=True)
    link = os.path.join(collections, "backup")
    if not os.path.islink(link):
        os.symlink(os.path.relpath(ROOT, collections), link)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_NOCOLOR=os.environ.get("ANSIBLE_NOCOLOR", "0"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=%s" % sys.executable,
            "-e", "dr_rehearsal_work_dir=%s" % args.work_dir,
            "-e", "dr_rehearsal_sample_scale=%s" % args.scale,
            os.path.join(ROOT, "playbooks", "dr_rehearsal.yml")] + args.extra
    s3 = None
    tmp = None
    try:
        if args.s3:
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from support.seaweedfs import SeaweedS3  # pylint: disable=import-outside-toplevel
            tmp = tempfile.mkdtemp(prefix="drkit-demo-s3-")
            s3 = SeaweedS3(tmp)
            s3.start()
            s3.create_bucket("drkit-demo")
            print("SeaweedFS S3 on %s (bucket drkit-demo)" % s3.endpoint_url, flush=True)
            env.update(s3.env())
            argv[-1:-1] = ["-e", "dr_rehearsal_storage_url=s3://drkit-demo/postgresql"]
        print("Running: %s" % " ".join(argv[:1] + argv[-1:]), flush=True)
        return subprocess.call(argv, env=env)
    finally:
        if s3 is not None:
            s3.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
