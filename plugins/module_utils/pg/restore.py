# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring logical backups (drkit.backup.pg_restore): the real recovery
path.  pg_verify's test-restore uses the same parts (pg.dump, pg.dump_fetch,
pg.rowcounts).

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

import time

from ..core.crypto import DECRYPTION, Keyring
from ..core.errors import ConfigError, IntegrityError, SafetyError
from ..core.options import Option, Options, resolve
from ..container.client import DOCKER
from ..container.runner import open_runner
from ..core.signals import signals_raise
from ..core.signing import VERIFYING, Trust
from ..repo import manifest as mf
from ..storage.factory import STORAGE, open_storage, storage_options
from .client import (
    CONNECTION,
    MAINTENANCE_DB,
    MAX_IDENT,
    conn_params,
    connect,
    create_database,
    database_exists,
    drop_database,
    ident,
    locate_tool,
    server_facts,
    user_object_count,
)
from .dump import (
    JOBS,
    NO_OWNER,
    NO_PRIVILEGES,
    SESSION_SETTINGS,
    check_in_container,
    dump_format,
    run_pg_restore,
    session_options,
)
from .dump_fetch import ArtifactFetch
from .janitor import OLD, STAGING, sweep_databases, unique_name
from .rowcounts import ROW_COUNT_METHOD, compare_counts, expected_counts, restored_counts

# drkit.backup.pg_restore / drkit restore
OPTIONS = Options(
    CONNECTION, STORAGE, mf.BACKUP_SELECTOR, DOCKER,
    Option("source_database", "str", flags=("--source-database",), help="only backups of this database"),
    Option("target_database", "str", required=True, flags=("--target-database",)),
    Option("force", "bool", default=False, flags=("--force",),
           help="replace a non-empty target (restored copy is swapped in)"),
    Option("keep_old", "bool", default=False, flags=("--keep-old",)),
    JOBS, NO_OWNER, NO_PRIVILEGES,
    Option("role", "str", flags=("--role",), help="pg_restore --role"),
    Option("owner", "str"),
    Option("check_row_counts", "bool", default=True, off_flags=("--no-row-counts",),
           help="do not compare row counts with the manifest"),
    MAINTENANCE_DB, ROW_COUNT_METHOD, SESSION_SETTINGS,
    Option("work_dir", "path", flags=("--work-dir",), help="where jobs > 1 decompresses the dump"),
    DECRYPTION,
    VERIFYING,
)


def resolve_logical(storage, p):
    entry = mf.resolve(storage, p["backup_id"], before=p["before"], database=p["source_database"], restorable=True,
                       trust=Trust.from_params(p))
    kind = entry.manifest["kind"]
    if kind != "pg_logical":
        raise ConfigError("Backup %s is a %s backup" % (entry.backup_id, kind),
                          "pg_restore restores logical backups; use pg_pitr for physical ones")
    return entry


def pg_restore_backup(params, check_mode=False, runner=None, progress=None):
    """Restore a logical backup into target_database. Returns (changed, result)."""
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    target = p["target_database"]
    if not target:
        raise ConfigError("target_database is required", "Name the database to restore into")
    if len(target.encode("utf-8")) > MAX_IDENT:
        raise ConfigError("target_database %r is longer than 63 bytes" % target,
                          "PostgreSQL would cut the name; choose a shorter one")
    session_options(p["restore_settings"])  # a bad setting fails before anything is done
    cp = conn_params(p)
    storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    entry = resolve_logical(storage, p)
    manifest = entry.manifest
    maintenance_db = p["maintenance_db"]
    runner = runner or open_runner(p)
    check_in_container(runner, dump_format(manifest), p["jobs"], restore=True)

    if check_mode:
        return True, _plan(cp, maintenance_db, entry, target, p["force"], check_mode)[0]
    fetch = ArtifactFetch(storage, manifest, p["work_dir"], progress, Keyring(p["encryption_identity_file"]))
    t0 = time.time()
    fetch.require_key()  # an encrypted backup without its identity fails before anything is done
    with signals_raise():
        try:
            if p["jobs"] > 1 and fetch.fmt == "custom":
                # Download while we connect, check the target and create the database.
                progress(fetch.describe_download())
                fetch.start()
            plan, facts = _plan(cp, maintenance_db, entry, target, p["force"], check_mode, progress)
            pg_restore = locate_tool(runner, "pg_restore", facts["server_version_num"], p["pg_bin_dir"])[0]
            fetch.require_reader(runner, pg_restore)  # before any database is created
            timings, rows, old_name = _restore_and_swap(runner, cp, fetch, pg_restore, plan, p, progress)
        finally:
            fetch.cleanup()
    duration = round(time.time() - t0, 3)
    plan.update({"duration": duration, "timings": timings, "tables": rows, "verified": bool(rows),
                 "old_database": old_name,
                 "msg": "Restored %s into %s in %.1f s" % (entry.backup_id, target, duration)})
    return True, plan


def _plan(cp, maintenance_db, entry, target, force, check_mode, progress=None):
    """Inspect the target; refuse a non-empty one without force (a real run
    first drops what dead drkit processes of this host left). (plan, facts)"""
    conn = connect(cp, maintenance_db, autocommit=True)
    try:
        facts = server_facts(conn)
        if not check_mode:
            sweep_databases(conn, progress)
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
            "source": manifest["source"], "passed_over": list(entry.passed_over)}
    if check_mode:
        plan["msg"] = "Would restore %s into %s%s" % (
            entry.backup_id, target, " (replacing the existing database)" if exists else "")
    return plan, facts


def _restore_and_swap(runner, cp, fetch, pg_restore, plan, p, progress):
    """Restore into a staging database, check it, put it in place (``p``:
    the resolved options). Returns (timings, per-table rows, name of a kept
    old database)."""
    target = plan["target_database"]
    jobs = p["jobs"]
    manifest = fetch.manifest
    staging = unique_name(target, STAGING)
    old_name = None
    conn = connect(cp, p["maintenance_db"], autocommit=True)
    try:
        create_database(conn, staging, owner=p["owner"])
        try:
            timings = run_pg_restore(runner, cp, fetch, pg_restore, staging, jobs, p, progress)
            rows = _check_counts(cp, staging, manifest, p, timings, progress) if p["check_row_counts"] else []
            if plan["target_exists"]:
                old_name = unique_name(target, OLD)
                progress("swapping %s into place (old copy: %s)" % (staging, old_name))
                _swap(conn, target, staging, old_name)
                if not p["keep_old"]:
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


def _check_counts(cp, staging, manifest, p, timings, progress):
    """Compare the restored tables' row counts with the manifest's; the
    per-table rows, or IntegrityError before anything is put in place."""
    t1 = time.time()
    expected, notes = expected_counts(manifest.get("data", {}), cp, staging)
    for note in notes:
        progress("note: %s" % note)
    if expected is None:
        return []
    method = p["row_count_method"]
    counts, scanned = restored_counts(cp, staging, expected, p["jobs"], method)
    rows, problems = compare_counts(expected, counts)
    timings.update({"check_seconds": round(time.time() - t1, 3), "row_count_method": method,
                    "tables_scanned": scanned})
    if problems:
        raise IntegrityError("Restored data differs from the backup's manifest: %s" % (
            "; ".join(problems[:10])), "The target was not touched")
    return rows


def _rename(conn, old, new):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    with conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(old), ident(new)))


def _swap(conn, target, staging, old_name):
    """Both renames in one transaction (ALTER DATABASE RENAME is
    transactional): killed at any point, drkit leaves either the original
    under the target's name or the restored copy there and the original as
    old_name, never a missing target with the data under another name."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (target,))
    with conn.transaction():
        _rename(conn, target, old_name)
        _rename(conn, staging, target)
