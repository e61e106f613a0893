#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""What age encryption (core/crypto.py, pyrage) adds to the pipeline.

Streams dump-like data (text with realistic entropy, as pg_dump -Z0 of the
sample dataset: compresses about 3.5x with zstd -3) through the engine's
own pipeline into a file:// storage, then reads it back, with and without
encryption:

  write   producer -> zstd -3 -> [age] -> sha256 -> file://
  read    file:// -> sha256 -> [age] -> zstd -d -> consumer

and, with ``--pg``, the end-to-end logical backup of a sample database
(``drkit pg-backup`` -> file://, verification included) with and without
``--encryption-recipient``, against a scratch PostgreSQL this script starts;
with ``--physical``, a base backup of it (its WAL archived by ``drkit
wal-push`` to the same repository, encrypted in the age case too) and a
point-in-time recovery of that backup (``drkit pitr --target immediate``,
decrypting with the identity in the age case). Run as root (the server and
its archive_command run as postgres).

Medians of ``--repeat`` runs (alternating), peak RSS of this process.
Usage: .venv/bin/python benchmarks/encryption_bench.py [--mib 1024] [--repeat 3] [--pg] [--physical] [--scale 1.0]
Not a test: numbers only, no assertions.
"""

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from _engine import load_engine  # noqa: E402

load_engine()
from drkit_engine.core import crypto  # noqa: E402
from drkit_engine.core.stream import PipelineSink, ZstdCompress, ZstdDecompress, read_stored  # noqa: E402
from drkit_engine.storage.file import FileStorage  # noqa: E402

WORDS = [("%s%d" % (w, i)).encode() for i, w in enumerate(
    "agent run step tool call token prompt completion latency error retry user session model".split() * 40)]


def dumpish_block(rng, size=1 << 20):
    """About 1 MiB of COPY-like rows: words, numbers, a little random hex."""
    out = []
    n = 0
    while n < size:
        row = b"\t".join([str(rng.randrange(10 ** 9)).encode(), rng.choice(WORDS), rng.choice(WORDS),
                          os.urandom(6).hex().encode(), str(rng.random()).encode()]) + b"\n"
        out.append(row)
        n += len(row)
    return b"".join(out)[:size]


def write_once(fs, blocks, mib, recipients):
    t0 = time.time()
    with fs.writer("obj") as w:
        sink = PipelineSink(w, [ZstdCompress(3), crypto.encryptor_for(recipients)])
        for i in range(mib):
            sink.write(blocks[i % len(blocks)])
        sink.close()
    return time.time() - t0, sink.result()


def read_once(fs, res, identities):
    t0 = time.time()
    transforms = [crypto.Decrypt(identities) if identities else None, ZstdDecompress()]
    read_stored(fs, "obj", res["size"], res["sha256"], transforms=transforms, consumer=lambda b: None)
    return time.time() - t0


def pipeline(args):
    import pyrage  # pylint: disable=import-outside-toplevel

    ident = pyrage.x25519.Identity.generate()
    recipients = [str(ident.to_public()), str(pyrage.x25519.Identity.generate().to_public())]
    rng = random.Random(7)
    blocks = [dumpish_block(rng) for _i in range(16)]
    tmp = tempfile.mkdtemp(prefix="drkit-encbench-", dir=args.dir)
    rows = {"plain": {"write": [], "read": []}, "age": {"write": [], "read": []}}
    sizes = {}
    try:
        fs = FileStorage(tmp)
        for _r in range(args.repeat):
            for case in ("plain", "age"):
                secs, res = write_once(fs, blocks, args.mib, recipients if case == "age" else None)
                rows[case]["write"].append(secs)
                sizes[case] = res["size"]
                rows[case]["read"].append(read_once(fs, res, [ident] if case == "age" else None))
                fs.delete(["obj"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("pipeline, %d MiB raw (dump-like), medians of %d" % (args.mib, args.repeat))
    print("| case | write s | read s | stored MiB | write vs plain | read vs plain |")
    print("|---|---:|---:|---:|---:|---:|")
    base_w, base_r = statistics.median(rows["plain"]["write"]), statistics.median(rows["plain"]["read"])
    for case in ("plain", "age"):
        w, r = statistics.median(rows[case]["write"]), statistics.median(rows[case]["read"])
        print("| %s | %.2f | %.2f | %.1f | %.3fx | %.3fx |" % (
            case, w, r, sizes[case] / 1048576.0, w / base_w, r / base_r))
    print("peak RSS of this process: %.0f MiB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def end_to_end(args):
    import pyrage  # pylint: disable=import-outside-toplevel
    from drkit_engine.demo import sample_data  # pylint: disable=import-outside-toplevel
    from drkit_engine.pg.scratch import ScratchPostgres  # pylint: disable=import-outside-toplevel

    tmp = tempfile.mkdtemp(prefix="drkit-encbench-pg-", dir=args.dir)
    os.chmod(tmp, 0o755)
    server = ScratchPostgres(os.path.join(tmp, "pg"))
    server.start()
    try:
        info = sample_data.generate(server.conninfo("postgres"), scale=args.scale, seed=7, database="bench")
        pub = str(pyrage.x25519.Identity.generate().to_public())
        drkit = [sys.executable, os.path.join(ROOT, "bin", "drkit")]
        env = dict(os.environ)
        env.update(server.env("bench"))
        base = ["pg-backup", "--host", env["PGHOST"], "--port", str(server.port), "--user", server.superuser,
                "--pg-bin-dir", server.bin_dir, "--database", "bench", "--json", "--quiet"]
        times = {"plain": [], "age": []}
        stored = {}
        for r in range(args.repeat):
            for case in ("plain", "age"):
                url = "file://%s/repo-%s-%d" % (tmp, case, r)
                argv = drkit + base + ["--storage-url", url] + (["--encryption-recipient", pub] if case == "age"
                                                                else [])
                t0 = time.time()
                p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
                times[case].append(time.time() - t0)
                if p.returncode != 0:
                    raise SystemExit(p.stderr.decode())
                stored[case] = json.loads(p.stdout.decode())["size"]
                shutil.rmtree(url[len("file://"):], ignore_errors=True)
        print("drkit pg-backup -> file://, sample scale %s (%d MB database), medians of %d" % (
            args.scale, info["size_bytes"] // 1000000, args.repeat))
        print("| case | wall s | stored MB | vs plain |")
        print("|---|---:|---:|---:|")
        base_t = statistics.median(times["plain"])
        for case in ("plain", "age"):
            t = statistics.median(times[case])
            print("| %s | %.2f | %.1f | %.3fx |" % (case, t, stored[case] / 1e6, t / base_t))
        print("runs: %s" % json.dumps(times))
    finally:
        server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def _runuser_json(argv, as_postgres):
    if as_postgres:
        argv = ["runuser", "-u", "postgres", "--"] + argv
    t0 = time.time()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise SystemExit(p.stderr.decode()[-3000:])
    return time.time() - t0, json.loads(p.stdout.decode())


def _config(path, data):
    """A 0600 drkit config owned by postgres (secrets never on argv)."""
    import yaml  # pylint: disable=import-outside-toplevel
    with open(path, "w") as fh:
        yaml.safe_dump(data, fh)
    os.chmod(path, 0o600)
    shutil.chown(path, "postgres", "postgres")
    return path


def physical(args):
    import pyrage  # pylint: disable=import-outside-toplevel
    from drkit_engine.core.scratch import free_port  # pylint: disable=import-outside-toplevel
    from drkit_engine.demo import sample_data  # pylint: disable=import-outside-toplevel
    from drkit_engine.pg.scratch import ScratchPostgres  # pylint: disable=import-outside-toplevel

    tmp = tempfile.mkdtemp(prefix="drkit-encbench-phys-", dir=args.dir)
    os.chmod(tmp, 0o755)
    drkit = [sys.executable, os.path.join(ROOT, "bin", "drkit")]
    drkit_cmd = " ".join(drkit)
    ident = pyrage.x25519.Identity.generate()
    key_file = os.path.join(tmp, "age.key")
    with open(key_file, "w") as fh:
        fh.write("%s\n" % ident)
    os.chmod(key_file, 0o600)
    shutil.chown(key_file, "postgres", "postgres")
    wal_cfg = os.path.join(tmp, "wal.yml")
    server = ScratchPostgres(os.path.join(tmp, "pg"), settings={
        "wal_level": "replica", "archive_mode": "on", "archive_timeout": 60,
        "archive_command": "%s wal-push --config %s %%p %%f" % (drkit_cmd, wal_cfg)})
    try:
        _config(wal_cfg, {"storage_url": "file://%s/none" % tmp})
        server.start()
        info = sample_data.generate(server.conninfo("postgres"), scale=args.scale, seed=7, database="bench")
        times = dict((case, {"backup": [], "pitr": []}) for case in ("plain", "age"))
        stored = {}
        for r in range(args.repeat):
            for case in ("plain", "age"):
                repo = os.path.join(tmp, "repo-%s-%d" % (case, r))
                os.mkdir(repo, 0o700)
                shutil.chown(repo, "postgres", "postgres")
                enc = {"encryption_recipients": [str(ident.to_public())]} if case == "age" else {}
                url = "file://%s" % repo
                _config(wal_cfg, dict(enc, storage_url=url, drkit_command=drkit_cmd))
                base_cfg = _config(os.path.join(tmp, "base.yml"), dict(
                    enc, storage_url=url, login_host=server.host, port=server.port, login_user=server.superuser,
                    login_password=server.password, mode="physical", wal_wait_timeout=600))
                took, res = _runuser_json(drkit + ["pg-backup", "--quiet", "--json", "--config", base_cfg], True)
                times[case]["backup"].append(took)
                stored[case] = res["size"]
                data_dir = os.path.join(tmp, "restored", "data")
                os.makedirs(os.path.dirname(data_dir), 0o755)
                shutil.chown(os.path.dirname(data_dir), "postgres", "postgres")
                pitr_cfg = _config(os.path.join(tmp, "pitr.yml"), dict(
                    {"encryption_identity_file": key_file} if case == "age" else {},
                    storage_url=url, data_directory=data_dir, port=free_port(), target="immediate",
                    os_user="postgres", drkit_command=drkit_cmd,
                    settings={"unix_socket_directories": os.path.dirname(data_dir),
                              "listen_addresses": "127.0.0.1"}))
                took, res = _runuser_json(drkit + ["pitr", "--quiet", "--json", "--config", pitr_cfg], False)
                times[case]["pitr"].append(took)
                subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(server.bin_dir, "pg_ctl"), "stop",
                                "-D", data_dir, "-m", "immediate", "-w"], stdout=subprocess.DEVNULL, check=False)
                shutil.rmtree(os.path.dirname(data_dir), ignore_errors=True)
                _config(wal_cfg, {"storage_url": "file://%s/none" % tmp})
                shutil.rmtree(repo, ignore_errors=True)
        print("base backup (drkit pg-backup --mode physical -> file://, WAL by wal-push) and drkit pitr --target "
              "immediate, sample scale %s (%d MB database), medians of %d" % (
                  args.scale, info["size_bytes"] // 1000000, args.repeat))
        print("| case | backup s | pitr s | stored MB | backup vs plain | pitr vs plain |")
        print("|---|---:|---:|---:|---:|---:|")
        base_b = statistics.median(times["plain"]["backup"])
        base_p = statistics.median(times["plain"]["pitr"])
        for case in ("plain", "age"):
            b, pt = statistics.median(times[case]["backup"]), statistics.median(times[case]["pitr"])
            row = (case, b, pt, stored[case] / 1e6, b / base_b, pt / base_p)
            print("| %s | %.2f | %.2f | %.1f | %.3fx | %.3fx |" % row)
        print("runs: %s" % json.dumps(times))
    finally:
        server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the temporary storage goes")
    ap.add_argument("--pg", action="store_true", help="also the end-to-end pg-backup of a sample database")
    ap.add_argument("--physical", action="store_true",
                    help="also a base backup and a point-in-time recovery of a sample database (as root)")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the pipeline-only measurement")
    ap.add_argument("--scale", type=float, default=0.25)
    args = ap.parse_args()
    if not args.no_pipeline:
        pipeline(args)
    if args.pg:
        end_to_end(args)
    if args.physical:
        physical(args)


if __name__ == "__main__":
    main()
