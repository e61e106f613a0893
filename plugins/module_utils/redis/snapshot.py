# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis backups: ``redis_snapshot`` with three modes.

* ``rdb`` (default): INFO and BGSAVE are pipelined into one write, so Redis
  runs them back to back and the key counts recorded in the manifest are
  those of the very fork that writes the RDB.  We poll until the save is over
  (``rdb_bgsave_in_progress:0`` with a new save counted), require
  ``rdb_last_bgsave_status:ok``, then open ``dir/dbfilename``.  Redis always
  writes a temp file and renames it over the old one, so our open descriptor
  pins exactly this RDB even if another save follows (a hard link without the
  risk of leaving one behind).  The file streams through the pipeline
  (zstd, sha256, storage) and, on the way, through ``redis-check-rdb``.
* ``remote``: for when the data directory is out of reach (another host, a
  container): the RDB is fetched over the replication protocol (SYNC, the
  way ``redis-cli --rdb`` does) and streamed without a local copy.
* ``aof``: Redis 7 multi-part AOF, the documented procedure: automatic
  rewrites off (``auto-aof-rewrite-percentage 0``), wait until no rewrite
  runs, pin every file of ``appenddirname`` (open descriptors, sizes
  recorded), put the setting back whatever happens, copy, check with
  ``redis-check-aof`` and store as one tar.

``remote`` and ``aof`` pause client writes for a moment (``CLIENT PAUSE ...
WRITE``, bounded by ``pause_timeout``) while the fork starts / the file
sizes are taken, so the key counts in the manifest are exact; without the
pause (refused, or ``pause_writes: false``) they are recorded as approximate.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import socket

from ..container.client import DOCKER
from ..container.runner import open_runner
from ..core import metrics
from ..core.crypto import ENCRYPTION, load_recipients
from ..core.errors import ConfigError
from ..core.options import Option, Options, resolve
from ..core.process import shares_files
from ..core.signing import SIGNING, signer_for
from ..core.stream import COMPRESSION, compression_settings
from ..repo.session import LABELS, BackupJob
from ..storage.factory import STORAGE, open_storage, storage_options
from .client import CONNECTION, conn_params, connect, describe
from .server import STATE_DIR, ledger_dir, repair_settings, server_facts, total_keys
from .snapshot_aof import aof_paths, snapshot_aof
from .snapshot_rdb import snapshot_rdb
from .snapshot_sync import snapshot_remote
from .tools import REDIS_BIN_DIR, locate_redis_tool

MODES = ("rdb", "remote", "aof")
KIND = {"rdb": "redis_rdb", "remote": "redis_rdb", "aof": "redis_aof"}

# drkit.backup.redis_snapshot / drkit redis-snapshot
OPTIONS = Options(
    CONNECTION, STORAGE, metrics.METRICS, DOCKER,
    Option("mode", "str", default="rdb", choices=MODES, flags=("--mode",)),
    Option("timeout", "float", default=600, above=0, flags=("--timeout",),
           help="seconds to wait for the save (default 600)"),
    Option("pause_writes", "bool", default=True, off_flags=("--no-pause-writes",),
           help="remote/aof: do not pause writes (key counts become approximate)"),
    Option("pause_timeout", "int", default=2000, min=10, max=60000, flags=("--pause-timeout",),
           help="longest write pause, ms (default 2000)"),
    COMPRESSION,
    ENCRYPTION,
    SIGNING,
    Option("work_dir", "path", flags=("--work-dir",), help="mode aof: where the AOF files are copied"),
    STATE_DIR,
    REDIS_BIN_DIR,
    LABELS,
)


# --------------------------------------------------------------------------
# entry point


def redis_snapshot(params, check_mode=False, runner=None, progress=None):
    """Engine entry point. Returns (changed, result dict)."""
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    mode, timeout, pause_ms = p["mode"], p["timeout"], p["pause_timeout"]
    if p["container"] and mode == "remote":
        raise ConfigError("container is for modes rdb and aof (mode remote reads over the replication protocol "
                          "from outside and reads no file of the container)",
                          "Drop container for mode: remote, or use mode: rdb or aof with it")
    runner = runner or open_runner(p)
    cp = conn_params(p)
    kind = KIND[mode]
    storage = open_storage(p["storage_url"], **storage_options(p))
    signer = signer_for(p["signing_key_file"])  # a bad key fails check mode too
    job = BackupJob(storage, kind, p["metrics_dir"], p["job_name"] or "redis_%s" % cp["port"], progress,
                    signer=signer)
    pause_writes = p["pause_writes"]
    bin_dir = p["redis_bin_dir"]
    compression = compression_settings(p)
    recipients = load_recipients(p["encryption_recipients"])  # a bad key fails check mode too

    if check_mode:
        with connect(cp) as client:
            facts = server_facts(client)
            plan = _check_plan(client, mode, cp, runner)
        locate_redis_tool(runner, "redis-check-aof" if mode == "aof" else "redis-check-rdb", bin_dir)
        job.check_storage()
        changed, result = job.planned("Would back up Redis %s at %s (mode %s: %s) to %s" % (
            facts["server_version"], describe(cp), mode, plan, storage.describe()))
        result["mode"] = mode
        return changed, result

    with job:
        client = job.closing(connect(cp))
        ledger = ledger_dir(p["state_dir"])
        repaired = repair_settings(client, ledger, progress)
        facts = server_facts(client)
        tool, version = locate_redis_tool(runner, "redis-check-aof" if mode == "aof" else "redis-check-rdb", bin_dir)
        source = {"type": "redis", "host": cp["host"], "port": cp["port"], "tls": cp["tls"],
                  "server_version": facts["server_version"], "role": facts["role"],
                  "redis_mode": facts["redis_mode"], "run_id": facts["run_id"],
                  "client_host": socket.gethostname()}
        if not shares_files(runner):
            source["container"] = runner.facts()
        if version is None and mode == "aof":  # redis-check-aof has no --version; it is the same binary
            version = locate_redis_tool(runner, "redis-check-rdb", bin_dir)[1]
        tools = {posixpath.basename(tool): version}
        options = {"mode": mode}
        if mode != "rdb":
            options["pause_writes"] = pause_writes
        # encrypted after compression; redis-check-rdb/-aof read the plaintext before that (the
        # tee in front of the pipeline, the AOF copy), so they run as without encryption
        session = job.session(source, tools=tools, compression=compression, options=options, labels=p["labels"],
                              recipients=recipients)
        with session:
            if mode == "rdb":
                data, notes = snapshot_rdb(client, session, runner, tool, timeout, progress)
            elif mode == "remote":
                data, notes = snapshot_remote(client, cp, session, runner, tool, timeout, pause_ms,
                                              pause_writes, progress)
            else:
                data, notes = snapshot_aof(client, session, runner, tool, timeout, pause_ms, pause_writes,
                                           p["work_dir"], progress, ledger)
            notes = repaired + notes
            data["notes"] = notes
            session.commit(data)
    result = session.result()
    result["mode"] = mode
    result["notes"] = notes
    result["key_counts"] = data["keyspace"]
    result["key_counts_exact"] = data["key_counts_exact"]
    result["msg"] = "Backed up Redis at %s (mode %s, %d keys) to %s as %s" % (
        describe(cp), mode, total_keys(data["keyspace"]), storage.describe(), session.backup_id)
    return True, result


def _check_plan(client, mode, cp, runner):
    """Read-only checks for check mode; returns a short description."""
    if mode == "rdb" and not shares_files(runner):
        d, name = client.config_get("dir"), client.config_get("dbfilename")
        return "BGSAVE, then read %s from %s" % (posixpath.join(d or "", name or ""), runner.description)
    if mode == "rdb":
        d, name = client.config_get("dir"), client.config_get("dbfilename")
        if not d or not os.path.isdir(d):
            raise ConfigError("The server's data directory %s is not on this host" % d,
                              "Run the task on the Redis host, or use mode: remote")
        return "BGSAVE, then read %s" % os.path.join(d, name)
    if mode == "aof" and not shares_files(runner):
        return "read the files of %s from %s" % (aof_paths(client, runner)[1], runner.description)
    if mode == "aof":
        return "pin the files of %s" % aof_paths(client)[1]
    return "fetch an RDB over the replication protocol from %s" % describe(cp)
