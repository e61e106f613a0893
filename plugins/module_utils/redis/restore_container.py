# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_restore into a container: the backup placed into the container's
data volume through the Engine API, the same rules as on a host.

* Where: ``data_dir`` and the file names from the options, else from
  ``redis_conf`` (a path inside the container), else from redis-server's
  arguments on the container's command line (``--dir /data --appendonly
  yes``, as compose files pass them), else Redis's defaults (``dir``: the
  container's working directory).
* The AOF-wins trap, as restore.py handles it: the files placed match the
  target's ``appendonly``; an RDB for an AOF instance is turned into a
  multi-part AOF (and back) by a scratch redis-server in a container of the
  target's own image.
* A running container is stopped first (only with ``force``: the restore
  replaces what it serves). The files are moved and placed by a helper
  container of the same image that shares the target's volumes
  (``volumes_from``, no network, ``sleep`` as its process, removed after):
  a stopped container takes files (put_archive) but cannot rename or remove
  any. Whatever was there is moved aside (``<name>.drkit-<time>``), never
  deleted, and put back if placing fails.
* Then the container is started through the API, drkit waits until the
  server answers at ``login_host``/``login_port`` and has loaded, and
  compares the key counts with the manifest.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import functools
import os
import posixpath
import shlex
import shutil
import time

from ..container.client import docker_settings, inspect_any, open_client
from ..container.scratch import ScratchContainer, TarBuilder, put_tar
from ..core.errors import ConfigError, IntegrityError, SafetyError, SourceError
from ..core.janitor import private_dir
from ..core.signals import signals_raise
from .artifacts import check_structure_with, fetch_backup
from .client import conn_params
from .conf import read_conf
from .scratch_container import LoadedInContainer
from .server import wait_restored
from .verify import compare_keyspace, convert_for_target

DIRECTIVES = ("dir", "dbfilename", "appendonly", "appenddirname", "appendfilename")


def command_line_settings(info):
    """redis-server's ``--directive value`` arguments on the container's
    command line (each element also split as a shell line: ``sh -c "...
    redis-server --dir /data"``); values with a shell expansion are left
    out (their value is not known here)."""
    config = info.get("Config") or {}
    tokens = []
    for part in (config.get("Entrypoint") or []) + (config.get("Cmd") or []):
        try:
            tokens += shlex.split(part)
        except ValueError:
            tokens.append(part)
    out = {}
    for i, tok in enumerate(tokens[:-1]):
        if tok.startswith("--") and tok[2:].lower() in DIRECTIVES:
            value = tokens[i + 1]
            if "$" not in value and not value.startswith("--"):
                out[tok[2:].lower()] = value.lower() if tok[2:].lower() == "appendonly" else value
    return out


def _conf_in_container(runner, path, tmp):
    """The restore's directives from a redis.conf inside the container."""
    local = os.path.join(tmp, "redis.conf")
    with runner.open_file(path) as fh, open(local, "wb") as out:
        out.write(fh.read())
    return read_conf(local, DIRECTIVES)


def container_target(p, info, runner, tmp):
    """The target's data directory, file names and appendonly (with where
    each came from), as paths inside the container."""
    conf = _conf_in_container(runner, p["redis_conf"], tmp) if p["redis_conf"] else {}
    args = command_line_settings(info)
    found = dict(args)
    found.update(conf)  # an explicit redis_conf wins over what the command line seems to say

    def pick(name, default):
        return p[name] or found.get(name) or default

    workdir = (info.get("Config") or {}).get("WorkingDir") or "/"
    data_dir = p["data_dir"] or found.get("dir") or workdir
    if not data_dir.startswith("/"):
        data_dir = posixpath.join(workdir, data_dir)
    t = {"data_dir": posixpath.normpath(data_dir), "dbfilename": pick("dbfilename", "dump.rdb"),
         "appenddirname": pick("appenddirname", "appendonlydir"),
         "appendfilename": pick("appendfilename", "appendonly.aof")}
    for k in ("dbfilename", "appenddirname", "appendfilename"):
        if "/" in t[k]:
            raise ConfigError("%s must be a plain file name, got %r" % (k, t[k]))
    if p["appendonly"] is not None:
        t["appendonly"], t["appendonly_from"] = bool(p["appendonly"]), "appendonly option"
    elif "appendonly" in conf:
        t["appendonly"], t["appendonly_from"] = conf["appendonly"] == "yes", "redis_conf"
    elif "appendonly" in args:
        t["appendonly"], t["appendonly_from"] = args["appendonly"] == "yes", "the container's command line"
    else:
        t["appendonly"] = None  # decided by whether an AOF directory exists, once the helper can look
    return t


def data_mount(info, data_dir):
    """The mount (volume or bind) of the container that holds data_dir, or
    None: the container's own layer, which a helper cannot reach."""
    best = None
    for m in info.get("Mounts") or []:
        dest = (m.get("Destination") or "").rstrip("/") or "/"
        if data_dir == dest or data_dir.startswith(dest + "/") or dest == "/":
            if best is None or len(dest) > len(best.get("Destination", "")):
                best = m
    return best


class _Helper(object):
    """Shell-free file operations in the helper container (paths inside it)."""

    def __init__(self, runner):
        self.runner = runner

    def run(self, argv, what):
        rc, out, err = self.runner.run(argv, timeout=600)
        if rc != 0:
            raise SourceError("%s failed in the helper container (exit %s): %s" % (
                what, rc, (err or out.decode("utf-8", "replace")).strip()[-300:]),
                "Check the image has %s and the volume is writable" % argv[0])
        return out.decode("utf-8", "replace").strip()

    def exists(self, path):
        rc, _out, _err = self.runner.run(["test", "-e", path], timeout=60)
        return rc == 0

    def owner(self, path):
        uid, gid = self.run(["stat", "-c", "%u %g", path], "stat of %s" % path).split()
        return int(uid), int(gid)


def restore_into_container(p, storage, entry, plan_for, progress, check_mode, keyring=None):
    """redis_restore with ``container`` (p: the resolved options; ``keyring``:
    core.crypto.Keyring for an encrypted backup, its key already checked)."""
    from ..container.runner import ContainerRunner  # pylint: disable=import-outside-toplevel
    manifest = entry.manifest
    s = docker_settings(p)
    api = open_client(s)
    name, docker_host = s["container"], s["docker_host"]
    info = inspect_any(api, name, docker_host)
    cid, image = info["Id"], info.get("Image")
    state = info.get("State") or {}
    running = bool(state.get("Running"))
    if state.get("Restarting") or state.get("Paused"):
        raise SourceError("Container %s is %s" % (name, "restarting" if state.get("Restarting") else "paused"),
                          "Stop it (docker stop %s) and run again" % name)
    timeout, force = p["timeout"], p["force"]
    tmp = private_dir("redis-restore")
    try:
        target_runner = ContainerRunner(api, cid, docker_host)
        t = container_target(p, info, target_runner, tmp)
        mount = data_mount(info, t["data_dir"])
        if mount is None:
            raise ConfigError("%s of container %s is not on a volume (it is in the container's own layer)" % (
                t["data_dir"], name),
                "Keep Redis's data on a volume (volumes: redisdata:%s): a recreated container loses its layer, "
                "and drkit places a restore only into a volume; or set data_dir if it is elsewhere" % (
                    t["data_dir"]))
        if running and not force:
            raise SafetyError("Container %s is running" % name,
                              "redis_restore stops it, places the backup into its volume and starts it again: "
                              "set force: true (what it holds now is moved aside, not deleted)")
        cp = conn_params(p)
        if check_mode:
            aof_known = t["appendonly"] if t["appendonly"] is not None else False
            t["appendonly"] = aof_known
            t.setdefault("appendonly_from", "unknown until the volume is looked at; assumed no")
            conversion, layout, plan, why = plan_for(manifest, t, [], None)
            if running:
                plan.insert(0, "stop container %s" % name)
            plan.append("start container %s and compare the key counts" % name)
            return True, {"backup_id": entry.backup_id, "kind": manifest["kind"], "container": name,
                          "data_dir": t["data_dir"], "appendonly": t["appendonly"], "conversion": conversion,
                          "plan": plan, "changed": True,
                          "msg": "Would restore %s into %s of container %s: %s; %s" % (
                              entry.backup_id, t["data_dir"], name, "; ".join(plan), why)}
        with signals_raise("The helper and scratch containers were removed"):
            return _restore(api, docker_host, p, storage, entry, t, name, cid, image, running, cp, tmp, timeout,
                            plan_for, progress, keyring)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore(api, docker_host, p, storage, entry, t, name, cid, image, running, cp, tmp, timeout, plan_for,
             progress, keyring=None):
    manifest = entry.manifest
    t0 = time.time()
    progress("fetching %s" % entry.backup_id)
    # fetched (and decrypted) into a local temp directory in full, before the container is stopped
    got_layout, path = fetch_backup(storage, manifest, tmp, aof_dirname="fetched-aof", progress=progress,
                                    keyring=keyring)
    scratch = functools.partial(LoadedInContainer, api, docker_host, image)
    helper = ScratchContainer(api, docker_host, image, ["86400"], entrypoint=["sleep"], network_mode="none",
                              volumes_from=[cid], user="0:0", what="redis-restore")
    stopped = False
    with helper:
        helper.start()
        files = _Helper(helper.runner())
        progress("checking the backup's structure with the tools of image %s" % image)
        facts = check_structure_with(helper.runner(), got_layout, path, p["redis_bin_dir"])
        if t["appendonly"] is None:
            aof = files.exists(posixpath.join(t["data_dir"], t["appenddirname"]))
            t["appendonly"] = aof
            t["appendonly_from"] = "an AOF directory exists" if aof else "no AOF directory exists"
        rdb_target = posixpath.join(t["data_dir"], t["dbfilename"])
        aof_target = posixpath.join(t["data_dir"], t["appenddirname"])
        existing = [x for x in (rdb_target, aof_target) if files.exists(x)]
        if existing and not p["force"]:
            raise SafetyError("%s of container %s already holds data (%s)" % (
                t["data_dir"], name, ", ".join(existing)),
                "Set force: true to move it aside (it is kept as <name>.drkit-<time>) and restore")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        conversion, layout, plan, why = plan_for(manifest, t, existing, stamp)
        rdb_file, aof_dir = convert_for_target(manifest, got_layout, path, layout, conversion, tmp,
                                               t["appendfilename"], timeout, progress, scratch=scratch,
                                               where=" in a scratch container of %s" % image)
        if p["owner"] or p["group"]:
            uid, gid = _numeric(p["owner"], "owner"), _numeric(p["group"], "group")
            duid, dgid = files.owner(t["data_dir"])
            uid, gid = duid if uid is None else uid, dgid if gid is None else gid
        else:
            uid, gid = files.owner(t["data_dir"])
        if running:
            progress("stopping container %s" % name)
            api.stop(cid)
            stopped = True
            # a save at shutdown may have written the files only now
            existing = [x for x in (rdb_target, aof_target) if files.exists(x)]
        moved, placed = [], []
        try:
            for x in existing:
                aside = "%s.drkit-%s" % (x, stamp)
                files.run(["mv", "--", x, aside], "moving %s aside" % x)
                moved.append((x, aside))
            tar = TarBuilder()
            if rdb_file:
                tar.add_file(t["dbfilename"], rdb_file, 0o600, uid, gid)
                placed.append(rdb_target)
            if aof_dir:
                tar.add_dir(t["appenddirname"], 0o700, uid, gid)
                for n in sorted(os.listdir(aof_dir)):
                    tar.add_file(posixpath.join(t["appenddirname"], n), os.path.join(aof_dir, n), 0o600, uid, gid)
                placed.append(aof_target)
            progress("placing %s into %s of container %s" % (", ".join(placed), t["data_dir"], name))
            put_tar(api, helper.id, t["data_dir"], tar, "the backup")
            files.run(["sync"], "sync")
        except BaseException:
            for x, aside in reversed(moved):  # put the previous data back
                try:
                    files.runner.run(["rm", "-rf", "--", x], timeout=600)
                    files.runner.run(["mv", "--", aside, x], timeout=600)
                except Exception:  # noqa: BLE001  # pylint: disable=broad-except
                    pass
            if stopped:
                _start_again(api, cid)
            raise
    result = {"backup_id": entry.backup_id, "kind": manifest["kind"], "container": name,
              "data_dir": t["data_dir"], "appendonly": t["appendonly"], "conversion": conversion, "plan": plan,
              "changed": True, "placed": placed, "moved_aside": [a for _x, a in moved], "structure": facts,
              "stopped": stopped, "expected_keyspace": manifest["data"].get("keyspace"),
              "restore_seconds": round(time.time() - t0, 3)}
    progress("starting container %s" % name)
    api.start(cid)
    actual = wait_restored(cp, time.time() + timeout, lambda d: posixpath.normpath(d) == t["data_dir"],
                           "the restored container's server", "Look at its log (docker logs)")
    rows, problems, how = compare_keyspace(manifest["data"], actual)
    result.update(started=True, keyspace=rows, key_counts_compared=how, actual_keyspace=actual,
                  seconds=round(time.time() - t0, 3))
    if problems:
        raise IntegrityError("The restored container %s does not hold the backup's keys: %s" % (
            name, "; ".join(problems)),
            "Check that login_host/login_port reach %s and that it loads %s (%s)" % (
                name, aof_target if layout == "aof" else rdb_target, why), details=result)
    result["msg"] = "Restored %s into %s of container %s (%s), started it; key counts match (%s)" % (
        entry.backup_id, t["data_dir"], name, why, how)
    return True, result


def _numeric(value, what):
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError("%s must be a numeric id with container (got %r): names inside the container are "
                          "not this host's" % (what, value), "Give the uid/gid, e.g. 999")


def _start_again(api, cid):
    """A failed restore leaves a container it stopped running again, on
    its previous data."""
    try:
        api.start(cid)
    except Exception:  # noqa: BLE001 - the restore's own error is the one to report  # pylint: disable=broad-except
        pass
