# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``drkit`` command line: the same engine as the Ansible modules, for
cron and systemd.

Every command's options come from the engine's registry (its ``OPTIONS``,
see core/options.py), so a flag, a config-file key and a module option are
one option: same name, type, default and allowed range. They come from
flags, ``--config FILE`` (YAML, the module option names or their aliases as
keys, e.g. ``login_port`` for ``port``) and the options' environment
variables; flags win over the file, the file over the environment, the
environment over the default. Secrets are never accepted as flags (they
would show in the process list): put them in the 0600 config file or the
environment (PGPASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
REDISCLI_AUTH). A config-file key that no drkit command knows (a typo such
as ``login_pasword``) is refused, naming the key and the closest known one;
keys of the other commands are fine (one job's file serves several).

Exit codes: 0 success; otherwise the DrkitError's exit_code (2 bad input,
3 storage, 4 not found, 5 conflict, 6 tool failed, 7 source unreachable,
8 integrity, 9 timeout, 10 refused for safety), 1 for anything unexpected,
130/143 when interrupted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import difflib
import json
import os
import stat
import sys
import time

from .core import janitor
from .core.errors import ConfigError, DrkitError, Terminated
from .core.options import fold_aliases, resolve
from .core.progress import for_terminal, human_age, human_bytes
from .core.signals import signals_raise

# Keys whose value makes a world-readable config file an error, whichever
# command reads it (one job's file serves several commands); a unit test
# checks it holds every secret option and alias of the registry.
SECRET_KEYS = ("login_password", "secret_key", "aws_secret_key", "session_token", "encryption_passphrase",
               "azure_account_key", "azure_sas_token", "azure_connection_string",
               "to_secret_key", "to_aws_secret_key", "to_session_token",
               "to_azure_account_key", "to_azure_sas_token", "to_azure_connection_string",
               "login_passwords")
# argparse destinations that are not options
INTERNAL = ("config", "func", "json", "quiet", "options")
# PostgreSQL runs these once per WAL file and they create no directories:
# no janitor in the archiving path, nor in the minutely standby check (it creates nothing)
NO_JANITOR = ("wal-push", "wal-fetch", "standby-check")
# commands that move no data through a progress meter: no ``steps`` in their result
NO_STEPS = ("list", "wal-fetch")


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


def merged(args):
    """The command's parameters: flags > config file > environment > default,
    resolved against the command's options (coerced and checked; a bad
    value is a ConfigError naming the option). Config-file keys may be
    aliases (``login_port``); keys that are options of another command
    pass through (a job's file serves its backup, verify and rotate), keys
    of none are refused (check_config_keys)."""
    options = args.options
    path = getattr(args, "config", None)
    config = load_config(path)
    check_config_keys(path, config, options)
    params = fold_aliases(options, config)
    for key, value in vars(args).items():
        if key in INTERNAL or value is None:
            continue
        params[key] = value
    for opt in options:
        if opt.type == "dict" and opt.flags and isinstance(params.get(opt.name), list):
            params[opt.name] = name_values(opt.flags[0], params[opt.name])
    return resolve(options, params)


def known_config_keys():
    """Every key some drkit command reads from a config file: the names and
    aliases of every command's options, and the destinations of its other
    flags (``check``, ``dry_run``, ``checks_file``...). Imports every
    command's options: called only for keys the running command does not know."""
    keys = set()
    for _name, _text, options, extras, _run in COMMANDS:
        for opt in options():
            keys.update(opt.names)
        if extras:
            parser = argparse.ArgumentParser(add_help=False)
            extras(parser)
            keys.update(a.dest for a in parser._actions if a.option_strings)  # pylint: disable=protected-access
    return keys


def check_config_keys(path, config, options):
    """Refuse the keys of a config file that no drkit command reads, naming
    each and the closest known name (a typo like ``login_pasword`` would
    otherwise go unnoticed)."""
    unknown = [k for k in config if not (isinstance(k, str) and k in options)]
    if not unknown:
        return
    known = known_config_keys()
    unknown = [k for k in unknown if not (isinstance(k, str) and k in known)]
    if not unknown:
        return
    described = []
    for key in sorted(unknown, key=str):
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        described.append("%r%s" % (key, " (did you mean %r?)" % close[0] if close else ""))
    raise ConfigError("Config file %s: unknown key%s %s" % (path, "s" if len(unknown) > 1 else "",
                                                            ", ".join(described)),
                      "No drkit command reads %s: correct or remove %s (the keys are the option names of "
                      "the drkit commands and the modules, see docs/options.md)" % (
                          "them" if len(unknown) > 1 else "it", "them" if len(unknown) > 1 else "it"))


def name_values(flag, items):
    """Repeated ``FLAG NAME=VALUE`` -> {NAME: VALUE} (``NAME=`` gives "")."""
    out = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ConfigError("%s %r is not NAME=VALUE" % (flag, item),
                              "For example %s maintenance_work_mem=1GB (NAME= to leave the server's value)" % flag)
        out[name.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------
# flags from the registry


_TYPES = {"int": int, "float": float}


def add_options(parser, options):
    """A flag for every option that has one: ``--compression-level`` stores
    into ``compression_level``; a bool's flags store true and its off_flags
    (``--no-row-counts``) false; a list's flag repeats, a dict's takes
    NAME=VALUE and repeats. Nothing is stored when a flag is not given, so
    the config file, the environment and the default still apply."""
    for opt in options:
        if opt.type == "bool":
            if opt.flags:
                parser.add_argument(*opt.flags, dest=opt.name, action="store_const", const=True, help=opt.help)
            if opt.off_flags:
                parser.add_argument(*opt.off_flags, dest=opt.name, action="store_const", const=False,
                                    help=None if opt.flags else opt.help)
            continue
        if not opt.flags:
            continue
        kwargs = {"dest": opt.name, "help": opt.help}
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        if opt.type in _TYPES:
            kwargs["type"] = _TYPES[opt.type]
        if opt.type == "dict" or (opt.type == "list" and opt.split is None):
            kwargs["action"] = "append"
        if opt.choices:
            kwargs["choices"] = list(opt.choices)
        parser.add_argument(*opt.flags, **kwargs)


def _add_common(p):
    p.add_argument("--config", help="YAML file with options (0600 if it holds secrets)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress on stderr (by default: bars on a terminal, otherwise a line every "
                        "DRKIT_PROGRESS_INTERVAL seconds, default 60)")


def _check(text):
    def add(p):
        p.add_argument("--check", action="store_true", default=None, help=text)
    return add


# --------------------------------------------------------------------------
# the commands: options (imported only for the command that runs, so a
# wal-push loads no PITR code), extra flags, and the call into the engine


def _pg_backup():
    from .pg import backup  # pylint: disable=import-outside-toplevel
    return backup.OPTIONS


def cmd_pg_backup(args, params):
    from .pg.backup import pg_backup  # pylint: disable=import-outside-toplevel
    return pg_backup(params, check_mode=bool(params.get("check")), progress=args.progress)


def _wal_push():
    from .pg import wal_archive  # pylint: disable=import-outside-toplevel
    return wal_archive.WAL_PUSH_OPTIONS


def _wal_push_extras(p):
    p.add_argument("--verbose", "-v", action="store_true", help="print a line per file on success")
    p.add_argument("wal_path", metavar="PATH", help="%%p: path of the file, relative to the data directory")
    p.add_argument("wal_name", metavar="NAME", help="%%f: its file name")
    p.set_defaults(silent_success=True)


def cmd_wal_push(args, params):
    from .pg.wal_archive import wal_push  # pylint: disable=import-outside-toplevel
    return wal_push(params, args.wal_path, args.wal_name, progress=args.progress)


def _wal_fetch():
    from .pg import wal_archive  # pylint: disable=import-outside-toplevel
    return wal_archive.WAL_FETCH_OPTIONS


def _wal_fetch_extras(p):
    p.add_argument("--verbose", "-v", action="store_true", help="print a line per file on success")
    p.add_argument("wal_name", metavar="NAME", help="%%f: the file name PostgreSQL asks for")
    p.add_argument("wal_path", metavar="PATH", help="%%p: where to write it")
    p.set_defaults(silent_success=True)


def cmd_wal_fetch(args, params):
    from .pg.wal_archive import wal_fetch  # pylint: disable=import-outside-toplevel
    return wal_fetch(params, args.wal_name, args.wal_path)


def _wal_stream():
    from .pg import wal_stream  # pylint: disable=import-outside-toplevel
    return wal_stream.OPTIONS


def cmd_wal_stream(args, params):
    from .pg.wal_stream import wal_stream  # pylint: disable=import-outside-toplevel
    return wal_stream(params, progress=args.progress)


def _pitr():
    from .pg import pitr  # pylint: disable=import-outside-toplevel
    return pitr.OPTIONS


def _pitr_extras(p):
    p.add_argument("--set", dest="settings_list", action="append", metavar="NAME=VALUE",
                   help="extra setting for the recovered server (postgresql.auto.conf); repeatable")
    _check("say what would be done, change nothing")(p)


def _merge_set_flags(params):
    """``--set NAME=VALUE`` flags over the config file's ``settings``."""
    settings = dict(params.get("settings") or {})
    settings.update(name_values("--set", params.pop("settings_list", None) or []))
    params["settings"] = settings


def cmd_pitr(args, params):
    from .pg.pitr import pg_pitr  # pylint: disable=import-outside-toplevel
    _merge_set_flags(params)
    return pg_pitr(params, check_mode=bool(params.get("check")), progress=args.progress)


def _standby():
    from .pg import standby  # pylint: disable=import-outside-toplevel
    return standby.OPTIONS


def cmd_standby(args, params):
    from .pg.standby import pg_standby  # pylint: disable=import-outside-toplevel
    _merge_set_flags(params)
    return pg_standby(params, check_mode=bool(params.get("check")), progress=args.progress)


def _standby_check():
    from .pg import standby_check  # pylint: disable=import-outside-toplevel
    return standby_check.OPTIONS


def cmd_standby_check(_args, params):
    from .pg.standby_check import standby_check  # pylint: disable=import-outside-toplevel
    return standby_check(params)


def _failover():
    from .pg import failover  # pylint: disable=import-outside-toplevel
    return failover.OPTIONS


def cmd_failover(args, params):
    from .pg.failover import pg_failover  # pylint: disable=import-outside-toplevel
    return pg_failover(params, check_mode=bool(params.get("check")), progress=args.progress)


def _verify():
    from .pg import verify  # pylint: disable=import-outside-toplevel
    return verify.OPTIONS


def _verify_extras(p):
    p.add_argument("--checks-file", dest="checks_file", help="YAML file with a 'checks' list of SQL checks")
    _check("say what would be verified, change nothing")(p)


def cmd_verify(args, params):
    from .pg.verify import pg_verify  # pylint: disable=import-outside-toplevel
    if params.get("checks_file"):
        params["checks"] = load_config(params["checks_file"]).get("checks", [])
    return pg_verify(params, check_mode=bool(params.get("check")), progress=args.progress)


def _restore():
    from .pg import restore  # pylint: disable=import-outside-toplevel
    return restore.OPTIONS


def cmd_restore(args, params):
    from .pg.restore import pg_restore_backup  # pylint: disable=import-outside-toplevel
    return pg_restore_backup(params, check_mode=bool(params.get("check")), progress=args.progress)


def _list():
    from .repo import listing  # pylint: disable=import-outside-toplevel
    return listing.OPTIONS


def cmd_list(args, params):
    from .repo.listing import backup_info  # pylint: disable=import-outside-toplevel
    return backup_info(params)


def _rotate():
    from .repo import rotate  # pylint: disable=import-outside-toplevel
    return rotate.OPTIONS


def _rotate_extras(p):
    p.add_argument("--dry-run", "--check", dest="dry_run", action="store_true", default=None,
                   help="print the plan with reasons, delete nothing")


def cmd_rotate(args, params):
    from .repo.rotate import format_report, rotate  # pylint: disable=import-outside-toplevel
    check = bool(params.get("dry_run") or params.get("check"))
    changed, result = rotate(params, check_mode=check, progress=args.progress)
    if not args.json:
        sys.stdout.write(format_report(result))
    return changed, result


def _copy():
    from .repo import copy  # pylint: disable=import-outside-toplevel
    return copy.OPTIONS


def cmd_copy(args, params):
    from .repo.copy import backup_copy  # pylint: disable=import-outside-toplevel
    return backup_copy(params, check_mode=bool(params.get("check")), progress=args.progress)


def _probe():
    from .storage import factory  # pylint: disable=import-outside-toplevel
    return factory.STORAGE


def cmd_probe(args, params):
    from .storage.factory import probe_storage  # pylint: disable=import-outside-toplevel
    return probe_storage(params, progress=args.progress)


def _redis_snapshot():
    from .redis import snapshot  # pylint: disable=import-outside-toplevel
    return snapshot.OPTIONS


def cmd_redis_snapshot(args, params):
    from .redis.snapshot import redis_snapshot  # pylint: disable=import-outside-toplevel
    return redis_snapshot(params, check_mode=bool(params.get("check")), progress=args.progress)


def _redis_verify():
    from .redis import verify  # pylint: disable=import-outside-toplevel
    return verify.OPTIONS


def cmd_redis_verify(args, params):
    from .redis.verify import redis_verify  # pylint: disable=import-outside-toplevel
    return redis_verify(params, check_mode=bool(params.get("check")), progress=args.progress)


def _redis_restore():
    from .redis import restore  # pylint: disable=import-outside-toplevel
    return restore.OPTIONS


def cmd_redis_restore(args, params):
    from .redis.restore import redis_restore  # pylint: disable=import-outside-toplevel
    return redis_restore(params, check_mode=bool(params.get("check")), progress=args.progress)


# name, help, options, extra flags, engine call
COMMANDS = (
    ("pg-backup", "back up a PostgreSQL database (pg_dump)", _pg_backup,
     _check("say what would be done, write nothing"), cmd_pg_backup),
    ("verify", "verify a PostgreSQL backup (checksum, structure or test-restore)", _verify, _verify_extras,
     cmd_verify),
    ("restore", "restore a PostgreSQL logical backup into a database", _restore,
     _check("say what would be done, change nothing"), cmd_restore),
    ("list", "list complete backups, newest first", _list, None, cmd_list),
    ("rotate", "delete old backups by a keep-last/daily/weekly/monthly/yearly policy", _rotate, _rotate_extras,
     cmd_rotate),
    ("copy", "copy complete backups and the WAL archive into a second repository (to_storage_url)", _copy,
     _check("list what would be copied, write nothing"), cmd_copy),
    # archive_command / restore_command: positional %p %f / %f %p as PostgreSQL passes them.
    ("wal-push", "archive_command: store one WAL file (%%p %%f) in the archive", _wal_push, _wal_push_extras,
     cmd_wal_push),
    ("wal-fetch", "restore_command: fetch one WAL file (%%f %%p); exit 1 if not archived", _wal_fetch,
     _wal_fetch_extras, cmd_wal_fetch),
    ("wal-stream", "stream WAL with pg_receivewal into the archive, partial segments every few seconds "
     "(runs until SIGTERM)", _wal_stream, None, cmd_wal_stream),
    ("pitr", "point-in-time recovery: restore a physical backup into a new data directory", _pitr, _pitr_extras,
     cmd_pitr),
    ("standby", "build a hot standby from the repository's newest base backup and wait until it streams",
     _standby, _pitr_extras, cmd_standby),
    ("standby-check", "how far a standby is behind its primary (replay lag in seconds and bytes), as metrics",
     _standby_check, None, cmd_standby_check),
    ("failover", "promote a standby (planned or unplanned), fence the old primary, measure RTO and RPO",
     _failover, _check("say what would be done, change nothing"), cmd_failover),
    ("probe", "check that this user can write to the storage (a probe object under probe/, removed again on "
     "file://)", _probe, None, cmd_probe),
    ("redis-snapshot", "back up Redis (BGSAVE rdb, remote RDB over SYNC, or AOF)", _redis_snapshot,
     _check("say what would be done, write nothing"), cmd_redis_snapshot),
    ("redis-verify", "verify a Redis backup (checksum, structure or load into a scratch server)", _redis_verify,
     _check("say what would be done, write nothing"), cmd_redis_verify),
    ("redis-restore", "place a Redis backup into a stopped instance's data directory or a container's volume",
     _redis_restore, _check("say what would be done, write nothing"), cmd_redis_restore),
)


def _print_result(args, result):
    if getattr(args, "silent_success", False) and not args.json and not getattr(args, "verbose", False):
        return  # wal-push/wal-fetch run per WAL file: keep the server log quiet
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        return
    if args.command == "list":
        rows = result.get("backups", [])
        if getattr(args, "backups", None) is False:
            pass  # --no-backups: the WAL archive alone
        elif not rows:
            sys.stdout.write("no complete backups in %s\n" % result.get("storage"))
        else:
            sys.stdout.write(list_table(rows, time.time()))
        for p in result.get("problems", []):
            sys.stderr.write("warning: %s\n" % p)
        for b in rows:
            if b.get("doubts"):
                sys.stderr.write("warning: %s does not count: %s\n" % (b["backup_id"], "; ".join(b["doubts"])))
        if "wal_archive" in result:
            newest = result["wal_archive"]["newest"]
            sys.stdout.write("WAL archive: %s\n" % (
                "no WAL" if newest is None else "newest %s, stored %s (%s): the RPO of a point-in-time recovery "
                "now" % (newest["name"], human_age(newest["age_seconds"]), newest["stored_at"])))
        return
    sys.stdout.write("%s\n" % result.get("msg", "done"))


def list_table(rows, now):
    """``drkit list`` for people: sizes like 1.2 GiB, ages like "3 h ago"
    (``--json`` keeps the exact bytes and ISO times). One line per backup,
    its id first, no header: scripts read the first field."""
    lines = []
    for b in rows:
        lines.append("%-40s %-12s %-13s %10s  %s%s%s%s%s" % (
            b["backup_id"], b["kind"], _age(b.get("finished_at"), now), human_bytes(b["size"]),
            b["source"].get("database") or b["source"].get("host"),
            "  [pinned]" if b.get("pinned") else "",
            "  [ARTIFACTS MISSING]" if b.get("artifacts_missing") else "",
            "  [DATED IN THE FUTURE]" if b.get("future_dated") else "",
            "  [SIGNATURE NOT TRUSTED]" if b.get("signature_verified") is False else ""))
    return "\n".join(lines) + "\n"


def _age(iso, now):
    from .repo.manifest import parse_time  # pylint: disable=import-outside-toplevel
    try:
        return human_age(now - parse_time(iso).timestamp())
    except DrkitError:
        return str(iso)  # listed as it is: the backup's doubts say what is wrong


def build_parser(only=None):
    """The drkit parser. ``only``: fill in the flags of this command alone
    (the one that runs; the others stay listed with their help)."""
    parser = argparse.ArgumentParser(prog="drkit",
                                     description="drkit.backup: verified backups for PostgreSQL and Redis")
    sub = parser.add_subparsers(dest="command")
    known = [c[0] for c in COMMANDS]
    for name, text, options, extras, run in COMMANDS:
        p = sub.add_parser(name, help=text)
        if only in known and only != name:
            continue
        opts = options()
        _add_common(p)
        add_options(p, opts)
        if extras:
            extras(p)
        p.set_defaults(func=run, options=opts)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=argv[0] if argv and not argv[0].startswith("-") else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with signals_raise("Nothing was recorded as a backup for this run"):
            args.progress = for_terminal(sys.stderr, quiet=args.quiet)
            params = merged(args)
            if args.command not in NO_JANITOR and not (params.get("check") or params.get("dry_run")):
                janitor.sweep(params, args.progress)
            _changed, result = args.func(args, params)
            if args.command not in NO_STEPS:
                result = dict(result, steps=args.progress.steps())
    except (DrkitError, Terminated) as e:
        sys.stderr.write("drkit %s: %s: %s\n" % (args.command, getattr(e, "label", "error"), e))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("drkit %s: interrupted\n" % args.command)
        return 130
    _print_result(args, result)
    return 0
