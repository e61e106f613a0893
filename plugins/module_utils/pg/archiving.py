# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL archiving settings on a running server (drkit.backup.pg_wal_archive):
archive_command through ``drkit wal-push``, and the proof that a switched
segment reaches the archive.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import shlex
import time

from ..core.errors import ConfigError, WaitTimeout
from ..repo.wal_layout import wal_key
from ..storage.factory import open_storage, storage_options
from .client import conn_params, connect, server_facts

# --------------------------------------------------------------------------
# configuring archiving on a server (module pg_wal_archive, role postgresql_wal_archive)

# setting -> does a change need a restart (context postmaster)?
ARCHIVE_SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_timeout")


def archive_command_for(params):
    """archive_command running ``drkit wal-push`` as the server's OS user."""
    drkit = params.get("drkit_command") or "/usr/local/bin/drkit"
    url = params.get("storage_url")
    if not url:
        raise ConfigError("storage_url is required", "Name the archive, e.g. s3://bucket/pg-main")
    parts = [drkit, "wal-push"]
    if params.get("wal_config"):
        parts += ["--config", shlex.quote(params["wal_config"])]
    parts += ["--storage-url", shlex.quote(url)]
    if params.get("spool_dir"):
        parts += ["--spool-dir", shlex.quote(params["spool_dir"]),
                  "--read-ahead", str(int(params.get("read_ahead") or 4))]
    if params.get("metrics_dir"):
        parts += ["--metrics-dir", shlex.quote(params["metrics_dir"])]
    if params.get("compression_level"):
        parts += ["--compression-level", str(int(params["compression_level"]))]
    return " ".join(parts + ["%p", "%f"])


def _timeout_seconds(value):
    text = str(value).strip().lower()
    m = re.match(r"^(\d+)\s*(ms|s|min|h|d)?$", text)
    if not m:
        raise ConfigError("archive_timeout %r is not a duration" % (value,), "Use seconds, e.g. 60 or 60s or 1min")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000.0, "s": n, "min": n * 60, "h": n * 3600, "d": n * 86400}[unit]


def configure_archiving(params, check_mode=False):
    """Set wal_level, archive_mode, archive_command and archive_timeout with
    ALTER SYSTEM (postgresql.auto.conf), reload, and report whether a
    restart is needed. With test_archive, also prove that archiving works:
    switch to a new segment and wait until it is in the archive.

    Returns (changed, result) with diff, restart_required, server facts."""
    cp = conn_params(params)
    wanted = {
        "wal_level": params.get("wal_level") or "replica",
        "archive_mode": params.get("archive_mode") or "on",
        "archive_command": params.get("archive_command") or archive_command_for(params),
        "archive_timeout": str(int(_timeout_seconds(params.get("archive_timeout") or 60))),
    }
    if wanted["wal_level"] not in ("replica", "logical"):
        raise ConfigError("wal_level must be replica or logical for archiving, got %r" % wanted["wal_level"])
    if wanted["archive_mode"] not in ("on", "always"):
        raise ConfigError("archive_mode must be on or always, got %r" % wanted["archive_mode"])
    conn = connect(cp, params.get("maintenance_db") or "postgres", autocommit=True)
    try:
        facts = server_facts(conn)
        if facts["server_version_num"] < 120000:
            raise ConfigError("PostgreSQL %s is too old: drkit's PITR needs 12 or newer (recovery.signal)" %
                              facts["server_version"], "Upgrade the server")
        with conn.cursor() as cur:
            cur.execute("SELECT name, setting, context, pending_restart FROM pg_settings WHERE name = ANY(%s)",
                        (list(ARCHIVE_SETTINGS),))
            current = dict((r[0], {"value": r[1], "context": r[2], "pending": r[3]}) for r in cur.fetchall())
        before = dict((k, current[k]["value"]) for k in ARCHIVE_SETTINGS)
        changes = dict((k, v) for k, v in wanted.items() if str(before.get(k)) != str(v))
        restart_required = any(current[k]["context"] == "postmaster" for k in changes) or \
            any(current[k]["pending"] for k in ARCHIVE_SETTINGS)
        data_directory = None
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT current_setting('data_directory')")
                data_directory = cur.fetchone()[0]
            except Exception:  # pylint: disable=broad-except
                pass  # needs superuser or pg_read_all_settings; only the preflight's disk check uses it
        result = {"diff": {"before": before, "after": dict(before, **wanted)}, "changes": sorted(changes),
                  "restart_required": restart_required, "server_version": facts["server_version"],
                  "server_version_num": facts["server_version_num"], "data_directory": data_directory,
                  "archive_command": wanted["archive_command"]}
        if check_mode:
            result["msg"] = "Would set %s" % (", ".join(sorted(changes)) or "nothing (already configured)")
            return bool(changes), result
        if changes:
            from psycopg import sql  # pylint: disable=import-outside-toplevel
            with conn.cursor() as cur:
                for k in sorted(changes):
                    cur.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(k), sql.Literal(changes[k])))
                cur.execute("SELECT pg_reload_conf()")
            time.sleep(0.2)
            with conn.cursor() as cur:
                cur.execute("SELECT bool_or(pending_restart) FROM pg_settings WHERE name = ANY(%s)",
                            (list(ARCHIVE_SETTINGS),))
                result["restart_required"] = bool(cur.fetchone()[0])
        if params.get("test_archive"):
            if result["restart_required"]:
                raise ConfigError("Cannot test archiving before the restart that %s need(s)" % ", ".join(
                    k for k in changes if current[k]["context"] == "postmaster") or "pending settings",
                    "Restart PostgreSQL (the role's handler does), then test again")
            result["test"] = prove_archiving(conn, params, float(params.get("test_timeout") or 60))
        result["msg"] = ("Set %s" % ", ".join(sorted(changes))) if changes else "Archiving already configured"
        if result["restart_required"]:
            result["msg"] += "; a restart is needed for wal_level/archive_mode"
        return bool(changes), result
    finally:
        conn.close()


def prove_archiving(conn, params, timeout):
    """Switch to a new WAL segment and wait until the archiver reports it
    archived and it is in the archive; fail with pg_stat_archiver's view."""
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_logical_emit_message(false, 'drkit', 'archive test')")
        cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
        segment = cur.fetchone()[0]
    deadline = time.time() + timeout
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver")
            archived, failed, failures = cur.fetchone()
        if archived and archived[:24] >= segment and storage.stat(wal_key(segment)) is not None:
            return {"segment": segment, "archived": True, "storage": storage.describe()}
        if time.time() > deadline:
            raise WaitTimeout("WAL segment %s did not reach the archive %s within %s s (last archived %s, last "
                              "failed %s, %s failures)" % (segment, storage.describe(), timeout, archived, failed,
                                                           failures),
                              "Read the server log for 'archive command failed' and the drkit wal-push error; "
                              "check drkit_command, wal_config (owner and mode) and the storage")
        time.sleep(0.3)
