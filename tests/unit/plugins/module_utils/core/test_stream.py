# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""stream.py: the one zstd compressor (level checked in one place, optional
frame checksum), the one decompressor and read_zstd, the read-back the WAL
archive shares with the backup pipeline."""

import hashlib
import os

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core import stream
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError, Terminated
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import (ZstdCompress, ZstdDecompress,
                                                                              read_zstd)
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage


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
