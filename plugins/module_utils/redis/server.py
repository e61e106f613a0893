# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A running Redis as the snapshot modes see it: its facts, INFO polled
until a condition holds, writes paused for as short as possible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..core.errors import ConfigError, DrkitError, WaitTimeout
from .client import ReplyError

RDB_ARTIFACT = "dump.rdb"
AOF_ARTIFACT = "appendonly.tar"


POLL = 0.05
CHUNK_DEFAULT = 1 << 20
FAST_POLL = 0.002


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


def no_child(p):
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


def total_keys(ks):
    return sum(v["keys"] for v in ks.values())


def local_file_error(path, e, mode):
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
