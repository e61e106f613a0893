# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A running Redis as the snapshot modes see it: its facts, INFO polled
until a condition holds, writes paused for as short as possible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import time

from ..core import janitor
from ..core.errors import ConfigError, DrkitError, SafetyError, SourceError, WaitTimeout
from ..core.options import Option
from ..core.osutil import atomic_write
from .client import RedisClient, ReplyError, describe, keyspace

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


def wait_loaded(client, deadline):
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


def wait_restored(cp, deadline, serves_dir, where, log_hint):
    """The keyspace of a just-restored server once it answers and has
    loaded. ``serves_dir(d)`` says whether the ``dir`` it reports is the
    restored one (a host path compared resolved, a container's as posix);
    another dir is a SafetyError: the connection reaches another server."""
    last = None
    while time.time() < deadline:
        client = RedisClient(cp)
        try:
            client.connect()
            wait_loaded(client, deadline)
            try:
                d = client.config_get("dir")
            except SourceError:
                d = None  # no +config|get for this user: cannot tell, compare the counts anyway
            if d and not serves_dir(d):
                raise SafetyError("Redis at %s serves %s, not the restored data" % (describe(cp), d),
                                  "Point login_host/login_port at %s" % where)
            return keyspace(client.info("keyspace"))
        except SourceError as e:
            if not (e.details.get("retryable") or "LOADING" in str(e)):
                raise  # wrong password, no permission...: waiting will not help
            last = e
            time.sleep(0.1)
        finally:
            client.close()
    raise WaitTimeout("%s did not answer at %s (%s)" % (where[0].upper() + where[1:], describe(cp), last),
                      "%s; the data is in place" % log_hint)


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


# --------------------------------------------------------------------------
# Settings changed for a moment (auto-aof-rewrite-percentage during an AOF
# snapshot). The original is written to a ledger file BEFORE the change, so a
# run killed with SIGKILL leaves a record: the next run of any mode finds the
# ledger of a dead owner and puts the original back where the live value is
# still the temporary one, instead of taking the temporary value for the
# original and "restoring" it.

LEDGER = "drkit-redis-settings-%s.json"
STATE_DIR = Option("state_dir", "path", flags=("--state-dir",),
                   help="where drkit records a Redis setting it changes for a moment, to put it back after a "
                        "crash (default $XDG_STATE_HOME/drkit, else ~/.local/state/drkit)")


def ledger_dir(given=None):
    """The state directory of STATE_DIR: not the temp directory, which
    systemd's PrivateTmp removes with a killed job."""
    if given:
        return given
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "drkit")


def _ledger_path(ledger_dir, client):
    server = "%s:%s" % (client.cp["host"], client.cp["port"])
    return os.path.join(ledger_dir, LEDGER % hashlib.sha256(server.encode("utf-8")).hexdigest()[:12]), server


def _read_ledger(path):
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (IOError, OSError, ValueError) as e:
        raise ConfigError("Cannot read drkit's record of Redis settings %s: %s" % (path, e),
                          "It holds the original value of a setting an interrupted run changed; read it, put the "
                          "setting back by hand if needed (CONFIG SET), then remove the file")


def _owner_dead(ledger):
    parts = str(ledger.get("owner", "")).split("_")
    return len(parts) == 3 and janitor.is_dead(*parts)


def repair_settings(client, ledger_dir, progress=None):
    """Put back what a dead drkit run left changed on this server; the
    notes say what was done. A ledger of a live run is left alone."""
    progress = progress or (lambda msg: None)
    path, server = _ledger_path(ledger_dir, client)
    ledger = _read_ledger(path)
    if ledger is None or not _owner_dead(ledger):
        return []
    notes = []
    for name, values in sorted(ledger.get("settings", {}).items()):
        live = client.config_get(name)
        if live == values["temporary"]:
            client.call("CONFIG", "SET", name, values["original"])
            notes.append("%s put back to %s: an interrupted drkit run (%s, %s) had left it at %s" % (
                name, values["original"], ledger.get("owner"), ledger.get("at"), values["temporary"]))
        else:
            notes.append("%s is %s: an interrupted drkit run had set it to %s, someone changed it since; "
                         "left as it is" % (name, live, values["temporary"]))
        progress(notes[-1])
    os.unlink(path)
    return notes


class TemporarySetting(object):
    """CONFIG SET name value for the block, the original put back on every
    path; the original is in the ledger (``ledger_dir``, 0600) before the
    change and the ledger is removed once it is back. Two runs on one server
    at once: the second is refused while the first lives."""

    def __init__(self, client, name, value, ledger_dir, progress=None):
        self.client, self.name, self.value = client, name, str(value)
        self.path, self.server = _ledger_path(ledger_dir, client)
        self.progress = progress or (lambda msg: None)
        self.original = None

    def __enter__(self):
        ledger = _read_ledger(self.path)
        if ledger is not None:
            if not _owner_dead(ledger):
                raise SourceError("Another drkit run (%s) has %s of Redis at %s changed for a moment" % (
                    ledger.get("owner"), self.name, self.client.where),
                    "Wait until it ends; if no drkit runs, put the setting back by hand and remove %s" % self.path)
            repair_settings(self.client, os.path.dirname(self.path), self.progress)
        self.original = self.client.config_get(self.name)
        os.makedirs(os.path.dirname(self.path), 0o700, exist_ok=True)
        atomic_write(self.path, json.dumps({
            "server": self.server, "owner": janitor.owner_tag(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {self.name: {"original": self.original, "temporary": self.value}}}, sort_keys=True))
        self.client.call("CONFIG", "SET", self.name, self.value)
        self.progress("%s %s -> %s (the original recorded in %s)" % (self.name, self.original, self.value, self.path))
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self._put_back()
        except DrkitError as e:
            failure = SourceError("Could not put %s back to %s on %s: %s" % (
                self.name, self.original, self.client.where, e),
                "Set it by hand: CONFIG SET %s %s (the next drkit run tries again: %s)" % (
                    self.name, self.original, self.path))
            if exc is None:
                raise failure
            # the run's own error (often the same lost server) stays the one reported
            self.progress(str(failure))
        return False

    def _put_back(self):
        try:
            self.client.call("CONFIG", "SET", self.name, self.original)
        except DrkitError:
            # The connection is gone but the server may be back (restarted, or
            # it dropped this client): once more on a new connection, and only
            # if our value is still there -- a restarted server has its own.
            self.client.close()
            self.client.connect()
            live = self.client.config_get(self.name)
            if live != self.value:
                os.unlink(self.path)
                self.progress("%s is %s on %s now, not drkit's %s (the server restarted, or someone changed it): "
                              "left as it is" % (self.name, live, self.client.where, self.value))
                return
            self.client.call("CONFIG", "SET", self.name, self.original)
        os.unlink(self.path)
        self.progress("%s restored to %s" % (self.name, self.original))
