# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_layout.py: WAL file names and their storage keys, segment and LSN
arithmetic."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import (classify, format_lsn, lsn_segment,
                                                                                   name_of_key, parse_lsn, segment_name,
                                                                                   segment_number, segment_range,
                                                                                   wal_key)


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
