# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_layout.py: WAL file names and their storage keys, segment and LSN
arithmetic, and the one rule for the WAL a physical base backup needs (its
integration side: tests/integration/test_pitr_timeline_switch.py)."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import (
    backup_segments,
    backup_timelines,
    backup_wal_ranges,
    classify,
    format_lsn,
    lsn_segment,
    name_of_key,
    parse_lsn,
    segment_name,
    segment_number,
    segment_range,
    wal_key,
)


def test_classify_and_keys():
    assert classify("000000010000000A000000FF") == "segment"
    assert classify("000000010000000A000000FF.partial") == "partial"
    assert classify("000000010000000A000000FF.00000028.backup") == "backup"
    assert classify("0000000A.history") == "history"
    for bad in ("RECOVERYXLOG", "00000001000000000000000", "000000010000000000000001.zst", "../x",
                "00000001.history/../x", "0000000100000000000000g1"):
        with pytest.raises(ConfigError):
            classify(bad)
    assert wal_key("000000020000000A000000FF") == "wal/00000002/000000020000000A000000FF.zst"
    assert wal_key("0000000A.history") == "wal/history/0000000A.history.zst"
    assert wal_key("000000010000000000000003.00000028.backup") == \
        "wal/00000001/000000010000000000000003.00000028.backup.zst"
    assert name_of_key("wal/00000001/000000010000000000000003.zst") == "000000010000000000000003"
    assert name_of_key("wal/SYSTEM_IDENTIFIER") is None


def test_segment_arithmetic():
    assert segment_number("000000010000000100000000") == 256
    assert segment_name(1, 256) == "000000010000000100000000"
    assert segment_name(3, 0x1FF) == "000000030000000100000FF"[:0] + "0000000300000001000000FF"
    assert segment_number("000000010000000100000001", seg_size=64 << 20) == 64 + 1
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert lsn_segment("0/3000000", 1) == "000000010000000000000003"
    assert lsn_segment("0/3000000", 1, previous=True) == "000000010000000000000002"
    assert lsn_segment("0/2000100", 1, previous=True) == "000000010000000000000002"
    assert segment_range("0000000100000000000000FE", "000000010000000100000001") == [
        "0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000",
        "000000010000000100000001"]
    with pytest.raises(ConfigError):
        parse_lsn("nonsense")


# --------------------------------------------------------------------------
# backup_segments: the WAL a physical base backup needs


def seg(tli, n):
    return "%08X%08X%08X" % (tli, n // 256, n % 256)


# What a real backup from a cascading standby recorded (the integration
# test's scenario): PostgreSQL lists the newest timeline first.
REAL = {
    "start_lsn": "0/5000028", "timeline": 1, "wal_start_segment": seg(1, 5),
    "stop_lsn": "0/90021D8", "stop_timeline": 2, "wal_stop_segment": seg(2, 9), "wal_segment_size": 16 << 20,
    "pg_manifest": {"wal_ranges": [
        {"Timeline": 2, "Start-LSN": "0/80000A0", "End-LSN": "0/90021D8"},
        {"Timeline": 1, "Start-LSN": "0/5000028", "End-LSN": "0/80000A0"}]},
}


def test_start_tl1_stop_tl2_across_the_switch_point():
    # TL1 up to the segment holding the switch, TL2 from that segment on
    assert backup_segments(REAL) == [seg(1, 5), seg(1, 6), seg(1, 7), seg(1, 8), seg(2, 8), seg(2, 9)]
    assert backup_wal_ranges(REAL) == [(1, 0x5000028, 0x80000A0), (2, 0x80000A0, 0x90021D8)]


def test_the_reviews_example_start_1_3_stop_2_6():
    # P3's example: start ...0001...03, stop ...0002...06, switch in segment 5
    data = {"wal_segment_size": 16 << 20, "pg_manifest": {"wal_ranges": [
        {"Timeline": 2, "Start-LSN": "0/5123456", "End-LSN": "0/6000100"},
        {"Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/5123456"}]}}
    assert backup_segments(data) == [seg(1, 3), seg(1, 4), seg(1, 5), seg(2, 5), seg(2, 6)]


def test_range_ends_are_exclusive():
    # an End-LSN on a segment boundary does not need the next segment
    # (XLByteToPrevSeg), on the old timeline as at the stop
    data = {"pg_manifest": {"wal_ranges": [
        {"Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/5000000"},
        {"Timeline": 2, "Start-LSN": "0/5000000", "End-LSN": "0/7000000"}]}}
    assert backup_segments(data) == [seg(1, 3), seg(1, 4), seg(2, 5), seg(2, 6)]
    one = {"pg_manifest": {"wal_ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138"}]}}
    assert backup_segments(one) == [seg(1, 2)]


def test_one_timeline_over_an_xlogid_boundary_and_other_segment_sizes():
    data = {"pg_manifest": {"wal_ranges": [{"Timeline": 3, "Start-LSN": "0/FE000028", "End-LSN": "1/1000010"}]}}
    assert backup_segments(data) == ["0000000300000000000000FE", "0000000300000000000000FF",
                                     "000000030000000100000000", "000000030000000100000001"]
    big = dict(data, wal_segment_size=64 << 20)
    assert backup_segments(big) == ["00000003000000000000003F", "000000030000000100000000"]  # 64 per xlogid


def test_three_timelines():
    data = {"pg_manifest": {"wal_ranges": [
        {"Timeline": 3, "Start-LSN": "0/7000100", "End-LSN": "0/8000010"},
        {"Timeline": 2, "Start-LSN": "0/5000100", "End-LSN": "0/7000100"},
        {"Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/5000100"}]}}
    assert backup_segments(data) == [seg(1, 4), seg(1, 5), seg(2, 5), seg(2, 6), seg(2, 7), seg(3, 7), seg(3, 8)]


def test_without_ranges_one_timeline_uses_start_and_stop():
    data = {"wal_start_segment": seg(1, 3), "wal_stop_segment": seg(1, 6)}
    assert backup_segments(data) == [seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6)]
    data.update(start_lsn="0/3000028", stop_lsn="0/6000000", stop_timeline=1)  # stop on a boundary
    assert backup_segments(data) == [seg(1, 3), seg(1, 4), seg(1, 5)]


def test_without_ranges_across_timelines_needs_the_history_file():
    data = {"start_lsn": "0/5000028", "wal_start_segment": seg(1, 5), "stop_lsn": "0/90021D8",
            "stop_timeline": 2, "wal_stop_segment": seg(2, 9)}
    with pytest.raises(IntegrityError) as exc:
        backup_segments(data)
    assert "00000002.history" in exc.value.hint
    history = {2: "1\t0/80000A0\tno recovery target specified\n"}
    assert backup_segments(data, history) == backup_segments(REAL)
    # a timeline that ended before the backup started is not part of it
    data3 = {"start_lsn": "0/5000028", "wal_start_segment": seg(2, 5), "stop_lsn": "0/7000010",
             "stop_timeline": 3, "wal_stop_segment": seg(3, 7)}
    histories = {3: "1\t0/3000000\tx\n2\t0/6800000\ty\n"}
    assert backup_segments(data3, histories) == [seg(2, 5), seg(2, 6), seg(3, 6), seg(3, 7)]
    with pytest.raises(IntegrityError):
        backup_segments(dict(data3, wal_start_segment=seg(4, 5)), histories)


def test_backup_timelines_names_the_history_files_replay_needs():
    assert backup_timelines(backup_segments(REAL)) == [2]
    assert backup_timelines([seg(1, 5), seg(1, 6)]) == []


def test_the_newest_archived_file_is_the_last_stored_of_the_newest_timeline(tmp_path):
    import time

    from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import newest_archived
    from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage

    st = open_storage("file://%s" % tmp_path)
    assert newest_archived(st) is None
    now = time.time()
    for key, age in (("wal/00000001/000000010000000000000009.zst", 50),
                     ("wal/00000002/000000020000000000000009.zst", 40),
                     ("wal/00000002/000000020000000000000008.zst", 30),   # stored later than 09
                     ("wal/00000002/00000002000000000000000A.00000028.backup.zst", 1),  # not WAL to replay
                     ("wal/history/00000002.history.zst", 1)):
        st.put_bytes(key, b"x")
        os.utime(os.path.join(str(tmp_path), key), (now - age, now - age))
    newest = newest_archived(st, now=now)
    assert newest["name"] == "000000020000000000000008" and newest["timeline"] == "00000002"
    assert 29 <= newest["age_seconds"] <= 31
