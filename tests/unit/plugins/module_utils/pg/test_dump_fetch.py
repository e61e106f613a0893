# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""dump_fetch.py: the restore's background download
(ArtifactFetch.start/follow/wait) on a real file backend.

follow() must hand over exactly the bytes of the artifact, in order, while
they arrive; a consumer that stops early stops only itself; a damaged
artifact fails wait() naming what differed; cleanup() cancels a running
download and removes what it wrote."""

import hashlib
import os
import threading
import time

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.dump_fetch import ArtifactFetch
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf

BACKUP_ID = "20260101T000000Z-pg-logical-abcdef"


def stored_backup(fs, data, compressed):
    """A pg_logical manifest with one custom-format artifact holding data."""
    name = "database.pgdump.zst" if compressed else "database.pgdump"
    body = zstandard.ZstdCompressor().compress(data) if compressed else data
    with fs.writer(mf.artifact_key(BACKUP_ID, name)) as w:
        w.write(body)
    man = mf.Manifest.new(BACKUP_ID, "pg_logical", mf.utcnow(), {"database": "x"},
                          compression={"algorithm": "zstd", "level": 3} if compressed else None,
                          options={"format": "custom"})
    man.add_artifact(name, len(body), hashlib.sha256(body).hexdigest(), compressed=compressed)
    return man


@pytest.mark.parametrize("compressed", [False, True])
def test_follow_hands_over_exactly_the_artifact_and_wait_gives_the_checked_file(fs, tmp_path, compressed):
    data = os.urandom(3 << 20) + b"tail" * 1000
    work = tmp_path / "work"
    work.mkdir()
    fetch = ArtifactFetch(fs, stored_backup(fs, data, compressed), str(work))
    fetch.start()
    assert fetch.started
    got = []
    fetch.follow(got.append, chunk=65536)
    assert b"".join(got) == data
    path = fetch.wait()
    assert fetch.finish() == path
    with open(path, "rb") as fh:
        assert fh.read() == data
    assert os.path.dirname(os.path.dirname(path)) == str(work)
    fetch.cleanup()
    assert list(work.iterdir()) == []


def test_a_consumer_that_stops_early_does_not_stop_the_download(fs, tmp_path):
    data = os.urandom(2 << 20)
    fetch = ArtifactFetch(fs, stored_backup(fs, data, False), str(tmp_path))
    fetch.start()
    seen = []

    def first_chunk_only(chunk):
        seen.append(chunk)
        return False

    fetch.follow(first_chunk_only, chunk=4096)
    assert len(seen) == 1 and seen[0] == data[:len(seen[0])]
    with open(fetch.finish(), "rb") as fh:
        assert fh.read() == data
    fetch.cleanup()


def test_a_flipped_byte_fails_finish_after_the_file_is_complete(fs, tmp_path):
    data = os.urandom(1 << 20)
    man = stored_backup(fs, data, False)
    key = mf.artifact_key(BACKUP_ID, "database.pgdump")
    path = os.path.join(fs.root, key)
    with open(path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff" if data[1000:1001] != b"\xff" else b"\x00")
    fetch = ArtifactFetch(fs, man, str(tmp_path))
    fetch.start()
    # every byte is there: pg_restore may start while sha256 runs behind, unless
    # the hash already finished (a loaded machine): then wait() says so at once
    try:
        assert os.path.getsize(fetch.wait()) == len(data)
    except IntegrityError as early:
        assert key in str(early) and "sha256" in str(early)
    # ...and the verdict, before anything is put in place, names the object and the digest
    with pytest.raises(IntegrityError) as ei:
        fetch.finish()
    assert key in str(ei.value) and "sha256" in str(ei.value) and "size" not in str(ei.value)
    with pytest.raises(IntegrityError):
        fetch.raise_failure()
    fetch.cleanup()
    assert list(tmp_path.iterdir()) == [tmp_path / "root"]


@pytest.mark.parametrize("compressed", [False, True])
def test_a_truncated_artifact_fails_wait_itself(fs, tmp_path, compressed):
    man = stored_backup(fs, os.urandom(1 << 20), compressed)
    name = man["artifacts"][0]["name"]
    path = os.path.join(fs.root, mf.artifact_key(BACKUP_ID, name))
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 100)
    fetch = ArtifactFetch(fs, man, str(tmp_path))
    fetch.start()
    fetch.follow(lambda chunk: True)  # returns when the download has ended
    with pytest.raises(IntegrityError) as ei:
        fetch.raise_failure()
    assert "size" in str(ei.value) and name in str(ei.value)
    with pytest.raises(IntegrityError):
        fetch.wait()
    fetch.cleanup()


def test_a_missing_artifact_fails_wait(fs, tmp_path):
    man = stored_backup(fs, b"x" * 1000, False)
    os.unlink(os.path.join(fs.root, mf.artifact_key(BACKUP_ID, "database.pgdump")))
    fetch = ArtifactFetch(fs, man, str(tmp_path))
    fetch.start()
    with pytest.raises(IntegrityError) as ei:
        fetch.wait()
    assert "is missing" in str(ei.value)
    fetch.cleanup()


def test_raise_failure_says_nothing_while_the_download_is_good(fs, tmp_path):
    fetch = ArtifactFetch(fs, stored_backup(fs, b"x" * 5000, False), str(tmp_path))
    fetch.start()
    fetch.raise_failure()  # running or finished well: no error
    fetch.finish()
    fetch.raise_failure()
    fetch.cleanup()


class SlowStorage(object):
    """A real file backend whose reads trickle, to catch a download mid-way."""

    def __init__(self, inner):
        self.inner = inner
        self.chunks_read = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def iter_read(self, key):
        for chunk in self.inner.iter_read(key):
            for i in range(0, len(chunk), 16384):
                self.chunks_read += 1
                time.sleep(0.01)
                yield chunk[i:i + 16384]


def test_cleanup_cancels_a_running_download_and_removes_its_file(fs, tmp_path):
    slow = SlowStorage(fs)
    fetch = ArtifactFetch(slow, stored_backup(fs, os.urandom(8 << 20), False), str(tmp_path / "w"))
    os.mkdir(str(tmp_path / "w"))
    fetch.start()
    while slow.chunks_read < 3:
        time.sleep(0.01)
    t0 = time.time()
    fetch.cleanup()
    assert not any(t.name == "drkit-fetch" and t.is_alive() for t in threading.enumerate())
    assert time.time() - t0 < 4  # stopped, not read to the end (8 MiB at 16 KiB per 10 ms is 5 s)
    assert slow.chunks_read < 8 * 64
    assert list((tmp_path / "w").iterdir()) == []


def test_to_local_of_a_custom_dump_is_the_background_download_waited_for(fs, tmp_path):
    data = os.urandom(100000)
    fetch = ArtifactFetch(fs, stored_backup(fs, data, True), str(tmp_path))
    with open(fetch.to_local(), "rb") as fh:
        assert fh.read() == data
    fetch.cleanup()
