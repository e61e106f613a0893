# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rdb mode: our own BGSAVE, the new RDB file read while Redis writes it,
checked with redis-check-rdb on the way.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import time

from ..core.errors import ConfigError, SourceError, WaitTimeout
from ..core.process import shares_files
from ..core.stream import TeeReader
from .client import ReplyError, command_error, keyspace, parse_info
from .server import CHUNK_DEFAULT, POLL, RDB_ARTIFACT, local_file_error, no_child, total_keys, wait_for
from .tools import RdbChecker

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
            wait_for(client, "the running BGSAVE/AOF rewrite to finish", deadline, no_child,
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


def _rdb_location(client):
    d, name = client.config_get("dir"), client.config_get("dbfilename")
    if not d or not name:
        raise SourceError("CONFIG GET dir/dbfilename returned nothing on %s" % client.where,
                          "The user needs +config|get; or use mode: remote")
    return d, name


def snapshot_rdb_in_container(client, session, runner, tool, timeout, progress):
    """rdb mode for a server in a container: our BGSAVE (over drkit's own
    connection, INFO pipelined before it for exact key counts), then the
    saved file streamed out of the container through the Engine's archive
    API into the pipeline, and through redis-check-rdb run inside the
    container on the way. Nothing is copied inside the container."""
    deadline = time.time() + timeout
    notes = []
    d, name = _rdb_location(client)
    path = posixpath.join(d, name)
    art = RDB_ARTIFACT + (".zst" if session.compression else "")
    t_request = time.time()
    progress("BGSAVE on %s" % client.where)
    ks, pers0, exact = bgsave(client, deadline, progress, notes)
    t_fork = time.time()
    pers = wait_bgsave(client, pers0, deadline, t_request)
    save_seconds = round(time.time() - t_fork, 3)
    with runner.open_file(path) as fh:
        # the server's clock on both sides: the file is at least as new as the save INFO reports
        if pers.get("rdb_last_save_time") and fh.mtime < pers["rdb_last_save_time"] - 1:
            raise SourceError("%s in %s was not written by this BGSAVE (modified %s)" % (
                path, runner.description, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(fh.mtime))),
                "The container is probably not the one of the Redis server at %s" % client.where)
        after = client.info("persistence")
        if exact and (after.get("rdb_bgsave_in_progress") or after.get("rdb_saves") != pers.get("rdb_saves")):
            exact = False
            notes.append("another save started right after ours; the copy may be newer than the key counts")
        progress("streaming %s (%d bytes) out of %s to %s" % (path, fh.size, runner.description,
                                                              session.storage.describe()))
        checker = RdbChecker(runner, tool, "%s of %s" % (path, runner.description))
        try:
            session.store_stream(art, TeeReader(fh, checker.feed), before_commit=checker.finish,
                                 content="Redis RDB")
        finally:
            checker.close()
        size, check = fh.size, checker.facts
    session.reread(art)
    return _rdb_data(ks, exact, check, notes, pers, save_seconds,
                     {"size": size, "path": path, "check": check, "streamed_during_save": False,
                      "container": runner.container})


def _rdb_data(ks, exact, check, notes, pers, save_seconds, rdb):
    if exact and check.get("keys") is not None and check["keys"] != total_keys(ks):
        notes.append("redis-check-rdb read %d keys, INFO keyspace said %d at the fork" % (
            check["keys"], total_keys(ks)))
        exact = False
    return {
        "keyspace": ks, "keys_total": total_keys(ks), "key_counts_exact": exact, "rdb": rdb,
        "lastsave": pers.get("rdb_last_save_time"), "save_seconds": save_seconds,
        "persistence": {"aof_enabled": bool(pers.get("aof_enabled"))},
    }, notes


def snapshot_rdb(client, session, runner, tool, timeout, progress):
    if not shares_files(runner):
        return snapshot_rdb_in_container(client, session, runner, tool, timeout, progress)
    deadline = time.time() + timeout
    notes = []
    d, name = _rdb_location(client)
    path = os.path.join(d, name)
    if not os.path.isdir(d):
        raise ConfigError("The server's data directory %s is not on this host" % d,
                          "Run the task on the Redis host (delegate_to), or use mode: remote")
    art = RDB_ARTIFACT + (".zst" if session.compression else "")
    try:
        previous = os.path.getsize(path)  # the last save's size: the progress estimate of this one
    except OSError:
        previous = None
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
                                     total=previous, estimate=True, content="Redis RDB")
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
            raise local_file_error(path, e, "rdb")
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
                                     total=st.st_size, content="Redis RDB")
            finally:
                checker.close()
            size, check = st.st_size, checker.facts
    session.reread(art)
    return _rdb_data(ks, exact, check, notes, pers, save_seconds,
                     {"size": size, "path": path, "check": check, "streamed_during_save": save_seconds is None})
