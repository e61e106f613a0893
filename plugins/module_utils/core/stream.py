# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The streaming data path.

    producer (process stdout, file, tar stream...)
      -> transforms (zstd compression, then age encryption: core.crypto)
      -> digest (sha256 + byte count of what is stored)
      -> storage writer

Only one chunk (about 1 MiB) plus the compressor's window and the storage
writer's in-flight parts is ever held in memory.

Producers run behind a small runner interface (core.process,
``LocalRunner.spawn``) so that a runner which executes inside a container
(``docker exec`` through the Docker API) can replace it without touching the
rest of the pipeline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import queue
import threading

from .errors import ConfigError, DrkitError, IntegrityError
from .options import Option

CHUNK = 1 << 20
DEFAULT_LEVEL = 3

# Compression options (doc fragment drkit.backup.compression). python-zstandard
# and pg_dump's --compress=zstd:N take levels 1-19 here; zstd's own level 0
# means "its default" (3) and is refused rather than silently replaced.
COMPRESSION_LEVEL = Option(
    "compression_level", "int", default=3, min=1, max=19, flags=("--compression-level",),
    help="zstd level, 1 (fastest) to 19 (smallest), default 3",
    hint="zstd levels are 1 (fastest) to 19 (smallest), default 3; zstd's level 0 (its default) is not "
         "accepted: leave compression_level unset for 3")
COMPRESSION_THREADS = Option(
    "compression_threads", "int", default=0, min=-1, max=256, flags=("--compression-threads",),
    help="zstd worker threads: 0 compresses in the calling thread, -1 uses one per CPU (at most 256)",
    hint="Use 0 to compress in the calling thread, 1-256 worker threads, or -1 for one per CPU")
COMPRESSION = (COMPRESSION_LEVEL, COMPRESSION_THREADS)


def compression_settings(p):
    """The pipeline's compression (compressor_for) from resolved COMPRESSION options."""
    return {"algorithm": "zstd", "level": p["compression_level"], "threads": p["compression_threads"]}


def zstd_module():
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("Compression needs the Python library zstandard",
                          "Install it (pip install zstandard) in the Python that runs drkit")
    return zstandard


# --------------------------------------------------------------------------
# Transforms: update(bytes) -> bytes, finish() -> bytes


class ZstdCompress(object):
    """The one zstd compressor: ``level`` 1 to 19 (checked here and nowhere
    else), ``threads`` workers (0: this thread), ``checksum``: a content
    checksum in the frame (the WAL archive's objects have one, so a fetch
    notices corruption while decompressing)."""

    name = "zstd"

    def __init__(self, level=COMPRESSION_LEVEL.default, threads=COMPRESSION_THREADS.default, checksum=False):
        zstd = zstd_module()
        # None: unset, the default; anything else must be in range (0 is refused, never replaced)
        self.level = COMPRESSION_LEVEL.check(COMPRESSION_LEVEL.default if level is None else level)
        self.threads = COMPRESSION_THREADS.check(COMPRESSION_THREADS.default if threads is None else threads)
        params = zstd.ZstdCompressionParameters.from_level(self.level, threads=self.threads,
                                                           write_checksum=bool(checksum))
        self._c = zstd.ZstdCompressor(compression_params=params).compressobj()

    def update(self, data):
        return self._c.compress(data)

    def finish(self):
        return self._c.flush()

    def describe(self):
        return {"algorithm": "zstd", "level": self.level}


class ZstdDecompress(object):
    """The one zstd decompressor: a damaged frame (a bad block or content
    checksum) or a missing end of frame is an IntegrityError; a DrkitError
    raised meanwhile (Terminated by a signal) passes through as it is."""

    name = "zstd"

    def __init__(self):
        zstd = zstd_module()
        self._d = zstd.ZstdDecompressor().decompressobj()
        self._fed = False

    def update(self, data):
        self._fed = self._fed or bool(data)
        try:
            return self._d.decompress(data)
        except DrkitError:
            raise  # ours already says what failed
        except Exception as e:  # pylint: disable=broad-except
            raise IntegrityError("The stored data is corrupt, not a valid zstd stream: %s" % e,
                                 "The object is corrupt; use another backup")

    def finish(self):
        # A truncated object decompresses without error up to the cut: only
        # the missing end-of-frame tells.
        if self._fed and not getattr(self._d, "eof", True):
            raise IntegrityError("The stored data is truncated: it ends in the middle of its zstd stream",
                                 "The object is truncated; use another backup")
        return b""


def compressor_for(compression):
    """compression: dict(algorithm, level, threads) or None/'none'."""
    if not compression or compression.get("algorithm", "zstd") == "none":
        return None
    if compression.get("algorithm", "zstd") != "zstd":
        raise ConfigError("Unsupported compression %r" % compression.get("algorithm"),
                          "Use zstd or none")
    return ZstdCompress(compression.get("level", COMPRESSION_LEVEL.default),
                        compression.get("threads", COMPRESSION_THREADS.default))


def decompressor_for(description):
    if not description or description.get("algorithm") in (None, "none"):
        return None
    if description["algorithm"] == "zstd":
        return ZstdDecompress()
    raise IntegrityError("Unknown compression %r in manifest" % description["algorithm"],
                         "This backup was written by a newer drkit; upgrade drkit")


# --------------------------------------------------------------------------
# The sink side: transforms -> digest -> writer


class Digest(object):
    def __init__(self):
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data):
        self._h.update(data)
        self.size += len(data)

    def hexdigest(self):
        return self._h.hexdigest()


class PipelineSink(object):
    """A binary file-like object: bytes written to it flow through the
    transforms into the storage writer.  ``result()`` after ``close()``."""

    def __init__(self, writer, transforms=(), meter=None):
        self._writer = writer
        self._transforms = [t for t in transforms if t is not None]
        self.raw = _Counter()
        self._meter = meter  # core.progress.Meter: counts what the producer wrote
        self.stored = Digest()
        self.closed = False

    def _emit(self, data):
        if data:
            self.stored.update(data)
            self._writer.write(data)

    def write(self, data):
        n = len(data)
        self.raw.update(data)
        if self._meter is not None:
            self._meter.update(n)
        for t in self._transforms:
            data = t.update(data)
            if not data:
                return n
        self._emit(data)
        return n

    def close(self):
        if self.closed:
            return
        self.closed = True
        # Each transform's tail goes through the transforms after it.
        for i, t in enumerate(self._transforms):
            tail = t.finish()
            for later in self._transforms[i + 1:]:
                if not tail:
                    break
                tail = later.update(tail)
            self._emit(tail)

    def write_stored(self, data):
        """Bytes stored as they are, past the transforms (a cleartext
        header before an encrypted stream); counted in the stored digest."""
        self._emit(data)

    def flush(self):
        pass

    def writable(self):
        return True

    def result(self):
        return {"raw_size": self.raw.size, "size": self.stored.size,
                "sha256": self.stored.hexdigest()}


class _Counter(object):
    """A Digest that only counts bytes."""

    def __init__(self):
        self.size = 0

    def update(self, data):
        self.size += len(data)

    def hexdigest(self):
        return None


def pump(fileobj, sink, chunk=CHUNK):
    """Copy a binary stream into the sink in chunks; returns bytes copied."""
    total = 0
    fd = None
    try:
        fd = fileobj.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    while True:
        data = os.read(fd, chunk) if fd is not None else fileobj.read(chunk)
        if not data:
            return total
        sink.write(data)
        total += len(data)


# --------------------------------------------------------------------------
# Reading back


def read_stored(storage, key, expected_size=None, expected_sha256=None, transforms=(), consumer=None, hint=None,
                chunks=None, hash_stored=True, read_ahead=True, meter=None):
    """Stream an object back from storage, checking its sha256 and size.

    Each raw chunk goes through ``transforms`` (decryption, decompression)
    and then to ``consumer(bytes)`` (e.g. pg_restore's stdin).  A consumer may
    return False to say it wants no more data; hashing goes on to the end.
    Raises IntegrityError naming the object and what differed (``hint``
    replaces the transform's advice when the content cannot be decoded).
    ``chunks``: storage.iter_read(key) when the caller opened it already.
    Without ``hash_stored`` or an expected sha256 the stored bytes are only
    counted (the returned sha256 is None); without ``read_ahead`` they are
    read in this thread. ``meter`` (core.progress.Meter) counts the stored
    bytes as they are read."""
    digest = Digest() if hash_stored or expected_sha256 is not None else _Counter()
    transforms = [t for t in transforms if t is not None]
    wants = consumer is not None
    if chunks is None:
        chunks = storage.iter_read(key)
    if meter is not None:
        chunks = metered(chunks, meter)
    if wants and transforms and read_ahead:
        # Reading and hashing in a thread overlap with decompression and the
        # consumer here (all three release the GIL): about 0.3 s less per GB.
        chunks = ReadAhead(chunks, digest)
    else:
        chunks = _hashed(chunks, digest)
    try:
        transform_error = _consume(chunks, transforms, consumer, wants)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    check_digest(storage, key, digest, expected_size, expected_sha256)
    if transform_error is not None:
        raise IntegrityError("Stored object %s in %s cannot be decoded: %s" % (
            key, storage.describe(), transform_error.message), hint or transform_error.hint)
    return {"size": digest.size, "sha256": digest.hexdigest()}


def check_digest(storage, key, digest, expected_size=None, expected_sha256=None):
    """Raise IntegrityError naming the object and what differs from its manifest."""
    problems = []
    if expected_size is not None and digest.size != expected_size:
        problems.append("size %d bytes, manifest says %d" % (digest.size, expected_size))
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        problems.append("sha256 %s, manifest says %s" % (digest.hexdigest(), expected_sha256))
    if problems:
        raise IntegrityError("Stored object %s in %s does not match its manifest: %s" % (
            key, storage.describe(), "; ".join(problems)),
            "The object is corrupt or was modified; do not restore from it, use another backup")


def metered(chunks, meter):
    """The chunks, each counted by ``meter`` as it passes (closing the source when closed)."""
    try:
        for chunk in chunks:
            meter.update(len(chunk))
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _hashed(chunks, digest):
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _consume(chunks, transforms, consumer, wants):
    """Feed chunks through transforms to consumer. Returns the transform's
    IntegrityError or None; reads to the end in any case so that the digest
    covers the whole object."""
    transform_error = None
    for chunk in chunks:
        if wants:
            try:
                data = chunk
                for t in transforms:
                    data = t.update(data)
            except IntegrityError as e:
                # Keep hashing to the end: the report below then names the
                # object and says whether it differs from its manifest.
                transform_error, wants = e, False
                continue
            if data and consumer(data) is False:
                wants = False
    if wants:
        try:
            tail = b""
            for t in transforms:
                tail = t.update(tail) if tail else b""
                tail += t.finish()
        except IntegrityError as e:
            transform_error, tail = e, b""
        if tail:
            consumer(tail)
    return transform_error


class ReadAhead(object):
    """Iterates over the chunks of ``chunks`` read (and hashed into
    ``digest``) by a background thread, a few chunks ahead of the caller.
    An exception in the thread is raised in the caller at that point of the
    stream; ``close()`` stops the thread early."""

    _END = object()

    def __init__(self, chunks, digest=None, depth=8):
        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(chunks, digest), name="drkit-read-ahead")
        self._thread.daemon = True
        self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunks, digest):
        try:
            for chunk in chunks:
                if digest is not None:
                    digest.update(chunk)
                if not self._put((chunk, None)):
                    return
            self._put((self._END, None))
        except BaseException as e:  # pylint: disable=broad-except
            self._put((None, e))  # raised where the caller reads
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is self._END:
                return
            yield item

    def close(self):
        self._stop.set()
        self._thread.join(1.0)  # a daemon: a read stuck in the network does not hold us


def read_zstd(storage, key, consumer=None, hint=None, chunks=None, hash_stored=False):
    """Read a stored zstd object back (read_stored with ZstdDecompress):
    returns (the Digest of its content, the size and, with ``hash_stored``,
    sha256 of the stored bytes); the content also goes to ``consumer``.
    For the WAL archive's objects, one segment each: no reading thread
    (starting one costs wal-fetch more than it overlaps)."""
    content = Digest()

    def take(data):
        content.update(data)
        if consumer is not None:
            consumer(data)
    stored = read_stored(storage, key, transforms=[ZstdDecompress()], consumer=take, hint=hint, chunks=chunks,
                         hash_stored=hash_stored, read_ahead=False)
    return content, stored


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
