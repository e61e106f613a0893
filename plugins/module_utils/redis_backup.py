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

import atexit
import os
import re
import shlex
import shutil
import socket
import tarfile
import tempfile
import time

from . import manifest as mf
from .backup import BackupSession, record_failure
from .errors import ConfigError, DrkitError, IntegrityError, SourceError, ToolError, WaitTimeout
from .pipeline import BackgroundReader, LocalRunner, ProcessFeeder
from .redis_client import ReplyError, command_error, conn_params, describe, keyspace, parse_info
from .redis_client import connect as redis_connect
from .storage import open_storage, storage_options

MODES = ("rdb", "remote", "aof")
KIND = {"rdb": "redis_rdb", "remote": "redis_rdb", "aof": "redis_aof"}
RDB_ARTIFACT = "dump.rdb"
AOF_ARTIFACT = "appendonly.tar"
AOF_PREFIX = "aof/"
POLL = 0.05
CHUNK_DEFAULT = 1 << 20
FAST_POLL = 0.002


# --------------------------------------------------------------------------
# tools


_TOOL_LINKS = []


def _cleanup_links():
    for d in _TOOL_LINKS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_links)


def find_redis_tool(name, bin_dir=None, search=("/usr/bin", "/usr/local/bin", "/usr/sbin"), use_path=True):
    """Path to redis-check-rdb / redis-check-aof / redis-server.

    The check tools are the redis-server binary run under another name (it
    looks at argv[0]); when only redis-server is installed, a private symlink
    with the right name is made."""
    candidates = []
    if bin_dir:
        candidates.append(os.path.join(bin_dir, name))
    found = shutil.which(name) if use_path else None
    if found:
        candidates.append(found)
    candidates += [os.path.join(d, name) for d in search]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if name in ("redis-check-rdb", "redis-check-aof"):
        server = None
        servers = [os.path.join(bin_dir, "redis-server")] if bin_dir else []
        servers += ([shutil.which("redis-server") or ""] if use_path else [])
        servers += [os.path.join(d, "redis-server") for d in search]
        for c in servers:
            if c and os.path.isfile(c) and os.access(c, os.X_OK):
                server = os.path.realpath(c)
                break
        if server:
            d = tempfile.mkdtemp(prefix="drkit-redis-tools-")
            _TOOL_LINKS.append(d)
            link = os.path.join(d, name)
            os.symlink(server, link)
            return link
    raise ToolError("%s was not found (looked in %s)" % (name, ", ".join(candidates) or "PATH"),
                    "Install the Redis tools (Debian/Ubuntu: apt-get install redis-tools) "
                    "or set redis_bin_dir")


def tool_version(runner, path):
    try:
        rc, out, _err = runner.run([path, "--version"], timeout=30)
    except DrkitError:
        return None
    text = out.decode("utf-8", "replace").strip()
    m = re.search(r"v=(\S+)", text) or re.search(r"(\d+\.\d+\.\d+)", text)
    return m.group(1) if (rc == 0 and m) else None


def parse_check_output(text):
    """Facts from redis-check-rdb / the RDB part of redis-check-aof."""
    facts = {}
    for key, pat in (("keys", r"\[info\] (\d+) keys read"), ("expires", r"\[info\] (\d+) expires"),
                     ("already_expired", r"\[info\] (\d+) already expired")):
        m = re.search(pat, text)
        if m:
            facts[key] = int(m.group(1))
    dbs = [int(x) for x in re.findall(r"Selecting DB ID (\d+)", text)]
    facts["dbs"] = sorted(set(dbs))
    m = re.search(r"AUX FIELD redis-ver = '([^']*)'", text)
    if m:
        facts["redis_ver"] = m.group(1)
    return facts


def _error_lines(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "--- RDB ERROR DETECTED ---" in text:
        i = next(i for i, ln in enumerate(lines) if "RDB ERROR DETECTED" in ln)
        return " | ".join(lines[i + 1:i + 4])
    return " | ".join(lines[-3:])


class RdbChecker(object):
    """redis-check-rdb reading a stream on its stdin: fed chunk by chunk while
    the same bytes go to storage, so the check costs no extra read."""

    def __init__(self, runner, tool, what):
        self.what = what
        self.handle = runner.spawn([tool, "/dev/stdin"], stdin=True)
        self.reader = BackgroundReader(self.handle.stdout)
        self.reader.start()
        self.feeder = ProcessFeeder(self.handle)
        self.facts = None

    def feed(self, data):
        return self.feeder(data)

    def finish(self, timeout=600):
        self.feeder.close()
        rc = self.handle.wait(timeout)
        self.reader.join()
        text = bytes(self.reader.data).decode("utf-8", "replace")
        if rc != 0 or "RDB looks OK" not in text:
            raise IntegrityError("redis-check-rdb rejected %s (exit %s): %s" % (self.what, rc, _error_lines(text)),
                                 "The RDB is damaged or was cut short; nothing was recorded as a backup")
        self.facts = parse_check_output(text)
        return self.facts

    def close(self):
        self.feeder.close()
        self.handle.close()


def check_rdb_file(runner, tool, path, what=None):
    rc, out, err = runner.run([tool, path], timeout=3600)
    text = out.decode("utf-8", "replace") + err
    if rc != 0 or "RDB looks OK" not in text:
        raise IntegrityError("redis-check-rdb rejected %s (exit %s): %s" % (what or path, rc, _error_lines(text)),
                             "The RDB is damaged; use another backup")
    return parse_check_output(text)


_AOF_ANALYZED = re.compile(r"AOF analyzed: filename=(.+?), size=(\d+), ok_up_to=(\d+), ok_up_to_line=\d+, diff=(\d+)")


def check_aof_dir(runner, tool, manifest_path, what=None):
    """redis-check-aof on a multi-part AOF manifest. Returns (ok, facts,
    text); facts has 'files' {name: (size, ok_up_to)} and the base RDB facts."""
    rc, out, err = runner.run([tool, manifest_path], timeout=3600)
    text = out.decode("utf-8", "replace") + err
    files = {}
    for m in _AOF_ANALYZED.finditer(text):
        files[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    facts = parse_check_output(text)
    facts["files"] = files
    ok = rc == 0 and "All AOF files and manifest are valid" in text
    return ok, facts, text


# --------------------------------------------------------------------------
# readers


class TeeReader(object):
    """A file-like read() that hands every chunk to ``tap`` too."""

    def __init__(self, source, tap):
        self.source = source
        self.tap = tap
        self.count = 0

    def read(self, n=-1):
        data = self.source.read(n)
        if data:
            self.count += len(data)
            self.tap(data)
        return data


class PayloadReader(object):
    """The RDB payload after SYNC: ``$<len>`` bytes, or (diskless) the bytes
    up to a 40-byte EOF mark."""

    def __init__(self, client, length=None, eof_mark=None):
        self.client = client
        self.remaining = length
        self.mark = eof_mark
        self._tail = b""
        self.done = False

    def read(self, n=1 << 20):
        if self.done:
            return b""
        if self.remaining is not None:
            if self.remaining == 0:
                self.done = True
                return b""
            data = self.client.read_some(min(n, self.remaining))
            self.remaining -= len(data)
            return data
        # EOF-mark mode: hold back the last 40 bytes until we know they are not the mark
        while True:
            buf = self._tail + self.client.read_some(n)
            at = buf.find(self.mark)
            if at >= 0:  # what follows the mark is the replication stream: not ours
                self.done = True
                return buf[:at]
            keep = len(self.mark)
            if len(buf) > keep:
                self._tail = buf[-keep:]
                return buf[:-keep]
            self._tail = buf


# --------------------------------------------------------------------------
# helpers


def validate(params):
    mode = params.get("mode") or "rdb"
    if mode not in MODES:
        raise ConfigError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    level = int(params.get("compression_level") or 3)
    if not 1 <= level <= 19:
        raise ConfigError("compression_level must be between 1 and 19, got %r" % level)
    timeout = float(params.get("timeout") or 600)
    if timeout <= 0:
        raise ConfigError("timeout must be positive, got %r" % timeout)
    pause_ms = int(params.get("pause_timeout") or 2000)
    if not 10 <= pause_ms <= 60000:
        raise ConfigError("pause_timeout must be between 10 and 60000 ms, got %r" % pause_ms)
    return mode, level, timeout, pause_ms


def server_facts(client):
    info = client.info("server")
    repl = client.info("replication")
    return {
        "server_version": str(info.get("redis_version")),
        "redis_mode": info.get("redis_mode"),
        "run_id": info.get("run_id"),
        "role": repl.get("role"),
        "os": info.get("os"),
    }


def _no_child(p):
    return not (p.get("rdb_bgsave_in_progress") or p.get("aof_rewrite_in_progress")
                or p.get("module_fork_in_progress"))


def wait_for(client, what, deadline, test, section="persistence", interval=POLL, hint=None):
    """Poll INFO <section> until test(info) is true; WaitTimeout at deadline."""
    t0 = time.time()
    while True:
        info = client.info(section)
        if test(info):
            return info
        if time.time() > deadline:
            raise WaitTimeout("Waited %.0f s for %s on Redis at %s" % (time.time() - t0, what, client.where),
                              hint or "Raise timeout; look at the Redis log for what keeps it busy")
        time.sleep(interval)


def _total(ks):
    return sum(v["keys"] for v in ks.values())


def _compression(params, level):
    return {"algorithm": "zstd", "level": level, "threads": int(params.get("compression_threads") or 0)}


def _local_file_error(path, e, mode):
    return ConfigError(
        "Cannot read %s (%s): mode %s reads the server's files on this host" % (path, e.strerror or e, mode),
        "Run the task on the Redis host as a user that may read the data directory (become_user: redis, "
        "or add the backup user to the redis group), or use mode: remote")


class Pause(object):
    """CLIENT PAUSE <ms> WRITE for as short as possible; Redis lifts it by
    itself after ``ms`` if we die."""

    def __init__(self, client, ms, enabled, notes):
        self.client = client
        self.ms = ms
        self.enabled = enabled
        self.notes = notes
        self.active = False
        self.t0 = None

    def __enter__(self):
        if self.enabled:
            try:
                self.client.execute("CLIENT", "PAUSE", str(self.ms), "WRITE")
                self.active = True
                self.t0 = time.time()
            except ReplyError as e:
                self.notes.append("writes could not be paused (%s): key counts are approximate" % e.text[:120])
        return self

    def still_paused(self, margin=0.8):
        return self.active and (time.time() - self.t0) < self.ms / 1000.0 * margin

    def __exit__(self, *exc):
        if self.active:
            try:
                self.client.execute("CLIENT", "UNPAUSE")
            except (ReplyError, DrkitError):
                pass  # the pause ends by itself after pause_timeout
            self.active = False
        return False


# --------------------------------------------------------------------------
# entry point


def redis_snapshot(params, check_mode=False, runner=None, progress=None):
    """Engine entry point. Returns (changed, result dict)."""
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    mode, level, timeout, pause_ms = validate(params)
    cp = conn_params(params)
    kind = KIND[mode]
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    metrics_dir = params.get("metrics_dir")
    job = params.get("job_name") or "redis_%s" % cp["port"]
    pause_writes = params.get("pause_writes", True) is not False
    bin_dir = params.get("redis_bin_dir")

    if check_mode:
        with redis_connect(cp) as client:
            facts = server_facts(client)
            plan = _check_plan(client, mode, cp)
        find_redis_tool("redis-check-aof" if mode == "aof" else "redis-check-rdb", bin_dir)
        storage.exists(mf.manifest_key(mf.new_backup_id(kind)))  # reachability, read-only
        return True, {"changed": True, "backup_id": None, "mode": mode, "storage": storage.describe(),
                      "msg": "Would back up Redis %s at %s (mode %s: %s) to %s" % (
                          facts["server_version"], describe(cp), mode, plan, storage.describe())}

    try:
        storage.check_writable()
        client = redis_connect(cp)
    except DrkitError:
        record_failure(metrics_dir, job, kind)
        raise
    try:
        facts = server_facts(client)
        tool = find_redis_tool("redis-check-aof" if mode == "aof" else "redis-check-rdb", bin_dir)
        source = {"type": "redis", "host": cp["host"], "port": cp["port"], "tls": cp["tls"],
                  "server_version": facts["server_version"], "role": facts["role"],
                  "redis_mode": facts["redis_mode"], "run_id": facts["run_id"],
                  "client_host": socket.gethostname()}
        version = tool_version(runner, tool)
        if version is None and mode == "aof":  # redis-check-aof has no --version; it is the same binary
            version = tool_version(runner, find_redis_tool("redis-check-rdb", bin_dir))
        tools = {os.path.basename(tool): version}
        options = {"mode": mode}
        if mode != "rdb":
            options["pause_writes"] = pause_writes
        session = BackupSession(storage, kind, source, tools=tools, compression=_compression(params, level),
                                options=options, labels=params.get("labels"), metrics_dir=metrics_dir,
                                job=job, progress=progress)
        with session:
            if mode == "rdb":
                data, notes = _snapshot_rdb(client, session, runner, tool, timeout, progress)
            elif mode == "remote":
                data, notes = _snapshot_remote(client, cp, session, runner, tool, timeout, pause_ms,
                                               pause_writes, progress)
            else:
                data, notes = _snapshot_aof(client, session, runner, tool, timeout, pause_ms, pause_writes,
                                            params.get("work_dir"), progress)
            data["notes"] = notes
            session.commit(data)
        result = session.result()
        result["mode"] = mode
        result["notes"] = notes
        result["key_counts"] = data["keyspace"]
        result["key_counts_exact"] = data["key_counts_exact"]
        result["msg"] = "Backed up Redis at %s (mode %s, %d keys) to %s as %s" % (
            describe(cp), mode, _total(data["keyspace"]), storage.describe(), session.backup_id)
        return True, result
    except DrkitError:
        record_failure(metrics_dir, job, kind)
        raise
    finally:
        client.close()


def _check_plan(client, mode, cp):
    """Read-only checks for check mode; returns a short description."""
    if mode == "rdb":
        d, name = client.config_get("dir"), client.config_get("dbfilename")
        if not d or not os.path.isdir(d):
            raise ConfigError("The server's data directory %s is not on this host" % d,
                              "Run the task on the Redis host, or use mode: remote")
        return "BGSAVE, then read %s" % os.path.join(d, name)
    if mode == "aof":
        return "pin the files of %s" % _aof_paths(client)[1]
    return "fetch an RDB over the replication protocol from %s" % describe(cp)


# --------------------------------------------------------------------------
# mode rdb


def bgsave(client, deadline, progress, notes):
    """Start our own BGSAVE with INFO pipelined before it. Waits for a save or
    AOF rewrite that is already running (and for a scheduled one) first.
    Returns (keyspace at the fork, persistence info before, exact)."""
    waited = False
    while True:
        replies = client.pipeline([("INFO", "persistence"), ("INFO", "keyspace"), ("BGSAVE",)])
        for r in replies[:2]:
            if isinstance(r, ReplyError):
                raise command_error(client, ("INFO",), r)
        pers, ks, reply = parse_info(replies[0]), keyspace(parse_info(replies[1])), replies[2]
        if not isinstance(reply, ReplyError):
            if "scheduled" in reply.lower():
                notes.append("the BGSAVE was scheduled behind another child process; key counts are approximate")
                return ks, pers, False
            return ks, pers, True
        text = reply.text
        if "already in progress" in text or "child process" in text or "can't BGSAVE" in text:
            if not waited:
                progress("another BGSAVE or AOF rewrite is running; waiting for it to finish first")
                notes.append("waited for a background save/rewrite that was already running, then ran our own")
                waited = True
            wait_for(client, "the running BGSAVE/AOF rewrite to finish", deadline, _no_child,
                     hint="Raise timeout, or schedule the backup away from other saves")
            continue
        raise command_error(client, ("BGSAVE",), reply)


def bgsave_finished(pers0):
    """A test on INFO persistence: True once the BGSAVE started after pers0
    is over (successfully or not)."""
    saves0 = pers0.get("rdb_saves")
    last0 = pers0.get("rdb_last_save_time")

    def finished(p):
        if p.get("rdb_bgsave_in_progress"):
            return False
        if p.get("rdb_last_bgsave_status") != "ok":
            return True
        if saves0 is not None:
            return p.get("rdb_saves", 0) > saves0
        return p.get("rdb_last_save_time") != last0
    return finished


def bgsave_failed(client, p):
    return SourceError("BGSAVE on %s failed (rdb_last_bgsave_status:%s)" % (
        client.where, p.get("rdb_last_bgsave_status")),
        "Look at the Redis log: usually the data directory is not writable, the disk is full, or fork "
        "failed (vm.overcommit_memory). Nothing was recorded as a backup")


def bgsave_timeout(client, t_start):
    return WaitTimeout("BGSAVE on %s did not finish within %.0f s" % (client.where, time.time() - t_start),
                       "The save is still running inside Redis (large dataset or slow disk); raise timeout. "
                       "Nothing was recorded as a backup")


def wait_bgsave(client, pers0, deadline, t_start):
    try:
        p = wait_for(client, "BGSAVE to finish", deadline, bgsave_finished(pers0))
    except WaitTimeout:
        raise bgsave_timeout(client, t_start)
    if p.get("rdb_last_bgsave_status") != "ok":
        raise bgsave_failed(client, p)
    return p


class _Fallback(Exception):
    """The file streamed during the save is not the one the save produced."""


def find_temp_rdb(client, d, t_request, finished, deadline):
    """Open the temp-<pid>.rdb the BGSAVE child is writing. None when the
    save ends first, or the file cannot be found or read: the caller then
    waits for the save and reads the final file."""
    limit = min(deadline, time.time() + 2)
    next_info = 0
    while time.time() < limit:
        try:
            names = [n for n in os.listdir(d) if n.startswith("temp-") and n.endswith(".rdb")]
        except OSError:
            return None
        fresh = []
        for n in names:
            try:
                if os.stat(os.path.join(d, n)).st_ctime >= t_request - 1:  # not a leftover of a crash
                    fresh.append(os.path.join(d, n))
            except OSError:
                continue
        if len(fresh) > 1:
            return None
        if fresh:
            try:
                return open(fresh[0], "rb")
            except (IOError, OSError):
                return None
        if time.time() >= next_info:
            if finished(client.info("persistence")):
                return None
            next_info = time.time() + POLL
        time.sleep(0.005)
    return None


class GrowingFile(object):
    """read() of the RDB that the BGSAVE child is still writing: at the end
    of what is written so far it waits; it reports EOF only once the save is
    over, succeeded, and the final path is this very file (the child renames
    its temp file there). Redis's CRC64 trailer, checked by redis-check-rdb,
    then proves the bytes are whole."""

    def __init__(self, fh, client, final_path, finished, deadline, t_start):
        self.fd = fh.fileno()
        self.client = client
        self.final_path = final_path
        self.finished = finished
        self.deadline = deadline
        self.t_start = t_start
        self.done = False
        self.final = None
        self.count = 0
        self._next = 0

    def read(self, n=CHUNK_DEFAULT):
        while True:
            data = os.read(self.fd, n)
            if data:
                self.count += len(data)
                return data
            if self.done:
                return b""
            now = time.time()
            if now >= self._next:
                self._next = now + POLL
                p = self.client.info("persistence")
                if self.finished(p):
                    if p.get("rdb_last_bgsave_status") != "ok":
                        raise bgsave_failed(self.client, p)
                    try:
                        st = os.stat(self.final_path)
                    except OSError:
                        raise _Fallback()
                    mine = os.fstat(self.fd)
                    if (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev):
                        raise _Fallback()
                    self.done = True
                    self.final = p
                    continue  # read what was written after our last read
                if now > self.deadline:
                    raise bgsave_timeout(self.client, self.t_start)
            time.sleep(0.01)


def _snapshot_rdb(client, session, runner, tool, timeout, progress):
    deadline = time.time() + timeout
    notes = []
    d, name = client.config_get("dir"), client.config_get("dbfilename")
    if not d or not name:
        raise SourceError("CONFIG GET dir/dbfilename returned nothing on %s" % client.where,
                          "The user needs +config|get; or use mode: remote")
    path = os.path.join(d, name)
    if not os.path.isdir(d):
        raise ConfigError("The server's data directory %s is not on this host" % d,
                          "Run the task on the Redis host (delegate_to), or use mode: remote")
    art = RDB_ARTIFACT + (".zst" if session.compression else "")
    t_request = time.time()
    progress("BGSAVE on %s" % client.where)
    ks, pers0, exact = bgsave(client, deadline, progress, notes)
    t_fork = time.time()
    finished = bgsave_finished(pers0)
    pers, size, check = None, None, None

    # Stream the RDB while Redis writes it: compression and redis-check-rdb
    # run alongside the save instead of after it.
    tail = find_temp_rdb(client, d, t_request, finished, deadline)
    if tail is not None:
        with tail:
            progress("streaming %s to %s while Redis writes it" % (tail.name, session.storage.describe()))
            reader = GrowingFile(tail, client, path, finished, deadline, t_request)
            checker = RdbChecker(runner, tool, "the RDB written by this BGSAVE")
            try:
                session.store_stream(art, TeeReader(reader, checker.feed), before_commit=checker.finish,
                                     content="Redis RDB")
                pers, size, check = reader.final, reader.count, checker.facts
            except _Fallback:
                notes.append("the file streamed during the save was replaced; read the saved file instead")
            finally:
                checker.close()
    save_seconds = None
    if pers is None:
        pers = wait_bgsave(client, pers0, deadline, t_request)
        save_seconds = round(time.time() - t_fork, 3)
        try:
            fh = open(path, "rb")
        except (IOError, OSError) as e:
            raise _local_file_error(path, e, "rdb")
        with fh:
            st = os.fstat(fh.fileno())
            # A file not written just now means this host is not the server's host.
            if st.st_mtime < t_request - 2:
                raise SourceError("%s was not written by this BGSAVE (modified %s)" % (
                    path, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))),
                    "The Redis server is probably on another host (its data directory happens to exist here); "
                    "use mode: remote")
            after = client.info("persistence")
            if exact and (after.get("rdb_bgsave_in_progress") or after.get("rdb_saves") != pers.get("rdb_saves")):
                exact = False
                notes.append("another save started right after ours; the copy may be newer than the key counts")
            progress("streaming %s (%d bytes) to %s" % (path, st.st_size, session.storage.describe()))
            checker = RdbChecker(runner, tool, path)
            try:
                session.store_stream(art, TeeReader(fh, checker.feed), before_commit=checker.finish,
                                     content="Redis RDB")
            finally:
                checker.close()
            size, check = st.st_size, checker.facts
    session.reread(art)
    if exact and check.get("keys") is not None and check["keys"] != _total(ks):
        notes.append("redis-check-rdb read %d keys, INFO keyspace said %d at the fork" % (check["keys"], _total(ks)))
        exact = False
    return {
        "keyspace": ks, "keys_total": _total(ks), "key_counts_exact": exact,
        "rdb": {"size": size, "path": path, "check": check, "streamed_during_save": save_seconds is None},
        "lastsave": pers.get("rdb_last_save_time"), "save_seconds": save_seconds,
        "persistence": {"aof_enabled": bool(pers.get("aof_enabled"))},
    }, notes


# --------------------------------------------------------------------------
# mode remote


def _read_sync_header(sync, deadline):
    """Skip the newlines the master sends while it prepares the RDB; return
    (length, eof_mark)."""
    while True:
        if time.time() > deadline:
            raise WaitTimeout("The master at %s did not start sending the RDB in time" % sync.where,
                              "Raise timeout; look at the Redis log")
        data = sync.read_some(1)
        if data == b"\n":
            continue
        if data == b"-":
            raise command_error(sync, ("SYNC",), ReplyError(sync.read_line().decode("utf-8", "replace")))
        if data != b"$":
            raise SourceError("Unexpected reply to SYNC from %s: %r" % (sync.where, data),
                              "Is this a Redis server? Does the user have +sync and +replconf?")
        line = sync.read_line()
        if line.startswith(b"EOF:"):
            return None, line[4:]
        return int(line), None


def _snapshot_remote(client, cp, session, runner, tool, timeout, pause_ms, pause_writes, progress):
    deadline = time.time() + timeout
    notes = []
    wait_for(client, "running background saves/rewrites to finish", deadline, _no_child,
             hint="Raise timeout, or schedule the backup away from other saves")
    sync = redis_connect(cp)
    try:
        try:
            sync.execute("REPLCONF", "rdb-only", "1")  # Redis 7+: the master drops us after the RDB
        except ReplyError:
            pass
        progress("requesting an RDB over the replication protocol from %s" % client.where)
        forked = False
        with Pause(client, pause_ms, pause_writes, notes) as pause:
            replies = client.pipeline([("INFO", "persistence"), ("INFO", "keyspace")])
            pers0, ks = parse_info(replies[0]), keyspace(parse_info(replies[1]))
            sync.send(("SYNC",))
            saves0 = pers0.get("rdb_saves")
            while pause.still_paused() or (not pause.active and time.time() < deadline):
                p = client.info("persistence")
                if p.get("rdb_bgsave_in_progress") or (saves0 is not None and p.get("rdb_saves", 0) > saves0):
                    forked = True
                    break
                time.sleep(FAST_POLL)
            ks2 = keyspace(client.info("keyspace"))
            exact = pause.still_paused(margin=1.0) and forked and ks == ks2 and _no_child(pers0)
        if pause_writes and pause.t0 is not None and not exact:
            notes.append("the fork was not seen while writes were paused; key counts are approximate")
        sync.settimeout(max(cp["connect_timeout"], 60))
        length, mark = _read_sync_header(sync, deadline)
        reader = PayloadReader(sync, length=length, eof_mark=mark)
        checker = RdbChecker(runner, tool, "the RDB sent by %s" % sync.where)
        art = RDB_ARTIFACT + (".zst" if session.compression else "")
        progress("streaming the RDB (%s) to %s" % (
            "%d bytes" % length if length is not None else "diskless", session.storage.describe()))
        tee = TeeReader(reader, checker.feed)

        def finished():
            if not reader.done and (reader.remaining or 0) > 0:
                raise SourceError("The RDB from %s ended early" % sync.where)
            checker.finish()
        try:
            session.store_stream(art, tee, before_commit=finished, content="Redis RDB")
        finally:
            checker.close()
    finally:
        sync.close()
    check = checker.facts
    session.reread(art)
    if exact and check.get("keys") is not None and check["keys"] != _total(ks):
        notes.append("redis-check-rdb read %d keys, INFO keyspace said %d" % (check["keys"], _total(ks)))
        exact = False
    return {
        "keyspace": ks, "keys_total": _total(ks), "key_counts_exact": exact,
        "rdb": {"size": tee.count, "check": check, "transfer": "diskless" if mark else "disk"},
    }, notes


# --------------------------------------------------------------------------
# mode aof


def _aof_paths(client):
    enabled = client.info("persistence").get("aof_enabled")
    if not enabled:
        raise ConfigError("AOF is off on Redis at %s" % client.where,
                          "Use mode: rdb, or turn AOF on first (drkit.backup.redis_persistence appendonly: true)")
    d = client.config_get("dir")
    dirname = client.config_get("appenddirname")
    fname = client.config_get("appendfilename")
    if dirname is None:
        raise ConfigError("Redis at %s has no appenddirname: mode aof needs Redis 7's multi-part AOF" % client.where,
                          "Use mode: rdb on Redis before 7")
    aofdir = os.path.join(d, dirname)
    manifest = os.path.join(aofdir, fname + ".manifest")
    if not os.path.isdir(aofdir):
        raise ConfigError("The AOF directory %s is not on this host" % aofdir,
                          "Run the task on the Redis host, or use mode: remote (an RDB)")
    return d, aofdir, fname, manifest


def parse_aof_manifest(text):
    """Lines 'file <name> seq <n> type <b|h|i>' -> list of dicts (in order)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
        except ValueError:
            raise IntegrityError("Cannot parse AOF manifest line %r" % line)
        entry = dict(zip(parts[0::2], parts[1::2]))
        if "file" not in entry or "type" not in entry:
            raise IntegrityError("AOF manifest line %r lacks file/type" % line)
        if "/" in entry["file"] or entry["file"] in (".", ".."):
            raise IntegrityError("AOF manifest names an unsafe file %r" % entry["file"])
        out.append(entry)
    return out


def _pin_aof(aofdir, manifest_path):
    """Read the manifest and open every live file it lists. Returns
    (manifest bytes, [(entry, fh, size)])."""
    for _attempt in range(5):
        try:
            with open(manifest_path, "rb") as f:
                mtext = f.read()
        except (IOError, OSError) as e:
            raise _local_file_error(manifest_path, e, "aof")
        entries = [e for e in parse_aof_manifest(mtext.decode("utf-8", "replace")) if e["type"] in ("b", "i")]
        pinned = []
        try:
            for e in entries:
                fh = open(os.path.join(aofdir, e["file"]), "rb")
                pinned.append((e, fh, os.fstat(fh.fileno()).st_size))
            return mtext, pinned
        except FileNotFoundError:
            for _e, fh, _s in pinned:
                fh.close()
            continue  # a rewrite switched files between reading the manifest and opening them
        except (IOError, OSError) as e:
            for _e, fh, _s in pinned:
                fh.close()
            raise _local_file_error(aofdir, e, "aof")
    raise SourceError("The AOF files in %s kept changing while being pinned" % aofdir,
                      "Make sure nothing runs BGREWRITEAOF during the backup")


def _copy_prefix(src, dst_path, size):
    with open(dst_path, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        offset = 0
        while offset < size:
            n = os.pread(src.fileno(), min(1 << 20, size - offset), offset)
            if not n:
                raise SourceError("%s shrank while being copied" % src.name,
                                  "Redis only appends to AOF files; something else modified it")
            out.write(n)
            offset += len(n)


def _snapshot_aof(client, session, runner, tool, timeout, pause_ms, pause_writes, work_dir, progress):
    deadline = time.time() + timeout
    notes = []
    _d, aofdir, fname, manifest_path = _aof_paths(client)
    old = client.config_get("auto-aof-rewrite-percentage")
    tmp = None
    pinned = []
    try:
        progress("auto-aof-rewrite-percentage %s -> 0 while the AOF files are pinned" % old)
        client.call("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
        try:
            wait_for(client, "the running AOF rewrite to finish", deadline,
                     lambda p: not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"),
                     hint="Raise timeout, or run the backup when no BGREWRITEAOF is running")
            with Pause(client, pause_ms, pause_writes, notes) as pause:
                drained = False
                if pause.active:
                    # the AOF buffer is written in the event loop; under the pause it drains
                    try:
                        wait_for(client, "the AOF buffer to be written",
                                 min(deadline, pause.t0 + pause_ms / 2000.0),
                                 lambda p: not p.get("aof_buffer_length"), interval=FAST_POLL)
                        drained = True
                    except WaitTimeout:
                        notes.append("the AOF buffer was not written while writes were paused")
                ks = keyspace(client.info("keyspace"))
                mtext, pinned = _pin_aof(aofdir, manifest_path)
                ks2 = keyspace(client.info("keyspace"))
                sizes2 = [os.fstat(fh.fileno()).st_size for _e, fh, _s in pinned]
                exact = (drained and pause.still_paused(margin=1.0) and ks == ks2
                         and sizes2 == [s for _e, _fh, s in pinned])
            if pause_writes and pause.t0 is not None and not exact:
                notes.append("the files changed or the pause ran out while they were pinned; "
                             "key counts are approximate")
        finally:
            try:
                client.call("CONFIG", "SET", "auto-aof-rewrite-percentage", old)
            except DrkitError as e:
                raise SourceError("Could not put auto-aof-rewrite-percentage back to %s on %s: %s" % (
                    old, client.where, e), "Set it by hand: CONFIG SET auto-aof-rewrite-percentage %s" % old)
            progress("auto-aof-rewrite-percentage restored to %s" % old)
        tmp = tempfile.mkdtemp(prefix="drkit-aof-", dir=work_dir or None)
        copy_dir = os.path.join(tmp, "aof")
        os.mkdir(copy_dir, 0o700)
        progress("copying %d AOF files (%d bytes)" % (len(pinned), sum(s for _e, _f, s in pinned)))
        with open(os.path.join(copy_dir, fname + ".manifest"), "wb") as f:
            f.write(mtext)
        files = []
        for e, fh, size in pinned:
            _copy_prefix(fh, os.path.join(copy_dir, e["file"]), size)
            files.append({"name": e["file"], "type": e["type"], "seq": e.get("seq"), "size": size})
        for _e, fh, _s in pinned:
            fh.close()
        pinned = []
        copied_manifest = os.path.join(copy_dir, fname + ".manifest")
        ok, facts, text = check_aof_dir(runner, tool, copied_manifest)
        dropped = 0
        if not ok:
            last = files[-1]
            got = facts["files"].get(last["name"])
            bad_elsewhere = [n for n, (s, upto) in facts["files"].items() if upto < s and n != last["name"]]
            if last["type"] == "i" and got and got[1] < got[0] and not bad_elsewhere:
                # a write caught half-way at the end of the last incr file: cut it off
                dropped = got[0] - got[1]
                os.truncate(os.path.join(copy_dir, last["name"]), got[1])
                last["size"] = got[1]
                notes.append("dropped %d bytes of a command still being written at the end of %s" % (
                    dropped, last["name"]))
                if exact:
                    exact = False
                ok, facts, text = check_aof_dir(runner, tool, copied_manifest)
            if not ok:
                raise IntegrityError("redis-check-aof rejected the copy of %s: %s" % (aofdir, _error_lines(text)),
                                     "The AOF is damaged; nothing was recorded as a backup")
        art = AOF_ARTIFACT + (".zst" if session.compression else "")
        progress("streaming the AOF copy to %s" % session.storage.describe())
        writer, sink = session.open_sink(art)
        try:
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in [fname + ".manifest"] + [f["name"] for f in files]:
                    tar.add(os.path.join(copy_dir, name), arcname=AOF_PREFIX + name, recursive=False)
            session.finish_sink(art, writer, sink, content="Redis multi-part AOF directory (tar)")
        except BaseException:
            writer.abort()
            raise
        session.reread(art)
        facts.pop("files", None)
        return {
            "keyspace": ks, "keys_total": _total(ks), "key_counts_exact": exact,
            "aof": {"appenddirname": os.path.basename(aofdir), "appendfilename": fname,
                    "manifest": mtext.decode("utf-8", "replace"), "files": files,
                    "dropped_tail_bytes": dropped, "base_check": facts},
            "auto_aof_rewrite_percentage": old,
        }, notes
    finally:
        for _e, fh, _s in pinned:
            fh.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
