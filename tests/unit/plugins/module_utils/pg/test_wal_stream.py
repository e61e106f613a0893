# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_stream.py: streamed partials on a file:// storage (the archiver
against a real PostgreSQL is tests/integration/test_wal_stream.py)."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ConflictError, NotFoundError
from ansible_collections.drkit.backup.plugins.module_utils.pg import wal_stream
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import fetch_file
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import LONG_HEADER, list_timeline
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import stream_partials
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import classify, name_of_key
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import stream_end, stream_name
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage

SEG = 16 << 20
NAME = "000000010000000000000003"


def segment_bytes(written, segno=3, sysid=7309485609034567890):
    """A segment as pg_receivewal keeps the one in progress: a long page
    header, ``written`` bytes of WAL, zeros to the segment size."""
    head = LONG_HEADER.pack(0xD110, 0x0002, 1, segno * SEG, 0, sysid, SEG, 8192)
    body = head + b"\x5a" * (written - len(head))
    return body + b"\0" * (SEG - len(body))


@pytest.fixture
def store(tmp_path):
    return open_storage("file://%s" % tmp_path)


def test_names_of_streamed_partials():
    name = stream_name(NAME, 0x2A000)
    assert name == "000000010000000000000003.0002A000.stream"
    assert classify(name) == "stream"
    assert stream_end(name) == (NAME, 0x2A000)
    assert name_of_key("wal/00000001/%s.zst" % name) == name
    with pytest.raises(ConfigError):
        classify("000000010000000000000003.2A000.stream")


def test_end_of_data_is_past_the_last_written_byte():
    assert wal_stream._end_of_data(segment_bytes(100000)) == 100000  # pylint: disable=protected-access
    assert wal_stream._end_of_data(b"\0" * 4096) == 0  # pylint: disable=protected-access


def test_partials_are_create_only_each_under_its_end_and_superseded_ones_pruned(store, tmp_path):
    first = wal_stream.push_partial(store, NAME, segment_bytes(100000), 1)
    assert first == 100000
    assert wal_stream.push_partial(store, NAME, segment_bytes(100000), 1) == 100000  # identical: fine
    second = wal_stream.push_partial(store, NAME, segment_bytes(300000), 1)
    assert sorted(stream_partials(store, NAME)) == [100000, 300000]
    assert list_timeline(store, 1) == [] and list_timeline(store, 1, streamed=True) == [NAME]
    wal_stream.prune_partials(store, NAME, keep_end=second)
    assert sorted(stream_partials(store, NAME)) == [300000]


def test_a_different_partial_under_the_same_end_is_refused(store):
    wal_stream.push_partial(store, NAME, segment_bytes(100000), 1)
    other = bytearray(segment_bytes(100000))
    other[50000] = 0x11
    with pytest.raises(ConflictError, match="different content"):
        wal_stream.push_partial(store, NAME, bytes(other), 1)


def test_fetch_answers_a_missing_segment_with_the_newest_partial(store, tmp_path):
    wal_stream.push_partial(store, NAME, segment_bytes(100000), 1)
    wal_stream.push_partial(store, NAME, segment_bytes(200000), 1)
    out = tmp_path / "pg_wal" / NAME
    out.parent.mkdir()
    res = fetch_file(store, NAME, str(out))
    assert res["streamed_partial_end"] == 200000
    assert out.read_bytes() == segment_bytes(200000)
    # prefetching never takes a partial: the full segment may come first
    with pytest.raises(NotFoundError):
        fetch_file(store, NAME, str(tmp_path / "pg_wal" / "again"), partial_ok=False)
    assert not os.path.exists(str(tmp_path / "pg_wal" / "again"))


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


SEGMENT_2 = "000000010000000000000002"  # WAL from 2 * SEG up to 3 * SEG


def test_rpo_watch_says_nothing_until_the_archive_position_is_known():
    watch = wal_stream.RpoWatch(Clock())
    watch.sample(2 * SEG + 100, 2 * SEG + 50)
    assert watch.values() == {}


def test_rpo_watch_counts_from_when_unarchived_wal_was_first_seen():
    clock = Clock()
    watch = wal_stream.RpoWatch(clock)
    watch.sample(2 * SEG + 500, 2 * SEG + 500)
    watch.partial_covered(SEGMENT_2)
    assert watch.values() == {"drkit_wal_stream_archive_lag_bytes": 0, "drkit_wal_stream_unarchived_seconds": 0.0}
    clock.now += 3
    watch.sample(2 * SEG + 900, 2 * SEG + 500)  # new WAL the receiver has not reported yet
    clock.now += 4
    watch.sample(2 * SEG + 1200, 2 * SEG + 900)
    assert watch.values() == {"drkit_wal_stream_archive_lag_bytes": 700,
                              "drkit_wal_stream_unarchived_seconds": 4.0}
    # the partial read after that sample holds what the receiver reported: up to 900
    watch.partial_covered(SEGMENT_2)
    assert watch.values() == {"drkit_wal_stream_archive_lag_bytes": 300,
                              "drkit_wal_stream_unarchived_seconds": 0.0}
    clock.now += 2
    assert watch.values()["drkit_wal_stream_unarchived_seconds"] == 2.0
    watch.segment_stored(SEGMENT_2)
    assert watch.values() == {"drkit_wal_stream_archive_lag_bytes": 0, "drkit_wal_stream_unarchived_seconds": 0.0}


def test_rpo_watch_never_credits_a_partial_with_wal_of_another_segment():
    watch = wal_stream.RpoWatch(Clock())
    watch.sample(4 * SEG + 10, 4 * SEG + 10)  # the receiver is two segments further on
    watch.partial_covered(SEGMENT_2)
    assert watch.archived == 3 * SEG  # the partial of segment 2 proves at most segment 2
    watch.partial_covered("000000010000000000000005")  # a partial beyond what was reported proves nothing
    assert watch.archived == 3 * SEG
    assert watch.values()["drkit_wal_stream_archive_lag_bytes"] == SEG + 10


def test_rpo_watch_position_only_moves_forward():
    watch = wal_stream.RpoWatch(Clock())
    watch.segment_stored("000000010000000000000003")
    watch.sample(4 * SEG, 2 * SEG + 1)
    watch.partial_covered(SEGMENT_2)  # an older partial does not move the archive back
    assert watch.archived == 4 * SEG


def test_a_sigterm_during_the_slot_query_stops_the_archiver(monkeypatch):
    """CI once saw wal-stream ignore SIGTERM for 60 s: the signal handler's
    Terminated was raised inside _slot_facts' connect, whose ``except
    DrkitError`` took it for an unreachable server, and the loop went on."""
    from ansible_collections.drkit.backup.plugins.module_utils.core.errors import SourceError, Terminated

    def stopped(*_args, **_kwargs):
        raise Terminated("Interrupted by signal 15")
    monkeypatch.setattr(wal_stream, "connect", stopped)
    with pytest.raises(Terminated):
        wal_stream._slot_facts({}, "postgres", "drkit_wal_stream")

    def unreachable(*_args, **_kwargs):
        raise SourceError("could not connect")
    monkeypatch.setattr(wal_stream, "connect", unreachable)
    assert wal_stream._slot_facts({}, "postgres", "drkit_wal_stream") == (None, None, None, None)


def test_a_sigterm_while_writing_metrics_is_not_a_metrics_warning(monkeypatch, tmp_path):
    from ansible_collections.drkit.backup.plugins.module_utils.core.errors import Terminated

    def stopped(*_args, **_kwargs):
        raise Terminated("Interrupted by signal 15")
    monkeypatch.setattr(wal_stream.metrics, "update_textfile", stopped)
    said = []
    streamer = wal_stream.Streamer(None, str(tmp_path), 3, said.append)
    with pytest.raises(Terminated):
        wal_stream.write_metrics({"metrics_dir": str(tmp_path), "job_name": None, "slot_name": "s"}, streamer,
                                 True, None)
    assert said == []


def test_a_streamer_whose_credentials_may_not_delete_says_so_once_and_streams_on(store, tmp_path):
    """Backup credentials may not delete (the storage contract): superseded
    partials stay for rotation; any other storage error still stops it."""
    from ansible_collections.drkit.backup.plugins.module_utils.core.errors import StorageError
    from ansible_collections.drkit.backup.plugins.module_utils.storage.base import DELETE_DENIED

    calls = []

    def denied(keys):
        calls.append(list(keys))
        raise StorageError("Could not delete %s: access denied" % keys[0], details={"reason": DELETE_DENIED})

    said = []
    streamer = wal_stream.Streamer(store, str(tmp_path), 1, said.append)
    wal_stream.push_partial(store, NAME, segment_bytes(100000), 1)
    second = wal_stream.push_partial(store, NAME, segment_bytes(300000), 1)
    store.delete = denied
    streamer.prune(NAME, keep_end=second)
    streamer.prune(NAME, keep_end=second)
    assert len(calls) == 1 and [m for m in said if m.startswith("WARNING: Could not delete")] == said[:1]
    assert "until rotation prunes the WAL" in said[0]
    assert sorted(stream_partials(store, NAME)) == [100000, 300000]

    def broken(keys):
        raise StorageError("Could not delete: connection reset")

    store.delete = broken
    with pytest.raises(StorageError):
        wal_stream.Streamer(store, str(tmp_path), 1, said.append).prune(NAME, keep_end=second)
