# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``drkit`` command line: the same engine as the Ansible modules, for
cron and systemd.

Options come from ``--config FILE`` (YAML, the module option names as keys)
and flags; flags win.  Secrets are never accepted as flags (they would show in
the process list): put them in the 0600 config file or the environment
(PGPASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REDISCLI_AUTH).

Exit codes: 0 success; otherwise the DrkitError's exit_code (2 bad input,
3 storage, 4 not found, 5 conflict, 6 tool failed, 7 source unreachable,
8 integrity, 9 timeout, 10 refused for safety), 1 for anything unexpected,
130/143 when interrupted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import shlex
import stat
import sys
import time

from .core.errors import ConfigError, DrkitError
from .core.signals import signals_raise

SECRET_KEYS = ("login_password", "secret_key", "session_token", "encryption_passphrase")
ENV_FALLBACKS = {
    "login_password": ("PGPASSWORD",),
    "access_key": ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"),
    "session_token": ("AWS_SESSION_TOKEN",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "profile": ("AWS_PROFILE",),
    "ca_bundle": ("AWS_CA_BUNDLE",),
}


def load_config(path):
    if not path:
        return {}
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("Reading --config needs PyYAML", "pip install PyYAML")
    try:
        st = os.stat(path)
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except (IOError, OSError) as e:
        raise ConfigError("Cannot read config file %s: %s" % (path, e.strerror or e))
    except yaml.YAMLError as e:
        raise ConfigError("Config file %s is not valid YAML: %s" % (path, e))
    if not isinstance(data, dict):
        raise ConfigError("Config file %s must hold a mapping of option: value" % path)
    if any(data.get(k) for k in SECRET_KEYS) and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("Config file %s holds secrets but is readable by others (mode %o)" % (
            path, stat.S_IMODE(st.st_mode)), "chmod 600 %s" % path)
    return data


def merged(args, defaults=None):
    """Precedence: flags > config file > environment fallbacks (the env fills
    only what neither flags nor the config file set, like env_fallback in
    the modules)."""
    params = dict(defaults or {})
    params.update(load_config(getattr(args, "config", None)))
    for key, names in ENV_FALLBACKS.items():
        if params.get(key) is None:
            for n in names:
                if os.environ.get(n):
                    params[key] = os.environ[n]
                    break
    for key, value in vars(args).items():
        if key in ("config", "func", "json", "quiet") or value is None:
            continue
        params[key] = value
    return params


def _progress(quiet):
    if quiet:
        return lambda msg: None

    def say(msg):
        sys.stderr.write("%s drkit: %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()
    return say


def _add_restore_settings(p):
    p.add_argument("--restore-setting", dest="restore_settings", action="append", metavar="NAME=VALUE",
                   help="server setting for pg_restore's sessions (default maintenance_work_mem=256MB, "
                        "synchronous_commit=off; NAME= leaves the server's value); repeatable")


def _add_storage(p):
    p.add_argument("--storage-url", dest="storage_url", help="file:///abs/path or s3://bucket/prefix")
    p.add_argument("--endpoint-url", dest="endpoint_url", help="S3-compatible endpoint (or AWS_ENDPOINT_URL)")
    p.add_argument("--region", help="S3 region (or AWS_DEFAULT_REGION)")
    p.add_argument("--ca-bundle", dest="ca_bundle", help="CA bundle for the S3 endpoint")
    p.add_argument("--no-validate-certs", dest="validate_certs", action="store_const", const=False)
    p.add_argument("--profile", help="AWS profile name")


def _add_pg(p):
    p.add_argument("--host", dest="login_host")
    p.add_argument("--port", type=int)
    p.add_argument("--user", dest="login_user")
    p.add_argument("--pg-bin-dir", dest="pg_bin_dir")


def _add_common(p):
    p.add_argument("--config", help="YAML file with options (0600 if it holds secrets)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _add_metrics(p):
    p.add_argument("--metrics-dir", dest="metrics_dir", help="node_exporter textfile directory for the job's metrics")
    p.add_argument("--job-name", dest="job_name")


def _add_selector(p):
    """The CLI side of the drkit.backup.backup_selector options."""
    p.add_argument("--backup-id", dest="backup_id", help="an id, or latest (default)")
    p.add_argument("--before", help="with latest: the newest backup finished at or before this time (ISO 8601)")


def _add_compression(p):
    """The CLI side of the drkit.backup.compression options."""
    p.add_argument("--compression-level", dest="compression_level", type=int, help="zstd level 1-19 (default 3)")
    p.add_argument("--compression-threads", dest="compression_threads", type=int,
                   help="zstd worker threads (default 0: in the calling thread)")


def cmd_pg_backup(args, params):
    from .pg.backup import pg_backup  # pylint: disable=import-outside-toplevel
    return pg_backup(params, check_mode=bool(params.get("check")), progress=_progress(args.quiet))


def cmd_wal_push(args, params):
    from .pg.wal_archive import wal_push  # pylint: disable=import-outside-toplevel
    return wal_push(params, args.wal_path, args.wal_name, progress=_progress(args.quiet))


def cmd_wal_fetch(args, params):
    from .pg.wal_archive import wal_fetch  # pylint: disable=import-outside-toplevel
    return wal_fetch(params, args.wal_name, args.wal_path)


def cmd_pitr(args, params):
    from .pg.pitr import pg_pitr  # pylint: disable=import-outside-toplevel
    settings = dict(params.get("settings") or {})
    for item in params.pop("settings_list", None) or []:
        if "=" not in item:
            raise ConfigError("--set needs NAME=VALUE, got %r" % item)
        k, v = item.split("=", 1)
        settings[k.strip()] = v
    params["settings"] = settings
    return pg_pitr(params, check_mode=bool(params.get("check")), progress=_progress(args.quiet))


def cmd_verify(args, params):
    from .pg.verify import pg_verify  # pylint: disable=import-outside-toplevel
    if params.get("checks_file"):
        params["checks"] = load_config(params["checks_file"]).get("checks", [])
    _restore_settings(params)
    return pg_verify(params, check_mode=bool(params.get("check")), progress=_progress(args.quiet))


def _restore_settings(params):
    """--restore-setting NAME=VALUE flags (or a mapping in the config file) -> dict."""
    given = params.get("restore_settings")
    if not given or isinstance(given, dict):
        return
    out = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError("--restore-setting %r is not NAME=VALUE" % item,
                              "For example --restore-setting maintenance_work_mem=1GB "
                              "(NAME= to leave the server's value)")
        out[name.strip()] = value.strip()
    params["restore_settings"] = out


def cmd_restore(args, params):
    from .pg.restore import pg_restore_backup  # pylint: disable=import-outside-toplevel
    _restore_settings(params)
    return pg_restore_backup(params, check_mode=bool(params.get("check")), progress=_progress(args.quiet))


def cmd_list(args, params):
    from .repo.listing import backup_info  # pylint: disable=import-outside-toplevel
    return backup_info(params)


def cmd_rotate(args, params):
    from .repo.rotate import format_report, rotate  # pylint: disable=import-outside-toplevel
    check = bool(params.get("dry_run") or params.get("check"))
    changed, result = rotate(params, check_mode=check, progress=_progress(args.quiet))
    if not args.json:
        sys.stdout.write(format_report(result))
    return changed, result


def _redis_params(args, params):
    # login_password for Redis comes from the config file or REDISCLI_AUTH, never PGPASSWORD
    params["login_password"] = load_config(getattr(args, "config", None)).get("login_password")
    return params


def cmd_redis_snapshot(args, params):
    from .redis.snapshot import redis_snapshot  # pylint: disable=import-outside-toplevel
    return redis_snapshot(_redis_params(args, params), check_mode=bool(params.get("check")),
                          progress=_progress(args.quiet))


def cmd_redis_verify(args, params):
    from .redis.verify import redis_verify  # pylint: disable=import-outside-toplevel
    return redis_verify(params, check_mode=bool(params.get("check")), progress=_progress(args.quiet))


def cmd_redis_restore(args, params):

    from .redis.restore import redis_restore  # pylint: disable=import-outside-toplevel
    if isinstance(params.get("start_command"), str):
        params["start_command"] = shlex.split(params["start_command"])
    return redis_restore(_redis_params(args, params), check_mode=bool(params.get("check")),
                         progress=_progress(args.quiet))


def _add_redis(p):
    p.add_argument("--host", dest="login_host")
    p.add_argument("--port", dest="login_port", type=int)
    p.add_argument("--user", dest="login_user", help="ACL user (password: REDISCLI_AUTH or the config file)")
    p.add_argument("--tls", action="store_const", const=True)
    p.add_argument("--tls-ca-cert", dest="tls_ca_cert")
    p.add_argument("--tls-cert", dest="tls_cert")
    p.add_argument("--tls-key", dest="tls_key")
    p.add_argument("--no-tls-validate-certs", dest="tls_validate_certs", action="store_const", const=False)
    p.add_argument("--connect-timeout", dest="connect_timeout", type=float)


def _print_result(args, result):
    if getattr(args, "silent_success", False) and not args.json and not getattr(args, "verbose", False):
        return  # wal-push/wal-fetch run per WAL file: keep the server log quiet
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        return
    if args.command == "list":
        rows = result.get("backups", [])
        if not rows:
            sys.stdout.write("no complete backups in %s\n" % result.get("storage"))
        for b in rows:
            sys.stdout.write("%-40s %-12s %-28s %12d  %s%s\n" % (
                b["backup_id"], b["kind"], b["finished_at"], b["size"],
                b["source"].get("database") or b["source"].get("host"),
                "  [pinned]" if b.get("pinned") else ""))
        for p in result.get("problems", []):
            sys.stderr.write("warning: %s\n" % p)
        return
    sys.stdout.write("%s\n" % result.get("msg", "done"))


def build_parser():
    parser = argparse.ArgumentParser(prog="drkit",
                                     description="drkit.backup: verified backups for PostgreSQL and Redis")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pg-backup", help="back up a PostgreSQL database (pg_dump)")
    _add_common(p)
    _add_pg(p)
    _add_storage(p)
    p.add_argument("--database", "-d")
    p.add_argument("--mode", choices=["logical", "physical"])
    p.add_argument("--wal-wait-timeout", dest="wal_wait_timeout", type=float,
                   help="physical: seconds to wait for the backup's WAL to reach the archive (default 300)")
    p.add_argument("--checkpoint", choices=["fast", "spread"], help="physical: pg_basebackup --checkpoint")
    p.add_argument("--format", choices=["custom", "directory"])
    p.add_argument("--jobs", "-j", type=int)
    _add_compression(p)
    p.add_argument("--compression-by", dest="compression_by", choices=["auto", "drkit", "pg_dump"],
                   help="who compresses a custom-format dump: pg_dump itself (zstd, pg_dump 16+), "
                        "drkit's zstd, or auto (pg_dump when it can)")
    p.add_argument("--schema", dest="schemas", action="append")
    p.add_argument("--exclude-schema", dest="exclude_schemas", action="append")
    p.add_argument("--table", dest="tables", action="append")
    p.add_argument("--exclude-table", dest="exclude_tables", action="append")
    p.add_argument("--no-row-counts", dest="row_counts", action="store_const", const=False)
    _add_metrics(p)
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, write nothing")
    p.set_defaults(func=cmd_pg_backup)

    p = sub.add_parser("verify", help="verify a PostgreSQL backup (checksum, structure or test-restore)")
    _add_common(p)
    _add_pg(p)
    _add_storage(p)
    _add_selector(p)
    p.add_argument("--level", choices=["checksum", "structure", "restore"])
    p.add_argument("--jobs", "-j", type=int)
    p.add_argument("--source-database", dest="source_database", help="latest backup of this database")
    p.add_argument("--checks-file", dest="checks_file", help="YAML file with a 'checks' list of SQL checks")
    _add_restore_settings(p)
    _add_metrics(p)
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--check", action="store_true", default=None, help="say what would be verified, change nothing")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("restore", help="restore a PostgreSQL logical backup into a database")
    _add_common(p)
    _add_pg(p)
    _add_storage(p)
    _add_selector(p)
    p.add_argument("--source-database", dest="source_database", help="only backups of this database")
    p.add_argument("--target-database", dest="target_database")
    p.add_argument("--force", action="store_true", default=None,
                   help="replace a non-empty target (restored copy is swapped in)")
    p.add_argument("--keep-old", dest="keep_old", action="store_true", default=None)
    p.add_argument("--jobs", "-j", type=int)
    p.add_argument("--no-owner", dest="no_owner", action="store_true", default=None)
    p.add_argument("--no-privileges", dest="no_privileges", action="store_true", default=None)
    p.add_argument("--role")
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--row-count-method", dest="row_count_method", choices=["stats", "count"],
                   help="stats: PostgreSQL's insert counters, count(*) where they differ (default); "
                        "count: count(*) on every table")
    p.add_argument("--no-row-counts", dest="check_row_counts", action="store_const", const=False,
                   help="do not compare row counts with the manifest")
    _add_restore_settings(p)
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, change nothing")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("list", help="list complete backups, newest first")
    _add_common(p)
    _add_storage(p)
    p.add_argument("--kind")
    p.add_argument("--database", "-d")
    p.add_argument("--source")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("rotate", help="delete old backups by a keep-last/daily/weekly/monthly/yearly policy")
    _add_common(p)
    _add_storage(p)
    p.add_argument("--keep-last", dest="keep_last", type=int, metavar="N")
    p.add_argument("--keep-daily", dest="keep_daily", type=int, metavar="N")
    p.add_argument("--keep-weekly", dest="keep_weekly", type=int, metavar="N")
    p.add_argument("--keep-monthly", dest="keep_monthly", type=int, metavar="N")
    p.add_argument("--keep-yearly", dest="keep_yearly", type=int, metavar="N")
    p.add_argument("--keep-within", dest="keep_within", metavar="DURATION", help="e.g. 2d, 12h, 1w, 1m, 1y")
    p.add_argument("--timezone", help="IANA zone for day/week/month/year boundaries (default UTC)")
    p.add_argument("--group-by", dest="group_by", action="append", choices=["kind", "source", "database", "none"])
    p.add_argument("--kind")
    p.add_argument("--database", "-d")
    p.add_argument("--source")
    p.add_argument("--incomplete-grace", dest="incomplete_grace", metavar="DURATION", help="default 1d")
    p.add_argument("--no-prune-wal", dest="prune_wal", action="store_const", const=False)
    _add_metrics(p)
    p.add_argument("--dry-run", "--check", dest="dry_run", action="store_true", default=None,
                   help="print the plan with reasons, delete nothing")
    p.set_defaults(func=cmd_rotate)

    # archive_command / restore_command: positional %p %f / %f %p as PostgreSQL passes them.
    p = sub.add_parser("wal-push", help="archive_command: store one WAL file (%%p %%f) in the archive")
    _add_common(p)
    _add_storage(p)
    p.add_argument("--compression-level", dest="compression_level", type=int)
    p.add_argument("--spool-dir", dest="spool_dir",
                   help="enables read-ahead: markers of WAL files pushed ahead are kept here")
    p.add_argument("--read-ahead", dest="read_ahead", type=int,
                   help="also push up to N further .ready segments in parallel (needs --spool-dir)")
    _add_metrics(p)
    p.add_argument("--verbose", "-v", action="store_true", help="print a line per file on success")
    p.add_argument("wal_path", metavar="PATH", help="%%p: path of the file, relative to the data directory")
    p.add_argument("wal_name", metavar="NAME", help="%%f: its file name")
    p.set_defaults(func=cmd_wal_push, silent_success=True)

    p = sub.add_parser("wal-fetch", help="restore_command: fetch one WAL file (%%f %%p); exit 1 if not archived")
    _add_common(p)
    _add_storage(p)
    p.add_argument("--verbose", "-v", action="store_true", help="print a line per file on success")
    p.add_argument("--prefetch", type=int, metavar="N",
                   help="also download the next N segments in parallel into pg_wal/.drkit-prefetch")
    p.add_argument("wal_name", metavar="NAME", help="%%f: the file name PostgreSQL asks for")
    p.add_argument("wal_path", metavar="PATH", help="%%p: where to write it")
    p.set_defaults(func=cmd_wal_fetch, silent_success=True)

    p = sub.add_parser("pitr", help="point-in-time recovery: restore a physical backup into a new data directory")
    _add_common(p)
    _add_storage(p)
    p.add_argument("--backup-id", dest="backup_id", help="default: the newest base backup that can reach the target")
    p.add_argument("--target", choices=["latest", "immediate", "time", "xid", "lsn", "name"])
    p.add_argument("--target-value", dest="target_value", help="the time, xid, LSN or restore point name")
    p.add_argument("--exclusive", dest="target_inclusive", action="store_const", const=False,
                   help="stop just before the target instead of just after it")
    p.add_argument("--data-directory", dest="data_directory", help="new, empty (or absent) directory")
    p.add_argument("--port", type=int, help="port of the recovered server")
    p.add_argument("--no-start", dest="start", action="store_const", const=False,
                   help="only restore and configure; start it yourself later")
    p.add_argument("--os-user", dest="os_user", help="owner of the restored cluster (default: postgres as root)")
    p.add_argument("--pg-bin-dir", dest="pg_bin_dir")
    p.add_argument("--drkit-command", dest="drkit_command",
                   help="how the server's OS user runs drkit in restore_command")
    p.add_argument("--wal-config", dest="wal_config",
                   help="drkit config file (0600, readable by the server's OS user) for restore_command")
    p.add_argument("--set", dest="settings_list", action="append", metavar="NAME=VALUE",
                   help="extra setting for the recovered server (postgresql.auto.conf); repeatable")
    p.add_argument("--timeout", type=float, help="seconds to wait for recovery to finish (default 3600)")
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, change nothing")
    p.set_defaults(func=cmd_pitr)

    p = sub.add_parser("redis-snapshot", help="back up Redis (BGSAVE rdb, remote RDB over SYNC, or AOF)")
    _add_common(p)
    _add_redis(p)
    _add_storage(p)
    p.add_argument("--mode", choices=["rdb", "remote", "aof"])
    p.add_argument("--timeout", type=float, help="seconds to wait for the save (default 600)")
    p.add_argument("--no-pause-writes", dest="pause_writes", action="store_const", const=False,
                   help="remote/aof: do not pause writes (key counts become approximate)")
    p.add_argument("--pause-timeout", dest="pause_timeout", type=int, help="longest write pause, ms (default 2000)")
    _add_compression(p)
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--redis-bin-dir", dest="redis_bin_dir")
    _add_metrics(p)
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, write nothing")
    p.set_defaults(func=cmd_redis_snapshot)

    p = sub.add_parser("redis-verify", help="verify a Redis backup (checksum, structure or load into a scratch server)")
    _add_common(p)
    _add_storage(p)
    _add_selector(p)
    p.add_argument("--source", help="only backups of this source (redis:<host>:<port>)")
    p.add_argument("--level", choices=["checksum", "structure", "restore"])
    p.add_argument("--timeout", type=float)
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--redis-bin-dir", dest="redis_bin_dir")
    _add_metrics(p)
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, write nothing")
    p.set_defaults(func=cmd_redis_verify)

    p = sub.add_parser("redis-restore", help="place a Redis backup into a stopped instance's data directory")
    _add_common(p)
    _add_redis(p)
    _add_storage(p)
    _add_selector(p)
    p.add_argument("--source")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--redis-conf", dest="redis_conf", help="read dir, dbfilename, appendonly... from it")
    p.add_argument("--appendonly", dest="appendonly", action="store_const", const=True)
    p.add_argument("--no-appendonly", dest="appendonly", action="store_const", const=False)
    p.add_argument("--dbfilename")
    p.add_argument("--appenddirname")
    p.add_argument("--appendfilename")
    p.add_argument("--force", action="store_const", const=True, help="move existing data aside and restore")
    p.add_argument("--owner")
    p.add_argument("--group")
    p.add_argument("--start-command", dest="start_command", help="command that starts the instance (no shell)")
    p.add_argument("--timeout", type=float)
    p.add_argument("--redis-bin-dir", dest="redis_bin_dir")
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, write nothing")
    p.set_defaults(func=cmd_redis_restore)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with signals_raise("Nothing was recorded as a backup for this run"):
            params = merged(args)
            _changed, result = args.func(args, params)
    except DrkitError as e:
        sys.stderr.write("drkit %s: %s: %s\n" % (args.command, getattr(e, "label", "error"), e))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("drkit %s: interrupted\n" % args.command)
        return 130
    _print_result(args, result)
    return 0
