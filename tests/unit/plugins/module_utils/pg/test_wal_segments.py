# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_segments.py: the long page header of a WAL segment, timeline history
files and the recovery chain across timelines."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import (
    ancestry,
    missing_segments,
    on_timeline,
    parse_history,
    read_long_header,
    recovery_chain,
)
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import segment_name, wal_key
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from support.unit_helpers import SEG, long_header


def test_long_page_header():
    facts = read_long_header(long_header())
    assert facts["system_identifier"] == "7712224962849331826"
    assert facts["segment_size"] == SEG and facts["pageaddr"] == 2 * SEG
    with pytest.raises(IntegrityError):
        read_long_header(long_header(info=0))  # a short header: not a segment start
    with pytest.raises(IntegrityError):
        read_long_header(b"\0" * 10)


def two_timelines(tmp_path):
    """Timeline 1 segments 2-8; timeline 2 branched off it at 0/6000100
    (inside segment 6), segments 6-9."""
    import zstandard
    st = storage.open_storage("file://%s/a" % tmp_path)

    def put(name, data=b"x"):
        st.put_bytes(wal_key(name), zstandard.ZstdCompressor(write_checksum=True).compress(data))
    for n in range(2, 9):
        put(segment_name(1, n))
    put("00000002.history", b"1\t0/6000100\tbefore 2026-11-25 10:00:00+00\n")
    for n in range(6, 10):
        put(segment_name(2, n))
    return st


def test_parse_history_and_recovery_chain(tmp_path):
    st = two_timelines(tmp_path)
    assert parse_history("1\t0/6000100\treason\n# c\n") == [(1, 0x6000100)]
    chain = recovery_chain(st, 1, "000000010000000000000002")
    assert chain["timeline"] == 2 and chain["missing"] == []
    assert chain["last"] == "000000020000000000000009"
    assert chain["segments"][:4] == ["000000010000000000000002", "000000010000000000000003",
                                     "000000010000000000000004", "000000010000000000000005"]
    assert "000000020000000000000006" in chain["segments"]
    st.delete([wal_key("000000010000000000000004"), wal_key("000000020000000000000008")])
    chain = recovery_chain(st, 1, "000000010000000000000002")
    assert chain["missing"] == ["000000010000000000000004", "000000020000000000000008"]
    assert missing_segments(st, ["000000010000000000000003", "000000010000000000000004"]) == [
        "000000010000000000000004"]


def test_a_position_is_on_a_timeline_when_its_history_holds_it():
    histories = {2: "1\t0/6000100\tx\n", 3: "1\t0/6000100\tx\n2\t0/9000000\ty\n"}
    assert ancestry(histories, 3) == {1: 0x6000100, 2: 0x9000000} and ancestry(histories, 1) == {}
    assert on_timeline(histories, 1, 1, 0x7000000)
    assert on_timeline(histories, 3, 1, 0x6000100) and not on_timeline(histories, 3, 1, 0x6000101)
    assert on_timeline(histories, 3, 2, 0x8000000) and not on_timeline(histories, 2, 3, 0x8000000)


def test_recovery_chain_follows_the_timeline_it_is_given(tmp_path):
    st = two_timelines(tmp_path)
    chain = recovery_chain(st, 1, "000000010000000000000002", target_timeline=1)
    assert chain["timeline"] == 1 and chain["last"] == "000000010000000000000008" and chain["path"] == [(1, None)]
    chain = recovery_chain(st, 1, "000000010000000000000002")
    assert chain["path"] == [(1, 0x6000100), (2, None)]
