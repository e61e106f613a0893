# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of long work, for real (a PostgreSQL cluster on loopback):

* ``drkit`` under a pseudo-terminal draws tqdm bars with bytes, a rate and
  the estimate's label for a backup, its read-back and a restore;
* without a terminal (cron, systemd) it logs a line every
  DRKIT_PROGRESS_INTERVAL seconds on stderr, and ``--json`` carries the
  ``steps`` (bytes, seconds, bytes/s);
* the modules return the same ``steps`` and print nothing else;
* ``drkit list`` prints human sizes and ages, ``--json`` the exact values.
"""

import fcntl
import json
import os
import pty
import re
import secrets
import struct
import subprocess
import sys
import termios
import threading
import uuid

import pytest
from helpers import (DRKIT, drop_database, make_blob_database, pg_module_args, run_drkit, run_playbook,
                     table_row_counts, task)
from pitr_source import ArchivingSource, write_0600

pytestmark = pytest.mark.integration

RATE = re.compile(r"\d+(\.\d+)?[kMG]?B/s")  # tqdm's rate, e.g. 41.2MB/s (not ?B/s)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture(scope="module")
def blob_db(pg):
    """About 6 MB of incompressible rows: several 1 MiB chunks per step."""
    name = "progress_%s" % uuid.uuid4().hex[:8]
    counts = make_blob_database(pg, name, 6)
    try:
        yield name, counts
    finally:
        drop_database(pg, name)


def conn_flags(pg):
    return ["--host", pg.host, "--port", str(pg.port), "--user", pg.superuser]


def run_in_pty(argv, env, timeout=300, prefix=()):
    """Run argv (``prefix`` first: runuser...) with stdin/stderr on a
    pseudo-terminal of 120 columns, stdout on a pipe; returns (rc, stdout,
    what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    shown = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the terminal's other end closed it
                return
            if not data:
                return
            shown.append(data)
    reader = threading.Thread(target=drain)
    reader.daemon = True
    reader.start()
    e = dict(os.environ)
    e.update(env)
    e.pop("DRKIT_PROGRESS_INTERVAL", None)
    try:
        proc = subprocess.run(list(prefix) + [sys.executable, str(DRKIT)] + argv, stdin=slave, stderr=slave,
                              stdout=subprocess.PIPE, env=e, timeout=timeout, check=False)
    finally:
        os.close(slave)
    reader.join(30)
    os.close(master)
    return proc.returncode, proc.stdout.decode(), b"".join(shown).decode("utf-8", "replace")


def bar_lines(shown, start):
    """The bar states whose text starts with ``start`` (tqdm redraws a line with \\r)."""
    states = re.split(r"[\r\n]+", ANSI.sub("", shown))
    return [s.strip() for s in states if s.strip().startswith(start)]


def test_a_terminal_shows_bars_with_bytes_rate_and_the_estimate(pg, blob_db, tmp_path):
    db, counts = blob_db
    url = "file://%s/root" % tmp_path
    env = {"PGPASSWORD": pg.password}
    rc, out, shown = run_in_pty(["pg-backup", "-d", db, "--storage-url", url, "--compression-by", "drkit"]
                                + conn_flags(pg), env)
    assert rc == 0, shown
    assert "Backed up %s" % db in out
    # pg_dump gives no total: the bar's total comes from pg_database_size and says so
    upload = bar_lines(shown, "upload database.pgdump.zst (estimate):")
    assert upload and upload[-1].startswith("upload database.pgdump.zst (estimate): 100%|"), shown
    assert RATE.search(upload[-1]), upload[-1]
    # the read-back knows its size exactly: no estimate label
    reread = bar_lines(shown, "re-read database.pgdump.zst:")
    assert reread and reread[-1].startswith("re-read database.pgdump.zst: 100%|") and RATE.search(reread[-1])
    assert "drkit: re-reading database.pgdump.zst" in shown  # messages still show, above the bars

    target = "progress_restored_%s" % uuid.uuid4().hex[:6]
    try:
        rc, out, shown = run_in_pty(["restore", "--storage-url", url, "--target-database", target]
                                    + conn_flags(pg), env)
        assert rc == 0, shown
        restore = bar_lines(shown, "restore database.pgdump.zst:")
        assert restore and restore[-1].startswith("restore database.pgdump.zst: 100%|"), shown
        assert RATE.search(restore[-1])
        assert table_row_counts(pg, target) == counts
    finally:
        drop_database(pg, target)


def test_without_a_terminal_progress_goes_in_log_lines_and_json_has_steps(pg, blob_db, tmp_path):
    db, _counts = blob_db
    url = "file://%s/root" % tmp_path
    env = {"PGPASSWORD": pg.password, "DRKIT_PROGRESS_INTERVAL": "0"}
    p = run_drkit(["pg-backup", "--json", "-d", db, "--storage-url", url, "--compression-by", "drkit"]
                  + conn_flags(pg), env=env)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "|" not in p.stderr  # no bars in a log
    lines = [ln for ln in p.stderr.splitlines() if " drkit: upload database.pgdump.zst: " in ln]
    assert len(lines) >= 2, p.stderr
    assert re.search(r"^\d\d:\d\d:\d\d drkit: upload database.pgdump.zst: [\d.]+ [KMG]?i?B of ~[\d.]+ [KMG]iB "
                     r"\(estimate, \d+%\), [\d.]+ [KMG]?i?B/s", lines[0]), lines[0]
    assert any(" drkit: re-read database.pgdump.zst: " in ln for ln in p.stderr.splitlines())

    result = json.loads(p.stdout)
    (artifact,) = result["manifest"]["artifacts"]
    steps = dict((s["step"], s) for s in result["steps"])
    assert [s["step"] for s in result["steps"]] == ["upload", "re-read"]
    assert steps["upload"]["what"] == "database.pgdump.zst"
    assert steps["upload"]["bytes"] == artifact["raw_size"]  # what pg_dump wrote
    assert steps["re-read"]["bytes"] == artifact["size"]  # what is stored
    for s in result["steps"]:
        assert s["seconds"] > 0 and s["bytes_per_second"] == int(s["bytes"] / s["seconds"])

    # quiet: no line, same steps
    p = run_drkit(["pg-backup", "--json", "-q", "-d", db, "--storage-url", url] + conn_flags(pg), env=env)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert [s["step"] for s in json.loads(p.stdout)["steps"]] == ["upload", "re-read"]

    # the directory format: pg_dump writes the files itself, the meter follows the directory
    p = run_drkit(["pg-backup", "--json", "-d", db, "--storage-url", url, "--format", "directory", "--jobs", "2",
                   "--work-dir", str(tmp_path)] + conn_flags(pg), env=env)
    assert p.returncode == 0, p.stderr
    assert re.search(r" drkit: dump pg_dump -Fd: [\d.]+ [KMG]?i?B of ~[\d.]+ [KMG]iB \(estimate, \d+%\)", p.stderr), \
        p.stderr
    steps = json.loads(p.stdout)["steps"]
    assert [(s["step"], s["what"]) for s in steps] == [
        ("dump", "pg_dump -Fd"), ("upload", "database.dir.tar.zst"), ("re-read", "database.dir.tar.zst")]
    assert steps[0]["bytes"] > 6 << 20 and steps[1]["bytes"] > steps[0]["bytes"]  # the tar: files + headers

    # a bad interval is refused before anything runs, naming the variable
    p = run_drkit(["pg-backup", "-d", db, "--storage-url", url] + conn_flags(pg),
                  env=dict(env, DRKIT_PROGRESS_INTERVAL="soon"))
    assert p.returncode == 2 and "DRKIT_PROGRESS_INTERVAL must be a number of seconds" in p.stderr, p.stderr

    # drkit list: human sizes and ages; --json keeps bytes and ISO times
    p = run_drkit(["list", "--storage-url", url])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and all(re.search(r" (just now|\d+ s ago) +[\d.]+ MiB  %s$" % db, ln) for ln in lines), \
        p.stdout
    listed = json.loads(run_drkit(["list", "--json", "--storage-url", url]).stdout)
    assert all(isinstance(b["size"], int) and b["finished_at"].endswith("Z") for b in listed["backups"])
    assert "steps" not in listed


def test_module_results_carry_steps_and_print_nothing_else(pg, blob_db, tmp_path):
    db, counts = blob_db
    url = "file://%s/root" % tmp_path
    target = "progress_mod_%s" % uuid.uuid4().hex[:6]
    args = pg_module_args(pg, db)
    args["login_password"] = "{{ pw }}"
    restore_args = dict(args, storage_url=url, target_database=target)
    restore_args.pop("database")
    try:
        run = run_playbook([
            task("drkit.backup.pg_backup", storage_url=url, compression_by="drkit", **args),
            task("drkit.backup.pg_restore", **restore_args),
        ], extra_vars={"pw": pg.password}, env={"DRKIT_PROGRESS_INTERVAL": "0"})
        assert run.rc == 0, run.describe()
        backup = run.result("drkit.backup.pg_backup")
        (artifact,) = backup["manifest"]["artifacts"]
        assert [(s["step"], s["what"], s["bytes"]) for s in backup["steps"]] == [
            ("upload", "database.pgdump.zst", artifact["raw_size"]),
            ("re-read", "database.pgdump.zst", artifact["size"])]
        restored = run.result("drkit.backup.pg_restore")
        assert [(s["step"], s["bytes"]) for s in restored["steps"]] == [("restore", artifact["size"])]
        assert all(s["bytes_per_second"] for s in backup["steps"] + restored["steps"])
        assert table_row_counts(pg, target) == counts
        # progress reaches a module's caller only as results: no log line, no bar anywhere
        assert "drkit: upload" not in run.text and "B/s" not in run.stderr
    finally:
        drop_database(pg, target)


def test_a_physical_backup_bar_is_estimated_from_the_cluster_size(scratch_dir):
    """pg_basebackup to stdout gives no total: the bar's total is the size of
    the cluster's default tablespace, labelled as an estimate."""
    source = ArchivingSource(str(scratch_dir), password=secrets.token_urlsafe(16)).start(scale=0.002)
    try:
        config = write_0600(scratch_dir / "base.yml", {
            "storage_url": source.wal_url, "login_host": source.pg.host, "port": source.pg.port,
            "login_user": "postgres", "login_password": source.password, "mode": "physical",
            "wal_wait_timeout": 120}, owner="postgres")
        rc, out, shown = run_in_pty(["pg-backup", "--json", "--config", config], {},
                                    prefix=["runuser", "-u", "postgres", "--"])
        assert rc == 0, shown
        upload = bar_lines(shown, "upload base.tar.zst (estimate):")
        assert upload and upload[-1].startswith("upload base.tar.zst (estimate): 100%|"), shown
        assert RATE.search(upload[-1]), upload[-1]
        assert bar_lines(shown, "re-read base.tar.zst: 100%|"), shown
        result = json.loads(out)
        base = [a for a in result["manifest"]["artifacts"] if a["name"] == "base.tar.zst"][0]
        assert [(s["step"], s["what"], s["bytes"]) for s in result["steps"]] == [
            ("upload", "base.tar.zst", base["raw_size"]), ("re-read", "base.tar.zst", base["size"])]
    finally:
        source.destroy()
