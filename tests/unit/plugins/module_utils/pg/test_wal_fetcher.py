# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_fetcher.py: the background fetcher keeps the segments after the one
PostgreSQL asked for ready (never past the end of the archive, asking again
later), prunes what replay moved past, and leaves when idle or when its
directory goes; a call takes only its own ready file from it. With real
PostgreSQL replay: tests/integration/test_pitr.py (pg_pitr writes --async)."""

import os
import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, NotFoundError
from ansible_collections.drkit.backup.plugins.module_utils.pg import wal_fetcher
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import wal_fetch
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import DEFAULT_SEGMENT_SIZE, segment_name

SEG = DEFAULT_SEGMENT_SIZE


def seg(n, tli=1):
    return segment_name(tli, n, SEG)


class Archive(object):
    """fetch() for run_fetcher: segments 1..last exist; records calls."""

    def __init__(self, last, on_fetch=None):
        self.last, self.calls, self.on_fetch = last, [], on_fetch
        self.lock = threading.Lock()

    def __call__(self, name, path):
        with self.lock:
            self.calls.append(name)
        if self.on_fetch:
            self.on_fetch(name)
        if int(name[16:], 16) > self.last:
            raise NotFoundError("%s is not in the archive" % name)
        with open(path + ".tmp", "w") as fh:
            fh.write(name)
        os.rename(path + ".tmp", path)


@pytest.fixture
def spool(tmp_path):
    d = tmp_path / ".drkit-prefetch"
    d.mkdir()
    return d


def test_the_window_is_the_wanted_segment_and_those_after_it_on_its_timeline():
    assert wal_fetcher.window(seg(0xFE), 3, SEG) == [seg(0xFE), seg(0xFF), seg(0x100), seg(0x101)]
    assert wal_fetcher.window(seg(5, tli=2), 1, SEG) == [seg(5, tli=2), seg(6, tli=2)]


def test_the_fetcher_fills_the_window_and_stops_at_the_end_of_the_archive(spool, monkeypatch):
    monkeypatch.setattr(wal_fetcher, "PARALLEL", 1)  # in order, so that "past the end" is exact
    wal_fetcher.ask(str(spool), seg(3))
    archive = Archive(last=5)
    fetched = wal_fetcher.run_fetcher(str(spool), 4, 0.3, SEG, archive)
    assert fetched == 3
    assert sorted(n for n in os.listdir(str(spool)) if len(n) == 24) == [seg(3), seg(4), seg(5)]
    assert (spool / (seg(6) + wal_fetcher.MISSING)).exists(), "the call asking for it fetches it itself"
    assert seg(7) not in archive.calls, "nothing is asked for past the first missing segment"


def test_replay_moving_on_prunes_what_it_passed_and_fetches_further(spool):
    archive = Archive(last=20)

    def move_on(name):
        if len(archive.calls) == 3:  # replay moves on meanwhile
            wal_fetcher.ask(str(spool), seg(6))
    archive.on_fetch = move_on
    wal_fetcher.ask(str(spool), seg(1))
    wal_fetcher.run_fetcher(str(spool), 2, 0.3, SEG, archive)
    ready = sorted(n for n in os.listdir(str(spool)) if len(n) == 24)
    assert ready == [seg(6), seg(7), seg(8)]
    assert archive.calls.count(seg(6)) == 1


def test_a_failed_fetch_is_noted_for_the_call(spool):
    def broken(name, path):
        raise OSError(5, "Input/output error")
    wal_fetcher.ask(str(spool), seg(1))
    assert wal_fetcher.run_fetcher(str(spool), 1, 0.3, SEG, broken) == 0
    assert (spool / (seg(1) + wal_fetcher.FAILED)).exists()
    assert wal_fetcher.wait_for(str(spool), seg(1)) == "failed"
    assert not (spool / (seg(1) + wal_fetcher.FAILED)).exists(), "consumed by the call"


def test_the_fetcher_leaves_when_its_directory_goes(spool, tmp_path):
    archive = Archive(last=10 ** 6)

    def remove_dir(name):
        if len(archive.calls) == 3:
            os.rename(str(spool), str(tmp_path / "gone"))
    archive.on_fetch = remove_dir
    wal_fetcher.ask(str(spool), seg(1))
    wal_fetcher.run_fetcher(str(spool), 8, 3600, SEG, archive)
    assert len(archive.calls) <= 3 + wal_fetcher.PARALLEL


def test_a_call_without_a_fetcher_fetches_itself(spool):
    assert wal_fetcher.wait_for(str(spool), seg(1)) == "gone"
    (spool / seg(1)).write_text("x")
    assert wal_fetcher.wait_for(str(spool), seg(1)) == "ready"


def test_async_fetch_needs_a_prefetch_window(tmp_path):
    with pytest.raises(ConfigError, match="needs --prefetch"):
        wal_fetch({"storage_url": "file://%s" % tmp_path, "fetch_async": True}, seg(1), str(tmp_path / "x"))


def test_a_segment_taken_then_needed_again_is_fetched_again(spool):
    """pg_pitr replays twice: the second replay asks again for segments the
    first one took. The fetcher once skipped them as done, and every such
    call waited its full 60 s before fetching itself."""
    archive = Archive(last=10)
    done = threading.Event()

    def fetcher():
        wal_fetcher.run_fetcher(str(spool), 2, 1.0, SEG, archive)
        done.set()
    t = threading.Thread(target=fetcher)
    wal_fetcher.ask(str(spool), seg(1))
    t.start()
    try:
        target = spool / seg(1)
        assert _wait(target.exists), "the first request is answered"
        target.rename(spool.parent / "RECOVERYXLOG")  # the call takes it
        wal_fetcher.ask(str(spool), seg(1), took=True)
        assert _wait((spool / seg(3)).exists), "taking it moves the window on"
        wal_fetcher.ask(str(spool), seg(1))  # replay starts over
        assert _wait(target.exists), "needed again: fetched again"
        assert archive.calls.count(seg(1)) == 2
    finally:
        t.join(10)
    assert done.is_set()


def _wait(cond, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_a_directory_that_cannot_take_a_note_ends_the_fetcher(spool, monkeypatch):
    """The note for a missing segment cannot be written (a full disk): the
    fetcher leaves, so that the call finds no fetcher and fetches itself at
    once. It once went on without the note, and the call waited 60 s."""
    real = wal_fetcher.atomic_write

    def full(path, data, **kw):
        if path.endswith(wal_fetcher.MISSING):
            raise OSError(28, "No space left on device")
        return real(path, data, **kw)
    monkeypatch.setattr(wal_fetcher, "atomic_write", full)
    wal_fetcher.ask(str(spool), seg(1))
    with pytest.raises(OSError):
        wal_fetcher.run_fetcher(str(spool), 2, 1.0, SEG, Archive(last=0))
