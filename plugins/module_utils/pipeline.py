# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The streaming data path.

    producer (process stdout, file, tar stream...)
      -> transforms (zstd compression, later age encryption)
      -> digest (sha256 + byte count of what is stored)
      -> storage writer

Only one chunk (about 1 MiB) plus the compressor's window and the storage
writer's in-flight parts is ever held in memory.

Producers run behind a small runner interface (``LocalRunner.spawn``) so that
a runner which executes inside a container (``docker exec`` through the
Docker API) can replace it without touching the rest of the pipeline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import queue
import shutil
import subprocess
import tarfile
import tempfile
import threading

from .errors import ConfigError, DrkitError, IntegrityError, ToolError

CHUNK = 1 << 20
STDERR_LIMIT = 64 << 10


def _zstd():
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("Compression needs the Python library zstandard",
                          "Install it (pip install zstandard) in the Python that runs drkit")
    return zstandard


# --------------------------------------------------------------------------
# Runners and process handles


class ProcessHandle(object):
    """A running producer/consumer process. ``stdout``/``stdin`` are binary
    file objects (or None); stderr is collected to a temp file so a chatty
    tool can never block on a full pipe."""

    def __init__(self, argv, popen, stderr_file):
        self.argv = list(argv)
        self.name = os.path.basename(argv[0])
        self._p = popen
        self._stderr = stderr_file
        self.stdout = popen.stdout
        self.stdin = popen.stdin
        self.pid = popen.pid

    def poll(self):
        return self._p.poll()

    def wait(self, timeout=None):
        try:
            return self._p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ToolError("%s did not finish within %s s" % (self.name, timeout))

    @property
    def returncode(self):
        return self._p.returncode

    def stderr_text(self):
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            data = self._stderr.read(STDERR_LIMIT)
        except (OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace")

    def terminate(self):
        if self._p.poll() is None:
            try:
                self._p.terminate()
                self._p.wait(10)
            except subprocess.TimeoutExpired:
                self._p.kill()
                self._p.wait()
            except OSError:
                pass

    def close(self):
        self.terminate()
        for f in (self._p.stdout, self._p.stdin):
            if f is not None:
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
        try:
            self._stderr.close()
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _grow_pipe(fileobj):
    # A 1 MiB pipe halves the number of syscalls/wakeups on a fast producer.
    try:
        import fcntl  # pylint: disable=import-outside-toplevel
        fcntl.fcntl(fileobj.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
    except (ImportError, OSError, ValueError, AttributeError):
        pass


class LocalRunner(object):
    """Runs tools as local processes, always from an argument list."""

    description = "local"

    def spawn(self, argv, env=None, stdin=False, stdout=True, cwd=None):
        stderr_file = tempfile.TemporaryFile(prefix="drkit-stderr-")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            p = subprocess.Popen(
                list(argv), env=full_env, cwd=cwd, close_fds=True,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=stderr_file)
        except OSError as e:
            stderr_file.close()
            raise ToolError("Could not start %s: %s" % (argv[0], e.strerror or e),
                            "Install it or set the path to its binaries (pg_bin_dir / PATH)")
        if stdout:
            _grow_pipe(p.stdout)
        if stdin:
            _grow_pipe(p.stdin)
        return ProcessHandle(argv, p, stderr_file)

    def run(self, argv, env=None, input_data=None, timeout=None, cwd=None):
        """Run to completion; returns (returncode, stdout bytes, stderr text)."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            p = subprocess.run(list(argv), env=full_env, input=input_data, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout, close_fds=True, check=False)
        except OSError as e:
            raise ToolError("Could not start %s: %s" % (argv[0], e.strerror or e),
                            "Install it or set the path to its binaries (pg_bin_dir / PATH)")
        except subprocess.TimeoutExpired:
            raise ToolError("%s did not finish within %s s" % (os.path.basename(argv[0]), timeout))
        return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Transforms: update(bytes) -> bytes, finish() -> bytes


class ZstdCompress(object):
    name = "zstd"

    def __init__(self, level=3, threads=0):
        zstd = _zstd()
        if not 1 <= int(level) <= 19:
            raise ConfigError("compression_level must be between 1 and 19, got %r" % level)
        self.level = int(level)
        self.threads = int(threads)
        params = zstd.ZstdCompressionParameters.from_level(self.level, threads=self.threads)
        self._c = zstd.ZstdCompressor(compression_params=params).compressobj()

    def update(self, data):
        return self._c.compress(data)

    def finish(self):
        return self._c.flush()

    def describe(self):
        return {"algorithm": "zstd", "level": self.level}


class ZstdDecompress(object):
    name = "zstd"

    def __init__(self):
        zstd = _zstd()
        self._d = zstd.ZstdDecompressor().decompressobj()
        self._fed = False

    def update(self, data):
        self._fed = self._fed or bool(data)
        try:
            return self._d.decompress(data)
        except DrkitError:
            raise  # e.g. Terminated from a signal handler: an interrupt, not corruption
        except Exception as e:  # pylint: disable=broad-except
            raise IntegrityError("The stored data is not a valid zstd stream: %s" % e,
                                 "The object is corrupt; use another backup")

    def finish(self):
        # A truncated object decompresses without error up to the cut: only
        # the missing end-of-frame tells.
        if self._fed and not getattr(self._d, "eof", True):
            raise IntegrityError("The stored data ends in the middle of its zstd stream",
                                 "The object is truncated; use another backup")
        return b""


def compressor_for(compression):
    """compression: dict(algorithm, level, threads) or None/'none'."""
    if not compression or compression.get("algorithm", "zstd") == "none":
        return None
    if compression.get("algorithm", "zstd") != "zstd":
        raise ConfigError("Unsupported compression %r" % compression.get("algorithm"),
                          "Use zstd or none")
    return ZstdCompress(compression.get("level", 3), compression.get("threads", 0))


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

    def __init__(self, writer, transforms=()):
        self._writer = writer
        self._transforms = [t for t in transforms if t is not None]
        self.raw = _Counter()
        self.stored = Digest()
        self.closed = False

    def _emit(self, data):
        if data:
            self.stored.update(data)
            self._writer.write(data)

    def write(self, data):
        n = len(data)
        self.raw.update(data)
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

    def flush(self):
        pass

    def writable(self):
        return True

    def result(self):
        return {"raw_size": self.raw.size, "size": self.stored.size,
                "sha256": self.stored.hexdigest()}


class _Counter(object):
    def __init__(self):
        self.size = 0

    def update(self, data):
        self.size += len(data)


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


def read_stored(storage, key, expected_size=None, expected_sha256=None, transforms=(), consumer=None):
    """Stream an object back from storage, checking its sha256 and size.

    Each raw chunk goes through ``transforms`` (decryption, decompression)
    and then to ``consumer(bytes)`` (e.g. pg_restore's stdin).  A consumer may
    return False to say it wants no more data; hashing goes on to the end.
    Raises IntegrityError naming the object and what differed."""
    digest = Digest()
    transforms = [t for t in transforms if t is not None]
    wants = consumer is not None
    chunks = storage.iter_read(key)
    if wants and transforms:
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
            key, storage.describe(), transform_error.message), transform_error.hint)
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


class ProcessFeeder(object):
    """consumer() that writes into a process's stdin and stops quietly when
    the process closes it (pg_restore --list stops after the TOC)."""

    def __init__(self, handle):
        self.handle = handle
        self.open = True
        self.fed = 0

    def __call__(self, data):
        if not self.open:
            return False
        try:
            self.handle.stdin.write(data)
            self.fed += len(data)
        except (BrokenPipeError, ValueError, OSError):
            self.open = False
            return False
        return True

    def close(self):
        if self.open:
            try:
                self.handle.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            self.open = False


class BackgroundReader(threading.Thread):
    """Drains a process's stdout into a bounded buffer, for short outputs such
    as ``pg_restore --list`` run while we feed its stdin."""

    def __init__(self, fileobj, limit=64 << 20):
        super(BackgroundReader, self).__init__()
        self.daemon = True
        self._f = fileobj
        self._limit = limit
        self.data = bytearray()
        self.truncated = False

    def run(self):
        while True:
            try:
                chunk = self._f.read(CHUNK)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            room = self._limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.truncated = True


class TarStreamExtractor(threading.Thread):
    """Unpacks a tar stream written to feed() into out_dir, in a thread, so a
    stored archive is unpacked while it is read back and hashed.

    Only plain files directly under ``prefix`` are accepted; anything else
    (links, directories, paths with '/' or '..') is an IntegrityError, so a
    tampered archive cannot write outside out_dir. With ``only``, just those
    names are extracted and reading stops once they are out: feed() then
    returns False and the caller stops decompressing but goes on hashing."""

    def __init__(self, out_dir, prefix, only=None):
        super(TarStreamExtractor, self).__init__()
        self.daemon = True
        self.out_dir = out_dir
        self.prefix = prefix
        self.only = set(only) if only is not None else None
        r, w = os.pipe()
        self._r = os.fdopen(r, "rb")
        self._w = os.fdopen(w, "wb")
        self._open = True
        self.error = None
        self.names = []

    def feed(self, data):
        if not self._open:
            return False
        try:
            self._w.write(data)
        except (BrokenPipeError, OSError, ValueError):
            self._open = False
            return False
        return True

    def close(self):
        self._open = False
        try:
            self._w.close()
        except (OSError, ValueError):
            pass

    def run(self):
        try:
            if not os.path.isdir(self.out_dir):
                os.makedirs(self.out_dir, 0o700)
            with tarfile.open(fileobj=self._r, mode="r|") as tar:
                for member in tar:
                    name = member.name[len(self.prefix):] if member.name.startswith(self.prefix) else ""
                    if not member.isfile() or not name or "/" in name or name in (".", ".."):
                        raise IntegrityError("Unexpected member %r in the archive" % member.name)
                    if self.only is not None and name not in self.only:
                        continue
                    fd = os.open(os.path.join(self.out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(tar.extractfile(member), out, CHUNK)
                    self.names.append(name)
                    if self.only is not None and self.only <= set(self.names):
                        return  # the read end closes below: the feeder stops
        except Exception as e:  # pylint: disable=broad-except
            self.error = e
            # Drain so the writer side never blocks on a full pipe.
            try:
                while self._r.read(CHUNK):
                    pass
            except (OSError, ValueError):
                pass
        finally:
            self._r.close()
