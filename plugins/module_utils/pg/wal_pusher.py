# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The asynchronous WAL pusher behind ``drkit wal-push --async``.

PostgreSQL's archiver calls archive_command for one file at a time and
waits for it; one Python process per 16 MiB segment tops out at a few
segments a second. With ``--async`` the first call starts a background
pusher (a daemon process, forked before any storage client or thread
exists) that stays up while there is work and ``async_idle`` seconds
after: it reads pg_wal/archive_status/*.ready, oldest first, and uploads up
to ``read_ahead`` of them at once, each through the full wal-push contract
(create-only write, read-back, sha256). For every file stored it leaves a
marker ``<name>.pushed`` (the content's sha256) in the spool directory, as
the synchronous read-ahead does.

Each archive_command call then only waits for its own marker, hashes the
local file and exits 0 when the hashes match: exit 0 still means "this
exact content is in the archive", nothing is acknowledged from a spool.
The call does the push itself (and so fails with the real error, and
PostgreSQL retries) when the pusher reports a failure for its file
(``<name>.failed``), when no pusher holds the lock (it exited or could not
start), or after ``ASYNC_WAIT`` seconds. Nothing is ever deleted from the
archive or from pg_wal by the pusher; it never renames status files (that
is PostgreSQL's job once archive_command returned 0).

pgBackRest's archive-push with archive-async=y works the same way (a
forked process pushes ahead, the command waits for its own ".ok"), except
that drkit hashes the local file again instead of trusting the spool.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..core import background, crypto
from ..core.errors import ConfigError
from ..core.osutil import atomic_write, unlink_quietly
from ..storage.factory import open_storage, storage_options

LOCK_NAME = "pusher.lock"
FAILED_SUFFIX = ".failed"
# How long one archive_command call waits for the pusher before it pushes
# its file itself (pgBackRest's archive-timeout default is the same).
ASYNC_WAIT = 60.0
# A failed file is retried by the pusher after this long, doubling up to
# RETRY_MAX (the archive_command call of that file pushes it itself anyway).
RETRY_MIN, RETRY_MAX = 1.0, 30.0


def failed_path(spool_dir, name):
    return os.path.join(spool_dir, name + FAILED_SUFFIX)


def check_spool(spool_dir):
    if not spool_dir:
        raise ConfigError("--async needs --spool-dir (config file key spool_dir)",
                          "Give a directory of its own, owned by the server's OS user, mode 0700 "
                          "(the postgresql_wal_archive role creates it)")
    if not os.path.isdir(spool_dir):
        raise ConfigError("spool_dir %s is not a directory" % spool_dir,
                          "Create it, owned by the server's OS user, mode 0700 (the postgresql_wal_archive "
                          "role does)")


def worker(spool_dir):
    """The spool's pusher (core/background.py): running(), serving() (the
    pg_wal it pushes from: a spool shared by two clusters by mistake must
    not make one cluster's calls wait for markers the other's pusher never
    writes), start()."""
    return background.Worker(spool_dir, LOCK_NAME)


def wait_for(spool_dir, name, marker_path, timeout=ASYNC_WAIT, clock=time.monotonic, sleep=time.sleep):
    """The pusher's answer on ``name`` (background.Worker.wait): 'ready'
    (its marker is there: the caller checks its content), 'failed', 'gone'
    or 'timeout'."""
    return worker(spool_dir).wait(marker_path, {failed_path(spool_dir, name): "failed"}, timeout, clock, sleep)


def run_pusher(params, wal_dir, spool_dir, push, ready, write_marker, read_marker, clock=time.monotonic,
               sleep=time.sleep):
    """The pusher's loop (in the daemon). ``push(storage, path, name,
    recipients)`` stores one file under the full contract and returns its
    sha256; ``ready(wal_dir)`` lists the .ready names oldest first;
    ``write_marker``/``read_marker`` are the spool's markers. Returns the
    number of files stored. It runs under the lock Worker.start took; it
    stops when the spool cannot take a marker (full disk: every call then
    pushes its own file) and ``async_idle`` seconds after the last work."""
    # a full spool is found before anything is uploaded
    atomic_write(os.path.join(spool_dir, "pusher.pid"), "%d\n" % os.getpid(), sync=False, sync_dir=False)
    storage = open_storage(params["storage_url"], **storage_options(params))
    recipients = crypto.load_recipients(params["encryption_recipients"])
    uploads, idle = params["read_ahead"], params["async_idle"]
    status_dir = os.path.join(wal_dir, "archive_status")
    inflight, retry_at, backoff = {}, {}, {}
    done = set()  # stored by this pusher: not pushed again when its marker was consumed
    stored = 0
    last_work = clock()
    with ThreadPoolExecutor(max_workers=uploads) as pool:
        while os.path.isdir(status_dir):
            for name, fut in list(inflight.items()):
                if not fut.done():
                    continue
                del inflight[name]
                try:
                    sha = fut.result()
                except Exception as e:  # pylint: disable=broad-except
                    # The file's own archive_command call pushes it
                    # itself and reports the error; a retry follows.
                    delay = min(RETRY_MAX, backoff.get(name, RETRY_MIN / 2) * 2)
                    backoff[name], retry_at[name] = delay, clock() + delay
                    _note_failure(spool_dir, name, e)
                    continue
                # OSError (a full spool) ends the pusher: the calls push themselves
                write_marker(spool_dir, name, sha)
                done.add(name)
                stored += 1
                backoff.pop(name, None)
                unlink_quietly(failed_path(spool_dir, name))
            now = clock()
            if len(inflight) < uploads:
                names = ready(wal_dir)
                done.intersection_update(names)
                for name in names:
                    if name in inflight or name in done or retry_at.get(name, 0) > now or \
                            read_marker(spool_dir, name):
                        continue
                    inflight[name] = pool.submit(push, storage, os.path.join(wal_dir, name), name, recipients)
                    if len(inflight) >= uploads:
                        break
            if inflight:
                last_work = now
                wait(list(inflight.values()), timeout=0.05, return_when=FIRST_COMPLETED)
            elif now - last_work > idle:
                break
            else:
                sleep(0.05)
    return stored


def _note_failure(spool_dir, name, err):
    # Only that it failed: the call pushes the file itself and reports the
    # real error; nothing of the message outlives the pusher. A spool that
    # cannot take this ends the pusher (OSError), as for markers.
    atomic_write(failed_path(spool_dir, name), "%s\n" % type(err).__name__, sync=False, sync_dir=False)
