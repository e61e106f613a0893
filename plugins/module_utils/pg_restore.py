# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring logical backups: the real recovery path, and the engine of the
test-restore that pg_verify does.

A restore always goes into a NEW database under a temporary name, and only a
complete, checked restore is renamed into place.  So a failed restore never
damages the target, and ``force`` means "swap the restored copy in" (the old
database is renamed away and dropped after the swap unless keep_old is set).

Data path: the stored artifact is read once; while it is read its sha256 is
checked and it is decompressed either straight into ``pg_restore``'s stdin
(jobs=1, no local copy) or into a local file/directory in ``work_dir``
(jobs>1: parallel pg_restore needs a seekable archive). A custom-format dump
is then downloaded in the background from the start, its pre-data section
restored from the head of the file meanwhile, and the parallel sections run
once every byte is there; nothing is renamed into place before its sha256
and row counts have been checked.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager

from . import manifest as mf
from .errors import ConfigError, DrkitError, IntegrityError, SafetyError, ToolError
from .pipeline import (Digest, LocalRunner, ProcessFeeder, TarStreamExtractor, check_digest, decompressor_for,
                       read_stored)
from .postgres import (PG_DUMP_ZSTD_MAJOR, ToolEnv, conn_params, connect, find_tool, server_facts, stderr_errors,
                       tool_major, tool_version)
from .storage import open_storage, storage_options

MAX_IDENT = 63

# Settings for pg_restore's own sessions (PGOPTIONS), the tuning PostgreSQL's
# "Populating a Database" advice gives for restores. synchronous_commit off is
# safe here: the database is renamed into place by a synchronous commit that
# comes after every restore commit in the WAL, so it is durable before it is
# visible under the target name.
RESTORE_SETTINGS = {"maintenance_work_mem": "256MB", "synchronous_commit": "off"}
ROW_COUNT_METHODS = ("stats", "count")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


class Terminated(DrkitError):
    exit_code = 143


@contextmanager
def signals_raise():
    """Turn SIGTERM/SIGHUP into an exception while a scratch object exists,
    so ``finally`` blocks drop it even when the job is stopped."""
    def handler(signum, _frame):
        raise Terminated("Stopped by signal %d" % signum, "Scratch objects were cleaned up")

    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: leave signals alone
        old = {}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def unique_name(prefix, marker=""):
    """<prefix><marker>_<UTC time>_<pid>_<random>, at most 63 BYTES:
    PostgreSQL silently cuts longer names, which would cut off the random
    part (two names collide) and the marker. The prefix is shortened first,
    on a character boundary."""
    suffix = "%s_%d_%s" % (time.strftime("%Y%m%d%H%M%S", time.gmtime()), os.getpid(),
                           binascii.hexlify(os.urandom(3)).decode("ascii"))
    budget = MAX_IDENT - len(("%s_%s" % (marker, suffix)).encode("utf-8"))
    prefix = prefix.encode("utf-8")[:max(budget, 0)].decode("utf-8", "ignore")
    return "%s%s_%s" % (prefix, marker, suffix)


def _ident(name):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    return sql.Identifier(name)


def database_exists(conn, name):
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def create_database(conn, name, owner=None, template="template0"):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(_ident(name), _ident(template))
    if owner:
        stmt = stmt + sql.SQL(" OWNER {}").format(_ident(owner))
    with conn.cursor() as cur:
        cur.execute(stmt)


def drop_database(conn, name):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(_ident(name)))


def user_object_count(cp, dbname):
    """Relations, functions and types outside the system schemas: what makes
    a database 'non-empty'."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("""
                SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%')
                     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
                     + (SELECT count(*) FROM pg_namespace
                        WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
                          AND nspname NOT LIKE 'pg\\_%%')""")
            return cur.fetchone()[0]
    finally:
        conn.close()


def count_rows(cp, dbname, tables, jobs=1):
    """Exact row counts for 'schema.table' names; a missing table counts as None.

    ``tables`` may map names to the expected counts: with ``jobs`` > 1 the
    tables are then spread over that many connections by size (biggest
    first onto the least loaded), as pg_restore -j spreads its work."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT n.nspname, c.relname FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')")
            # Keys are "schema.table" and either part may hold a dot: look
            # the parts up in the catalog rather than splitting the key.
            present = {}
            for schema, table in cur.fetchall():
                present.setdefault("%s.%s" % (schema, table), (schema, table))
        out = dict((name, None) for name in tables if name not in present)
        groups = _spread([n for n in sorted(tables) if n in present], tables, jobs)
        errors = []

        def count_in_own_connection(names):
            try:
                own = connect(cp, dbname, autocommit=True)
                try:
                    out.update(_count(own, names, present))
                finally:
                    own.close()
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)  # raised by the calling thread below

        threads = [threading.Thread(target=count_in_own_connection, args=(g,)) for g in groups[1:]]
        for t in threads:
            t.start()
        try:
            out.update(_count(conn, groups[0], present))
        finally:
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    finally:
        conn.close()
    return out


def _spread(names, weights, jobs):
    groups = [[] for _dummy in range(max(1, min(int(jobs or 1), len(names))))]
    loads = [0] * len(groups)
    weight = weights.get if isinstance(weights, dict) else (lambda name: 0)
    for name in sorted(names, key=lambda n: -(weight(n) or 0)):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += (weight(name) or 0) + 1
    return groups


def _count(conn, names, present):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    out = {}
    with conn.cursor() as cur:
        for name in names:
            schema, table = present[name]
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(_ident(schema), _ident(table)))
            out[name] = cur.fetchone()[0]
    return out


def inserted_rows(cp, dbname, names, wait=5.0):
    """Rows PostgreSQL's statistics counted into each table (with its
    partitions or inheritance children, as count(*) sees them) since the
    database was created: after pg_restore into a new database, what COPY
    loaded. Only tables whose counters show inserts alone are returned; an
    empty dict when counters are off or the loading sessions are still there."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW track_counts")
            if cur.fetchone()[0] != "on":
                return {}
            # A session flushes its counters before it leaves pg_stat_activity.
            deadline = time.time() + wait
            while True:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
                if cur.fetchone()[0] == 0:
                    break
                if time.time() > deadline:
                    return {}
                time.sleep(0.01)
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("""
                WITH RECURSIVE tree(root, rel) AS (
                    SELECT oid, oid FROM pg_class WHERE relkind IN ('r', 'p')
                    UNION
                    SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel)
                SELECT n.nspname, c.relname, sum(s.n_tup_ins), sum(s.n_tup_upd + s.n_tup_del), count(s.relid)
                FROM tree t JOIN pg_class c ON c.oid = t.root JOIN pg_namespace n ON n.oid = c.relnamespace
                LEFT JOIN pg_stat_all_tables s ON s.relid = t.rel
                GROUP BY 1, 2""")
            out = {}
            for schema, table, inserted, changed, seen in cur.fetchall():
                name = "%s.%s" % (schema, table)
                if name in names and inserted is not None and changed == 0 and seen:
                    out[name] = int(inserted)
            return out
    finally:
        conn.close()


def restored_counts(cp, dbname, expected, jobs=1, method="stats"):
    """Row counts of the restored tables to compare with ``expected``.

    ``count`` runs count(*) on every table. ``stats`` takes what COPY
    inserted from PostgreSQL's counters (free, where count(*) reads every
    page again) and runs count(*) only on tables where that differs from the
    manifest, so a mismatch is always confirmed by a real count.
    Returns (counts, number of tables counted with count(*))."""
    counts = inserted_rows(cp, dbname, expected) if method == "stats" else {}
    agreed = dict((name, n) for name, n in counts.items() if n == expected[name])
    rest = dict((name, n) for name, n in expected.items() if name not in agreed)
    if rest:
        agreed.update(count_rows(cp, dbname, rest, jobs))
    return agreed, len(rest)


def row_count_method(params):
    method = params.get("row_count_method") or "stats"
    if method not in ROW_COUNT_METHODS:
        raise ConfigError("row_count_method must be one of %s, got %r" % (", ".join(ROW_COUNT_METHODS), method),
                          "stats (PostgreSQL's insert counters, count(*) where they differ) or count")
    return method


def session_options(settings=None):
    """PGOPTIONS for pg_restore: RESTORE_SETTINGS overridden by ``settings``
    (a value of "" or None drops that setting), after any inherited PGOPTIONS."""
    merged = dict(RESTORE_SETTINGS)
    merged.update(settings or {})
    parts = []
    for name in sorted(merged):
        value = merged[name]
        if value is None or value == "":
            continue
        value = str(value).lower() if isinstance(value, bool) else str(value)
        if not _SETTING_NAME.match(str(name)) or not _SETTING_VALUE.match(value):
            raise ConfigError("restore_settings: %s=%r is not a plain setting name and value" % (name, value),
                              "Use names like maintenance_work_mem and values like 512MB or off "
                              "(letters, digits, _ . : + - only)")
        parts.append("-c %s=%s" % (name, value))
    inherited = os.environ.get("PGOPTIONS", "").strip()
    return " ".join(([inherited] if inherited else []) + parts)


def compare_counts(expected, actual):
    """Per-table comparison rows and the list of mismatches."""
    rows, problems = [], []
    for name in sorted(expected):
        got = actual.get(name)
        ok = got == expected[name]
        rows.append({"table": name, "expected": expected[name], "actual": got, "ok": ok})
        if not ok:
            problems.append("%s: expected %s rows, restored %s" % (
                name, expected[name], "no table" if got is None else got))
    return rows, problems


class _Cancelled(Exception):
    pass


class ArtifactFetch(object):
    """Reads the dump artifact of a pg_logical backup once, checking size and
    sha256, and lands it where pg_restore can read it.

    A custom-format dump can be fetched in the background (``start``) while
    the caller connects and creates the database; ``follow`` hands the bytes
    that have arrived so far to a consumer (pg_restore --section=pre-data
    reads the table of contents at the head of the file), ``wait`` gives the
    path once every byte is there, and ``finish`` once its size and sha256
    are checked too (for a plain archive the hashing runs behind the writes)."""

    def __init__(self, storage, manifest, work_dir=None):
        self.storage = storage
        self.manifest = manifest
        self.fmt = manifest.get("options", {}).get("format", "custom")
        names = [a["name"] for a in manifest["artifacts"]]
        if not names:
            raise IntegrityError("Backup %s lists no artifacts" % manifest.backup_id)
        self.artifact = manifest["artifacts"][0]
        self.key = mf.artifact_key(manifest.backup_id, self.artifact["name"])
        self.work_dir = work_dir
        self.tmp = None
        self.seconds = 0.0
        self._thread = None
        self._cond = threading.Condition()
        self._written = 0
        self._done = False
        self._complete = False  # every byte written (plain artifacts; sha256 may still run)
        self._writing = True
        self._error = None
        self._cancel = False
        self._path = None
        self.start_time = None

    def require_reader(self, runner, pg_restore):
        """An archive compressed by pg_dump itself (zstd, PostgreSQL 16+)
        can only be read by pg_restore 16+: say so before downloading."""
        method = self.artifact.get("dump_compression")
        if not method:
            return
        version = tool_version(runner, pg_restore)
        if tool_major(version) < PG_DUMP_ZSTD_MAJOR:
            raise ConfigError("Backup %s was compressed by pg_dump (%s); %s (%s) cannot read it" % (
                self.manifest.backup_id, method, pg_restore, version),
                "Use pg_restore %d or later: install that client package or set pg_bin_dir"
                % PG_DUMP_ZSTD_MAJOR)

    def _transforms(self):
        if self.artifact.get("compressed", True):
            return [decompressor_for(self.manifest.get("compression"))]
        return []

    def _require_present(self):
        if self.storage.stat(self.key) is None:
            raise IntegrityError("Artifact %s of backup %s is missing from %s" % (
                self.artifact["name"], self.manifest.backup_id, self.storage.describe()),
                "The backup is damaged; use another backup")

    def check_only(self, consumer=None):
        t0 = time.time()
        self._require_present()
        res = read_stored(self.storage, self.key, self.artifact["size"], self.artifact["sha256"],
                          transforms=self._transforms() if consumer else (), consumer=consumer)
        self.seconds = time.time() - t0
        return res

    def _copy_hash_behind(self, write):
        """Nothing to decode: write each chunk as it arrives and hash the file
        in a second thread behind the writes (reading it back from the page
        cache: memory stays flat however far behind it is), so that the file
        is complete, and pg_restore -j can start, without waiting for sha256;
        finish() gives the verdict, before anything is renamed into place."""
        t0 = time.time()
        self._require_present()
        digest = Digest()
        hasher = threading.Thread(target=self.follow, args=(digest.update,), name="drkit-fetch-sha256")
        hasher.daemon = True
        hasher.start()
        try:
            for chunk in self.storage.iter_read(self.key):
                write(chunk)
            self.seconds = time.time() - t0
        finally:
            self._end_writing()
            hasher.join()
        check_digest(self.storage, self.key, digest, self.artifact["size"], self.artifact["sha256"])

    def _end_writing(self):
        with self._cond:
            self._writing = False
            self._cond.notify_all()

    def to_local(self):
        """Custom format -> <tmp>/database.pgdump; directory format -> <tmp>/dump/.
        Returns the path to give pg_restore."""
        if self.fmt == "custom":
            self.start()
            return self.finish()
        self.tmp = tempfile.mkdtemp(prefix="drkit-restore-", dir=self.work_dir)
        extractor = TarStreamExtractor(os.path.join(self.tmp, "dump"), "dump/")
        extractor.start()
        try:
            self.check_only(consumer=extractor.feed)
        finally:
            extractor.close()
            extractor.join()
        if extractor.error:
            raise IntegrityError("Cannot unpack %s: %s" % (self.artifact["name"], extractor.error),
                                 "The backup is damaged; use another backup")
        path = os.path.join(self.tmp, "dump")
        if not os.path.isfile(os.path.join(path, "toc.dat")):
            raise IntegrityError("%s holds no dump/toc.dat" % self.artifact["name"])
        return path

    def describe_download(self):
        return "downloading %s (%d bytes) to %s" % (self.artifact["name"], self.artifact["size"],
                                                    self.work_dir or tempfile.gettempdir())

    @property
    def started(self):
        return self._thread is not None

    def start(self):
        """Custom format only: download into <tmp>/database.pgdump in a thread."""
        if self._thread is not None:
            return
        self.tmp = tempfile.mkdtemp(prefix="drkit-restore-", dir=self.work_dir)
        self._path = os.path.join(self.tmp, "database.pgdump")
        out = open(self._path, "wb")
        plain = not self._transforms()

        def write(data):
            if self._cancel:
                raise _Cancelled()
            out.write(data)
            out.flush()  # follow() reads the file: what is counted must be in it
            with self._cond:
                self._written += len(data)
                if plain and self._written == self.artifact["size"]:
                    self._complete = True
                self._cond.notify_all()

        def run():
            try:
                with out:
                    if plain:
                        self._copy_hash_behind(write)
                    else:
                        self.check_only(consumer=write)
            except BaseException as e:  # pylint: disable=broad-except
                self._error = e  # raised by wait() or finish()
            self._end_writing()
            with self._cond:
                self._done = True
                self._cond.notify_all()

        self.start_time = time.time()
        self._thread = threading.Thread(target=run, name="drkit-fetch")
        self._thread.daemon = True  # a SIGTERM exit is not held by a stuck download
        self._thread.start()

    def follow(self, consumer, chunk=1 << 20):
        """Hand the file's bytes to consumer(bytes) as they arrive, until it
        returns False or the download stops writing (failed or not)."""
        with open(self._path, "rb") as src:
            while True:
                with self._cond:
                    while src.tell() >= self._written and self._writing:
                        self._cond.wait(0.5)
                    available = self._written - src.tell()
                    if available <= 0:
                        return
                data = src.read(min(chunk, available))
                if consumer(data) is False:
                    return

    def raise_failure(self):
        """Raise the download's error if it has stopped writing and failed
        (waiting for its end then); nothing while it is still writing."""
        with self._cond:
            writing = self._writing
        if not writing:
            self._thread.join()
            if self._error is not None:
                raise self._error

    def wait(self):
        """The local path, once every byte is there. The sha256 may still be
        being computed: finish() says whether it matched."""
        with self._cond:
            while not (self._complete or self._done):
                self._cond.wait(0.5)
            if self._done and self._error is not None:
                raise self._error
        return self._path

    def finish(self):
        """The local path once the whole artifact is there and its size and
        sha256 match the manifest; raises what the download found otherwise."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._path

    def cleanup(self):
        if self._thread is not None and self._thread.is_alive():
            self._cancel = True
            self._thread.join(5.0)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def restore_argv(pg_restore, dbname, jobs, params, source=None, sections=()):
    argv = [pg_restore, "--no-password", "--dbname", dbname, "--exit-on-error"]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    for section in sections:
        argv.append("--section=%s" % section)
    if params.get("no_owner"):
        argv.append("--no-owner")
    if params.get("no_privileges"):
        argv.append("--no-privileges")
    if params.get("role"):
        argv += ["--role", params["role"]]
    if source:
        argv.append(source)
    return argv


def _feed(runner, argv, env, produce):
    """Run argv with produce(consumer) writing its stdin; (rc, stderr)."""
    handle = runner.spawn(argv, env=env, stdin=True, stdout=False)
    with handle:
        feeder = ProcessFeeder(handle)
        try:
            produce(feeder)
        finally:
            feeder.close()
        rc = handle.wait()
        return rc, handle.stderr_text()


def run_pg_restore(runner, cp, fetch, pg_restore, dbname, jobs, params, progress):
    """Restore the fetched artifact into dbname. Returns timings."""
    timings = {}
    with ToolEnv(cp, dbname) as tenv:
        tenv.env["PGOPTIONS"] = session_options(params.get("restore_settings"))
        if jobs <= 1 and fetch.fmt == "custom":
            # Stream: storage -> sha256 -> zstd -> pg_restore stdin, no local copy.
            progress("streaming %s into pg_restore (database %s)" % (fetch.artifact["name"], dbname))
            t0 = time.time()
            rc, err = _feed(runner, restore_argv(pg_restore, dbname, 1, params), tenv.env,
                            lambda feeder: fetch.check_only(consumer=feeder))
            timings["download_seconds"] = round(fetch.seconds, 3)
            timings["restore_seconds"] = round(time.time() - t0, 3)
            timings["streamed"] = True
        elif fetch.fmt == "custom":
            # Parallel pg_restore needs the whole file; its pre-data section
            # (schemas, tables) needs only the table of contents at the head:
            # restore that from the bytes that have arrived, while the rest
            # is still downloading.
            if not fetch.started:
                progress(fetch.describe_download())
                fetch.start()
            progress("pg_restore --section=pre-data into database %s while the dump downloads" % dbname)
            t0 = time.time()
            rc, err = _feed(runner, restore_argv(pg_restore, dbname, 1, params, sections=("pre-data",)),
                            tenv.env, fetch.follow)
            t1 = time.time()
            if rc != 0 or stderr_errors(err):
                fetch.raise_failure()  # a failed download explains a failed pre-data
            else:
                source = fetch.wait()
                t2 = time.time()
                progress("pg_restore -j %d --section=data --section=post-data into database %s" % (jobs, dbname))
                rc, _out, err = runner.run(restore_argv(pg_restore, dbname, jobs, params, source,
                                                        sections=("data", "post-data")), env=tenv.env)
                t3 = time.time()
                fetch.finish()  # a damaged artifact explains a failed restore: its error first
                # restore_offset_seconds: when pre-data began, counted from the download's start
                timings.update({"pre_data_seconds": round(t1 - t0, 3), "wait_seconds": round(t2 - t1, 3),
                                "restore_seconds": round(t1 - t0 + t3 - t2, 3),
                                "restore_offset_seconds": round(t0 - fetch.start_time, 3)})
            timings["download_seconds"] = round(fetch.seconds, 3)
            timings["streamed"] = False
        else:
            progress(fetch.describe_download())
            source = fetch.to_local()
            timings["download_seconds"] = round(fetch.seconds, 3)
            progress("pg_restore -j %d into database %s" % (jobs, dbname))
            t0 = time.time()
            rc, _out, err = runner.run(restore_argv(pg_restore, dbname, jobs, params, source), env=tenv.env)
            timings["restore_seconds"] = round(time.time() - t0, 3)
            timings["streamed"] = False
    errors = stderr_errors(err)
    if rc != 0 or errors:
        raise ToolError("pg_restore into %s failed (exit code %s): %s" % (
            dbname, rc, "; ".join(errors[:5]) or err.strip()[-1500:]),
            "If roles are missing on this server, set no_owner/no_privileges or create the roles first")
    return timings


def resolve_logical(storage, params):
    entry = mf.resolve(storage, params.get("backup_id") or "latest", before=params.get("before"),
                       database=params.get("source_database"))
    kind = entry.manifest["kind"]
    if kind != "pg_logical":
        raise ConfigError("Backup %s is a %s backup" % (entry.backup_id, kind),
                          "pg_restore restores logical backups; use pg_pitr for physical ones")
    return entry


def pg_restore_backup(params, check_mode=False, runner=None, progress=None):
    """Restore a logical backup into target_database. Returns (changed, result)."""
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    target = params.get("target_database")
    if not target:
        raise ConfigError("target_database is required", "Name the database to restore into")
    if len(target.encode("utf-8")) > MAX_IDENT:
        raise ConfigError("target_database %r is longer than 63 bytes" % target,
                          "PostgreSQL would cut the name; choose a shorter one")
    jobs = int(params.get("jobs") or 1)
    if jobs < 1:
        raise ConfigError("jobs must be at least 1")
    force = bool(params.get("force"))
    row_count_method(params)  # a bad value fails before anything is done
    session_options(params.get("restore_settings"))  # a bad setting fails before anything is done
    cp = conn_params(params)
    # light: no boto3 import (0.2 s of every restore) when static credentials allow it
    storage = open_storage(params.get("storage_url"), light=True, **storage_options(params))
    entry = resolve_logical(storage, params)
    manifest = entry.manifest
    maintenance_db = params.get("maintenance_db") or "postgres"

    if check_mode:
        return True, _plan(cp, maintenance_db, entry, target, force, check_mode)[0]
    fetch = ArtifactFetch(storage, manifest, params.get("work_dir"))
    t0 = time.time()
    with signals_raise():
        try:
            if jobs > 1 and fetch.fmt == "custom":
                # Download while we connect, check the target and create the database.
                progress(fetch.describe_download())
                fetch.start()
            plan, facts = _plan(cp, maintenance_db, entry, target, force, check_mode)
            pg_restore = find_tool("pg_restore", facts["server_version_num"], params.get("pg_bin_dir"))
            fetch.require_reader(runner, pg_restore)  # before any database is created
            timings, rows, old_name = _restore_and_swap(runner, cp, fetch, pg_restore, plan, params, progress)
        finally:
            fetch.cleanup()
    duration = round(time.time() - t0, 3)
    plan.update({"duration": duration, "timings": timings, "tables": rows, "verified": bool(rows),
                 "old_database": old_name,
                 "msg": "Restored %s into %s in %.1f s" % (entry.backup_id, target, duration)})
    return True, plan


def _plan(cp, maintenance_db, entry, target, force, check_mode):
    """Inspect the target; refuse a non-empty one without force. (plan, facts)"""
    conn = connect(cp, maintenance_db, autocommit=True)
    try:
        facts = server_facts(conn)
        exists = database_exists(conn, target)
    finally:
        conn.close()
    non_empty = exists and user_object_count(cp, target) > 0
    if non_empty and not force:
        raise SafetyError("Database %s exists and is not empty; refusing to restore over it" % target,
                          "Nothing was changed. Set force: true to restore into a new copy and swap it in, "
                          "or choose another target_database")
    manifest = entry.manifest
    plan = {"backup_id": entry.backup_id, "target_database": target, "target_exists": exists,
            "target_non_empty": non_empty, "swap": exists, "backup_finished_at": manifest["finished_at"],
            "source": manifest["source"]}
    if check_mode:
        plan["msg"] = "Would restore %s into %s%s" % (
            entry.backup_id, target, " (replacing the existing database)" if exists else "")
    return plan, facts


def _restore_and_swap(runner, cp, fetch, pg_restore, plan, params, progress):
    """Restore into a staging database, check it, put it in place.
    Returns (timings, per-table rows, name of a kept old database)."""
    target = plan["target_database"]
    jobs = int(params.get("jobs") or 1)
    manifest = fetch.manifest
    staging = unique_name(target, "__drkit_restore")
    old_name = None
    conn = connect(cp, params.get("maintenance_db") or "postgres", autocommit=True)
    try:
        create_database(conn, staging, owner=params.get("owner"))
        try:
            timings = run_pg_restore(runner, cp, fetch, pg_restore, staging, jobs, params, progress)
            expected = manifest.get("data", {}).get("row_counts") or {}
            rows, problems = [], []
            if expected and params.get("check_row_counts", True):
                t1 = time.time()
                method = row_count_method(params)
                counts, scanned = restored_counts(cp, staging, expected, jobs, method)
                rows, problems = compare_counts(expected, counts)
                timings.update({"check_seconds": round(time.time() - t1, 3), "row_count_method": method,
                                "tables_scanned": scanned})
                if problems:
                    raise IntegrityError("Restored data differs from the backup's manifest: %s" % (
                        "; ".join(problems[:10])), "The target was not touched")
            if plan["target_exists"]:
                old_name = unique_name(target, "__drkit_old")
                progress("swapping %s into place (old copy: %s)" % (staging, old_name))
                _swap(conn, target, staging, old_name)
                if not params.get("keep_old"):
                    drop_database(conn, old_name)
                    old_name = None
            else:
                _rename(conn, staging, target)
            staging = None
        finally:
            if staging:
                drop_database(conn, staging)
    finally:
        conn.close()
    return timings, rows, old_name


def _rename(conn, old, new):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(old), _ident(new)))


def _swap(conn, target, staging, old_name):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (target,))
    _rename(conn, target, old_name)
    try:
        _rename(conn, staging, target)
    except Exception:
        _rename(conn, old_name, target)
        raise
