# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""aof mode: the multi-part AOF of Redis 7 pinned and copied as one tar."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import shutil
import tarfile
import time

from ..container.runner import PathMissing
from ..core.errors import ConfigError, IntegrityError, SourceError, WaitTimeout
from ..core.janitor import private_dir
from ..core.process import shares_files
from .client import keyspace
from .server import AOF_ARTIFACT, FAST_POLL, Pause, TemporarySetting, local_file_error, total_keys, wait_for
from .tools import AOF_PREFIX, check_aof_copy, error_lines, parse_aof_manifest

# --------------------------------------------------------------------------
# mode aof


def aof_paths(client, runner=None):
    """(dir, AOF directory, appendfilename, manifest path) of the server; on
    this host, or (with a runner of a container) inside the container."""
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
    if runner is not None and not shares_files(runner):
        aofdir = posixpath.join(d, dirname)
        return d, aofdir, fname, posixpath.join(aofdir, fname + ".manifest")
    aofdir = os.path.join(d, dirname)
    manifest = os.path.join(aofdir, fname + ".manifest")
    if not os.path.isdir(aofdir):
        raise ConfigError("The AOF directory %s is not on this host" % aofdir,
                          "Run the task on the Redis host, or use mode: remote (an RDB)")
    return d, aofdir, fname, manifest


def _pin_aof(aofdir, manifest_path):
    """Read the manifest and open every live file it lists. Returns
    (manifest bytes, [(entry, fh, size)])."""
    for _attempt in range(5):
        try:
            with open(manifest_path, "rb") as f:
                mtext = f.read()
        except (IOError, OSError) as e:
            raise local_file_error(manifest_path, e, "aof")
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
            raise local_file_error(aofdir, e, "aof")
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


def _quiet_aof(client, pause, pause_ms, deadline, notes):
    """Under the pause: wait until the AOF buffer is written (it drains in the
    event loop). True when it was."""
    if not pause.active:
        return False
    try:
        wait_for(client, "the AOF buffer to be written", min(deadline, pause.t0 + pause_ms / 2000.0),
                 lambda p: not p.get("aof_buffer_length"), interval=FAST_POLL)
        return True
    except WaitTimeout:
        notes.append("the AOF buffer was not written while writes were paused")
        return False


def _wait_no_rewrite(client, deadline):
    wait_for(client, "the running AOF rewrite to finish", deadline,
             lambda p: not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"),
             hint="Raise timeout, or run the backup when no BGREWRITEAOF is running")


def _taken_paused(client, pause, pause_ms, deadline, notes, take):
    """``take()`` between two key counts while writes are paused: its
    result, the keys, and whether they are exact (the AOF drained, the
    pause still held and the counts agree)."""
    drained = _quiet_aof(client, pause, pause_ms, deadline, notes)
    ks = keyspace(client.info("keyspace"))
    taken = take()
    ks2 = keyspace(client.info("keyspace"))
    return taken, ks, drained and pause.still_paused(margin=1.0) and ks == ks2


def snapshot_aof(client, session, runner, tool, timeout, pause_ms, pause_writes, work_dir, progress,
                 ledger_dir):
    if not shares_files(runner):
        return snapshot_aof_in_container(client, session, runner, tool, timeout, pause_ms, pause_writes,
                                         work_dir, progress, ledger_dir)
    deadline = time.time() + timeout
    notes = []
    _d, aofdir, fname, manifest_path = aof_paths(client)
    tmp = None
    pinned = []
    try:
        # no automatic rewrite while the files are pinned; the original comes back on every path
        with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, ledger_dir, progress) as rewrites:
            old = rewrites.original
            _wait_no_rewrite(client, deadline)
            with Pause(client, pause_ms, pause_writes, notes) as pause:
                (mtext, pinned), ks, exact = _taken_paused(client, pause, pause_ms, deadline, notes,
                                                           lambda: _pin_aof(aofdir, manifest_path))
                sizes2 = [os.fstat(fh.fileno()).st_size for _e, fh, _s in pinned]
                exact = exact and sizes2 == [s for _e, _fh, s in pinned]
            if pause_writes and pause.t0 is not None and not exact:
                notes.append("the files changed or the pause ran out while they were pinned; "
                             "key counts are approximate")
        tmp = private_dir("aof", work_dir)
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
        return _check_and_store(session, runner, tool, copy_dir, aofdir, fname, mtext, files, ks, exact, old,
                                notes, progress)
    finally:
        for _e, fh, _s in pinned:
            fh.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_and_store(session, runner, tool, copy_dir, aofdir, fname, mtext, files, ks, exact, old, notes,
                     progress):
    """redis-check-aof on the copy (a command caught half-way at the end of
    the last incr file cut off), then the copy as one tar into storage."""
    ok, facts, text = check_aof_copy(runner, tool, copy_dir, fname + ".manifest")
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
            ok, facts, text = check_aof_copy(runner, tool, copy_dir, fname + ".manifest")
        if not ok:
            raise IntegrityError("redis-check-aof rejected the copy of %s: %s" % (aofdir, error_lines(text)),
                                 "The AOF is damaged; nothing was recorded as a backup")
    art = AOF_ARTIFACT + (".zst" if session.compression else "")
    progress("streaming the AOF copy to %s" % session.storage.describe())
    # the files and tar's headers: an estimate of what the tar writes
    writer, sink = session.open_sink(art, total=sum(512 + f["size"] for f in files) + 10240, estimate=True)
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
        "keyspace": ks, "keys_total": total_keys(ks), "key_counts_exact": exact,
        "aof": {"appenddirname": os.path.basename(aofdir), "appendfilename": fname,
                "manifest": mtext.decode("utf-8", "replace"), "files": files,
                "dropped_tail_bytes": dropped, "base_check": facts},
        "auto_aof_rewrite_percentage": old,
    }, notes


# --------------------------------------------------------------------------
# aof mode for a Redis in a container: its files read through the Engine's
# archive API. No descriptor can pin them there, so automatic rewrites stay
# off until the copy is done, the sizes are taken under the write pause (one
# archive request per file, closed after its header) and each file is then
# copied up to that size: Redis only appends to the incr file and never
# touches the base file until a rewrite replaces both.


def _read_manifest_in_container(runner, manifest_path, aofdir, client):
    try:
        with runner.open_file(manifest_path) as fh:
            return fh.read()
    except PathMissing:
        raise ConfigError("%s does not exist in container %s: the AOF of Redis at %s is not there" % (
            manifest_path, runner.container, client.where),
            "Check that container is the one this Redis runs in (its dir and appenddirname %s are "
            "inside it)" % aofdir)


def _sizes_in_container(runner, client, aofdir, manifest_path):
    """(manifest bytes, [(entry, size)]) of the live files, taken now."""
    for _attempt in range(5):
        mtext = _read_manifest_in_container(runner, manifest_path, aofdir, client)
        entries = [e for e in parse_aof_manifest(mtext.decode("utf-8", "replace")) if e["type"] in ("b", "i")]
        sized = []
        try:
            for e in entries:
                with runner.open_file(posixpath.join(aofdir, e["file"])) as fh:
                    sized.append((e, fh.size))
            return mtext, sized
        except PathMissing:
            continue  # a rewrite switched files between reading the manifest and looking at them
    raise SourceError("The AOF files in %s of container %s kept changing while being read" % (
        aofdir, runner.container), "Make sure nothing runs BGREWRITEAOF during the backup")


def _copy_from_container(runner, path, dst_path, size):
    try:
        fh = runner.open_file(path)
    except PathMissing:
        raise SourceError("%s disappeared from container %s while being copied" % (path, runner.container),
                          "An AOF rewrite ran during the backup (BGREWRITEAOF by hand?); run it again")
    with fh, open(dst_path, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        if fh.size < size:
            raise SourceError("%s in container %s shrank from %d to %d bytes while being copied" % (
                path, runner.container, size, fh.size),
                "Redis only appends to AOF files; something else modified it")
        left = size
        while left:
            data = fh.read(min(1 << 20, left))
            if not data:
                raise SourceError("The Docker Engine ended %s of container %s after %d of %d bytes" % (
                    path, runner.container, size - left, size), "Check the Engine's log and run again")
            out.write(data)
            left -= len(data)


def snapshot_aof_in_container(client, session, runner, tool, timeout, pause_ms, pause_writes, work_dir,
                              progress, ledger_dir):
    deadline = time.time() + timeout
    notes = []
    _d, aofdir, fname, manifest_path = aof_paths(client, runner)
    tmp = None
    try:
        # unlike on a host, nothing pins the files: rewrites stay off until they are copied
        with TemporarySetting(client, "auto-aof-rewrite-percentage", 0, ledger_dir, progress) as rewrites:
            old = rewrites.original
            _wait_no_rewrite(client, deadline)
            with Pause(client, pause_ms, pause_writes, notes) as pause:
                (mtext, sized), ks, exact = _taken_paused(
                    client, pause, pause_ms, deadline, notes,
                    lambda: _sizes_in_container(runner, client, aofdir, manifest_path))
            if pause_writes and pause.t0 is not None and not exact:
                notes.append("the pause ran out while the file sizes were taken; key counts are approximate")
            tmp = private_dir("aof", work_dir)
            copy_dir = os.path.join(tmp, "aof")
            os.mkdir(copy_dir, 0o700)
            progress("copying %d AOF files (%d bytes) out of %s" % (
                len(sized), sum(s for _e, s in sized), runner.description))
            with open(os.path.join(copy_dir, fname + ".manifest"), "wb") as f:
                f.write(mtext)
            files = []
            for e, size in sized:
                _copy_from_container(runner, posixpath.join(aofdir, e["file"]), os.path.join(copy_dir, e["file"]),
                                     size)
                files.append({"name": e["file"], "type": e["type"], "seq": e.get("seq"), "size": size})
            if _rewrote(client, mtext, runner, manifest_path, aofdir):
                notes.append("an AOF rewrite ran while the files were copied; the copy is of the files before it")
        data, notes = _check_and_store(session, runner, tool, copy_dir, aofdir, fname, mtext, files, ks, exact,
                                       old, notes, progress)
        data["aof"]["container"] = runner.container
        return data, notes
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _rewrote(client, mtext, runner, manifest_path, aofdir):
    return _read_manifest_in_container(runner, manifest_path, aofdir, client) != mtext
