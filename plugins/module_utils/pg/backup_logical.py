# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical PostgreSQL backups with pg_dump.

One REPEATABLE READ transaction exports its snapshot; pg_dump runs with
``--snapshot`` so the dump and the per-table row counts recorded in the
manifest describe the very same instant.

* format=custom, pg_dump 16 or later (``compression_by: auto`` or
  ``pg_dump``): ``pg_dump -Fc --compress=zstd:LEVEL`` streams straight into
  storage as ``database.pgdump``, a plain pg_dump archive that any pg_restore
  16+ reads as it is; its workers decompress in parallel during a restore,
  and a restore downloads the compressed size instead of decompressing.
* format=custom otherwise: ``pg_dump -Fc -Z0`` streams through drkit's zstd
  into ``database.pgdump.zst``.
* format=directory: ``pg_dump -Fd -Z0 -j N`` must write a directory (a tool
  that forces a local copy); it is then streamed into storage as one tar
  through drkit's zstd.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import socket
import tarfile
import tempfile

from ..core.errors import ConfigError, SourceError
from ..core.janitor import private_dir
from ..core.osutil import is_disk_full, local_write_error, ran_out_of_room
from ..container.runner import open_runner
from ..core.process import shares_files
from ..core.progress import DirectoryGrowth, meter
from ..core.crypto import load_recipients
from ..core.signing import signer_for
from ..core.stream import compression_settings
from ..repo import manifest as mf
from ..repo.session import BackupJob
from ..storage.factory import open_storage, storage_options
from .client import (
    PG_DUMP_ZSTD_MAJOR,
    ToolEnv,
    check_tool_result,
    conn_params,
    connect,
    locate_tool,
    server_facts,
    size_estimate,
    tool_major,
)
from .dump import ARTIFACT, NATIVE_ARTIFACT, check_in_container, dump_filter_args, list_archive, table_selected
from .janitor import sweep_databases
from .rowcounts import TABLES_SQL, RowCounter, manifest_rows

KIND = "pg_logical"


COMPRESSION_BY = ("auto", "drkit", "pg_dump")


def _names(value, name):
    if value is None:
        return []
    if not all(v for v in value):
        raise ConfigError("%s must be a list of names or patterns, got an empty one" % name)
    return value


def validate(p):
    """The rules between options (each option's own type and range were
    checked by resolve in pg.backup); ``p``: the resolved options."""
    if not p["database"]:
        raise ConfigError("database is required", "Name the database to back up")
    fmt, jobs = p["format"], p["jobs"]
    if jobs > 1 and fmt != "directory":
        raise ConfigError("jobs > 1 needs format: directory",
                          "pg_dump dumps in parallel only to the directory format")
    if fmt == "directory" and p["work_dir"] and not os.path.isdir(p["work_dir"]):
        raise ConfigError("work_dir %s is not a directory" % p["work_dir"],
                          "Create it (it needs room for the uncompressed dump) or leave work_dir unset")
    if p["compression_by"] == "pg_dump" and fmt != "custom":
        raise ConfigError("compression_by: pg_dump needs format: custom",
                          "The directory format is compressed by drkit; use compression_by: auto")
    filters = dict((k, _names(p[k], k)) for k in ("schemas", "exclude_schemas", "tables", "exclude_tables"))
    return fmt, jobs, p["compression_level"], filters


def dumps_natively(fmt, by, pg_dump_version):
    """Whether pg_dump compresses the archive itself (zstd in the custom
    format, pg_dump 16+) instead of drkit's zstd around a -Z0 dump."""
    if fmt != "custom" or by == "drkit":
        return False
    if tool_major(pg_dump_version) >= PG_DUMP_ZSTD_MAJOR:
        return True
    if by == "pg_dump":
        raise ConfigError("compression_by: pg_dump needs pg_dump %d or later (zstd in the custom format); "
                          "this one is %r" % (PG_DUMP_ZSTD_MAJOR, pg_dump_version),
                          "Use compression_by: auto (or drkit), or point pg_bin_dir at PostgreSQL %d+ "
                          "client tools" % PG_DUMP_ZSTD_MAJOR)
    return False


def pg_backup_logical(p, check_mode=False, runner=None, progress=None):
    """pg_backup with mode: logical; ``p``: the options resolved by
    pg.backup.pg_backup. Returns (changed, result dict)."""
    progress = progress or (lambda msg: None)
    fmt, jobs, level, filters = validate(p)
    runner = runner or open_runner(p)
    check_in_container(runner, fmt, jobs)
    cp = conn_params(p)
    database = p["database"]
    storage = open_storage(p["storage_url"], **storage_options(p))
    signer = signer_for(p.get("signing_key_file"))  # a bad key fails check mode too
    job = BackupJob(storage, KIND, p["metrics_dir"], p["job_name"] or "pg_%s" % database, progress, signer=signer)
    compression = compression_settings(p)
    recipients = load_recipients(p.get("encryption_recipients"))  # a bad key fails check mode too
    row_counts = p["row_counts"]

    if check_mode:
        conn = connect(cp, database)
        try:
            facts = server_facts(conn)
        finally:
            conn.close()
        locate_tool(runner, "pg_dump", facts["server_version_num"], p["pg_bin_dir"])
        job.check_storage()
        return job.planned("Would back up database %s (PostgreSQL %s)%s in %s format to %s" % (
            database, facts["server_version"], _where(runner), fmt, storage.describe()))

    with job:
        conn = job.closing(connect(cp, database))
        facts = server_facts(conn)
        conn.rollback()
        db_size = size_estimate(conn, "database")
        sweep_databases(conn, progress)
        pg_dump, dump_version = locate_tool(runner, "pg_dump", facts["server_version_num"], p["pg_bin_dir"])
        pg_restore, restore_version = locate_tool(runner, "pg_restore", facts["server_version_num"],
                                                  p["pg_bin_dir"])
        source = {"type": "postgresql", "host": cp["login_host"], "port": cp["port"],
                  "database": database, "server_version": facts["server_version"],
                  "server_version_num": facts["server_version_num"], "client_host": socket.gethostname()}
        if not shares_files(runner):
            source["container"] = runner.facts()
        tools = {"pg_dump": dump_version, "pg_restore": restore_version}
        native = dumps_natively(fmt, p["compression_by"], tools["pg_dump"])
        options = {"format": fmt, "jobs": jobs, "row_counts": row_counts,
                   "compression_by": "pg_dump" if native else "drkit"}
        options.update(dict((k, v) for k, v in filters.items() if v))
        session = job.session(source, tools=tools, compression=compression, options=options,
                              labels=p["labels"], recipients=recipients)
        with session:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SELECT pg_export_snapshot(), now()")
                snapshot, snap_time = cur.fetchone()
                cur.execute(TABLES_SQL)
                tables = [(s, t) for s, t in cur.fetchall() if table_selected(s, t, filters)]
            counter = RowCounter(conn, tables) if row_counts else None
            if counter:
                counter.start()
            name = NATIVE_ARTIFACT if native else ARTIFACT[fmt]
            with ToolEnv(cp, database, local=shares_files(runner)) as tenv:
                argv = [pg_dump, "--no-password", "--snapshot=%s" % snapshot,
                        "--compress=zstd:%d" % level if native else "--compress=0"]
                argv += dump_filter_args(filters)
                if fmt == "custom":
                    progress("pg_dump -Fc%s of %s%s streaming to %s" % (
                        " (zstd by pg_dump)" if native else "", database, _where(runner), storage.describe()))
                    argv += ["--format=custom"]
                    handle = runner.spawn(argv, env=tenv.env)
                    with handle:
                        def finished():
                            check_tool_result("pg_dump", handle.wait(), handle.stderr_text(),
                                              "dumping database %s" % database)
                        extra = {"dump_compression": "zstd:%d" % level} if native else {}
                        # pg_dump gives no total: estimate from the database's size, unless pg_dump
                        # compresses (its output then bears no known relation to that size)
                        session.store_stream(name, handle.stdout, compress=not native, before_commit=finished,
                                             total=None if native else db_size, estimate=True,
                                             content="pg_dump custom archive", **extra)
                else:
                    work_dir = _work_dir(p["work_dir"], database)
                    job.cleanup(shutil.rmtree, work_dir, True)
                    out_dir = os.path.join(work_dir, "dump")
                    argv += ["--format=directory", "--jobs=%d" % jobs, "--file=%s" % out_dir]
                    progress("pg_dump -Fd -j %d of %s into %s" % (jobs, database, work_dir))
                    # no stream to count: the dump directory's growth, against the database's size
                    with meter(progress, "dump", "pg_dump -Fd", db_size, estimate=True) as m, \
                            DirectoryGrowth(out_dir, m):
                        rc, _out, err = runner.run(argv, env=tenv.env)
                    if rc != 0 and ran_out_of_room(work_dir, err):
                        raise _work_dir_full(p["work_dir"], database)
                    check_tool_result("pg_dump", rc, err, "dumping database %s" % database)
                    progress("streaming the dump directory to %s" % storage.describe())
                    _store_directory(session, name, out_dir)
                    shutil.rmtree(work_dir, ignore_errors=True)  # room for the next job's dump
            if counter:
                counter.join()
                if counter.error:
                    raise SourceError("Counting rows in pg_dump's snapshot failed: %s" % counter.error,
                                      "Set row_counts: false to skip counting on huge tables")
            conn.rollback()
            data = {"snapshot_time": mf.isoformat(snap_time), "tables": len(tables)}
            if session.encrypted:
                # this host holds no identity: the stored bytes are checked, the structure is
                # checked by a verify at level structure or restore where the identity is
                progress("re-reading %s (encrypted: size and sha256 only)" % name)
                session.reread(name)
            else:
                progress("re-reading %s and checking its structure" % name)
                data["toc_entries"] = list_archive(runner, pg_restore, fmt, name,
                                                   lambda consumer: session.reread(name, consumer=consumer))
            if counter:
                data["table_rows"] = manifest_rows(counter.counts)
            session.commit(data)
    result = session.result()
    result["msg"] = "Backed up %s to %s as %s" % (database, storage.describe(), session.backup_id)
    return True, result


def _where(runner):
    return "" if shares_files(runner) else " in %s" % runner.description


def _work_dir_full(parent, database, exc=None):
    return local_write_error(exc, parent or tempfile.gettempdir(),
                             "the uncompressed directory-format dump of %s (pg_dump -Fd)" % database, "work_dir")


def _work_dir(parent, database):
    """A private directory for the uncompressed directory-format dump."""
    try:
        return private_dir("dump", parent)
    except OSError as e:
        if is_disk_full(e):
            raise _work_dir_full(parent, database, e)
        raise ConfigError("Cannot create a work directory in %s: %s" % (
            parent or tempfile.gettempdir(), e.strerror or e),
            "Point work_dir at an existing, writable directory with room for the uncompressed dump")


def _store_directory(session, name, directory):
    # the dump is on disk: its size plus tar's 512-byte headers and padding is
    # the total (an estimate: a long name takes a PAX header more)
    size = sum(512 + -(-os.path.getsize(os.path.join(directory, e)) // 512) * 512 for e in os.listdir(directory))
    writer, sink = session.open_sink(name, total=size + 1024, estimate=True)
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, entry), arcname="dump/" + entry, recursive=False)
        session.finish_sink(name, writer, sink, content="pg_dump directory archive (tar)")
    except BaseException:
        writer.abort()
        raise
