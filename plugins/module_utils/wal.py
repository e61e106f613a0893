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

import hashlib
import os
import re
import struct
import threading
import time
import uuid

from .errors import (ConfigError, ConflictError, DrkitError, IntegrityError, NotFoundError, StorageError,
                     WaitTimeout)


class WalMissing(NotFoundError):
    """The archive does not hold the file: restore_command's "not found" (exit 1)."""

    exit_code = 1
    label = "not in archive"


WAL = "wal"
SYSID_KEY = WAL + "/SYSTEM_IDENTIFIER"
HISTORY_DIR = WAL + "/history"
SUFFIX = ".zst"
DEFAULT_SEGMENT_SIZE = 16 << 20
CHUNK = 1 << 20

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.partial$")
BACKUP_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.[0-9A-F]{8}\.backup$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")

XLP_LONG_HEADER = 0x0002
# XLogLongPageHeaderData: the 24-byte XLogPageHeaderData (magic u16, info
# u16, tli u32, pageaddr u64, rem_len u32, padding) then sysid u64,
# seg_size u32, xlog_blcksz u32.
LONG_HEADER = struct.Struct("<HHIQI4xQII")


# --------------------------------------------------------------------------
# names, keys, LSNs


def classify(name):
    """'segment', 'partial', 'backup' or 'history'; ConfigError otherwise."""
    if not isinstance(name, str):
        name = str(name)
    if SEGMENT_RE.match(name):
        return "segment"
    if PARTIAL_RE.match(name):
        return "partial"
    if BACKUP_RE.match(name):
        return "backup"
    if HISTORY_RE.match(name):
        return "history"
    raise ConfigError("%r is not a WAL file name PostgreSQL archives" % (name,),
                      "Pass %f as the file name (e.g. 000000010000000000000003, 00000002.history)")


def timeline_of(name):
    return name[:8]


def wal_key(name):
    """Storage key of a WAL file (see the module doc for the layout)."""
    kind = classify(name)
    if kind == "history":
        return "%s/%s%s" % (HISTORY_DIR, name, SUFFIX)
    return "%s/%s/%s%s" % (WAL, timeline_of(name), name, SUFFIX)


def name_of_key(key):
    """The WAL file name of a storage key, or None if it is not a WAL file."""
    base = key.rsplit("/", 1)[-1]
    if not base.endswith(SUFFIX):
        return None
    base = base[:-len(SUFFIX)]
    try:
        classify(base)
    except ConfigError:
        return None
    return base


def segments_per_xlogid(seg_size):
    return 0x100000000 // seg_size


def segment_number(name, seg_size=DEFAULT_SEGMENT_SIZE):
    m = SEGMENT_RE.match(name[:24])
    if not m:
        raise ConfigError("%r is not a WAL segment name" % (name,))
    return int(m.group(2), 16) * segments_per_xlogid(seg_size) + int(m.group(3), 16)


def segment_name(timeline, segno, seg_size=DEFAULT_SEGMENT_SIZE):
    per = segments_per_xlogid(seg_size)
    return "%08X%08X%08X" % (int(timeline), segno // per, segno % per)


def parse_lsn(text):
    """'16/B374D848' -> int."""
    if isinstance(text, int):
        return text
    m = re.match(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$", str(text))
    if not m:
        raise ConfigError("%r is not an LSN" % (text,), "Write it as PostgreSQL does, e.g. 16/B374D848")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(value):
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def lsn_segment(lsn, timeline, seg_size=DEFAULT_SEGMENT_SIZE, previous=False):
    """Name of the segment holding ``lsn`` (``previous``: holding lsn - 1,
    PostgreSQL's XLByteToPrevSeg, used for a stop/end point)."""
    value = parse_lsn(lsn)
    if previous:
        value -= 1
    return segment_name(timeline, value // seg_size, seg_size)


def segment_range(first, last, seg_size=DEFAULT_SEGMENT_SIZE):
    """Segment names first..last inclusive, on first's timeline."""
    tli = int(timeline_of(first), 16)
    a, b = segment_number(first, seg_size), segment_number(last, seg_size)
    return [segment_name(tli, n, seg_size) for n in range(a, b + 1)]


def read_long_header(head, name=None):
    """Facts from the first page of a WAL segment (its long page header)."""
    if len(head) < LONG_HEADER.size:
        raise IntegrityError("%s is too short to be a WAL segment (%d bytes)" % (name or "file", len(head)))
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = LONG_HEADER.unpack_from(head)
    if not info & XLP_LONG_HEADER or seg_size == 0 or seg_size & (seg_size - 1) or blcksz == 0:
        raise IntegrityError("%s does not start with a WAL long page header" % (name or "file"),
                             "It is not a WAL segment of PostgreSQL; it was not archived")
    return {"magic": magic, "timeline": tli, "pageaddr": pageaddr, "system_identifier": str(sysid),
            "segment_size": seg_size, "block_size": blcksz}


# --------------------------------------------------------------------------
# system identifier of the archive


def archive_system_identifier(storage):
    """The system identifier recorded in wal/SYSTEM_IDENTIFIER, or None."""
    try:
        text = storage.get_bytes(SYSID_KEY).decode("ascii", "replace").strip()
    except NotFoundError:
        return None
    if not text.isdigit():
        raise IntegrityError("%s in %s holds %r, not a system identifier" % (SYSID_KEY, storage.describe(), text),
                             "Fix or remove it by hand: it names the cluster this archive belongs to")
    return text


def claim_archive(storage, system_identifier, what):
    """Make sure the archive belongs to this cluster; record it if new."""
    from .storage import put_new  # pylint: disable=import-outside-toplevel
    sysid = str(system_identifier)
    current = archive_system_identifier(storage)
    if current is None:
        try:
            put_new(storage, SYSID_KEY, (sysid + "\n").encode("ascii"))
            return sysid
        except ConflictError:
            current = archive_system_identifier(storage)  # a concurrent first push
    if current != sysid:
        raise ConflictError(
            "%s belongs to the cluster with system identifier %s, but the archive %s belongs to cluster %s" % (
                what, sysid, storage.describe(), current),
            "Each cluster needs its own storage_url (e.g. s3://bucket/<cluster name>); nothing was stored")
    return sysid


# --------------------------------------------------------------------------
# compression with a content checksum


def _zstd():
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("WAL archiving needs the Python library zstandard",
                          "Install it in the Python that runs drkit (pip install zstandard)")
    return zstandard


def _compressor(level):
    level = int(level or 3)
    if not 1 <= level <= 19:
        raise ConfigError("compression_level must be between 1 and 19, got %r" % level)
    return _zstd().ZstdCompressor(level=level, write_checksum=True).compressobj()


class _RawCheck(object):
    """Decompress a stored object, hashing the output and checking the zstd
    frame checksum and that the frame is complete."""

    def __init__(self, key, out=None):
        self.key = key
        self._d = _zstd().ZstdDecompressor().decompressobj()
        self.hash = hashlib.sha256()
        self.size = 0
        self.out = out

    def feed(self, data):
        try:
            raw = self._d.decompress(data)
        except Exception as e:  # pylint: disable=broad-except
            raise IntegrityError("Stored %s is corrupt: %s" % (self.key, e),
                                 "The archived copy cannot be trusted; see docs/pitr.md")
        if raw:
            self.hash.update(raw)
            self.size += len(raw)
            if self.out is not None:
                self.out(raw)

    def finish(self):
        if not self._d.eof:
            raise IntegrityError("Stored %s is truncated (its zstd frame does not end)" % self.key,
                                 "The archived copy cannot be trusted; see docs/pitr.md")
        return self.hash.hexdigest()


def stored_raw_digest(storage, key):
    """(sha256, size) of the uncompressed content of a stored WAL object."""
    check = _RawCheck(key)
    for chunk in storage.iter_read(key):
        check.feed(chunk)
    return check.finish(), check.size


def file_digest(path):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            data = fh.read(CHUNK)
            if not data:
                break
            h.update(data)
            size += len(data)
    return h.hexdigest(), size


# --------------------------------------------------------------------------
# push


def _open_local(path, name):
    try:
        return open(path, "rb")
    except (IOError, OSError) as e:
        raise ConfigError("Cannot read %s (%s): %s" % (path, name, e.strerror or e),
                          "archive_command must pass %p (the path, relative to the data directory) then %f")


def _check_segment_content(path, name, kind):
    """Check the long page header against the file name; return it."""
    with _open_local(path, name) as fh:
        head = fh.read(LONG_HEADER.size)
    facts = read_long_header(head, name)
    seg_size = facts["segment_size"]
    want = segment_number(name, seg_size)
    got = facts["pageaddr"] // seg_size
    if facts["pageaddr"] % seg_size or got != want:
        raise IntegrityError("%s holds WAL of segment %s, not of %s" % (
            name, segment_name(int(timeline_of(name), 16), got, seg_size), name[:24]),
            "The file is misnamed or damaged; it was not archived")
    if kind == "segment":
        size = os.path.getsize(path)
        if size != seg_size:
            raise IntegrityError("%s is %d bytes, a WAL segment of this cluster is %d" % (name, size, seg_size),
                                 "It is incomplete; it was not archived")
    return facts


def push_file(storage, path, name, compression_level=3, check_cluster=True):
    """Archive one file under the contract in the module doc.

    Returns a dict: name, key, status ('stored' | 'exists'), raw_size,
    stored_size, raw_sha256, seconds."""
    t0 = time.time()
    kind = classify(name)
    key = wal_key(name)
    facts = None
    if kind in ("segment", "partial"):
        facts = _check_segment_content(path, name, kind)
        if check_cluster:
            claim_archive(storage, facts["system_identifier"], "WAL file %s" % name)
    elif not os.path.isfile(path):
        raise ConfigError("%s (%s) is not a file" % (path, name))
    local_sha, local_size = file_digest(path)
    result = {"name": name, "key": key, "raw_size": local_size, "raw_sha256": local_sha}
    if facts:
        result["system_identifier"] = facts["system_identifier"]

    if storage.stat(key) is not None:
        stored_sha, _size = stored_raw_digest(storage, key)
        if stored_sha == local_sha:
            result.update(status="exists", seconds=round(time.time() - t0, 3))
            return result
        what = "timeline history file" if kind == "history" else "WAL file"
        raise ConflictError(
            "The archive %s already holds %s %s with different content (stored sha256 %s, local %s)" % (
                storage.describe(), what, name, stored_sha, local_sha),
            "The stored copy was left untouched. Two clusters may be archiving to the same storage_url, "
            "or the archive belongs to an old cluster: give this cluster its own storage_url")

    comp = _compressor(compression_level)
    stored = hashlib.sha256()
    stored_size = [0]
    with storage.writer(key) as w:
        def emit(data):
            if data:
                stored.update(data)
                stored_size[0] += len(data)
                w.write(data)
        h = hashlib.sha256()
        with _open_local(path, name) as fh:
            while True:
                data = fh.read(CHUNK)
                if not data:
                    break
                h.update(data)
                emit(comp.compress(data))
        emit(comp.flush())
        if h.hexdigest() != local_sha:
            raise IntegrityError("%s changed while it was being archived" % path,
                                 "Nothing was stored; PostgreSQL will retry")
    # Read back what is stored now: its bytes and its decompressed content.
    check = _RawCheck(key)
    got = hashlib.sha256()
    got_size = 0
    try:
        for chunk in storage.iter_read(key):
            got.update(chunk)
            got_size += len(chunk)
            check.feed(chunk)
        raw_sha = check.finish()
        if got.hexdigest() != stored.hexdigest() or got_size != stored_size[0] or raw_sha != local_sha:
            raise IntegrityError("Re-reading %s from %s gave different content than was uploaded" % (
                key, storage.describe()), "The storage lost or changed data; the upload will be retried")
    except DrkitError:
        # It is our own object from this attempt and it is wrong: remove it
        # so that PostgreSQL's retry is not refused as "different content".
        try:
            storage.delete([key])
        except DrkitError:
            pass
        raise
    result.update(status="stored", stored_size=stored_size[0], seconds=round(time.time() - t0, 3))
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
    path = _marker_path(spool_dir, name)
    tmp = "%s.%s.tmp" % (path, uuid.uuid4().hex[:8])
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(sha + "\n")
    os.rename(tmp, path)


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _prune_markers(spool_dir, max_age=86400.0):
    now = time.time()
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return
    for n in names:
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


def wal_push(params, path, name, progress=None, storage=None):
    """Engine entry point of ``drkit wal-push %p %f``. Returns (changed, result)."""
    from .storage import open_storage, storage_options  # pylint: disable=import-outside-toplevel
    progress = progress or (lambda msg: None)
    t0 = time.time()
    classify(name)
    spool_dir = params.get("spool_dir")
    read_ahead = int(params.get("read_ahead") or 0)
    metrics_dir = params.get("metrics_dir")
    job = params.get("job_name") or "wal_push"
    try:
        if spool_dir:
            sha = _read_marker(spool_dir, name)
            if sha is not None:
                local_sha, _size = file_digest(path)
                _remove(_marker_path(spool_dir, name))
                if local_sha == sha:
                    result = {"name": name, "key": wal_key(name), "status": "pushed-ahead", "raw_sha256": sha,
                              "seconds": round(time.time() - t0, 3),
                              "msg": "%s was archived ahead by an earlier wal-push (same sha256)" % name}
                    _push_metrics(metrics_dir, job, True)
                    return False, result
                # Different content than what we pushed ahead: go through the full contract.
        if storage is None:
            storage = open_storage(params.get("storage_url"), light=True, **storage_options(params))
        level = params.get("compression_level") or 3
        ahead = []
        if spool_dir and read_ahead > 0:
            wal_dir = os.path.dirname(os.path.abspath(path))
            ahead = [n for n in ready_files(wal_dir, name, read_ahead) if _read_marker(spool_dir, n) is None]
            ahead = [(n, os.path.join(wal_dir, n)) for n in ahead]
        threads = [_AheadPush(storage, p, n, level, spool_dir) for n, p in ahead]
        for t in threads:
            t.start()
        try:
            result = push_file(storage, path, name, compression_level=level)
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


class _AheadPush(threading.Thread):
    def __init__(self, storage, path, name, level, spool_dir):
        super(_AheadPush, self).__init__()
        self.daemon = True
        self.storage, self.path, self.name_, self.level, self.spool_dir = storage, path, name, level, spool_dir
        self.ok = False

    def run(self):
        try:
            res = push_file(self.storage, self.path, self.name_, compression_level=self.level)
            _write_marker(self.spool_dir, self.name_, res["raw_sha256"])
            self.ok = True
        except Exception:  # pylint: disable=broad-except
            # Not our segment yet: PostgreSQL asks for it later and the
            # full contract (and its error message) applies then.
            self.ok = False


def _push_metrics(metrics_dir, job, ok):
    if not metrics_dir:
        return
    from . import metrics  # pylint: disable=import-outside-toplevel
    values = {"drkit_wal_push_last_success_timestamp_seconds": time.time()} if ok else \
        {"drkit_wal_push_failures_total": 1}
    try:
        metrics.update_textfile(metrics_dir, job, values, labels={"kind": "pg_wal"})
    except DrkitError:
        pass


# --------------------------------------------------------------------------
# fetch


def fetch_file(storage, name, path):
    """Write the archived ``name`` to ``path`` atomically. NotFoundError if
    the archive does not hold it."""
    key = wal_key(name)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    tmp = os.path.join(directory, ".%s.drkit-fetch-%s" % (os.path.basename(path), uuid.uuid4().hex[:8]))
    fd = None
    try:
        chunks = storage.iter_read(key)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fh = os.fdopen(fd, "wb")
        fd = None
        with fh:
            check = _RawCheck(key, out=fh.write)
            for chunk in chunks:
                check.feed(chunk)
            sha = check.finish()
            fh.flush()
            os.fsync(fh.fileno())
        if classify(name) == "segment":
            with open(tmp, "rb") as fh:
                head = fh.read(LONG_HEADER.size)
            facts = read_long_header(head, name)
            if check.size != facts["segment_size"]:
                raise IntegrityError("Archived %s is %d bytes, expected %d" % (name, check.size,
                                                                               facts["segment_size"]))
        os.rename(tmp, path)
        tmp = None
        return {"name": name, "key": key, "raw_size": check.size, "raw_sha256": sha}
    except (IOError, OSError) as e:
        raise StorageError("Cannot write %s: %s" % (path, e.strerror or e),
                           "restore_command runs as the server's OS user in the data directory")
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            _remove(tmp)


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
    from .storage import open_storage, storage_options  # pylint: disable=import-outside-toplevel
    kind = classify(name)
    t0 = time.time()
    prefetch = int(params.get("prefetch") or 0) if kind == "segment" else 0
    spool = prefetch_dir_for(path)
    if kind == "segment":
        ready = os.path.join(spool, name)
        if os.path.isfile(ready):
            os.rename(ready, path)  # same file system: atomic
            return True, {"name": name, "status": "prefetched", "seconds": round(time.time() - t0, 3),
                          "msg": "restored %s (prefetched)" % name}
    if storage is None:
        storage = open_storage(params.get("storage_url"), light=True, **storage_options(params))
    threads = []
    if prefetch > 0:
        seg_size = int(params.get("wal_segment_size") or DEFAULT_SEGMENT_SIZE)
        tli = int(name[:8], 16)
        number = segment_number(name, seg_size)
        try:
            if not os.path.isdir(spool):
                os.mkdir(spool, 0o700)
            present = set(os.listdir(spool))
        except OSError:
            present = None  # cannot prefetch here: plain fetch
        if present is not None:
            for i in range(1, prefetch + 1):
                nxt = segment_name(tli, number + i, seg_size)
                if nxt not in present:
                    threads.append(_Prefetch(storage, nxt, os.path.join(spool, nxt)))
    for t in threads:
        t.start()
    try:
        result = fetch_file(storage, name, path)
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


class _Prefetch(threading.Thread):
    def __init__(self, storage, name, path):
        super(_Prefetch, self).__init__()
        self.daemon = True
        self.storage, self.name_, self.path = storage, name, path
        self.ok = False

    def run(self):
        try:
            fetch_file(self.storage, self.name_, self.path)
            self.ok = True
        except Exception:  # pylint: disable=broad-except
            # Missing (end of the archive) or failing: PostgreSQL asks for it
            # later and the normal fetch answers, with its error if any.
            self.ok = False


# --------------------------------------------------------------------------
# reading the archive: listings, chains, waiting


def list_timeline(storage, timeline):
    """Names of the segments archived on a timeline (int or 8-hex), sorted."""
    tli = timeline if isinstance(timeline, str) else "%08X" % timeline
    out = []
    for info in storage.list("%s/%s/" % (WAL, tli)):
        name = name_of_key(info.key)
        if name and SEGMENT_RE.match(name):
            out.append(name)
    return sorted(out)


def list_history(storage):
    """{timeline int: history text} of the archived timeline history files."""
    out = {}
    for info in storage.list(HISTORY_DIR + "/"):
        name = name_of_key(info.key)
        if name and HISTORY_RE.match(name):
            data = bytearray()
            check = _RawCheck(info.key, out=data.extend)
            for chunk in storage.iter_read(info.key):
                check.feed(chunk)
            check.finish()
            out[int(name[:8], 16)] = bytes(data).decode("utf-8", "replace")
    return out


def parse_history(text):
    """[(parent timeline, switch LSN int)] from a timeline history file."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            try:
                out.append((int(parts[0]), parse_lsn(parts[1])))
            except (ValueError, ConfigError):
                continue
    return out


def missing_segments(storage, names):
    """Which of ``names`` are not in the archive (listing once per timeline)."""
    by_tli = {}
    for n in names:
        by_tli.setdefault(timeline_of(n), []).append(n)
    missing = []
    for tli, wanted in sorted(by_tli.items()):
        present = set(list_timeline(storage, tli))
        missing.extend(n for n in wanted if n not in present)
    return missing


def wait_for_segments(storage, names, timeout, poll=1.0, progress=None, what="the base backup"):
    """Wait until every segment of ``names`` is in the archive; WaitTimeout
    naming the missing ones otherwise."""
    progress = progress or (lambda msg: None)
    deadline = time.time() + max(0.0, float(timeout))
    said = False
    while True:
        missing = missing_segments(storage, names)
        if not missing:
            return
        if time.time() >= deadline:
            raise WaitTimeout(
                "%d WAL segment(s) needed by %s did not reach the archive %s within %s s: %s" % (
                    len(missing), what, storage.describe(), timeout, ", ".join(missing[:10])),
                "Check archive_command and pg_stat_archiver (last_failed_wal) on the server, "
                "or raise wal_wait_timeout")
        if not said:
            progress("waiting for %d WAL segment(s) to be archived: %s" % (len(missing), ", ".join(missing[:3])))
            said = True
        time.sleep(poll)


def recovery_chain(storage, timeline, start_segment, seg_size=DEFAULT_SEGMENT_SIZE, histories=None):
    """What replay to the end of the archive needs from ``start_segment`` on
    ``timeline``: follows the newest timeline whose history descends from it.

    Returns dict(timeline=final tli, segments=[names needed that exist or
    not], missing=[...], last=newest archived segment on the final tli)."""
    histories = list_history(storage) if histories is None else histories
    # The newest timeline whose ancestry includes ours (or ours itself).
    target = timeline
    for tli in sorted(histories, reverse=True):
        if tli > timeline and any(p == timeline for p, _lsn in parse_history(histories[tli])):
            target = tli
            break
    path = []  # [(tli, switch lsn or None)]
    if target != timeline:
        ancestors = parse_history(histories[target])
        started = False
        for parent, switch in ancestors:
            if parent == timeline:
                started = True
            if started:
                path.append((parent, switch))
    path.append((target, None))
    start_no = segment_number(start_segment, seg_size)
    needed, missing = [], []
    last = None
    for tli, switch in path:
        archived = list_timeline(storage, tli)
        if switch is not None:
            # PostgreSQL reads the segment holding the switch point from the
            # new timeline (which begins with a copy of it), so the old
            # timeline is needed up to the segment before it.
            end_no = switch // seg_size - 1
        else:
            numbers = [segment_number(n, seg_size) for n in archived]
            end_no = max(numbers) if numbers else start_no - 1
            last = segment_name(tli, end_no, seg_size) if numbers else None
        present = set(archived)
        for n in range(start_no, end_no + 1):
            name = segment_name(tli, n, seg_size)
            needed.append(name)
            if name not in present:
                missing.append(name)
        if switch is not None:
            start_no = max(start_no, switch // seg_size)
    return {"timeline": target, "segments": needed, "missing": missing, "last": last}


# --------------------------------------------------------------------------
# configuring archiving on a server (module pg_wal_archive, role postgresql_wal_archive)

# setting -> does a change need a restart (context postmaster)?
ARCHIVE_SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_timeout")


def archive_command_for(params):
    """archive_command running ``drkit wal-push`` as the server's OS user."""
    import shlex  # pylint: disable=import-outside-toplevel
    drkit = params.get("drkit_command") or "/usr/local/bin/drkit"
    url = params.get("storage_url")
    if not url:
        raise ConfigError("storage_url is required", "Name the archive, e.g. s3://bucket/pg-main")
    parts = [drkit, "wal-push"]
    if params.get("wal_config"):
        parts += ["--config", shlex.quote(params["wal_config"])]
    parts += ["--storage-url", shlex.quote(url)]
    if params.get("spool_dir"):
        parts += ["--spool-dir", shlex.quote(params["spool_dir"]),
                  "--read-ahead", str(int(params.get("read_ahead") or 4))]
    if params.get("metrics_dir"):
        parts += ["--metrics-dir", shlex.quote(params["metrics_dir"])]
    if params.get("compression_level"):
        parts += ["--compression-level", str(int(params["compression_level"]))]
    return " ".join(parts + ["%p", "%f"])


def _timeout_seconds(value):
    text = str(value).strip().lower()
    m = re.match(r"^(\d+)\s*(ms|s|min|h|d)?$", text)
    if not m:
        raise ConfigError("archive_timeout %r is not a duration" % (value,), "Use seconds, e.g. 60 or 60s or 1min")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000.0, "s": n, "min": n * 60, "h": n * 3600, "d": n * 86400}[unit]


def configure_archiving(params, check_mode=False):
    """Set wal_level, archive_mode, archive_command and archive_timeout with
    ALTER SYSTEM (postgresql.auto.conf), reload, and report whether a
    restart is needed. With test_archive, also prove that archiving works:
    switch to a new segment and wait until it is in the archive.

    Returns (changed, result) with diff, restart_required, server facts."""
    from .postgres import conn_params, connect, server_facts  # pylint: disable=import-outside-toplevel
    cp = conn_params(params)
    wanted = {
        "wal_level": params.get("wal_level") or "replica",
        "archive_mode": params.get("archive_mode") or "on",
        "archive_command": params.get("archive_command") or archive_command_for(params),
        "archive_timeout": str(int(_timeout_seconds(params.get("archive_timeout") or 60))),
    }
    if wanted["wal_level"] not in ("replica", "logical"):
        raise ConfigError("wal_level must be replica or logical for archiving, got %r" % wanted["wal_level"])
    if wanted["archive_mode"] not in ("on", "always"):
        raise ConfigError("archive_mode must be on or always, got %r" % wanted["archive_mode"])
    conn = connect(cp, params.get("maintenance_db") or "postgres", autocommit=True)
    try:
        facts = server_facts(conn)
        if facts["server_version_num"] < 120000:
            raise ConfigError("PostgreSQL %s is too old: drkit's PITR needs 12 or newer (recovery.signal)" %
                              facts["server_version"], "Upgrade the server")
        with conn.cursor() as cur:
            cur.execute("SELECT name, setting, context, pending_restart FROM pg_settings WHERE name = ANY(%s)",
                        (list(ARCHIVE_SETTINGS),))
            current = dict((r[0], {"value": r[1], "context": r[2], "pending": r[3]}) for r in cur.fetchall())
        before = dict((k, current[k]["value"]) for k in ARCHIVE_SETTINGS)
        changes = dict((k, v) for k, v in wanted.items() if str(before.get(k)) != str(v))
        restart_required = any(current[k]["context"] == "postmaster" for k in changes) or \
            any(current[k]["pending"] for k in ARCHIVE_SETTINGS)
        data_directory = None
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT current_setting('data_directory')")
                data_directory = cur.fetchone()[0]
            except Exception:  # pylint: disable=broad-except
                pass  # needs superuser or pg_read_all_settings; only the preflight's disk check uses it
        result = {"diff": {"before": before, "after": dict(before, **wanted)}, "changes": sorted(changes),
                  "restart_required": restart_required, "server_version": facts["server_version"],
                  "server_version_num": facts["server_version_num"], "data_directory": data_directory,
                  "archive_command": wanted["archive_command"]}
        if check_mode:
            result["msg"] = "Would set %s" % (", ".join(sorted(changes)) or "nothing (already configured)")
            return bool(changes), result
        if changes:
            from psycopg import sql  # pylint: disable=import-outside-toplevel
            with conn.cursor() as cur:
                for k in sorted(changes):
                    cur.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(k), sql.Literal(changes[k])))
                cur.execute("SELECT pg_reload_conf()")
            time.sleep(0.2)
            with conn.cursor() as cur:
                cur.execute("SELECT bool_or(pending_restart) FROM pg_settings WHERE name = ANY(%s)",
                            (list(ARCHIVE_SETTINGS),))
                result["restart_required"] = bool(cur.fetchone()[0])
        if params.get("test_archive"):
            if result["restart_required"]:
                raise ConfigError("Cannot test archiving before the restart that %s need(s)" % ", ".join(
                    k for k in changes if current[k]["context"] == "postmaster") or "pending settings",
                    "Restart PostgreSQL (the role's handler does), then test again")
            result["test"] = prove_archiving(conn, params, float(params.get("test_timeout") or 60))
        result["msg"] = ("Set %s" % ", ".join(sorted(changes))) if changes else "Archiving already configured"
        if result["restart_required"]:
            result["msg"] += "; a restart is needed for wal_level/archive_mode"
        return bool(changes), result
    finally:
        conn.close()


def prove_archiving(conn, params, timeout):
    """Switch to a new WAL segment and wait until the archiver reports it
    archived and it is in the archive; fail with pg_stat_archiver's view."""
    from .storage import open_storage, storage_options  # pylint: disable=import-outside-toplevel
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_logical_emit_message(false, 'drkit', 'archive test')")
        cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
        segment = cur.fetchone()[0]
    deadline = time.time() + timeout
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver")
            archived, failed, failures = cur.fetchone()
        if archived and archived[:24] >= segment and storage.stat(wal_key(segment)) is not None:
            return {"segment": segment, "archived": True, "storage": storage.describe()}
        if time.time() > deadline:
            raise WaitTimeout("WAL segment %s did not reach the archive %s within %s s (last archived %s, last "
                              "failed %s, %s failures)" % (segment, storage.describe(), timeout, archived, failed,
                                                           failures),
                              "Read the server log for 'archive command failed' and the drkit wal-push error; "
                              "check drkit_command, wal_config (owner and mode) and the storage")
        time.sleep(0.3)
