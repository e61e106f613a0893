# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.redis_verify, pg_verify's twin: ``checksum`` (size and sha256
of every artifact), ``structure`` (plus redis-check-rdb / redis-check-aof),
and ``restore`` (plus loading it into a scratch redis-server on a free
loopback port and comparing the key counts per database with the manifest).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import secrets
import shutil
import time

from ..container.client import DOCKER, SCRATCH_VERIFY, docker_settings, inspect_any, open_client
from ..container.scratch import ScratchContainer
from ..core import metrics
from ..core.crypto import DECRYPTION, Keyring
from ..core.errors import ConfigError, IntegrityError, ToolError, WaitTimeout
from ..core.janitor import private_dir
from ..core.options import Option, Options, resolve
from ..core.process import LocalRunner
from ..repo.verification import LEVEL, Verification, planned
from ..storage.factory import STORAGE, open_storage, storage_options
from .artifacts import (
    SELECTOR,
    aof_manifest_path,
    check_structure,
    check_structure_with,
    fetch_backup,
    main_artifact,
    read_artifact,
    require_key,
    resolve_redis,
)
from .client import RedisClient, keyspace
from .scratch import ScratchRedis
from .scratch_container import LoadedInContainer
from .server import wait_loaded
from .tools import REDIS_BIN_DIR, RdbChecker, find_redis_tool
from .verify_in_container import load_in_container

# drkit.backup.redis_verify / drkit redis-verify
OPTIONS = Options(
    STORAGE, metrics.METRICS, SELECTOR, LEVEL, DOCKER,
    SCRATCH_VERIFY,
    Option("timeout", "float", default=600, above=0, flags=("--timeout",),
           help="seconds the scratch server may take to start and load the data (default 600)"),
    Option("work_dir", "path", flags=("--work-dir",), help="where the backup is fetched for structure/restore"),
    REDIS_BIN_DIR,
    DECRYPTION,
)

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
            mpath = aof_manifest_path(target)
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
            wait_loaded(self.client, time.time() + self.timeout)
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


def _scratch(scratch, base, layout, path, timeout, appendfilename=None):
    """A local Loaded in ``base``, or (``scratch``: a factory of
    scratch_container.LoadedInContainer) one in a container, ``base`` then
    only where its output is fetched to."""
    if scratch is None:
        return Loaded(base, layout, path, timeout, appendfilename=appendfilename)
    os.makedirs(base, 0o700)
    return scratch(layout, path, timeout, appendfilename=appendfilename)


def rdb_to_aof(rdb_path, work_dir, appendfilename, timeout, scratch=None):
    """Load the RDB into a scratch server, switch AOF on (it writes a fresh
    multi-part AOF) and return (AOF directory, keyspace)."""
    base = os.path.join(work_dir, "to-aof")
    with _scratch(scratch, base, "rdb", rdb_path, timeout, appendfilename=appendfilename) as srv:
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
        if scratch is not None:
            srv.fetch("appendonlydir", base)
    return os.path.join(base, "appendonlydir"), ks


def aof_to_rdb(aofdir, work_dir, timeout, scratch=None):
    """Load the AOF into a scratch server and SAVE it as an RDB; returns
    (path of dump.rdb, keyspace)."""
    base = os.path.join(work_dir, "to-rdb")
    with _scratch(scratch, base, "aof", aofdir, timeout) as srv:
        ks = srv.keyspace()
        srv.client.call("SAVE")
        if scratch is not None:
            srv.fetch("dump.rdb", base)
    return os.path.join(base, "dump.rdb"), ks


def convert_for_target(manifest, got_layout, path, layout, conversion, work_dir, appendfilename, timeout,
                       progress, scratch=None, where=""):
    """A fetched backup (``got_layout`` at ``path``) in the layout the
    target loads: (RDB file or None, AOF directory or None). A conversion
    goes through a scratch server (``scratch``: a container's, ``where``
    says so) and must keep every key the manifest counted."""
    rdb_file, aof_dir, conv_ks = None, None, None
    if got_layout == "rdb":
        rdb_file = path
        if layout == "aof":
            progress("turning the RDB into an AOF%s (the target has appendonly yes)" % where)
            aof_dir, conv_ks = rdb_to_aof(path, work_dir, appendfilename, timeout, scratch=scratch)
    elif layout == "rdb" or conversion == "aof->rdb->aof":
        progress("turning the AOF into an RDB%s" % where)
        rdb_file, conv_ks = aof_to_rdb(path, work_dir, timeout, scratch=scratch)
        if layout == "aof":
            aof_dir, conv_ks = rdb_to_aof(rdb_file, work_dir, appendfilename, timeout, scratch=scratch)
    else:
        aof_dir = path
    if conv_ks is not None:
        _rows, problems, _how = compare_keyspace(manifest["data"], conv_ks)
        if problems:
            raise IntegrityError("Converting the backup lost keys: %s" % "; ".join(problems))
    return rdb_file, aof_dir


# --------------------------------------------------------------------------
# verify


def redis_verify(params, check_mode=False, runner=None, progress=None):
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    level = p["level"]
    storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    entry = resolve_redis(storage, p)
    manifest = entry.manifest
    keyring = Keyring(p["encryption_identity_file"])
    if level != "checksum":
        # decoding an encrypted backup needs one of its recipients' identities: say so before
        # anything is read or started (check mode too); a checksum needs no key
        require_key(manifest, keyring)
    if check_mode:
        return planned(entry, level)
    if p["verify_in"] == "container" and not p["container"]:
        raise ConfigError("verify_in: container needs container", "Name the container, or use verify_in: scratch")
    timeout = p["timeout"]
    bin_dir = p["redis_bin_dir"]
    job = p["job_name"] or "redis_%s" % manifest["source"].get("port", "unknown")
    rows, facts, how = [], {}, None
    docker = _docker_target(p) if p["container"] or p["image"] else None
    v = Verification(storage, p, entry, level, job, progress)
    with v:
        art = main_artifact(manifest)
        v.check_artifacts(skip=[art["name"]])
        t1 = time.time()
        if level == "checksum":
            progress("checking size and sha256 of %s" % art["name"])
            read_artifact(storage, manifest, art, progress=progress, step="verify")
        elif level == "structure" and manifest["kind"] == "redis_rdb" and docker is None:
            progress("checking %s with redis-check-rdb while reading it back" % art["name"])
            checker = RdbChecker(runner, find_redis_tool("redis-check-rdb", bin_dir), art["name"])
            try:
                read_artifact(storage, manifest, art, consumer=checker.feed, progress=progress, step="verify",
                              keyring=keyring)
                facts = checker.finish()
            finally:
                checker.close()
        else:
            tmp = private_dir("redis-verify", p["work_dir"])
            v.cleanup(shutil.rmtree, tmp, True)
            progress("fetching %s" % art["name"])
            layout, path = fetch_backup(storage, manifest, tmp, progress=progress, keyring=keyring)
            v.timings["download_seconds"] = round(time.time() - t1, 3)
            if docker is not None:
                facts, actual = _in_containers(docker, p, layout, path, level, v, progress)
            else:
                progress("checking its structure")
                facts = check_structure(runner, layout, path, bin_dir)
            if level == "restore" and docker is None:
                progress("loading it into a scratch redis-server on loopback")
                t2 = time.time()
                with Loaded(os.path.join(tmp, "scratch"), layout, path, timeout) as srv:
                    v.timings["restore_seconds"] = round(time.time() - t2, 3)
                    actual = srv.keyspace()
            if level == "restore":
                rows, problems, how = compare_keyspace(manifest["data"], actual)
                for problem in problems:
                    v.finding(problem)
        v.timings.setdefault("read_seconds", round(time.time() - t1, 3))
        expected_keys = ((manifest["data"].get("rdb") or {}).get("check") or {}).get("keys")
        if facts and manifest["kind"] == "redis_rdb" and expected_keys is not None \
                and facts.get("keys") != expected_keys:
            v.finding("redis-check-rdb reads %s keys, %d at backup time" % (facts.get("keys"), expected_keys))
    extra = {}
    if docker is not None and level != "checksum":
        extra["verified_in"] = "container %s" % docker[3] if p["verify_in"] == "container" else \
            "scratch container of image %s" % docker[2]
    return v.finish(keyspace=rows, key_counts_compared=how, structure=facts, **extra)


# --------------------------------------------------------------------------
# with container: the image's own Redis, never the production container
# unless verify_in: container


def _docker_target(p):
    """(client, docker host, image, container name) for a verification
    through the Docker Engine; the image is the container's own (it may be
    stopped: only its image is used) unless ``image`` names one."""
    s = docker_settings(p)
    api = open_client(s)
    image = p["image"]
    if not image:
        image = inspect_any(api, s["container"], s["docker_host"]).get("Image")
    return api, s["docker_host"], image, s["container"]


def _in_containers(docker, p, layout, path, level, v, progress):
    """Structure (and for level restore the load and key counts) with the
    image's Redis: (structure facts, keyspace loaded or None)."""
    api, docker_host, image, name = docker
    if p["verify_in"] == "container":
        return load_in_container(api, docker_host, name, layout, path, level, p, v, progress)
    if level != "restore":
        progress("checking its structure with the tools of image %s" % image)
        box = ScratchContainer(api, docker_host, image, ["86400"], entrypoint=["sleep"], network_mode="none",
                               user="0:0", what="redis-check")
        v.cleanup(box.remove)
        box.create().start()
        return check_structure_with(box.runner(), layout, path, p["redis_bin_dir"]), None
    progress("loading it into a scratch container of image %s on loopback" % image)
    t2 = time.time()
    srv = LoadedInContainer(api, docker_host, image, layout, path, p["timeout"])
    v.cleanup(srv.close)
    srv.start()
    v.timings["restore_seconds"] = round(time.time() - t2, 3)
    actual = srv.keyspace()
    progress("checking its structure with the tools of image %s" % image)
    facts = check_structure_with(srv.box.runner(), layout, path, p["redis_bin_dir"])
    srv.close()
    return facts, actual
