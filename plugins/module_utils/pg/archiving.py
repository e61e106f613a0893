# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL archiving settings on a running server (drkit.backup.pg_wal_archive):
archive_command through ``drkit wal-push``, and the proof that a switched
segment reaches the archive.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shlex
import time

from ..core.errors import ConfigError, WaitTimeout
from ..core.metrics import METRICS_DIR
from ..core.options import Option, Options, resolve
from ..core.stream import COMPRESSION_LEVEL
from ..repo.wal_layout import wal_key
from ..storage.factory import STORAGE, open_storage, storage_options
from .client import CONNECTION, MAINTENANCE_DB, conn_params, connect, server_facts
from .wal_archive import READ_AHEAD

# --------------------------------------------------------------------------
# configuring archiving on a server (module pg_wal_archive, role postgresql_wal_archive)

# setting -> does a change need a restart (context postmaster)?
ARCHIVE_SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_timeout", "wal_log_hints")

# drkit.backup.pg_wal_archive. spool_dir, read_ahead, archive_async, metrics_dir and
# compression_level go into the archive_command (drkit wal-push's options);
# compression_level unset leaves wal-push's default out of the command.
OPTIONS = Options(
    CONNECTION, STORAGE,
    Option("wal_level", "str", default="replica", choices=("replica", "logical")),
    Option("archive_mode", "str", default="on", choices=("on", "always")),
    # PostgreSQL's range; 0 turns the forced segment switch off.
    Option("archive_timeout", "int", default=60, min=0, max=1073741823),
    # pg_rewind's prerequisite (an old primary rejoins as a standby); unset: left as it is
    Option("wal_log_hints", "bool"),
    Option("archive_command", "str"),
    Option("drkit_command", "str", default="/usr/local/bin/drkit"),
    Option("wal_config", "path"),
    Option("spool_dir", "path"),
    READ_AHEAD.but(default=4),
    Option("archive_async", "bool", default=False),
    METRICS_DIR,
    COMPRESSION_LEVEL.but(default=None),
    Option("test_archive", "bool", default=False),
    Option("test_timeout", "float", default=60, above=0),
    MAINTENANCE_DB,
)


def archive_command_for(params):
    """archive_command running ``drkit wal-push`` as the server's OS user."""
    p = resolve(OPTIONS, params)
    url = p["storage_url"]
    if not url:
        raise ConfigError("storage_url is required", "Name the archive, e.g. s3://bucket/pg-main")
    parts = [p["drkit_command"], "wal-push"]
    if p["wal_config"]:
        parts += ["--config", shlex.quote(p["wal_config"])]
    parts += ["--storage-url", shlex.quote(url)]
    if p["spool_dir"]:
        parts += ["--spool-dir", shlex.quote(p["spool_dir"]), "--read-ahead", str(p["read_ahead"])]
        if p["archive_async"]:
            parts.append("--async")
    elif p["archive_async"]:
        raise ConfigError("archive_async needs spool_dir (the background pusher's markers live there)",
                          "Give spool_dir, a directory owned by the server's OS user (the role creates it)")
    if p["metrics_dir"]:
        parts += ["--metrics-dir", shlex.quote(p["metrics_dir"])]
    if p["compression_level"] is not None:
        parts += ["--compression-level", str(p["compression_level"])]
    return " ".join(parts + ["%p", "%f"])


def configure_archiving(params, check_mode=False):
    """Set wal_level, archive_mode, archive_command and archive_timeout with
    ALTER SYSTEM (postgresql.auto.conf), reload, and report whether a
    restart is needed. With test_archive, also prove that archiving works:
    switch to a new segment and wait until it is in the archive.

    Returns (changed, result) with diff, restart_required, server facts."""
    p = resolve(OPTIONS, params)
    cp = conn_params(p)
    wanted = {
        "wal_level": p["wal_level"],
        "archive_mode": p["archive_mode"],
        "archive_command": p["archive_command"] or archive_command_for(p),
        "archive_timeout": str(p["archive_timeout"]),
    }
    if p["wal_log_hints"] is not None:
        wanted["wal_log_hints"] = "on" if p["wal_log_hints"] else "off"
    conn = connect(cp, p["maintenance_db"], autocommit=True)
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
        if p["test_archive"]:
            if result["restart_required"]:
                raise ConfigError("Cannot test archiving before the restart that %s need(s)" % ", ".join(
                    k for k in changes if current[k]["context"] == "postmaster") or "pending settings",
                    "Restart PostgreSQL (the role's handler does), then test again")
            result["test"] = prove_archiving(conn, p, p["test_timeout"])
        result["msg"] = ("Set %s" % ", ".join(sorted(changes))) if changes else "Archiving already configured"
        if result["restart_required"]:
            result["msg"] += "; a restart is needed for wal_level/archive_mode"
        return bool(changes), result
    finally:
        conn.close()


def prove_archiving(conn, params, timeout):
    """Switch to a new WAL segment and wait until the archiver reports it
    archived and it is in the archive; fail with pg_stat_archiver's view."""
    storage = open_storage(params["storage_url"], **storage_options(params))
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
