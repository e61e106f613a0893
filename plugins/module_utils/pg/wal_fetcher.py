# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The asynchronous WAL fetcher behind ``drkit wal-fetch --async``.

restore_command is called for one file at a time, and replay waits for
each. ``--prefetch N`` alone downloads the next N segments in parallel, but
inside the call, which waits for all of them before it exits. With
``--async`` the first call forks a fetcher (core/background.py) that keeps
the prefetch directory (pg_wal/.drkit-prefetch) filled with the N segments
after the one PostgreSQL asked for last (each call writes into
``fetcher.want`` whether it took its segment ready or needs it),
``PARALLEL`` downloads at a time, each verified exactly
like a normal fetch (zstd checksum, page header, size; age authentication
when encrypted) and renamed into the directory only when complete. A call
then finds its segment there and renames it into place, which is what
pgBackRest's asynchronous archive-get does.

A call never takes anything else from the fetcher: a segment the fetcher
found missing (``<name>.missing``) or could not fetch (``<name>.failed``),
no fetcher, or no answer within ``FETCH_WAIT`` seconds, and the call
fetches the file itself, so "not in the archive" (exit 1) and every error
are the call's own answers. The fetcher stops fetching at the first
missing segment (the end of the archive) and asks again after a second
(a standby's archive grows); it leaves ``async_idle`` seconds after the last
request, or as soon as its directory is gone (pg_pitr removes it after the
recovery).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..core import background
from ..core.errors import NotFoundError
from ..core.osutil import atomic_write, unlink_quietly
from ..repo.wal_layout import SEGMENT_RE, segment_name, segment_number

LOCK_NAME = "fetcher.lock"
WANT_NAME = "fetcher.want"
MISSING, FAILED = ".missing", ".failed"
PARALLEL = 4
FETCH_WAIT = 60.0
RETRY_MISSING = 1.0


def worker(spool):
    return background.Worker(spool, LOCK_NAME)


def ask(spool, name, took=False):
    """Tell the fetcher where replay is: ``name`` is needed (the call did not
    find it ready: fetch it, even if it was fetched and taken before, as when
    pg_pitr replays a second time from the restartpoint), or was just taken
    (``took``: keep the segments after it ready). Each request is told apart
    from the one before by a token of its own."""
    line = "%s %s %d-%d\n" % (name, "took" if took else "need", os.getpid(), time.monotonic_ns())
    try:
        atomic_write(os.path.join(spool, WANT_NAME), line, sync=False, sync_dir=False)
    except Exception:  # pylint: disable=broad-except
        pass  # a full disk: the fetcher does not move ahead, every call fetches itself


def _wanted(spool):
    """(name, 'need' | 'took', token) of the last request, or None."""
    try:
        with open(os.path.join(spool, WANT_NAME)) as fh:
            parts = fh.read().split()
    except (IOError, OSError):
        return None
    if len(parts) != 3 or not SEGMENT_RE.match(parts[0]) or parts[1] not in ("need", "took"):
        return None
    return tuple(parts)


def wait_for(spool, name, timeout=FETCH_WAIT, clock=time.monotonic, sleep=time.sleep):
    """The fetcher's answer on ``name`` (background.Worker.wait): 'ready',
    'missing', 'failed', 'gone' or 'timeout'."""
    path = os.path.join(spool, name)
    return worker(spool).wait(path, {path + MISSING: "missing", path + FAILED: "failed"}, timeout, clock, sleep)


def window(want, ahead, seg_size):
    """The segments the fetcher keeps ready: ``want`` and the ``ahead``
    after it, on want's timeline."""
    tli = int(want[:8], 16)
    first = segment_number(want, seg_size)
    return [segment_name(tli, first + i, seg_size) for i in range(ahead + 1)]


def run_fetcher(spool, ahead, idle, seg_size, fetch, clock=time.monotonic, sleep=time.sleep):
    """The fetcher's loop (in the daemon). ``fetch(name, path)`` writes one
    verified segment to ``path`` atomically, NotFoundError when the archive
    does not hold it. Returns how many segments it fetched."""
    inflight, done, missing_at = {}, set(), {}
    fetched = 0
    last_want, last_change = None, clock()
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        while os.path.isdir(spool):
            for name, fut in list(inflight.items()):
                if not fut.done():
                    continue
                del inflight[name]
                try:
                    fut.result()
                    done.add(name)
                    fetched += 1
                    missing_at.pop(name, None)
                except NotFoundError:
                    missing_at[name] = clock()
                    _mark(spool, name, MISSING)
                except Exception:  # pylint: disable=broad-except
                    missing_at[name] = clock()  # retried after as long as a missing one
                    _mark(spool, name, FAILED)
            now = clock()
            want = _wanted(spool)
            names = []
            if want is not None:
                name, what, _token = want
                if want != last_want and what == "need":
                    done.discard(name)  # asked for again: the call does not have it
                names = window(name, ahead, seg_size)
                if what == "took":
                    names = names[1:]  # the call has it; the next ones matter
            if want != last_want:
                last_want, last_change = want, now
            _prune(spool, set(names) | set(inflight))
            done.intersection_update(names)
            for name in names:
                if len(inflight) >= PARALLEL:
                    break
                if name in inflight or name in done or os.path.exists(os.path.join(spool, name)):
                    continue
                if now - missing_at.get(name, -RETRY_MISSING) < RETRY_MISSING:
                    break  # the end of the archive (for now): nothing after it either
                inflight[name] = pool.submit(fetch, name, os.path.join(spool, name))
            if inflight:
                wait(list(inflight.values()), timeout=0.05, return_when=FIRST_COMPLETED)
            elif now - last_change > idle:
                break
            else:
                sleep(0.02)
    return fetched


def remove(spool):
    """Remove the prefetch directory once the recovery is over. Renamed
    away first: a fetcher still writing into it then finds it gone (and
    leaves) instead of leaving a file behind in a directory being deleted."""
    gone = "%s.gone-%d" % (spool, os.getpid())
    try:
        os.rename(spool, gone)
    except OSError:
        return
    shutil.rmtree(gone, ignore_errors=True)


def _mark(spool, name, suffix):
    # A directory that cannot take the note (a full disk) ends the fetcher,
    # as it ends the pusher: the call then finds no fetcher and fetches its
    # file itself at once, instead of waiting FETCH_WAIT for a note that
    # never comes.
    atomic_write(os.path.join(spool, name + suffix), "", sync=False, sync_dir=False)


def _prune(spool, keep):
    """Segments (and notes) outside the window: PostgreSQL moved past them,
    or to another timeline."""
    try:
        entries = os.listdir(spool)
    except OSError:
        return
    for entry in entries:
        base = entry
        for suffix in (MISSING, FAILED):
            if entry.endswith(suffix):
                base = entry[:-len(suffix)]
        if SEGMENT_RE.match(base) and base not in keep:
            unlink_quietly(os.path.join(spool, entry))
