# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring and verifying Redis backups.

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

``redis_verify`` is pg_verify's twin: ``checksum`` (size and sha256 of every
artifact), ``structure`` (plus redis-check-rdb / redis-check-aof), and
``restore`` (plus loading it into a scratch redis-server on a free loopback
port and comparing the key counts per database with the manifest).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import secrets
import shutil
import tempfile
import time

from . import manifest as mf
from .errors import (ConfigError, IntegrityError, NotFoundError, SafetyError, SourceError, ToolError,
                     WaitTimeout)
from .pg_restore import signals_raise
from .pg_verify import finish_verification
from .pipeline import LocalRunner, TarStreamExtractor, decompressor_for, read_stored
from .redis_backup import (AOF_PREFIX, RdbChecker, check_aof_dir, check_rdb_file, find_redis_tool)
from .redis_client import RedisClient, conn_params, describe, keyspace
from .storage import open_storage, storage_options

REDIS_KINDS = ("redis_rdb", "redis_aof")
LEVELS = ("checksum", "structure", "restore")


# --------------------------------------------------------------------------
# finding and fetching a backup


def resolve_redis(storage, params):
    """The BackupEntry of a Redis backup: an id, or the newest (optionally at
    or before ``before``, optionally from one ``source``)."""
    bid = params.get("backup_id") or "latest"
    if bid != "latest":
        entry = mf.resolve(storage, bid)
        if entry.manifest["kind"] not in REDIS_KINDS:
            raise ConfigError("Backup %s is a %s backup, not a Redis backup" % (bid, entry.manifest["kind"]),
                              "Use pg_verify / pg_restore for PostgreSQL backups")
        return entry
    entries, _problems = mf.list_backups(storage, source=params.get("source") or None, strict=False)
    entries = [e for e in entries if e.manifest["kind"] in REDIS_KINDS]
    if params.get("before"):
        limit = mf.parse_time(params["before"])
        entries = [e for e in entries if e.finished <= limit]
    if not entries:
        raise NotFoundError("No complete Redis backup in %s%s" % (
            storage.describe(), " finished at or before %s" % params["before"] if params.get("before") else ""),
            "Take one with redis_snapshot first, or check storage_url, source and before")
    return entries[0]


def _artifact(manifest):
    if not manifest["artifacts"]:
        raise IntegrityError("Backup %s lists no artifacts" % manifest.backup_id)
    return manifest["artifacts"][0]


def _transforms(manifest, art):
    return [decompressor_for(manifest.get("compression"))] if art.get("compressed") else []


def _read(storage, manifest, art, consumer=None):
    key = mf.artifact_key(manifest.backup_id, art["name"])
    if storage.stat(key) is None:
        raise IntegrityError("Artifact %s of backup %s is missing from %s" % (
            art["name"], manifest.backup_id, storage.describe()), "The backup is damaged; use another backup")
    return read_stored(storage, key, art["size"], art["sha256"],
                       transforms=_transforms(manifest, art) if consumer else (), consumer=consumer)


def fetch_backup(storage, manifest, dest_dir, aof_dirname="appendonlydir"):
    """Download the backup into dest_dir, checking size and sha256 on the way.
    Returns ('rdb', path of dump.rdb) or ('aof', path of the AOF directory)."""
    art = _artifact(manifest)
    if manifest["kind"] == "redis_rdb":
        path = os.path.join(dest_dir, "dump.rdb")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            _read(storage, manifest, art, consumer=out.write)
        return "rdb", path
    aofdir = os.path.join(dest_dir, aof_dirname)
    os.mkdir(aofdir, 0o700)
    ex = TarStreamExtractor(aofdir, AOF_PREFIX)
    ex.start()
    try:
        _read(storage, manifest, art, consumer=ex.feed)
    finally:
        ex.close()
        ex.join()
    if ex.error:
        raise IntegrityError("Cannot unpack %s: %s" % (art["name"], ex.error),
                             "The backup is damaged; use another backup")
    fname = manifest["data"].get("aof", {}).get("appendfilename", "appendonly.aof")
    if fname + ".manifest" not in ex.names:
        raise IntegrityError("%s holds no %s.manifest" % (art["name"], fname))
    return "aof", aofdir


def _aof_manifest_path(aofdir):
    found = [n for n in os.listdir(aofdir) if n.endswith(".manifest")]
    if len(found) != 1:
        raise IntegrityError("Expected one AOF manifest in %s, found %s" % (aofdir, found or "none"))
    return os.path.join(aofdir, found[0])


def check_structure(runner, layout, path, bin_dir=None):
    if layout == "rdb":
        return check_rdb_file(runner, find_redis_tool("redis-check-rdb", bin_dir), path)
    ok, facts, text = check_aof_dir(runner, find_redis_tool("redis-check-aof", bin_dir), _aof_manifest_path(path))
    if not ok:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        raise IntegrityError("redis-check-aof rejected the AOF of this backup: %s" % " | ".join(lines[-3:]),
                             "The backup is damaged; use another backup")
    facts.pop("files", None)
    return facts


# --------------------------------------------------------------------------
# key counts


def compare_keyspace(data, actual):
    """Compare restored INFO keyspace with the manifest. Keys with a TTL may
    have expired before loading, so each database must hold between
    keys-expires and keys. Returns (rows, problems, how)."""
    expected = data.get("keyspace") or {}
    rows, problems = [], []
    if data.get("key_counts_exact"):
        dbs = sorted(set(expected) | set(actual), key=lambda d: int(d[2:]))
        for db in dbs:
            e = expected.get(db, {"keys": 0, "expires": 0})
            a = actual.get(db, {}).get("keys", 0)
            ok = e["keys"] - e["expires"] <= a <= e["keys"]
            rows.append({"db": db, "expected": e["keys"], "expires": e["expires"], "actual": a, "ok": ok})
            if not ok:
                problems.append("%s: expected %d keys%s, restored %d" % (
                    db, e["keys"], " (%d with a TTL)" % e["expires"] if e["expires"] else "", a))
        return rows, problems, "exact per database"
    total = sum(v.get("keys", 0) for v in actual.values())
    check = (data.get("rdb") or {}).get("check") or {}
    if check.get("keys") is not None:
        lo = check["keys"] - check.get("expires", 0)
        ok = lo <= total <= check["keys"]
        rows.append({"db": "all", "expected": check["keys"], "expires": check.get("expires", 0), "actual": total,
                     "ok": ok})
        if not ok:
            problems.append("expected %d keys in total (redis-check-rdb at backup time), restored %d" % (
                check["keys"], total))
        return rows, problems, "total from redis-check-rdb"
    rows.append({"db": "all", "expected": data.get("keys_total"), "actual": total, "ok": None})
    return rows, problems, "not compared (the manifest's counts are approximate)"


def _wait_loaded(client, deadline):
    while True:
        try:
            info = client.info("persistence")
            if not info.get("loading") and not info.get("async_loading"):
                return
        except SourceError as e:
            if "LOADING" not in str(e):
                raise
        if time.time() > deadline:
            raise WaitTimeout("Redis at %s was still loading its data" % client.where, "Raise timeout")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# scratch servers: load a backup, convert between RDB and AOF


def _link_or_copy(src, dst):
    """A hard link costs no space; a copy when on another filesystem."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


class Loaded(object):
    """A scratch redis-server (sandbox.ScratchRedis, loopback, free port,
    random password) that loaded an RDB or an AOF directory."""

    def __init__(self, base_dir, layout, path, timeout, appendfilename=None):
        from .sandbox import ScratchRedis  # pylint: disable=import-outside-toplevel
        self.base_dir = base_dir
        os.makedirs(base_dir, 0o700)
        extra = []
        if layout == "rdb":
            _link_or_copy(path, os.path.join(base_dir, "dump.rdb"))
            if appendfilename:
                extra = ["--appendfilename", appendfilename]
        else:
            target = os.path.join(base_dir, "appendonlydir")
            shutil.copytree(path, target, copy_function=_link_or_copy)
            mpath = _aof_manifest_path(target)
            extra = ["--appendfilename", os.path.basename(mpath)[:-len(".manifest")]]
        self.server = ScratchRedis(base_dir, password=secrets.token_urlsafe(18), appendonly=(layout == "aof"),
                                   extra_args=extra)
        self.timeout = timeout
        self.client = None

    def start(self):
        try:
            self.server.start(timeout=self.timeout)
            self.client = RedisClient({"host": self.server.host, "port": self.server.port, "user": None,
                                       "password": self.server.password, "tls": False, "tls_ca_cert": None,
                                       "tls_cert": None, "tls_key": None, "tls_validate_certs": True,
                                       "connect_timeout": 30}).connect()
            _wait_loaded(self.client, time.time() + self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def keyspace(self):
        return keyspace(self.client.info("keyspace"))

    def close(self):
        if self.client:
            self.client.close()
        self.server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def rdb_to_aof(rdb_path, work_dir, appendfilename, timeout):
    """Load the RDB into a scratch server, switch AOF on (it writes a fresh
    multi-part AOF) and return (AOF directory, keyspace)."""
    base = os.path.join(work_dir, "to-aof")
    with Loaded(base, "rdb", rdb_path, timeout, appendfilename=appendfilename) as srv:
        ks = srv.keyspace()
        srv.client.call("CONFIG", "SET", "appendonly", "yes")
        deadline = time.time() + timeout
        while True:
            p = srv.client.info("persistence")
            if p.get("aof_enabled") and not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"):
                if p.get("aof_last_bgrewrite_status") != "ok":
                    raise ToolError("Writing the AOF from the RDB failed in the scratch server (%s)" % base)
                break
            if time.time() > deadline:
                raise WaitTimeout("Writing the AOF from the RDB took longer than %ss" % timeout, "Raise timeout")
            time.sleep(0.05)
    return os.path.join(base, "appendonlydir"), ks


def aof_to_rdb(aofdir, work_dir, timeout):
    """Load the AOF into a scratch server and SAVE it as an RDB; returns
    (path of dump.rdb, keyspace)."""
    base = os.path.join(work_dir, "to-rdb")
    with Loaded(base, "aof", aofdir, timeout) as srv:
        ks = srv.keyspace()
        srv.client.call("SAVE")
    return os.path.join(base, "dump.rdb"), ks


# --------------------------------------------------------------------------
# verify


def redis_verify(params, check_mode=False, runner=None, progress=None):
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    level = params.get("level") or "structure"
    if level not in LEVELS:
        raise ConfigError("level must be one of %s, got %r" % (", ".join(LEVELS), level))
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    entry = resolve_redis(storage, params)
    manifest = entry.manifest
    if check_mode:
        return True, {"backup_id": entry.backup_id, "level": level, "passed": None,
                      "msg": "Would verify %s at level %s" % (entry.backup_id, level)}
    timeout = float(params.get("timeout") or 600)
    bin_dir = params.get("redis_bin_dir")
    job = params.get("job_name") or "redis_%s" % manifest["source"].get("port", "unknown")
    started = mf.utcnow()
    t0 = time.time()
    findings, rows, timings, facts = [], [], {}, {}
    how = None
    passed = False
    tmp = None
    with signals_raise():
        try:
            art = _artifact(manifest)
            for extra in manifest["artifacts"][1:]:
                _read(storage, manifest, extra)
            t1 = time.time()
            if level == "checksum":
                progress("checking size and sha256 of %s" % art["name"])
                _read(storage, manifest, art)
            elif level == "structure" and manifest["kind"] == "redis_rdb":
                progress("checking %s with redis-check-rdb while reading it back" % art["name"])
                checker = RdbChecker(runner, find_redis_tool("redis-check-rdb", bin_dir), art["name"])
                try:
                    _read(storage, manifest, art, consumer=checker.feed)
                    facts = checker.finish()
                finally:
                    checker.close()
            else:
                tmp = tempfile.mkdtemp(prefix="drkit-redis-verify-", dir=params.get("work_dir") or None)
                progress("fetching %s" % art["name"])
                layout, path = fetch_backup(storage, manifest, tmp)
                timings["download_seconds"] = round(time.time() - t1, 3)
                progress("checking its structure")
                facts = check_structure(runner, layout, path, bin_dir)
                if level == "restore":
                    progress("loading it into a scratch redis-server on loopback")
                    t2 = time.time()
                    with Loaded(os.path.join(tmp, "scratch"), layout, path, timeout) as srv:
                        timings["restore_seconds"] = round(time.time() - t2, 3)
                        actual = srv.keyspace()
                    rows, problems, how = compare_keyspace(manifest["data"], actual)
                    findings.extend(problems)
            timings.setdefault("read_seconds", round(time.time() - t1, 3))
            expected_keys = ((manifest["data"].get("rdb") or {}).get("check") or {}).get("keys")
            if facts and manifest["kind"] == "redis_rdb" and expected_keys is not None \
                    and facts.get("keys") != expected_keys:
                findings.append("redis-check-rdb reads %s keys, %d at backup time" % (facts.get("keys"), expected_keys))
            passed = not findings
        except (IntegrityError, ToolError, WaitTimeout) as e:
            findings.append(str(e))
            passed = False
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    return finish_verification(storage, params, entry, job, level, passed, started, t0, timings, findings,
                               {"keyspace": rows, "key_counts_compared": how, "structure": facts})


# --------------------------------------------------------------------------
# restore into a stopped instance


def read_redis_conf(path):
    """The few directives we need from a redis.conf (no include handling)."""
    out = {}
    try:
        with open(path) as fh:
            lines = fh.readlines()
    except (IOError, OSError) as e:
        raise ConfigError("Cannot read %s: %s" % (path, e.strerror or e))
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        key = parts[0].lower()
        val = parts[1].strip() if len(parts) > 1 else ""
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
            val = val[1:-1]
        if key in ("dir", "dbfilename", "appendonly", "appenddirname", "appendfilename"):
            out[key] = val
    return out


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


def _target(params):
    data_dir = params.get("data_dir")
    conf = read_redis_conf(params["redis_conf"]) if params.get("redis_conf") else {}
    if not data_dir:
        data_dir = conf.get("dir")
    if not data_dir:
        raise ConfigError("data_dir is required", "Name the stopped instance's data directory (its 'dir')")
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ConfigError("data_dir %s does not exist" % data_dir, "Create it (owned by the redis user) first")
    t = {
        "data_dir": data_dir,
        "dbfilename": params.get("dbfilename") or conf.get("dbfilename") or "dump.rdb",
        "appenddirname": params.get("appenddirname") or conf.get("appenddirname") or "appendonlydir",
        "appendfilename": params.get("appendfilename") or conf.get("appendfilename") or "appendonly.aof",
    }
    aof = params.get("appendonly")
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


def redis_restore(params, check_mode=False, runner=None, progress=None):
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    entry = resolve_redis(storage, params)
    manifest = entry.manifest
    t = _target(params)
    timeout = float(params.get("timeout") or 600)
    force = bool(params.get("force"))
    start_command = params.get("start_command") or None
    if start_command is not None and (not isinstance(start_command, (list, tuple)) or not start_command):
        raise ConfigError("start_command must be a list of arguments",
                          "e.g. [systemctl, start, redis-server] or [docker, start, agentic-redis]")
    cp = conn_params(params) if start_command else None

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
    layout = "aof" if t["appendonly"] else "rdb"
    conversion = None
    if kind == "redis_rdb" and t["appendonly"]:
        conversion = "rdb->aof"
    elif kind == "redis_aof" and not t["appendonly"]:
        conversion = "aof->rdb"
    elif kind == "redis_aof" and manifest["data"].get("aof", {}).get("appendfilename", "appendonly.aof") \
            != t["appendfilename"]:
        conversion = "aof->rdb->aof"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    plan = ["move %s aside to %s.drkit-%s" % (p, p, stamp) for p in existing]
    plan.append("place %s" % (aof_target if layout == "aof" else rdb_target))
    if layout == "aof":
        plan.append("place %s too (loaded only if AOF is turned off)" % rdb_target)
    why = "the target has appendonly %s (%s)" % ("yes" if t["appendonly"] else "no", t["appendonly_from"])
    base = {"backup_id": entry.backup_id, "kind": kind, "data_dir": t["data_dir"], "appendonly": t["appendonly"],
            "conversion": conversion, "plan": plan}
    if check_mode:
        base.update(changed=True, msg="Would restore %s into %s: %s; %s" % (
            entry.backup_id, t["data_dir"], "; ".join(plan), why))
        return True, base

    owner = params.get("owner")
    group = params.get("group")
    st = os.stat(t["data_dir"])
    uid = _uid(owner) if owner else st.st_uid
    gid = _gid(group) if group else st.st_gid
    staging = tempfile.mkdtemp(prefix=".drkit-restore-", dir=t["data_dir"])  # same filesystem: renames are atomic
    moved = []
    t0 = time.time()
    with signals_raise():
        try:
            progress("fetching %s into %s" % (entry.backup_id, staging))
            got_layout, path = fetch_backup(storage, manifest, staging, aof_dirname="fetched-aof")
            facts = check_structure(runner, got_layout, path, params.get("redis_bin_dir"))
            conv_ks = None
            rdb_file, aof_dir = None, None
            if got_layout == "rdb":
                rdb_file = path
                if layout == "aof":
                    progress("turning the RDB into an AOF for an instance with appendonly yes")
                    aof_dir, conv_ks = rdb_to_aof(path, staging, t["appendfilename"], timeout)
            else:
                if layout == "rdb" or conversion == "aof->rdb->aof":
                    progress("turning the AOF into an RDB")
                    rdb_file, conv_ks = aof_to_rdb(path, staging, timeout)
                    if layout == "aof":
                        aof_dir, conv_ks = rdb_to_aof(rdb_file, staging, t["appendfilename"], timeout)
                else:
                    aof_dir = path
            if conv_ks is not None:
                _rows, problems, _how = compare_keyspace(manifest["data"], conv_ks)
                if problems:
                    raise IntegrityError("Converting the backup lost keys: %s" % "; ".join(problems))
            # place: move old files aside, then rename the new ones in
            for p in existing:
                aside = "%s.drkit-%s" % (p, stamp)
                os.rename(p, aside)
                moved.append((p, aside))
            placed = []
            if rdb_file:
                _own(rdb_file, uid, gid, 0o600)
                os.rename(rdb_file, rdb_target)
                placed.append(rdb_target)
            if aof_dir:
                for n in os.listdir(aof_dir):
                    _own(os.path.join(aof_dir, n), uid, gid, 0o600)
                _own(aof_dir, uid, gid, 0o700)
                os.rename(aof_dir, aof_target)
                placed.append(aof_target)
            _fsync_dir(t["data_dir"])
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
    actual = _wait_started(cp, t["data_dir"], time.time() + timeout)
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


def _wait_started(cp, data_dir, deadline):
    last = None
    while time.time() < deadline:
        client = RedisClient(cp)
        try:
            client.connect()
            _wait_loaded(client, deadline)
            try:
                d = client.config_get("dir")
            except SourceError:
                d = None  # no +config|get for this user: cannot tell, compare the counts anyway
            if d and os.path.realpath(d) != os.path.realpath(data_dir):
                raise SafetyError("Redis at %s serves %s, not %s" % (describe(cp), d, data_dir),
                                  "Point login_host/login_port at the restored instance")
            return keyspace(client.info("keyspace"))
        except SourceError as e:
            if not (e.details.get("retryable") or "LOADING" in str(e)):
                raise  # wrong password, no permission...: waiting will not help
            last = e
            time.sleep(0.1)
        finally:
            client.close()
    raise WaitTimeout("The restored instance did not answer at %s (%s)" % (describe(cp), last),
                      "Look at its log; the data is in place")


def _uid(owner):
    import pwd  # pylint: disable=import-outside-toplevel
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ConfigError("No such user %r" % owner)


def _gid(group):
    import grp  # pylint: disable=import-outside-toplevel
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError("No such group %r" % group)


def _own(path, uid, gid, mode):
    os.chmod(path, mode)
    if (uid, gid) != (os.stat(path).st_uid, os.stat(path).st_gid):
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            raise ConfigError("Cannot give %s to uid %d gid %d" % (path, uid, gid),
                              "Run the restore as root (become: true) or as the redis user")


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


__all__ = ["redis_verify", "redis_restore", "resolve_redis", "fetch_backup", "compare_keyspace"]
