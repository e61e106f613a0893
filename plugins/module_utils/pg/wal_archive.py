# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive: ``drkit wal-push`` (archive_command) and ``drkit
wal-fetch`` (restore_command), and what base backups, PITR and rotation need
to reason about WAL.

Layout under the storage root (docs/pitr.md):

    wal/SYSTEM_IDENTIFIER                      the cluster this archive belongs to
    wal/<timeline>/<segment>.zst               000000010000000A000000FF.zst
    wal/<timeline>/<segment>.partial.zst       end of a timeline, after promotion
    wal/<timeline>/<segment>.<off>.backup.zst  backup history files
    wal/history/<timeline>.history.zst         timeline history files

Every object is one zstd frame with a content checksum, so a fetch notices
corruption while decompressing.

archive_command contract (PostgreSQL docs, "Setting Up WAL Archiving"):

* exit 0 only once the file is stored: uploaded, read back, decompressed
  and its SHA-256 compared with the local file;
* an identical file pushed again is accepted (the archiver retries after a
  crash between upload and exit);
* a different file under an existing name is refused (exit 5) and the stored
  one is left untouched; timeline history files are never overwritten;
* a segment whose page header names another cluster (system identifier) than
  ``wal/SYSTEM_IDENTIFIER`` is refused (exit 5).

Racing writers. Every object under wal/ is written create-only
(storage.base.create_or_match: a hard link on file://, a PUT with
``If-None-Match: *`` on S3), never "look, then write": of two pushes of one
name, whatever their timing, exactly one stores its object and the other
finds it and compares the decompressed content: identical is success,
different is exit 5. There is no existence check before the write any
more; the write is the check.

A push never deletes anything (the credentials of a database host may not
delete either, docs/storage-layout.md). Once this push's create-only write
has succeeded, the object under the key is the one it wrote: no other
writer can replace it (they all write create-only too), and only the
rotation job deletes WAL, only segments that no kept backup needs. So a
read-back that differs from what was uploaded means the storage or the
transfer damaged the bytes, not that someone else's segment is there. It is
reported (exit 8) and the object stays: PostgreSQL retries, the retry finds
the object and compares it again, so a damaged transfer ends in "identical,
success" and a damaged stored copy keeps failing loudly until a person
looks (the segment stays in pg_wal meanwhile). Deleting it instead would
gain nothing, and on a server that ignores ``If-None-Match`` (where the
object might be another writer's after all) it is how acknowledged WAL was
lost before.

restore_command contract: the file is written to %p atomically (temp file in
the same directory, then rename); exit 1 when the archive does not hold it,
another non-zero code for any other failure.

Read-ahead (``spool_dir``, optional): while PostgreSQL waits for segment N,
the segments already marked ``.ready`` in pg_wal/archive_status are pushed in
parallel by the same process, each through the full contract above.  For each
one stored and verified, a marker ``<name>.pushed`` holding its SHA-256 is
left in the spool directory.  When PostgreSQL then asks for that segment,
wal-push hashes the local file, and exits 0 without touching the network only
if the hash equals the marker's.  Durability is unchanged: exit 0 still means
"this exact content is in the archive"; it just was put there earlier.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import os
import threading
import time

from ..core import crypto, metrics
from ..core.errors import ConfigError, ConflictError, DrkitError, IntegrityError, NotFoundError, StorageError
from ..core.options import Option, Options, resolve
from ..core.osutil import atomic_write, atomic_writer, unlink_quietly
from ..core.stream import (CHUNK, COMPRESSION_LEVEL, Digest, PipelineSink, TeeReader, ZstdCompress, ZstdDecompress,
                           pump, read_stored, read_zstd)
from ..repo.wal_layout import (
    DEFAULT_SEGMENT_SIZE,
    PARTIAL_RE,
    SEGMENT_RE,
    claim_archive,
    classify,
    segment_name,
    segment_number,
    timeline_of,
    wal_key,
)
from ..storage.base import ObjectExists, create_or_match
from ..storage.factory import STORAGE, open_storage, storage_options
from . import wal_fetcher, wal_pusher
from .wal_segments import ARCHIVE_HINT, LONG_HEADER, read_long_header, stream_partials

# drkit wal-push (archive_command; pg_wal_archive builds it from the same options)
READ_AHEAD = Option("read_ahead", "int", default=0, min=0, flags=("--read-ahead",),
                    help="also push up to N further .ready segments in parallel (needs --spool-dir); "
                         "with --async: the background pusher's parallel uploads")
ARCHIVE_ASYNC = Option("archive_async", "bool", default=False, flags=("--async",),
                       help="push .ready segments from a background process kept running between calls "
                            "(needs --spool-dir and --read-ahead N); each call waits for its own segment only")
ASYNC_IDLE = Option("async_idle", "float", default=60.0, min=1.0, flags=("--async-idle",), metavar="SECONDS",
                    help="the background pusher exits after this long with nothing to push")
WAL_PUSH_OPTIONS = Options(
    STORAGE, COMPRESSION_LEVEL, crypto.ENCRYPTION,
    Option("spool_dir", "path", flags=("--spool-dir",),
           help="enables read-ahead: markers of WAL files pushed ahead are kept here"),
    READ_AHEAD, ARCHIVE_ASYNC, ASYNC_IDLE,
    metrics.METRICS,
)
# drkit wal-fetch (restore_command)
WAL_FETCH_OPTIONS = Options(
    STORAGE, crypto.DECRYPTION,
    Option("prefetch", "int", default=0, min=0, flags=("--prefetch",), metavar="N",
           help="also download the next N segments in parallel into pg_wal/.drkit-prefetch"),
    Option("fetch_async", "bool", default=False, flags=("--async",),
           help="keep the next --prefetch N segments downloaded by a background fetcher kept running between "
                "calls; each call only moves its own segment into place"),
    ASYNC_IDLE.but(help="the background fetcher exits after this long without a request"),
    # initdb --wal-segsize: a power of two from 1 MiB to 1 GiB; a config-file key only
    Option("wal_segment_size", "int", default=DEFAULT_SEGMENT_SIZE, choices=tuple(1 << n for n in range(20, 31)),
           allowed="a power of two from 1048576 (1 MiB) to 1073741824 (1 GiB), in bytes"),
)


READBACK_HINT = ("Nothing was deleted; PostgreSQL retries and compares again. If it keeps failing, the stored copy "
                 "is damaged: check it and remove it with the rotation job's credentials (docs/pitr.md)")


class WalMissing(NotFoundError):
    """The archive does not hold the file: restore_command's "not found" (exit 1)."""

    exit_code = 1
    label = "not in archive"


def stored_raw_digest(storage, key):
    """(sha256, size) of the uncompressed content of a stored WAL object.
    An encrypted one says it in its cleartext header (core.crypto): no key
    is needed, the archiver holds none."""
    header, chunks = crypto.split_header(storage.iter_read(key), "Archived %s" % key)
    if header is not None:
        return header.get("sha256"), header.get("size")
    content, _stored = read_zstd(storage, key, hint=ARCHIVE_HINT, chunks=chunks)
    return content.hexdigest(), content.size


def file_digest(path, opener=None):
    digest = Digest()
    with (opener or (lambda: open(path, "rb")))() as fh:
        for data in iter(lambda: fh.read(CHUNK), b""):
            digest.update(data)
    return digest.hexdigest(), digest.size


# --------------------------------------------------------------------------
# push


def _open_local(path, name):
    try:
        return open(path, "rb")
    except (IOError, OSError) as e:
        raise ConfigError("Cannot read %s (%s): %s" % (path, name, e.strerror or e),
                          "archive_command must pass %p (the path, relative to the data directory) then %f")


def _check_segment_content(opener, name, kind):
    """Check the long page header against the file name; return it."""
    with opener() as fh:
        head = fh.read(LONG_HEADER.size)
        size = fh.seek(0, os.SEEK_END)
    facts = read_long_header(head, name)
    seg_size = facts["segment_size"]
    want = segment_number(name, seg_size)
    got = facts["pageaddr"] // seg_size
    if facts["pageaddr"] % seg_size or got != want:
        raise IntegrityError("%s holds WAL of segment %s, not of %s" % (
            name, segment_name(int(timeline_of(name), 16), got, seg_size), name[:24]),
            "The file is misnamed or damaged; it was not archived")
    if kind == "segment":
        if size != seg_size:
            raise IntegrityError("%s is %d bytes, a WAL segment of this cluster is %d" % (name, size, seg_size),
                                 "It is incomplete; it was not archived")
    return facts


def push_file(storage, path, name, compression_level=COMPRESSION_LEVEL.default, check_cluster=True, content=None,
              recipients=None):
    """Archive one file under the contract in the module doc. ``content``:
    the file's bytes, read once by the caller (the streaming archiver's
    snapshot of a segment pg_receivewal is still writing); ``path`` then
    only names it in messages. ``recipients`` (core.crypto.load_recipients):
    the object is age-encrypted after compression, behind a cleartext header
    with the content's sha256 (timeline history files stay clear: PITR plans
    from them without a key).

    Returns a dict: name, key, status ('stored' | 'exists'), raw_size,
    stored_size, raw_sha256, seconds."""
    t0 = time.time()
    kind = classify(name)
    key = wal_key(name)
    if content is not None:
        def opener():
            return io.BytesIO(content)
    else:
        def opener():
            return _open_local(path, name)
    facts = None
    if kind in ("segment", "partial", "stream"):
        facts = _check_segment_content(opener, name, kind)
        if check_cluster:
            claim_archive(storage, facts["system_identifier"], "WAL file %s" % name)
    elif not os.path.isfile(path):
        raise ConfigError("%s (%s) is not a file" % (path, name))
    local_sha, local_size = file_digest(path, opener)
    result = {"name": name, "key": key, "raw_size": local_size, "raw_sha256": local_sha}
    if facts:
        result["system_identifier"] = facts["system_identifier"]

    uploaded = {}
    recipients = recipients if kind != "history" else None

    def write(w):
        raw = Digest()
        sink = PipelineSink(w, [ZstdCompress(compression_level, checksum=True), crypto.encryptor_for(recipients)])
        if recipients:
            sink.write_stored(crypto.object_header(recipients, local_sha, local_size))
        with opener() as fh:
            pump(TeeReader(fh, raw.update), sink)
        sink.close()
        if raw.hexdigest() != local_sha:
            raise IntegrityError("%s changed while it was being archived" % path,
                                 "Nothing was stored; PostgreSQL will retry")
        uploaded.update(sink.result())

    stored_sha = []

    def identical(st, k):
        sha, _size = stored_raw_digest(st, k)
        stored_sha.append(sha)
        return sha == local_sha

    try:
        created = create_or_match(storage, key, write, identical)
    except ObjectExists:
        what = "timeline history file" if kind == "history" else "WAL file"
        raise ConflictError(
            "The archive %s already holds %s %s with different content (stored sha256 %s, local %s)" % (
                storage.describe(), what, name, stored_sha[-1], local_sha),
            "The stored copy was left untouched. Two clusters may be archiving to the same storage_url, "
            "or the archive belongs to an old cluster: give this cluster its own storage_url")
    if not created:
        result.update(status="exists", seconds=round(time.time() - t0, 3))
        return result
    # Read back what is stored now: its bytes and its decompressed content
    # (encrypted: its bytes only, this host holds no key). A mismatch is
    # reported and nothing is deleted (see the module doc).
    if recipients:
        stored = read_stored(storage, key, hint=READBACK_HINT, read_ahead=False)
        readback = (stored["size"], stored["sha256"], local_sha)
    else:
        content, stored = read_zstd(storage, key, hint=READBACK_HINT, hash_stored=True)
        readback = (stored["size"], stored["sha256"], content.hexdigest())
    if readback != (uploaded["size"], uploaded["sha256"], local_sha):
        raise IntegrityError("Re-reading %s from %s gave different content than was uploaded" % (
            key, storage.describe()), READBACK_HINT)
    result.update(status="stored", stored_size=uploaded["size"], seconds=round(time.time() - t0, 3))
    return result


def _marker_path(spool_dir, name):
    return os.path.join(spool_dir, name + ".pushed")


def _read_marker(spool_dir, name):
    try:
        with open(_marker_path(spool_dir, name)) as fh:
            return fh.read().strip()
    except (IOError, OSError):
        return None


def _write_marker(spool_dir, name, sha):
    # No fsync: a marker lost in a crash costs one more upload, never a
    # wrong answer (an empty or missing marker means the full contract).
    atomic_write(_marker_path(spool_dir, name), sha + "\n", sync=False, sync_dir=False)


def _prune_markers(spool_dir, max_age=86400.0):
    now = time.time()
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return
    for n in names:
        if not n.endswith((".pushed", wal_pusher.FAILED_SUFFIX)):
            continue  # the pusher's lock file stays
        p = os.path.join(spool_dir, n)
        try:
            if now - os.path.getmtime(p) > max_age:
                os.unlink(p)
        except OSError:
            pass


def ready_files(wal_dir, exclude, limit):
    """Names that PostgreSQL has marked ready to archive (oldest first),
    segments and .partial only (history/backup files are tiny: not worth it)."""
    status = os.path.join(wal_dir, "archive_status")
    try:
        names = os.listdir(status)
    except OSError:
        return []
    out = []
    for n in sorted(names):
        if not n.endswith(".ready"):
            continue
        base = n[:-len(".ready")]
        if base == exclude or not (SEGMENT_RE.match(base) or PARTIAL_RE.match(base)):
            continue
        out.append(base)
        if len(out) >= limit:
            break
    return out


def _pushed_ahead(spool_dir, path, name, t0, how):
    """The result of a push done ahead (read-ahead or the async pusher) when
    its marker names the local file's sha256; None otherwise (the marker is
    consumed either way: a different content goes through the full contract)."""
    sha = _read_marker(spool_dir, name)
    if sha is None:
        return None
    local_sha, _size = file_digest(path)
    unlink_quietly(_marker_path(spool_dir, name))
    if local_sha != sha:
        return None
    return {"name": name, "key": wal_key(name), "status": "pushed-ahead", "raw_sha256": sha,
            "seconds": round(time.time() - t0, 3),
            "msg": "%s was archived ahead by %s (same sha256)" % (name, how)}


def wal_push(params, path, name, progress=None, storage=None):
    """Engine entry point of ``drkit wal-push %p %f``. Returns (changed, result)."""
    progress = progress or (lambda msg: None)
    t0 = time.time()
    kind = classify(name)
    # the metrics first: a bad value of any other option counts as a failed push
    m = resolve(metrics.METRICS, params)
    metrics_dir, job = m["metrics_dir"], m["job_name"] or "wal_push"
    try:
        p = resolve(WAL_PUSH_OPTIONS, params)
        spool_dir, read_ahead, level = p["spool_dir"], p["read_ahead"], p["compression_level"]
        recipients = crypto.load_recipients(p["encryption_recipients"])
        asynchronous = p["archive_async"]
        if asynchronous:
            wal_pusher.check_spool(spool_dir)
            if read_ahead < 1:
                raise ConfigError("--async needs --read-ahead N of 1 or more (the background pusher's parallel "
                                  "uploads; config file key read_ahead)", "4 suits most servers")
        wal_dir = os.path.dirname(os.path.abspath(path))
        if spool_dir:
            how = "the background pusher" if asynchronous else "an earlier wal-push"
            result = _pushed_ahead(spool_dir, path, name, t0, how)
            pusher = wal_pusher.worker(spool_dir)
            if result is None and asynchronous and storage is None and kind in ("segment", "partial") and \
                    pusher.serving() in (None, wal_dir):
                # forked before this process opens a storage client or a thread
                pusher.start(wal_dir, lambda: _pusher_main(p, wal_dir, spool_dir))
                if wal_pusher.wait_for(spool_dir, name, _marker_path(spool_dir, name)) == "ready":
                    result = _pushed_ahead(spool_dir, path, name, t0, how)
                # otherwise (failed, gone, timeout) this call pushes the file itself
            if result is not None:
                _push_metrics(metrics_dir, job, True)
                return False, result
        if storage is None:
            storage = open_storage(p["storage_url"], **storage_options(p))
        ahead = []
        if spool_dir and read_ahead > 0 and not asynchronous:
            ahead = [n for n in ready_files(wal_dir, name, read_ahead) if _read_marker(spool_dir, n) is None]
            ahead = [(n, os.path.join(wal_dir, n)) for n in ahead]
        threads = [_AheadPush(storage, p, n, level, spool_dir, recipients) for n, p in ahead]
        for t in threads:
            t.start()
        try:
            result = push_file(storage, path, name, compression_level=level, recipients=recipients)
        finally:
            for t in threads:
                t.join()
        result["pushed_ahead"] = [t.name_ for t in threads if t.ok]
        result["msg"] = "%s %s in %s" % (name, "stored" if result["status"] == "stored"
                                         else "was already archived (identical)", storage.describe())
        if spool_dir:
            _prune_markers(spool_dir)
        _push_metrics(metrics_dir, job, True)
        return result["status"] == "stored", result
    except DrkitError:
        _push_metrics(metrics_dir, job, False)
        raise


def _pusher_main(p, wal_dir, spool_dir):
    """The body of the background pusher (pg/wal_pusher.py), in the daemon."""
    def push(storage, path, name, recipients):
        return push_file(storage, path, name, compression_level=p["compression_level"],
                         recipients=recipients)["raw_sha256"]
    wal_pusher.run_pusher(p, wal_dir, spool_dir, push, lambda d: ready_files(d, None, 100000),
                          _write_marker, _read_marker)
    return 0


class _AheadPush(threading.Thread):
    def __init__(self, storage, path, name, level, spool_dir, recipients=None):
        super(_AheadPush, self).__init__()
        self.daemon = True
        self.storage, self.path, self.name_, self.level, self.spool_dir = storage, path, name, level, spool_dir
        self.recipients = recipients
        self.ok = False

    def run(self):
        try:
            res = push_file(self.storage, self.path, self.name_, compression_level=self.level,
                            recipients=self.recipients)
            _write_marker(self.spool_dir, self.name_, res["raw_sha256"])
            self.ok = True
        except Exception:  # pylint: disable=broad-except
            # Not our segment yet: PostgreSQL asks for it later and the
            # full contract (and its error message) applies then.
            self.ok = False


def _push_metrics(metrics_dir, job, ok):
    if not metrics_dir:
        return
    values = {"drkit_wal_push_last_success_timestamp_seconds": time.time()} if ok else \
        {"drkit_wal_push_failures_total": 1}
    try:
        metrics.update_textfile(metrics_dir, job, values, labels={"kind": "pg_wal"})
    except DrkitError:
        pass


# --------------------------------------------------------------------------
# fetch


def fetch_file(storage, name, path, partial_ok=True, keyring=None):
    """Write the archived ``name`` to ``path`` atomically. NotFoundError if
    the archive does not hold it.

    A segment of which the archive holds only streamed partials (the
    streaming archiver's segment in progress when the server was lost) is
    answered with the newest of them, as Barman does: replay goes as far as
    it holds, then asks for the next segment and ends there. ``keyring``
    (core.crypto.Keyring): the identities for encrypted objects."""
    try:
        return _fetch_key(storage, name, wal_key(name), path, keyring)
    except NotFoundError:
        if not partial_ok or classify(name) != "segment":
            raise
        partials = stream_partials(storage, name)
        if not partials:
            raise
        end = max(partials)
        result = _fetch_key(storage, name, partials[end], path, keyring)
        result["streamed_partial_end"] = end
        return result


def _fetch_key(storage, name, key, path, keyring=None):
    what = "Archived %s (%s in %s)" % (name, key, storage.describe())
    header, chunks = crypto.split_header(storage.iter_read(key), what)
    # no key, or none of the recipients': fails here, before a file is created
    decrypt = (keyring or crypto.Keyring()).decryptor(header, what) if header is not None else None
    try:
        # The file is fsync'ed before the rename; the directory is not:
        # PostgreSQL makes a restored file durable itself (durable_rename).
        with atomic_writer(path, sync_dir=False) as fh:
            head = bytearray()

            def write(raw):
                if len(head) < LONG_HEADER.size:
                    head.extend(raw[:LONG_HEADER.size - len(head)])
                fh.write(raw)
            if decrypt is None:
                content, _stored = read_zstd(storage, key, write, hint=ARCHIVE_HINT, chunks=chunks)
            else:
                # Decrypted chunks reach only the temp file; it is renamed into
                # place once age authenticated the whole stream and the content
                # matches the header (atomic_writer drops it otherwise).
                content = _read_encrypted(storage, key, header, decrypt, write, chunks, what)
            if classify(name) == "segment":
                facts = read_long_header(bytes(head), name)
                if content.size != facts["segment_size"]:
                    raise IntegrityError("Archived %s is %d bytes, expected %d" % (name, content.size,
                                                                                   facts["segment_size"]))
        return {"name": name, "key": key, "raw_size": content.size, "raw_sha256": content.hexdigest()}
    except (IOError, OSError) as e:
        raise StorageError("Cannot write %s: %s" % (path, e.strerror or e),
                           "restore_command runs as the server's OS user in the data directory")


def _read_encrypted(storage, key, header, decrypt, write, chunks, what):
    content = Digest()

    def take(data):
        content.update(data)
        write(data)
    read_stored(storage, key, transforms=[decrypt, ZstdDecompress()], consumer=take, hint=ARCHIVE_HINT,
                chunks=chunks, hash_stored=False, read_ahead=False)
    if (content.hexdigest(), content.size) != (header.get("sha256"), header.get("size")):
        raise IntegrityError("%s decrypts to content other than its header names (sha256 %s, %d bytes; header: "
                             "%s, %s bytes)" % (what, content.hexdigest(), content.size, header.get("sha256"),
                                                header.get("size")),
                             "The object's header was edited or damaged; it was not restored")
    return content


PREFETCH_DIR = ".drkit-prefetch"


def prefetch_dir_for(path):
    """Where prefetched segments wait: a hidden directory next to %p (in pg_wal)."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), PREFETCH_DIR)


def wal_fetch(params, name, path, storage=None):
    """Engine entry point of ``drkit wal-fetch %f %p``. Returns (changed, result);
    WalMissing (exit 1) when the archive does not hold ``name``.

    With ``prefetch`` N > 0 (segments only), the next N segments of the
    timeline are downloaded in parallel by the same process into
    pg_wal/.drkit-prefetch/, each checked exactly like a normal fetch and
    renamed into place only when complete. When PostgreSQL asks for one of
    them, it is moved to %p without touching the network."""
    kind = classify(name)
    t0 = time.time()
    p = resolve(WAL_FETCH_OPTIONS, params)
    keyring = crypto.Keyring(p["encryption_identity_file"])
    prefetch = p["prefetch"] if kind == "segment" else 0
    spool = prefetch_dir_for(path)
    asynchronous = p["fetch_async"]
    if asynchronous and p["prefetch"] < 1:
        raise ConfigError("--async needs --prefetch N of 1 or more (the segments the background fetcher keeps "
                          "ready; config file key prefetch)", "4 suits most recoveries")
    if kind == "segment":
        done = _take_prefetched(spool, name, path, t0)
        if asynchronous:
            _ensure_dir(spool)
            wal_fetcher.ask(spool, name, took=done is not None)
        fetcher = wal_fetcher.worker(spool)
        if done is None and asynchronous and storage is None and fetcher.serving() in (None, spool):
            # forked before this process opens a storage client or a thread
            fetcher.start(spool, lambda: _fetcher_main(p, spool, keyring))
            if wal_fetcher.wait_for(spool, name) == "ready":
                done = _take_prefetched(spool, name, path, t0)
            # otherwise (missing, failed, gone, timeout) this call fetches the file itself
        if done is not None:
            return True, done
        if asynchronous:
            prefetch = 0  # the fetcher reads ahead; this call fetches its own file only
    if storage is None:
        storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    threads = []
    if prefetch > 0:
        seg_size = p["wal_segment_size"]
        tli = int(name[:8], 16)
        number = segment_number(name, seg_size)
        _ensure_dir(spool)
        try:
            present = set(os.listdir(spool))
        except OSError:
            present = None  # cannot prefetch here: plain fetch
        if present is not None:
            for i in range(1, prefetch + 1):
                nxt = segment_name(tli, number + i, seg_size)
                if nxt not in present:
                    threads.append(_Prefetch(storage, nxt, os.path.join(spool, nxt), keyring))
    for t in threads:
        t.start()
    try:
        result = fetch_file(storage, name, path, keyring=keyring)
    except NotFoundError:
        raise WalMissing("%s is not in the archive %s" % (name, storage.describe()),
                         "Normal at the end of the archive; otherwise check storage_url")
    finally:
        for t in threads:
            t.join()
    result["prefetched"] = [t.name_ for t in threads if t.ok]
    result["seconds"] = round(time.time() - t0, 3)
    result["msg"] = "restored %s from %s" % (name, storage.describe())
    return True, result


def _ensure_dir(spool):
    try:
        os.mkdir(spool, 0o700)
    except OSError:
        pass  # there already, or cannot be: the call then fetches its file itself


def _take_prefetched(spool, name, path, t0):
    ready = os.path.join(spool, name)
    try:
        os.rename(ready, path)  # same file system: atomic
    except OSError:
        return None
    return {"name": name, "status": "prefetched", "seconds": round(time.time() - t0, 3),
            "msg": "restored %s (prefetched)" % name}


def _fetcher_main(p, spool, keyring):
    """The body of the background fetcher (pg/wal_fetcher.py), in the daemon."""
    storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))

    def fetch(name, target):
        fetch_file(storage, name, target, partial_ok=False, keyring=keyring)
    wal_fetcher.run_fetcher(spool, p["prefetch"], p["async_idle"], p["wal_segment_size"], fetch)
    return 0


class _Prefetch(threading.Thread):
    def __init__(self, storage, name, path, keyring=None):
        super(_Prefetch, self).__init__()
        self.daemon = True
        self.storage, self.name_, self.path, self.keyring = storage, name, path, keyring
        self.ok = False

    def run(self):
        try:
            # a streamed partial is never prefetched: the full segment may
            # arrive before PostgreSQL asks, and then it must be the answer
            fetch_file(self.storage, self.name_, self.path, partial_ok=False, keyring=self.keyring)
            self.ok = True
        except Exception:  # pylint: disable=broad-except
            # Missing (end of the archive) or failing: PostgreSQL asks for it
            # later and the normal fetch answers, with its error if any.
            self.ok = False
