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
import signal
import stat
import sys
import time

from .errors import ConfigError, DrkitError

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


class Interrupted(DrkitError):
    exit_code = 143


def _on_signal(signum, _frame):
    # Raising from the handler unwinds through every finally/with block, so
    # temp files are removed and partial uploads aborted.
    raise Interrupted("Interrupted by signal %d" % signum,
                      "Nothing was recorded as a backup for this run")


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
    """config file < environment fallbacks < flags."""
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


def cmd_pg_backup(args, params):
    from .pg_logical import pg_backup_logical  # pylint: disable=import-outside-toplevel
    mode = params.get("mode") or "logical"
    if mode != "logical":
        raise ConfigError("mode %r is not available yet" % mode, "Use mode: logical")
    return pg_backup_logical(params, check_mode=bool(params.get("check")),
                             progress=_progress(args.quiet))


def cmd_verify(args, params):
    from .pg_verify import pg_verify  # pylint: disable=import-outside-toplevel
    if params.get("checks_file"):
        params["checks"] = load_config(params["checks_file"]).get("checks", [])
    return pg_verify(params, progress=_progress(args.quiet))


def cmd_restore(args, params):
    from .pg_restore import pg_restore_backup  # pylint: disable=import-outside-toplevel
    return pg_restore_backup(params, check_mode=bool(params.get("check")), progress=_progress(args.quiet))


def cmd_list(args, params):
    from .backup_info import backup_info  # pylint: disable=import-outside-toplevel
    return backup_info(params)


def _print_result(args, result):
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
    parser = argparse.ArgumentParser(prog="drkit", description="drkit.backup: verified backups for PostgreSQL and Redis")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pg-backup", help="back up a PostgreSQL database (pg_dump)")
    _add_common(p)
    _add_pg(p)
    _add_storage(p)
    p.add_argument("--database", "-d")
    p.add_argument("--mode", choices=["logical"])
    p.add_argument("--format", choices=["custom", "directory"])
    p.add_argument("--jobs", "-j", type=int)
    p.add_argument("--compression-level", dest="compression_level", type=int)
    p.add_argument("--compression-threads", dest="compression_threads", type=int)
    p.add_argument("--schema", dest="schemas", action="append")
    p.add_argument("--exclude-schema", dest="exclude_schemas", action="append")
    p.add_argument("--table", dest="tables", action="append")
    p.add_argument("--exclude-table", dest="exclude_tables", action="append")
    p.add_argument("--no-row-counts", dest="row_counts", action="store_const", const=False)
    p.add_argument("--metrics-dir", dest="metrics_dir")
    p.add_argument("--job-name", dest="job_name")
    p.add_argument("--work-dir", dest="work_dir")
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, write nothing")
    p.set_defaults(func=cmd_pg_backup)

    p = sub.add_parser("verify", help="verify a PostgreSQL backup (checksum, structure or test-restore)")
    _add_common(p)
    _add_pg(p)
    _add_storage(p)
    p.add_argument("--backup-id", dest="backup_id", help="an id, or latest (default)")
    p.add_argument("--level", choices=["checksum", "structure", "restore"])
    p.add_argument("--jobs", "-j", type=int)
    p.add_argument("--source-database", dest="source_database", help="latest backup of this database")
    p.add_argument("--checks-file", dest="checks_file", help="YAML file with a 'checks' list of SQL checks")
    p.add_argument("--metrics-dir", dest="metrics_dir")
    p.add_argument("--job-name", dest="job_name")
    p.add_argument("--work-dir", dest="work_dir")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("restore", help="restore a PostgreSQL logical backup into a database")
    _add_common(p)
    _add_pg(p)
    _add_storage(p)
    p.add_argument("--backup-id", dest="backup_id", help="an id, or latest (default)")
    p.add_argument("--before", help="newest backup finished at or before this time (ISO 8601)")
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
    p.add_argument("--check", action="store_true", default=None, help="say what would be done, change nothing")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("list", help="list complete backups, newest first")
    _add_common(p)
    _add_storage(p)
    p.add_argument("--kind")
    p.add_argument("--database", "-d")
    p.add_argument("--source")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        params = merged(args)
        _changed, result = args.func(args, params)
    except DrkitError as e:
        sys.stderr.write("drkit %s: error: %s\n" % (args.command, e))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("drkit %s: interrupted\n" % args.command)
        return 130
    _print_result(args, result)
    return 0
