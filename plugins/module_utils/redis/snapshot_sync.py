# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""remote mode: an RDB over the replication protocol (SYNC), read from the
socket into the pipeline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..core.errors import SourceError, WaitTimeout
from ..core.stream import TeeReader
from .client import ReplyError, command_error, connect, keyspace, parse_info
from .server import FAST_POLL, RDB_ARTIFACT, Pause, no_child, total_keys, wait_for
from .tools import RdbChecker


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


def snapshot_remote(client, cp, session, runner, tool, timeout, pause_ms, pause_writes, progress):
    deadline = time.time() + timeout
    notes = []
    wait_for(client, "running background saves/rewrites to finish", deadline, no_child,
             hint="Raise timeout, or schedule the backup away from other saves")
    sync = connect(cp)
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
            exact = pause.still_paused(margin=1.0) and forked and ks == ks2 and no_child(pers0)
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
            session.store_stream(art, tee, before_commit=finished, total=length, content="Redis RDB")
        finally:
            checker.close()
    finally:
        sync.close()
    check = checker.facts
    session.reread(art)
    if exact and check.get("keys") is not None and check["keys"] != total_keys(ks):
        notes.append("redis-check-rdb read %d keys, INFO keyspace said %d" % (check["keys"], total_keys(ks)))
        exact = False
    return {
        "keyspace": ks, "keys_total": total_keys(ks), "key_counts_exact": exact,
        "rdb": {"size": tee.count, "check": check, "transfer": "diskless" if mark else "disk"},
    }, notes
