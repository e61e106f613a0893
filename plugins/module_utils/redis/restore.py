# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring Redis backups (drkit.backup.redis_restore).

``redis_restore`` puts a backup into the data directory of a STOPPED
instance.  The trap it handles: with ``appendonly yes`` Redis loads only the
AOF at start-up and ignores dump.rdb -- and when there is no AOF yet it
starts EMPTY and writes an empty AOF that wins from then on.  So the files
placed always match the target's AOF setting: an RDB backup for an AOF
instance is turned into a multi-part AOF directory (a scratch redis-server
on loopback loads the RDB and writes the AOF), an AOF backup for an instance
without AOF into a dump.rdb.  Whatever was there is moved aside, never
deleted.  Optionally the instance is started (``start_command``) and its key
counts compared with the manifest.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import shlex
import shutil
import tempfile
import time

from ..container.client import DOCKER
from ..core.crypto import DECRYPTION, Keyring
from ..core.errors import ConfigError, IntegrityError, SafetyError, ToolError
from ..core.janitor import dir_prefix, sweep_dirs
from ..core.options import Option, Options, resolve
from ..core.osutil import fsync_dir, gid_of, set_owner, uid_of
from ..core.process import LocalRunner
from ..core.signals import signals_raise
from ..storage.factory import STORAGE, open_storage, storage_options
from .artifacts import SELECTOR, check_structure, fetch_backup, require_key, resolve_redis
from .client import CONNECTION, conn_params, describe
from .conf import read_conf
from .tools import REDIS_BIN_DIR
from .restore_container import restore_into_container
from .server import wait_restored
from .verify import compare_keyspace, convert_for_target

# drkit.backup.redis_restore / drkit redis-restore
OPTIONS = Options(
    CONNECTION, STORAGE, SELECTOR, DOCKER,
    Option("data_dir", "path", flags=("--data-dir",), help="the stopped instance's data directory"),
    Option("redis_conf", "path", flags=("--redis-conf",), help="read dir, dbfilename, appendonly... from it"),
    Option("appendonly", "bool", flags=("--appendonly",), off_flags=("--no-appendonly",)),
    Option("dbfilename", "str", flags=("--dbfilename",)),
    Option("appenddirname", "str", flags=("--appenddirname",)),
    Option("appendfilename", "str", flags=("--appendfilename",)),
    Option("force", "bool", default=False, flags=("--force",), help="move existing data aside and restore"),
    Option("owner", "str", flags=("--owner",)),
    Option("group", "str", flags=("--group",)),
    Option("start_command", "list", elements="str", split=shlex.split, flags=("--start-command",),
           help="command that starts the instance (no shell)"),
    Option("timeout", "float", default=600, above=0, flags=("--timeout",),
           help="seconds for conversions and for the started instance to load its data (default 600)"),
    REDIS_BIN_DIR,
    DECRYPTION,
)

# --------------------------------------------------------------------------
# restore into a stopped instance


CONF_DIRECTIVES = ("dir", "dbfilename", "appendonly", "appenddirname", "appendfilename")


def read_redis_conf(path):
    """The directives a restore needs from a redis.conf."""
    try:
        return read_conf(path, CONF_DIRECTIVES)
    except (IOError, OSError) as e:
        raise ConfigError("Cannot read %s: %s" % (path, e.strerror or e))


def _running_in(data_dir):
    """PIDs of redis-server processes whose working directory is data_dir
    (Redis chdirs to its dir)."""
    found = []
    real = os.path.realpath(data_dir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as fh:
                comm = fh.read().strip()
            if not comm.startswith("redis-server"):
                continue
            if os.path.realpath(os.readlink("/proc/%s/cwd" % entry)) == real:
                found.append(int(entry))
        except (IOError, OSError):
            continue
    return found


def _target(p):
    data_dir = p["data_dir"]
    conf = read_redis_conf(p["redis_conf"]) if p["redis_conf"] else {}
    if not data_dir:
        data_dir = conf.get("dir")
    if not data_dir:
        raise ConfigError("data_dir or redis_conf is required (without container)",
                          "Name the stopped instance's data directory (its 'dir'), or its redis.conf")
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ConfigError("data_dir %s does not exist" % data_dir, "Create it (owned by the redis user) first")
    t = {
        "data_dir": data_dir,
        # unset: redis.conf's value, else Redis's own default
        "dbfilename": p["dbfilename"] or conf.get("dbfilename") or "dump.rdb",
        "appenddirname": p["appenddirname"] or conf.get("appenddirname") or "appendonlydir",
        "appendfilename": p["appendfilename"] or conf.get("appendfilename") or "appendonly.aof",
    }
    aof = p["appendonly"]
    if aof is None and "appendonly" in conf:
        aof = conf["appendonly"].lower() == "yes"
        t["appendonly_from"] = "redis_conf"
    elif aof is None:
        aof = os.path.isdir(os.path.join(data_dir, t["appenddirname"]))
        t["appendonly_from"] = "an AOF directory exists" if aof else "no AOF directory exists"
    else:
        t["appendonly_from"] = "appendonly option"
    t["appendonly"] = bool(aof)
    for k in ("dbfilename", "appenddirname", "appendfilename"):
        if "/" in t[k]:
            raise ConfigError("%s must be a plain file name, got %r" % (k, t[k]))
    return t


def plan_for(manifest, t, existing, stamp):
    """What a restore of ``manifest`` into the target ``t`` does, honouring
    the AOF-wins trap: (conversion, layout placed, plan lines, why)."""
    kind = manifest["kind"]
    layout = "aof" if t["appendonly"] else "rdb"
    conversion = None
    if kind == "redis_rdb" and t["appendonly"]:
        conversion = "rdb->aof"
    elif kind == "redis_aof" and not t["appendonly"]:
        conversion = "aof->rdb"
    elif kind == "redis_aof" and manifest["data"].get("aof", {}).get("appendfilename", "appendonly.aof") \
            != t["appendfilename"]:
        conversion = "aof->rdb->aof"
    rdb_target = posixpath.join(t["data_dir"], t["dbfilename"])
    aof_target = posixpath.join(t["data_dir"], t["appenddirname"])
    plan = ["move %s aside to %s.drkit-%s" % (x, x, stamp) for x in existing]
    plan.append("place %s" % (aof_target if layout == "aof" else rdb_target))
    if conversion in ("rdb->aof", "aof->rdb->aof"):
        plan.append("place %s too (loaded only if AOF is turned off)" % rdb_target)
    why = "the target has appendonly %s (%s)" % ("yes" if t["appendonly"] else "no", t["appendonly_from"])
    return conversion, layout, plan, why


def redis_restore(params, check_mode=False, runner=None, progress=None):
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    entry = resolve_redis(storage, p)
    manifest = entry.manifest
    keyring = Keyring(p["encryption_identity_file"])
    # an encrypted backup without one of its recipients' identities: refused before anything is
    # moved, stopped or created (check mode too)
    require_key(manifest, keyring)
    if p["container"]:
        if p["start_command"]:
            raise ConfigError("start_command does not go with container: drkit starts the container itself",
                              "Drop start_command")
        return restore_into_container(p, storage, entry, plan_for, progress, check_mode, keyring)
    t = _target(p)
    timeout = p["timeout"]
    force = p["force"]
    start_command = p["start_command"] or None
    cp = conn_params(p) if start_command else None

    running = _running_in(t["data_dir"])
    if running:
        raise SafetyError("redis-server (pid %s) is running in %s" % (", ".join(map(str, running)), t["data_dir"]),
                          "Stop the instance before restoring into its data directory "
                          "(a running Redis would overwrite the restored files when it saves)")
    rdb_target = os.path.join(t["data_dir"], t["dbfilename"])
    aof_target = os.path.join(t["data_dir"], t["appenddirname"])
    existing = [p for p in (rdb_target, aof_target) if os.path.lexists(p)]
    if existing and not force:
        raise SafetyError("%s already holds data (%s)" % (t["data_dir"], ", ".join(existing)),
                          "Set force: true to move it aside (it is kept as <name>.drkit-<time>) and restore")
    kind = manifest["kind"]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    conversion, layout, plan, why = plan_for(manifest, t, existing, stamp)
    base = {"backup_id": entry.backup_id, "kind": kind, "data_dir": t["data_dir"], "appendonly": t["appendonly"],
            "conversion": conversion, "plan": plan}
    if check_mode:
        base.update(changed=True, msg="Would restore %s into %s: %s; %s" % (
            entry.backup_id, t["data_dir"], "; ".join(plan), why))
        return True, base

    owner = p["owner"]
    group = p["group"]
    st = os.stat(t["data_dir"])
    uid = uid_of(owner) if owner else st.st_uid
    gid = gid_of(group) if group else st.st_gid
    sweep_dirs([t["data_dir"]], progress)  # a dead redis-restore's staging directory
    # same filesystem: renames are atomic
    staging = tempfile.mkdtemp(prefix="." + dir_prefix("restore"), dir=t["data_dir"])
    moved = []
    t0 = time.time()
    with signals_raise():
        try:
            progress("fetching %s into %s" % (entry.backup_id, staging))
            # into the staging directory: decrypted bytes count only once the whole stream
            # authenticated and matched the manifest; nothing is renamed into place before
            got_layout, path = fetch_backup(storage, manifest, staging, aof_dirname="fetched-aof",
                                            progress=progress, keyring=keyring)
            facts = check_structure(runner, got_layout, path, p["redis_bin_dir"])
            rdb_file, aof_dir = convert_for_target(manifest, got_layout, path, layout, conversion, staging,
                                                   t["appendfilename"], timeout, progress)
            # place: move old files aside, then rename the new ones in
            for p in existing:
                aside = "%s.drkit-%s" % (p, stamp)
                os.rename(p, aside)
                moved.append((p, aside))
            placed = []
            if rdb_file:
                set_owner(rdb_file, uid, gid, 0o600)
                os.rename(rdb_file, rdb_target)
                placed.append(rdb_target)
            if aof_dir:
                for n in os.listdir(aof_dir):
                    set_owner(os.path.join(aof_dir, n), uid, gid, 0o600)
                set_owner(aof_dir, uid, gid, 0o700)
                os.rename(aof_dir, aof_target)
                placed.append(aof_target)
            fsync_dir(t["data_dir"])
        except BaseException:
            for p, aside in reversed(moved):  # put the previous data back
                try:
                    if os.path.isdir(p) and not os.path.islink(p):
                        shutil.rmtree(p)
                    elif os.path.lexists(p):
                        os.unlink(p)
                    os.rename(aside, p)
                except OSError:
                    pass
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    result = dict(base)
    result.update(changed=True, placed=placed, moved_aside=[a for _p, a in moved], structure=facts,
                  expected_keyspace=manifest["data"].get("keyspace"), restore_seconds=round(time.time() - t0, 3))
    if not start_command:
        result["started"] = False
        result["msg"] = ("Restored %s into %s (%s). Start the instance now; %s" % (
            entry.backup_id, t["data_dir"], why,
            "it loads %s" % (aof_target if layout == "aof" else rdb_target)))
        return True, result
    progress("starting the instance: %s" % " ".join(start_command))
    rc, out, err = runner.run(list(start_command), timeout=timeout)
    if rc != 0:
        raise ToolError("start_command exited %d: %s" % (rc, (err or out.decode("utf-8", "replace")).strip()[-500:]),
                        "The data is in place in %s; start the instance by hand" % t["data_dir"])
    restored = os.path.realpath(t["data_dir"])
    actual = wait_restored(cp, time.time() + timeout, lambda d: os.path.realpath(d) == restored,
                           "the restored instance", "Look at its log")
    rows, problems, how = compare_keyspace(manifest["data"], actual)
    result.update(started=True, keyspace=rows, key_counts_compared=how, actual_keyspace=actual)
    if problems:
        raise IntegrityError("The restored instance at %s does not hold the backup's keys: %s" % (
            describe(cp), "; ".join(problems)),
            "Check that start_command started the instance of %s and that it loads %s" % (
                t["data_dir"], aof_target if layout == "aof" else rdb_target), details=result)
    result["msg"] = "Restored %s into %s, started it; key counts match (%s)" % (
        entry.backup_id, t["data_dir"], how)
    return True, result
