# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_archive.py on the shared stream pieces: push and fetch compress and
read back through core.stream (ZstdCompress with a frame checksum,
read_zstd), write %p with atomic_writer, and an interrupt stays an
interrupt."""

import os
import struct

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core import stream
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, IntegrityError,
                                                                              Terminated)
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import fetch_file, push_file
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import wal_key
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage

SEG = 16 << 20
NAME = "000000010000000000000002"


def segment(tmp_path):
    head = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, 2 * SEG, 0, 7712224962849331826, SEG, 8192)
    path = tmp_path / NAME
    path.write_bytes(head + os.urandom(4096) + b"\0" * (SEG - len(head) - 4096))
    return path


def test_push_stores_one_checksummed_frame_and_fetch_gives_it_back(tmp_path):
    st = FileStorage(str(tmp_path / "archive"))
    seg = segment(tmp_path)
    res = push_file(st, str(seg), NAME, compression_level=None)  # None/0: the default level
    stored = st.get_bytes(wal_key(NAME))
    assert res["status"] == "stored" and res["stored_size"] == len(stored)
    assert zstandard.get_frame_parameters(stored).has_checksum
    out = tmp_path / "pg_wal" / "RECOVERYXLOG"
    out.parent.mkdir()
    got = fetch_file(st, NAME, str(out))
    assert out.read_bytes() == seg.read_bytes() and got["raw_sha256"] == res["raw_sha256"]
    assert os.listdir(str(out.parent)) == ["RECOVERYXLOG"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_push_refuses_a_bad_level_before_storing_anything(tmp_path):
    st = FileStorage(str(tmp_path / "archive"))
    with pytest.raises(ConfigError):
        push_file(st, str(segment(tmp_path)), NAME, compression_level=25)
    assert st.stat(wal_key(NAME)) is None


def test_fetch_of_a_damaged_copy_writes_nothing(tmp_path):
    st = FileStorage(str(tmp_path / "archive"))
    push_file(st, str(segment(tmp_path)), NAME)
    good = st.get_bytes(wal_key(NAME))
    st.put_bytes(wal_key(NAME), good[:len(good) // 2])
    out = tmp_path / "pg_wal" / "RECOVERYXLOG"
    out.parent.mkdir()
    with pytest.raises(IntegrityError) as exc:
        fetch_file(st, NAME, str(out))
    assert "truncated" in str(exc.value) and "docs/pitr.md" in str(exc.value)
    assert os.listdir(str(out.parent)) == []


class _InterruptingZstd(object):
    """zstandard, except that decompressing is interrupted by SIGTERM (the
    handler of core.signals raises Terminated where Python code runs)."""

    class ZstdDecompressor(object):
        def decompressobj(self):
            return self

        def decompress(self, _data):
            raise Terminated("Interrupted by signal 15")

    def __getattr__(self, name):
        return getattr(zstandard, name)


def test_an_interrupted_fetch_is_an_interrupt_not_a_corrupt_archive(tmp_path, monkeypatch):
    st = FileStorage(str(tmp_path / "archive"))
    push_file(st, str(segment(tmp_path)), NAME)
    monkeypatch.setattr(stream, "zstd_module", _InterruptingZstd)
    out = tmp_path / "RECOVERYXLOG"
    with pytest.raises(Terminated):  # exit 143, not IntegrityError's "corrupt" (exit 8)
        fetch_file(st, NAME, str(out))
    assert not out.exists()
