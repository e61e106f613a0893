#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a progress meter (core/progress.py) costs per 64 KiB chunk.

Times ``meter.update(65536)`` alone, in each mode the CLI and the modules
use (a plain callable's null meter, quiet = the modules and ``-q``, log
lines = cron/systemd, a tqdm bar = a terminal, drawn into /dev/null), and
the same chunks through a PipelineSink with zstd -3 into /dev/null without
and with a meter, to put the meter next to the work it measures.
Median of --repeat runs of --chunks chunks. Usage:
  .venv/bin/python benchmarks/progress_meter.py [--chunks 200000] [--repeat 5]
Not a test: numbers only, no assertions.
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from _engine import load_engine  # noqa: E402

load_engine()
from drkit_engine.core import progress as pr  # noqa: E402
from drkit_engine.core.stream import PipelineSink, ZstdCompress  # noqa: E402

CHUNK = 64 * 1024


class _Null(object):
    def write(self, data):
        return len(data)


def per_chunk(make_meter, chunks, repeat):
    """Median microseconds per update(CHUNK) of a fresh meter, minus the empty loop."""
    runs = []
    for _run in range(repeat):
        m = make_meter()
        t0 = time.perf_counter()
        for _chunk in range(chunks):
            m.update(CHUNK)
        t1 = time.perf_counter()
        for _chunk in range(chunks):
            pass
        t2 = time.perf_counter()
        m.close()
        runs.append(((t1 - t0) - (t2 - t1)) / chunks * 1e6)
    return statistics.median(runs)


def dump_like_chunks(n=64):
    """``n`` different chunks of random runs between repetitive text, like a
    dump (about 2x with zstd); 64 of them (4 MiB) are more than zstd -3's
    window, so no chunk compresses against an identical one."""
    text = b"INSERT INTO agents VALUES (42, 'idle', '{}');\n" * 90
    out = []
    for _chunk in range(n):
        chunk = b""
        while len(chunk) < CHUNK:
            chunk += os.urandom(4096) + text
        out.append(chunk[:CHUNK])
    return out


def through_sink(chunks, repeat, progress):
    """Median µs per chunk through PipelineSink + zstd -3 without and with a
    meter, the two alternating so that both see the same machine."""
    data = dump_like_chunks()
    runs = {False: [], True: []}
    for _run in range(repeat):
        for with_meter in (False, True):
            m = progress.meter("upload", "bench") if with_meter else None
            sink = PipelineSink(_Null(), [ZstdCompress(3)], meter=m)
            t0 = time.perf_counter()
            for i in range(chunks):
                sink.write(data[i % 64])
            sink.close()
            runs[with_meter].append((time.perf_counter() - t0) / chunks * 1e6)
            if m is not None:
                m.close()
    return statistics.median(runs[False]), statistics.median(runs[True])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    devnull = open(os.devnull, "w")
    quiet = pr.Progress("quiet", devnull)
    log = pr.Progress("log", devnull, interval=60)
    bars = pr.Progress("bar", devnull)
    rows = [
        ("null meter (a plain progress callable)", per_chunk(lambda: pr.meter(None, "upload"), args.chunks,
                                                             args.repeat)),
        ("quiet (modules, drkit -q)", per_chunk(lambda: quiet.meter("upload", "bench"), args.chunks, args.repeat)),
        ("log lines every 60 s (cron, systemd)", per_chunk(lambda: log.meter("upload", "bench", 1 << 40),
                                                           args.chunks, args.repeat)),
        ("tqdm bar (a terminal)", per_chunk(lambda: bars.meter("upload", "bench", 1 << 40), args.chunks,
                                            args.repeat)),
    ]
    sink_chunks = max(1, args.chunks // 40)
    plain, metered = through_sink(sink_chunks, args.repeat, bars)
    print("| what | µs per 64 KiB chunk |")
    print("|---|---:|")
    for name, us in rows:
        print("| meter.update: %s | %.3f |" % (name, us))
    print("| PipelineSink + zstd -3, no meter | %.1f |" % plain)
    print("| PipelineSink + zstd -3, tqdm bar meter | %.1f |" % metered)
    print("\n%d chunks per run (%d through the sink), median of %d runs; Python %s" % (
        args.chunks, sink_chunks, args.repeat, sys.version.split()[0]))


if __name__ == "__main__":
    main()
