# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the two front doors accept, as plain data: every module's
AnsibleModule(...) arguments (argument_spec, required_if, ...) recorded by
running its main() with AnsibleModule replaced, and every ``drkit`` flag of
cli.build_parser(). tests/unit/plugins/modules/test_argument_specs.py compares
them with the snapshot taken before the option registry
(tests/unit/plugins/modules/front_doors.before.json).

Regenerate the snapshot only on purpose:
    .venv/bin/python tests/support/spec_capture.py > tests/unit/plugins/modules/front_doors.before.json
"""

import argparse
import importlib
import json
import os
import pkgutil
import sys

PACKAGE = "ansible_collections.drkit.backup.plugins.modules"
ENGINE_PACKAGE = "ansible_collections.drkit.backup.plugins.module_utils"

# the engine file holding each module's OPTIONS
ENGINE = {"backup_copy": "repo.copy", "backup_info": "repo.listing", "container_drill": "drill.container",
          "dr_report": "repo.report",
          "pg_backup": "pg.backup", "pg_failover": "pg.failover", "pg_standby": "pg.standby",
          "pg_pitr": "pg.pitr", "pg_restore": "pg.restore", "pg_sandbox": "demo.sandbox", "pg_verify": "pg.verify",
          "pg_wal_archive": "pg.archiving", "redis_persistence": "redis.settings",
          "redis_restore": "redis.restore", "redis_snapshot": "redis.snapshot", "redis_verify": "redis.verify",
          "s3_rotate": "repo.rotate"}


class _Recorded(Exception):
    def __init__(self, kwargs):
        Exception.__init__(self, "recorded")
        self.kwargs = kwargs


class _Recorder(object):
    def __init__(self, **kwargs):
        raise _Recorded(kwargs)


def module_names():
    pkg = importlib.import_module(PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))


def module_kwargs(name):
    """The keyword arguments a module's main() passes to AnsibleModule."""
    mod = importlib.import_module("%s.%s" % (PACKAGE, name))
    saved = mod.AnsibleModule
    mod.AnsibleModule = _Recorder
    try:
        mod.main()
    except _Recorded as r:
        return r.kwargs
    finally:
        mod.AnsibleModule = saved
    raise AssertionError("%s.main() did not create an AnsibleModule" % name)


def module_options(name):
    """The engine's OPTIONS of a module."""
    return importlib.import_module("%s.%s" % (ENGINE_PACKAGE, ENGINE[name])).OPTIONS


def engine_options():
    """{name: Options} of every module and of the drkit commands that have
    no module (the others share their module's OPTIONS)."""
    wal = importlib.import_module(ENGINE_PACKAGE + ".pg.wal_archive")
    out = dict((name, module_options(name)) for name in module_names())
    out.update({"drkit wal-push": wal.WAL_PUSH_OPTIONS, "drkit wal-fetch": wal.WAL_FETCH_OPTIONS})
    return out


def plain(value):
    """JSON-able form: a fallback (env_fallback, [names]) becomes ["env_fallback", names]."""
    if isinstance(value, dict):
        return dict((k, plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return value


def modules():
    return dict((name, plain(module_kwargs(name))) for name in module_names())


def cli_flags(parser=None):
    """{command: {flag: {dest, type, choices, action, const, nargs}}} plus positionals."""
    if parser is None:
        from ansible_collections.drkit.backup.plugins.module_utils import cli  # pylint: disable=import-outside-toplevel
        parser = cli.build_parser()
    sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]  # pylint: disable=protected-access
    out = {}
    for command, p in sorted(sub.choices.items()):
        flags = {}
        for a in p._actions:  # pylint: disable=protected-access
            if isinstance(a, argparse._HelpAction):  # pylint: disable=protected-access
                continue
            info = {"dest": a.dest, "type": getattr(a.type, "__name__", a.type),
                    "choices": list(a.choices) if a.choices else None,
                    "action": type(a).__name__, "const": a.const, "nargs": a.nargs,
                    "default": a.default}
            for flag in a.option_strings or [a.dest]:
                flags[flag] = info
        out[command] = {"flags": flags, "defaults": dict((k, v) for k, v in sorted(p._defaults.items())  # pylint: disable=protected-access
                                                         if k not in ("func", "options"))}
    return out


def snapshot():
    return {"modules": modules(), "cli": cli_flags()}


def dumps(value, depth=4, indent=""):
    """JSON with one line per option or flag (a readable diff when it changes)."""
    if depth == 0 or not isinstance(value, dict) or not value:
        return json.dumps(value, sort_keys=True)
    inner = indent + " "
    items = ["%s%s: %s" % (inner, json.dumps(k), dumps(v, depth - 1, inner)) for k, v in sorted(value.items())]
    return "{\n%s\n%s}" % (",\n".join(items), indent)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "build", "collections"))
    sys.stdout.write(dumps(snapshot()) + "\n")
