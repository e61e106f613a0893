# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""stream.py: compression round trip, digests, read-back checks, the memory
bound of a stream through pump, and ReadAhead (real processes, a real file
backend).

stream.py: the one zstd compressor (level checked in one place, optional
frame checksum), the one decompressor and read_zstd, the read-back the WAL
archive shares with the backup pipeline.
"""

import hashlib
import io
import os
import sys
import tracemalloc

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core import stream
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, Terminated
from ansible_collections.drkit.backup.plugins.module_utils.core.process import LocalRunner
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import (
    Digest,
    PipelineSink,
    ReadAhead,
    ZstdCompress,
    ZstdDecompress,
    compressor_for,
    decompressor_for,
    pump,
    read_stored,
    read_zstd,
)
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage


def sample_bytes(n=3 << 20):
    # Mixed entropy like a dump: random runs between repetitive text.
    out = io.BytesIO()
    while out.tell() < n:
        out.write(os.urandom(4096))
        out.write(b"INSERT INTO agents VALUES (42, 'idle', '{}');\n" * 200)
    return out.getvalue()[:n]


def store(fs, key, data, transforms):
    with fs.writer(key) as w:
        sink = PipelineSink(w, transforms)
        for i in range(0, len(data), 65536):
            sink.write(data[i:i + 65536])
        sink.close()
    return sink.result()


# --------------------------------------------------------------------------
# sink round trip


@pytest.mark.parametrize("level,threads", [(1, 0), (3, 0), (3, 2), (19, 0)])
def test_zstd_round_trip_and_digests(fs, level, threads):
    data = sample_bytes(1 << 20) if level == 19 else sample_bytes()
    res = store(fs, "k", data, [ZstdCompress(level, threads)])
    stored = fs.get_bytes("k")
    assert res["raw_size"] == len(data)
    assert res["size"] == len(stored) < len(data)
    assert res["sha256"] == hashlib.sha256(stored).hexdigest()  # digest of what is stored
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data
    # and back through the engine's own reader
    out = bytearray()
    check = read_stored(fs, "k", res["size"], res["sha256"], transforms=[ZstdDecompress()],
                        consumer=out.extend)
    assert bytes(out) == data and check == {"size": res["size"], "sha256": res["sha256"]}


def test_no_transform_stores_raw(fs):
    data = os.urandom(200000)
    res = store(fs, "k", data, [None])
    assert fs.get_bytes("k") == data
    assert res == {"raw_size": len(data), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_empty_stream(fs):
    res = store(fs, "k", b"", [ZstdCompress()])
    assert res["raw_size"] == 0 and res["size"] > 0  # a valid empty zstd frame
    out = bytearray()
    read_stored(fs, "k", res["size"], res["sha256"], transforms=[ZstdDecompress()], consumer=out.extend)
    assert out == b""


def test_close_twice_emits_tail_once(fs):
    with fs.writer("k") as w:
        sink = PipelineSink(w, [ZstdCompress()])
        sink.write(b"abc" * 1000)
        sink.close()
        size = sink.stored.size
        sink.close()
        assert sink.stored.size == size
    assert zstandard.ZstdDecompressor().decompressobj().decompress(fs.get_bytes("k")) == b"abc" * 1000


def test_transforms_chain_tails(fs):
    """A later transform (e.g. encryption) receives the compressor's tail."""
    class Upper(object):
        def __init__(self):
            self.seen = bytearray()

        def update(self, data):
            self.seen += data
            return data

        def finish(self):
            return b"<END>"

    up = Upper()
    store(fs, "k", b"hello" * 100, [ZstdCompress(), up])
    stored = fs.get_bytes("k")
    assert stored.endswith(b"<END>")
    assert zstandard.ZstdDecompressor().decompressobj().decompress(bytes(up.seen)) == b"hello" * 100


@pytest.mark.parametrize("bad", [0, 20, -1])
def test_compression_level_range(bad):
    with pytest.raises(ConfigError) as e:
        ZstdCompress(bad)
    assert "compression_level must be 1-19, got %r" % bad in str(e.value) and "default 3" in str(e.value)


def test_compressor_for_and_decompressor_for():
    assert compressor_for(None) is None
    assert compressor_for({"algorithm": "none"}) is None
    assert isinstance(compressor_for({"algorithm": "zstd", "level": 5}), ZstdCompress)
    with pytest.raises(ConfigError):
        compressor_for({"algorithm": "gzip"})
    assert decompressor_for({"algorithm": "none"}) is None
    assert isinstance(decompressor_for({"algorithm": "zstd", "level": 3}), ZstdDecompress)
    with pytest.raises(IntegrityError) as e:
        decompressor_for({"algorithm": "lz4"})
    assert "upgrade drkit" in str(e.value)


# --------------------------------------------------------------------------
# read back


@pytest.fixture
def stored(fs):
    data = sample_bytes(1 << 20)
    res = store(fs, "backups/b1/database.pgdump.zst", data, [ZstdCompress()])
    path = os.path.join(fs.root, "backups", "b1", "database.pgdump.zst")
    return data, res, path


@pytest.mark.parametrize("where", ["header", "middle", "end"])
@pytest.mark.parametrize("decompress", [True, False])
def test_read_stored_detects_flipped_byte(fs, stored, where, decompress):
    _data, res, path = stored
    raw = bytearray(open(path, "rb").read())
    pos = {"header": 5, "middle": len(raw) // 2, "end": len(raw) - 3}[where]
    raw[pos] ^= 0x01
    with open(path, "wb") as fh:
        fh.write(raw)
    with pytest.raises(IntegrityError) as e:
        read_stored(fs, "backups/b1/database.pgdump.zst", res["size"], res["sha256"],
                    transforms=[ZstdDecompress()] if decompress else [],
                    consumer=(lambda d: None) if decompress else None)
    msg = str(e.value)
    assert "backups/b1/database.pgdump.zst" in msg and fs.describe() in msg
    assert "sha256" in msg and res["sha256"] in msg
    assert "use another backup" in msg


def test_read_stored_detects_truncation(fs, stored):
    _data, res, path = stored
    with open(path, "r+b") as fh:
        fh.truncate(res["size"] // 2)
    with pytest.raises(IntegrityError) as e:
        read_stored(fs, "backups/b1/database.pgdump.zst", res["size"], res["sha256"],
                    transforms=[ZstdDecompress()], consumer=lambda d: None)
    msg = str(e.value)
    assert "backups/b1/database.pgdump.zst" in msg
    assert "size %d bytes, manifest says %d" % (res["size"] // 2, res["size"]) in msg


def test_truncated_zstd_detected_even_without_expected_digest(fs, stored):
    _data, res, path = stored
    with open(path, "r+b") as fh:
        fh.truncate(res["size"] - 10)
    with pytest.raises(IntegrityError) as e:
        read_stored(fs, "backups/b1/database.pgdump.zst", transforms=[ZstdDecompress()],
                    consumer=lambda d: None)
    assert "backups/b1/database.pgdump.zst" in str(e.value) and "truncated" in str(e.value)


def test_read_stored_missing_object(fs):
    from ansible_collections.drkit.backup.plugins.module_utils.core.errors import NotFoundError
    with pytest.raises(NotFoundError) as e:
        read_stored(fs, "backups/nope/x", 1, "00")
    assert "backups/nope/x" in str(e.value)


def test_consumer_may_stop_early_but_hashing_goes_on(fs, stored):
    data, res, path = stored
    got = []

    def consumer(chunk):
        got.append(len(chunk))
        return False  # like pg_restore --list closing stdin after the TOC

    read_stored(fs, "backups/b1/database.pgdump.zst", res["size"], res["sha256"],
                transforms=[ZstdDecompress()], consumer=consumer)
    assert len(got) == 1
    # A corruption after the point where the consumer stopped is still caught.
    raw = bytearray(open(path, "rb").read())
    raw[-3] ^= 0xFF
    with open(path, "wb") as fh:
        fh.write(raw)
    with pytest.raises(IntegrityError):
        read_stored(fs, "backups/b1/database.pgdump.zst", res["size"], res["sha256"],
                    transforms=[ZstdDecompress()], consumer=consumer)


# --------------------------------------------------------------------------
# pump


def test_memory_stays_bounded_while_streaming():
    """64 MiB through pump -> zstd -> writer: Python-side allocations stay
    around one chunk, not the stream size."""
    class NullWriter(object):
        size = 0

        def write(self, data):
            self.size += len(data)

    r = LocalRunner()
    code = "import os, sys\nfor _ in range(64): sys.stdout.buffer.write(os.urandom(1 << 16) * 16)"
    tracemalloc.start()
    try:
        with r.spawn([sys.executable, "-c", code]) as h:
            sink = PipelineSink(NullWriter(), [ZstdCompress(1)])
            assert pump(h.stdout, sink) == 64 << 20
            sink.close()
            assert h.wait(30) == 0
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.result()["raw_size"] == 64 << 20
    assert peak < 8 << 20, "peak %d bytes" % peak


# --------------------------------------------------------------------------
# ReadAhead: the reading thread behind read_stored


def test_read_ahead_keeps_order_and_hashes_everything():
    chunks = [os.urandom(1000 + i) for i in range(50)]
    digest = Digest()
    ahead = ReadAhead(iter(chunks), digest, depth=2)
    assert list(ahead) == chunks
    ahead.close()
    whole = b"".join(chunks)
    assert digest.size == len(whole)
    assert digest.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_read_ahead_raises_the_readers_error_where_it_happened():
    def source():
        yield b"one"
        yield b"two"
        raise IntegrityError("storage went away after two chunks")

    ahead = ReadAhead(source())
    got = []
    with pytest.raises(IntegrityError) as e:
        for chunk in ahead:
            got.append(chunk)
    ahead.close()
    assert got == [b"one", b"two"]
    assert "after two chunks" in str(e.value)


def test_read_ahead_close_stops_the_reader_and_closes_the_source():
    state = {"read": 0, "closed": False}

    def source():
        try:
            while True:
                state["read"] += 1
                yield b"x" * 10
        finally:
            state["closed"] = True

    ahead = ReadAhead(source(), depth=3)
    it = iter(ahead)
    assert next(it) == b"x" * 10
    ahead.close()
    assert not ahead._thread.is_alive()
    assert state["closed"] is True
    assert state["read"] < 10  # it stopped a few chunks ahead, not at the end of an endless source


def compress(data, **kw):
    c = ZstdCompress(**kw)
    return c.update(data) + c.finish()


@pytest.mark.parametrize("level", [0, 20, -1, "x"])
def test_the_level_is_checked_in_the_compressor(level):
    with pytest.raises((ConfigError, ValueError)):
        ZstdCompress(level)


def test_checksum_puts_a_content_checksum_in_the_frame():
    data = os.urandom(1000) * 50
    assert zstandard.get_frame_parameters(compress(data, checksum=True)).has_checksum
    assert not zstandard.get_frame_parameters(compress(data)).has_checksum
    # the same frame as the level-based compressor the WAL archive used before
    old = zstandard.ZstdCompressor(level=3, write_checksum=True).compressobj()
    assert compress(data, level=3, checksum=True) == old.compress(data) + old.flush()


@pytest.fixture
def fs(tmp_path):
    return FileStorage(str(tmp_path / "root"))


def test_read_zstd_gives_the_content_digest_and_the_stored_one(fs):
    data = os.urandom(3 << 20)
    frame = compress(data, checksum=True)
    fs.put_bytes("wal/x.zst", frame)
    got = bytearray()
    content, stored = read_zstd(fs, "wal/x.zst", got.extend, hash_stored=True)
    assert bytes(got) == data and content.size == len(data)
    assert content.hexdigest() == hashlib.sha256(data).hexdigest()
    assert stored == {"size": len(frame), "sha256": hashlib.sha256(frame).hexdigest()}
    # wal-fetch needs no sha256 of the stored bytes: they are only counted
    assert read_zstd(fs, "wal/x.zst")[1] == {"size": len(frame), "sha256": None}


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_read_zstd_names_the_object_and_takes_the_callers_hint(fs, damage):
    data = os.urandom(100000)
    frame = compress(data, checksum=True)
    if damage == "truncated":
        frame = frame[:len(frame) // 2]
    else:
        frame = frame[:-2] + bytes([frame[-2] ^ 0xFF]) + frame[-1:]  # the content checksum
    fs.put_bytes("wal/x.zst", frame)
    with pytest.raises(IntegrityError) as exc:
        read_zstd(fs, "wal/x.zst", hint="see docs/pitr.md")
    assert "wal/x.zst" in str(exc.value) and damage in str(exc.value)
    assert exc.value.hint == "see docs/pitr.md"


class _Interrupted(object):
    def decompress(self, _data):
        raise Terminated("Interrupted by signal 15")


def test_an_interrupt_while_decompressing_is_not_corruption(monkeypatch):
    d = ZstdDecompress()
    monkeypatch.setattr(d, "_d", _Interrupted())
    with pytest.raises(Terminated):
        d.update(b"anything")


def test_default_level_is_the_one_constant():
    assert ZstdCompress().level == stream.DEFAULT_LEVEL == 3
