# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis persistence settings: RDB save rules, appendonly, appendfsync (and
any other CONFIG parameter given in ``settings``).

Applied live with CONFIG SET and persisted with CONFIG REWRITE.  ``changed``
only when a live value differed or the config file did not hold the wanted
values (read when the file given by INFO server ``config_file`` is readable
here: a value set live by hand but never written to the file would be lost at
the next restart).  Turning AOF on makes Redis write the AOF in the
background; by default we wait until it is written, so a restart right after
the task keeps the data.  None of these settings needs a restart.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..core.errors import ConfigError, SourceError, WaitTimeout
from ..core.options import Option, Options, resolve
from .client import CONNECTION, ReplyError, command_error, conn_params, connect, describe
from .conf import read_conf

FSYNC = ("always", "everysec", "no")

# drkit.backup.redis_persistence
OPTIONS = Options(
    CONNECTION,
    Option("save", "list", elements="str"),
    Option("appendonly", "bool"),
    Option("appendfsync", "str", choices=FSYNC),
    Option("settings", "dict"),
    Option("persist", "bool", default=True),
    Option("wait", "bool", default=True),
    Option("timeout", "int", default=600, min=1),
)


def normalise_save(value):
    """'3600 1 300 100', ['3600 1', '300 100'], [[3600, 1]], '' or [] ->
    the string CONFIG GET save returns ('' = RDB snapshots off)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError("save must be a list of 'SECONDS CHANGES' rules, got %r" % (value,))
    nums = []
    for item in items:
        parts = [str(p) for p in item] if isinstance(item, (list, tuple)) else str(item).replace('"', "").split()
        nums.extend(parts)
    if len(nums) % 2:
        raise ConfigError("save rules come in pairs of SECONDS CHANGES, got %r" % (value,),
                          "e.g. save: ['3600 1', '300 100', '60 10000'], or [] to turn RDB snapshots off")
    for n in nums:
        if not n.isdigit() or (int(n) == 0):
            raise ConfigError("save rule values must be positive integers, got %r" % n)
    return " ".join(str(int(n)) for n in nums)


def _yesno(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).lower()


def desired_settings(params):
    want = {}
    save = normalise_save(params.get("save"))
    if save is not None:
        want["save"] = save
    if params.get("appendonly") is not None:
        want["appendonly"] = _yesno(params["appendonly"])
    if params.get("appendfsync") is not None:
        if params["appendfsync"] not in FSYNC:
            raise ConfigError("appendfsync must be one of %s, got %r" % (", ".join(FSYNC), params["appendfsync"]))
        want["appendfsync"] = params["appendfsync"]
    for k, v in (params.get("settings") or {}).items():
        name = str(k).lower().replace("_", "-")
        if name in want:
            raise ConfigError("%s is given twice (as an option and in settings)" % name)
        if name in ("requirepass", "masterauth", "dir", "dbfilename", "appenddirname", "appendfilename"):
            raise ConfigError("settings may not change %s" % name,
                              "This module manages persistence policy, not paths or secrets")
        want[name] = _yesno(v) if isinstance(v, bool) else str(v)
    if not want:
        raise ConfigError("Nothing to manage", "Give save, appendonly, appendfsync or settings")
    return want


# What redis.conf already holds (redis.conf.read_conf, the one parser).
read_conf_values = read_conf


def _render(values):
    return "".join("%s %s\n" % (k, ('""' if v == "" else v)) for k, v in sorted(values.items()))


def redis_persistence(params, check_mode=False, progress=None):
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    want = desired_settings(p)
    cp = conn_params(p)
    persist, wait, timeout = p["persist"], p["wait"], p["timeout"]
    with connect(cp) as client:
        before = {}
        for name in want:
            val = client.config_get(name)
            if val is None:
                raise ConfigError("Redis at %s has no setting %r" % (describe(cp), name),
                                  "Check the name (CONFIG GET %s) and the server version" % name)
            before[name] = val.lower() if name in ("appendonly", "appendfsync") else val
        live_changes = dict((k, v) for k, v in want.items() if before[k] != v)
        config_file = client.info("server").get("config_file") or ""
        file_state, file_note = None, None
        if persist and not config_file:
            raise ConfigError("Redis at %s runs without a config file, so CONFIG REWRITE cannot persist settings"
                              % describe(cp),
                              "Start it with a redis.conf, or set persist: false and put the settings on its "
                              "command line (e.g. the container's command)")
        if persist:
            try:
                file_state = read_conf_values(config_file, set(want))
            except (IOError, OSError) as e:
                file_note = "config file %s not readable here (%s): only live values compared" % (
                    config_file, e.strerror or e)
        file_stale = []
        if file_state is not None:
            file_stale = sorted(k for k, v in want.items() if k in file_state and file_state[k] != v)
        changed = bool(live_changes) or bool(file_stale)
        after = dict(before)
        after.update(want)
        diff = {"before": _render(before), "after": _render(after),
                "before_header": "%s (live)" % describe(cp), "after_header": "%s (live)" % describe(cp)}
        result = {"changed": changed, "before": before, "after": after, "changes": live_changes,
                  "config_file": config_file or None, "config_file_stale": file_stale, "restart_required": False,
                  "diff": diff}
        if file_note:
            result["notes"] = [file_note]
        if file_stale:
            diff["before"] += "".join("# %s: %s %s\n" % (config_file, k, file_state[k] or '""') for k in file_stale)
        if check_mode or not changed:
            result["msg"] = ("%s: %s" % ("Would change" if check_mode and changed else "Unchanged",
                                         ", ".join("%s %r -> %r" % (k, before[k], v)
                                                   for k, v in sorted(live_changes.items())) or
                                         ("rewrite %s" % config_file if file_stale else "settings as wanted")))
            return changed, result
        # appendfsync before appendonly: the AOF is written with the wanted policy from the start
        order = sorted(live_changes, key=lambda k: (k == "appendonly", k))
        for name in order:
            progress("CONFIG SET %s %s" % (name, live_changes[name]))
            try:
                client.execute("CONFIG", "SET", name, live_changes[name])
            except ReplyError as e:
                raise command_error(client, ("CONFIG", "SET"), e) if e.code in ("NOPERM", "NOAUTH") else \
                    ConfigError("CONFIG SET %s %s refused by %s: %s" % (name, live_changes[name], describe(cp), e.text))
        if live_changes.get("appendonly") == "yes" and wait:
            progress("waiting for Redis to write the AOF")
            _wait_aof_written(client, timeout)
        if persist:
            progress("CONFIG REWRITE (%s)" % config_file)
            try:
                client.execute("CONFIG", "REWRITE")
            except ReplyError as e:
                raise SourceError("CONFIG REWRITE on %s failed: %s" % (describe(cp), e.text),
                                  "The live values are set but not persisted: make %s writable by the redis user "
                                  "or manage redis.conf yourself" % config_file)
        result["msg"] = "Changed %s%s" % (
            ", ".join("%s %r -> %r" % (k, before[k], v) for k, v in sorted(live_changes.items())) or "nothing live",
            "; persisted to %s" % config_file if persist else " (live only, not persisted)")
        return True, result


def _wait_aof_written(client, timeout):
    deadline = time.time() + timeout
    while True:
        p = client.info("persistence")
        if p.get("aof_enabled") and not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"):
            if p.get("aof_last_bgrewrite_status") != "ok":
                raise SourceError("Redis at %s failed to write the AOF after appendonly was turned on" % client.where,
                                  "Look at the Redis log (disk full? directory not writable?)")
            return
        if time.time() > deadline:
            raise WaitTimeout("Redis at %s was still writing the AOF after %.0f s" % (client.where, timeout),
                              "It goes on in the background; raise timeout or set wait: false")
        time.sleep(0.05)
