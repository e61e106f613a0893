# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_archive.py: wal-push checks a segment's header against its name and
the archive's cluster, wal-fetch round trip and prefetching.

wal_archive.py on the shared stream pieces: push and fetch compress and
read back through core.stream (ZstdCompress with a frame checksum,
read_zstd), write %p with atomic_writer, and an interrupt stays an
interrupt.
"""

import os

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core import stream
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    Terminated,
)
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import (
    PREFETCH_DIR,
    WalMissing,
    fetch_file,
    push_file,
    wal_fetch,
)
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import segment_name, wal_key
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage
from support.unit_helpers import SEG, long_header


def test_push_checks_header_against_name_and_cluster(tmp_path):
    st = storage.open_storage("file://%s/a" % tmp_path)
    seg = tmp_path / "000000010000000000000002"
    seg.write_bytes(long_header() + os.urandom(1024) + b"\0" * (SEG - 8192 - 1024))
    res = push_file(st, str(seg), seg.name)
    assert res["status"] == "stored"
    assert push_file(st, str(seg), seg.name)["status"] == "exists"
    # other cluster
    other = tmp_path / "000000010000000000000003"
    other.write_bytes(long_header(sysid=42, segno=3) + b"\0" * (SEG - 8192))
    with pytest.raises(ConflictError):
        push_file(st, str(other), other.name)
    assert st.stat(wal_key(other.name)) is None
    # wrong size
    short = tmp_path / "000000010000000000000004"
    short.write_bytes(long_header(segno=4) + b"\0" * 100)
    with pytest.raises(IntegrityError):
        push_file(st, str(short), short.name)
    # fetch round trip
    out = tmp_path / "RECOVERYXLOG"
    fetch_file(st, seg.name, str(out))
    assert out.read_bytes() == seg.read_bytes()
    with pytest.raises(WalMissing) as exc:
        wal_fetch({"storage_url": "file://%s/a" % tmp_path}, "000000010000000000000009", str(out) + "x")
    assert exc.value.exit_code == 1


def test_fetch_prefetches_the_next_segments(tmp_path):
    url = "file://%s/a" % tmp_path
    st = storage.open_storage(url)
    for n in range(2, 6):
        seg = tmp_path / segment_name(1, n)
        seg.write_bytes(long_header(segno=n) + os.urandom(512) + b"\0" * (SEG - 8192 - 512))
        push_file(st, str(seg), seg.name)
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    target = pg_wal / "RECOVERYXLOG"
    _c, res = wal_fetch({"storage_url": url, "prefetch": 3}, "000000010000000000000002", str(target))
    assert target.read_bytes() == (tmp_path / "000000010000000000000002").read_bytes()
    assert sorted(res["prefetched"]) == ["000000010000000000000003", "000000010000000000000004",
                                         "000000010000000000000005"]  # 6 is not archived: skipped quietly
    target.unlink()
    # served from the prefetch directory without opening the storage at all
    _c, res = wal_fetch({"storage_url": "s3://no-such-bucket/x", "endpoint_url": "http://127.0.0.1:9"},
                        "000000010000000000000003", str(target))
    assert res["status"] == "prefetched"
    assert target.read_bytes() == (tmp_path / "000000010000000000000003").read_bytes()
    assert sorted(os.listdir(str(pg_wal / PREFETCH_DIR))) == ["000000010000000000000004",
                                                              "000000010000000000000005"]
    with pytest.raises(WalMissing):
        wal_fetch({"storage_url": url, "prefetch": 2}, "000000010000000000000006", str(pg_wal / "X"))


NAME = "000000010000000000000002"


def segment(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(long_header() + os.urandom(4096) + b"\0" * (SEG - 8192 - 4096))
    return path


def test_push_stores_one_checksummed_frame_and_fetch_gives_it_back(tmp_path):
    st = FileStorage(str(tmp_path / "archive"))
    seg = segment(tmp_path)
    res = push_file(st, str(seg), NAME, compression_level=None)  # None: the default level
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


# --------------------------------------------------------------------------
# racing writers: a second push of the same name lands between this push's
# "is the name free?" and its write (two clusters archiving into one
# repository, a restored copy still archiving)


def unzstd(data):
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


class SecondPushBeforeCommit(FileStorage):
    """Before the first commit of a WAL key, another push of ``other``
    under the same name runs to completion: the interleaving that lost WAL."""

    def __init__(self, root, other):
        super(SecondPushBeforeCommit, self).__init__(root)
        self.other = other
        self.other_result = None

    def writer(self, key, *args, **kwargs):
        w = super(SecondPushBeforeCommit, self).writer(key, *args, **kwargs)
        if key == wal_key(NAME) and self.other is not None:
            commit = w.commit

            def commit_after_the_other_push():
                other, self.other = self.other, None
                self.other_result = push_file(self, str(other), NAME)
                commit()
            w.commit = commit_after_the_other_push
        return w


def test_a_push_that_loses_the_race_to_different_content_is_refused(tmp_path):
    mine = segment(tmp_path)
    other = tmp_path / "other" / NAME
    other.parent.mkdir()
    other.write_bytes(long_header() + os.urandom(4096) + b"\0" * (SEG - 8192 - 4096))
    st = SecondPushBeforeCommit(str(tmp_path / "archive"), other)
    with pytest.raises(ConflictError) as e:
        push_file(st, str(mine), NAME)
    assert e.value.exit_code == 5 and "different content" in str(e.value) and "left untouched" in str(e.value)
    assert st.other_result["status"] == "stored"  # the other push was acknowledged: its WAL must stay
    assert unzstd(st.get_bytes(wal_key(NAME))) == other.read_bytes()
    assert os.listdir(str(tmp_path / "archive" / "wal" / NAME[:8])) == [NAME + ".zst"]


def test_a_push_that_loses_the_race_to_identical_content_succeeds(tmp_path):
    mine = segment(tmp_path)
    same = tmp_path / "same" / NAME
    same.parent.mkdir()
    same.write_bytes(mine.read_bytes())
    st = SecondPushBeforeCommit(str(tmp_path / "archive"), same)
    res = push_file(st, str(mine), NAME)
    assert res["status"] == "exists" and st.other_result["status"] == "stored"
    assert unzstd(st.get_bytes(wal_key(NAME))) == mine.read_bytes()


class ReplacedAfterCommit(FileStorage):
    """After this push's write, the object under the key holds other bytes
    (storage damage, or a server that ignored the create-only condition)."""

    def __init__(self, root, replacement):
        super(ReplacedAfterCommit, self).__init__(root)
        self.replacement = replacement

    def writer(self, key, *args, **kwargs):
        w = super(ReplacedAfterCommit, self).writer(key, *args, **kwargs)
        if key == wal_key(NAME):
            commit = w.commit

            def commit_then_replace():
                commit()
                with FileStorage.writer(self, key) as other:  # a plain replacing write
                    other.write(self.replacement)
            w.commit = commit_then_replace
        return w


def test_a_read_back_mismatch_is_reported_and_nothing_is_deleted(tmp_path):
    other = zstandard.ZstdCompressor(write_checksum=True).compress(b"another writer's segment")
    st = ReplacedAfterCommit(str(tmp_path / "archive"), other)
    with pytest.raises(IntegrityError) as e:
        push_file(st, str(segment(tmp_path)), NAME)
    assert st.stat(wal_key(NAME)) is not None, "deleted"  # it may not be this push's: never deleted
    assert st.get_bytes(wal_key(NAME)) == other
    assert "different content than was uploaded" in str(e.value) and "Nothing was deleted" in str(e.value)


def test_restore_command_exit_codes_stay_below_126():
    """PostgreSQL aborts recovery when restore_command exits above 125 or is
    killed by a signal (other than SIGTERM, its own shutdown); every error
    of drkit's own is a code from 1 to 10 (Terminated, 143, only on SIGTERM/SIGHUP)."""
    from ansible_collections.drkit.backup.plugins.module_utils.core import errors

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    codes = dict((c.__name__, c.exit_code) for c in subclasses(errors.DrkitError))
    assert errors.Terminated.exit_code == 143 and "Terminated" not in codes  # an interrupt, not an error
    assert codes and all(1 <= code <= 125 for code in codes.values()), codes
