# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pipeline.py: compression round trip, digests, read-back checks, the
local runner and its helpers (real processes, a real file backend)."""

import hashlib
import io
import os
import sys
import tracemalloc

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core.process import (BackgroundReader, LocalRunner,
                                                                                ProcessFeeder, STDERR_LIMIT)
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import (Digest, PipelineSink, ReadAhead,
                                                                               ZstdCompress, ZstdDecompress,
                                                                               compressor_for, decompressor_for, pump,
                                                                               read_stored)
from ansible_collections.drkit.backup.plugins.module_utils.core.tar import TarStreamExtractor
from ansible_collections.drkit.backup.plugins.module_utils.storage import file as st
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, ToolError


@pytest.fixture
def fs(tmp_path):
    return st.FileStorage(str(tmp_path / "root"))


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
    assert "between 1 and 19" in str(e.value)


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
# runner, pump, feeder


def test_spawn_streams_stdout_and_collects_stderr(fs):
    r = LocalRunner()
    code = "import sys; sys.stdout.buffer.write(b'x' * 3000000); sys.stderr.write('warning: note\\n')"
    with r.spawn([sys.executable, "-c", code]) as h:
        with fs.writer("k") as w:
            sink = PipelineSink(w, [])
            assert pump(h.stdout, sink) == 3000000
            sink.close()
        assert h.wait(10) == 0
        assert h.stderr_text() == "warning: note\n"
        assert h.name == os.path.basename(sys.executable)
    assert fs.stat("k").size == 3000000


def test_spawn_env_is_added_not_replacing():
    r = LocalRunner()
    rc, out, err = r.run([sys.executable, "-c", "import os; print(os.environ['DRKIT_X'], 'PATH' in os.environ)"],
                         env={"DRKIT_X": "1"})
    assert (rc, out, err) == (0, b"1 True\n", "")


def test_chatty_stderr_never_blocks_and_is_bounded():
    r = LocalRunner()
    code = "import sys; sys.stderr.write('e' * 1000000); print('done')"
    with r.spawn([sys.executable, "-c", code]) as h:
        assert h.stdout.read() == b"done\n"
        assert h.wait(20) == 0
        assert len(h.stderr_text()) == STDERR_LIMIT


def test_missing_tool_is_a_tool_error():
    with pytest.raises(ToolError) as e:
        LocalRunner().spawn(["/nonexistent/pg_dump"])
    assert "Could not start /nonexistent/pg_dump" in str(e.value) and "pg_bin_dir" in str(e.value)
    with pytest.raises(ToolError):
        LocalRunner().run(["/nonexistent/pg_dump"])


def test_run_timeout():
    with pytest.raises(ToolError) as e:
        LocalRunner().run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert "did not finish within 0.5 s" in str(e.value)


def test_close_terminates_a_running_producer():
    h = LocalRunner().spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    h.close()
    assert h.returncode is not None and h.returncode < 0


def test_process_feeder_stops_quietly_when_consumer_closes_stdin():
    r = LocalRunner()
    # Reads 10 bytes then exits: later writes hit a closed pipe.
    h = r.spawn([sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read(10))"],
                stdin=True)
    with h:
        reader = BackgroundReader(h.stdout)
        reader.start()
        feeder = ProcessFeeder(h)
        results = [feeder(b"y" * 65536) for _i in range(200)]
        feeder.close()
        assert h.wait(10) == 0
        reader.join(10)
    assert results[-1] is False and feeder.open is False
    assert bytes(reader.data) == b"y" * 10


def test_background_reader_limit():
    r = LocalRunner()
    with r.spawn([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'z' * 500000)"]) as h:
        reader = BackgroundReader(h.stdout, limit=1000)
        reader.start()
        reader.join(10)
        h.wait(10)
    assert len(reader.data) == 1000 and reader.truncated


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
# TarStreamExtractor: one unpacker for dump directories and AOF archives


def _tar_bytes(members):
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
    return buf.getvalue()


def _run_extractor(ex, data, chunk=4096):
    ex.start()
    fed_all = True
    try:
        for i in range(0, len(data), chunk):
            if ex.feed(data[i:i + chunk]) is False:
                fed_all = False
                break
    finally:
        ex.close()
        ex.join(10)
    return fed_all


def test_tar_extractor_unpacks_plain_files_under_prefix(tmp_path):
    data = _tar_bytes([("dump/toc.dat", b"t" * 5000, "file"), ("dump/3001.dat", b"d" * 70000, "file")])
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    assert _run_extractor(ex, data) is True
    assert ex.error is None and ex.names == ["toc.dat", "3001.dat"]
    assert (tmp_path / "out" / "3001.dat").read_bytes() == b"d" * 70000
    assert oct((tmp_path / "out" / "toc.dat").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("member", [
    ("dump/../escape", b"x", "file"), ("other/file", b"x", "file"), ("dump/sub/file", b"x", "file"),
    ("dump/link", b"", "link"),
])
def test_tar_extractor_refuses_anything_but_plain_files_under_prefix(tmp_path, member):
    data = _tar_bytes([member, ("dump/toc.dat", b"t", "file")])
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    _run_extractor(ex, data)
    assert isinstance(ex.error, IntegrityError) and "Unexpected member" in str(ex.error)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "link").exists()


def test_tar_extractor_only_stops_reading_once_its_names_are_out(tmp_path):
    big = bytes(bytearray(range(256))) * 8192  # 2 MiB after toc.dat: more than a pipe holds
    data = _tar_bytes([("dump/toc.dat", b"toc", "file"), ("dump/4000.dat", big, "file")])
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/", only=["toc.dat"])
    assert _run_extractor(ex, data) is False  # the feeder was told to stop
    assert ex.error is None and ex.names == ["toc.dat"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["toc.dat"]


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
