# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain helpers shared by unit tests in more than one file (shared fixtures
live in the conftest.py files below tests/unit instead)."""

import os
import struct

# The checkout (bin/drkit, docs/).
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# --------------------------------------------------------------------------
# pg_dump --version as three PostgreSQL majors print it (pg/test_client.py,
# pg/test_backup_logical.py)

PG15 = "pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
PG16 = "pg_dump (PostgreSQL) 16.4"
PG18 = "pg_dump (PostgreSQL) 18.6"

# --------------------------------------------------------------------------
# WAL segments (pg/test_wal_segments.py, pg/test_wal_archive.py)

SEG = 16 << 20


def long_header(sysid=7712224962849331826, segno=2, tli=1, seg_size=SEG, info=2):
    head = struct.pack("<HHIQI4xQII", 0xD110, info, tli, segno * seg_size, 0, sysid, seg_size, 8192)
    return head + b"\0" * (8192 - len(head))


# --------------------------------------------------------------------------
# Prometheus textfiles (core/test_metrics.py, repo/test_session.py)


def lines(path):
    with open(path) as fh:
        return fh.read().splitlines()


def value(path, name):
    found = [ln for ln in lines(path) if ln.startswith(name + "{") or ln.startswith(name + " ")]
    assert len(found) == 1, found
    return float(found[0].rsplit(" ", 1)[1])


# --------------------------------------------------------------------------
# create-only writers racing for one key (storage/test_file.py,
# integration/test_storage_s3.py)


def in_threads(func, count):
    """Run func(0) .. func(count - 1) in threads at once; return when all ended."""
    import threading

    threads = [threading.Thread(target=func, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def create_only_race(storage, key, payloads, timeout=30):
    """One thread per payload writes it to ``key`` with a create-only writer;
    all wait for each other after writing and before committing (the window
    of a check-then-write). Returns {index: "stored" | "exists"}."""
    import threading

    from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists

    at_commit = threading.Barrier(len(payloads))
    outcome = {}

    def write(i):
        w = storage.writer(key, create=True)
        w.write(payloads[i])
        at_commit.wait(timeout)
        try:
            w.commit()
            outcome[i] = "stored"
        except ObjectExists:
            outcome[i] = "exists"

    in_threads(write, len(payloads))
    return outcome


# the janitor (core/test_janitor.py, pg/test_janitor.py, test_cli.py,
# test__ansible.py)


def dead_pid():
    """The pid of a process that has ended and been reaped."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def dead_tag(host=None):
    """An owner tag of this host (or ``host``) whose process is dead."""
    from ansible_collections.drkit.backup.plugins.module_utils.core import janitor

    return "%s_%d_abcdef" % (host or janitor.host_id(), dead_pid())
