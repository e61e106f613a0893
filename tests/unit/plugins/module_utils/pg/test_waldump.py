# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""waldump.py: pg_waldump's record lines, and the reader that fetches a
window of two archived segments at a time (here with a stand-in for
pg_waldump that describes the segments it finds in --path; the real tool is
used by tests/integration/test_pitr_recovery_faults.py)."""

import os
import stat
import sys

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ToolError
from ansible_collections.drkit.backup.plugins.module_utils.pg.waldump import ArchiveReader, parse_records, run_waldump
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import segment_name, wal_key
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from support.unit_helpers import long_header

SEG = 1 << 20  # the smallest segment size: small files, same rules

PREFIX = "rmgr: %-11s len (rec/tot):     34/    34, tx: %10d, lsn: %s, prev 0/0, desc: %s"
LINES = "\n".join(PREFIX % r for r in [
    ("Transaction", 724, "0/02000028", "COMMIT 2026-12-02 16:45:17.642054 UTC; inval msgs: catcache 80"),
    ("XLOG", 0, "0/020001C0", "CHECKPOINT_SHUTDOWN redo 0/20001C0; tli 1; prev tli 1; fpw true"),
    ("XLOG", 0, "0/02000238", "END_OF_RECOVERY tli 2; prev tli 1; time 2026-12-02 16:50:00.5 UTC"),
    ("Transaction", 731, "0/02000268", "ABORT 2026-12-02 16:51:00 UTC"),
    ("XLOG", 0, "0/02000290", "RESTORE_POINT before-migration")]) + "\n"


def test_parse_records():
    recs = parse_records(LINES + "pg_waldump: error: error in WAL record at 0/2000290: invalid record length\n")
    assert [r.lsn for r in recs] == [0x2000028, 0x20001C0, 0x2000238, 0x2000268, 0x2000290]
    commit, checkpoint, eor, abort, rp = recs
    assert commit.is_commit and commit.xid == 724 and commit.xact_time.isoformat() == "2026-12-02T16:45:17.642054+00:00"
    assert not checkpoint.is_commit and checkpoint.xact_time is None and checkpoint.end_of_recovery_time is None
    assert eor.end_of_recovery_time.isoformat() == "2026-12-02T16:50:00.500000+00:00"
    assert not abort.is_commit and abort.xact_time.isoformat() == "2026-12-02T16:51:00+00:00"
    assert rp.kind == "RESTORE_POINT" and rp.desc.split(" ", 1)[1] == "before-migration"


# A stand-in for pg_waldump: for each segment file in --path from --start on,
# the records its first 8 bytes of payload list (after the page header),
# as "lsn-offset:desc;..." (test data, not WAL).
FAKE = r'''#!%s
import os, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
hi, lo = args["--start"].split("/")
start = (int(hi, 16) << 32) | int(lo, 16)
seg = 1 << 20
out = []
for name in sorted(os.listdir(args["--path"])):
    no = int(name[8:16], 16) * 4096 + int(name[16:24], 16)
    if (no + 1) * seg <= start:
        continue
    body = open(os.path.join(args["--path"], name), "rb").read()[8192:].rstrip(b"\0").decode()
    for item in filter(None, body.split(";")):
        off, desc = item.split(":", 1)
        lsn = no * seg + int(off)
        if lsn >= start:
            out.append("rmgr: Transaction len (rec/tot):     34/    34, tx:        %%d, lsn: %%X/%%08X, prev 0/0, "
                       "desc: %%s" %% (lsn %% 1000, lsn >> 32, lsn & 0xFFFFFFFF, desc))
print("\n".join(out))
sys.stderr.write("pg_waldump: error: could not find file\n")
sys.exit(1)
'''


@pytest.fixture
def fake_waldump(tmp_path):
    path = tmp_path / "pg_waldump"
    path.write_text(FAKE % sys.executable)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def archive(tmp_path, segments):
    st = storage.open_storage("file://%s/a" % tmp_path)
    for no, records in segments.items():
        raw = long_header(segno=no, seg_size=SEG) + records.encode()
        raw += b"\0" * (SEG - len(raw))
        st.put_bytes(wal_key(segment_name(1, no, SEG)), zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    return st


def test_reader_finds_the_first_match_window_by_window(tmp_path, fake_waldump):
    st = archive(tmp_path, {2: "100:COMMIT 2026-12-02 10:00:00 UTC;", 3: "", 4: "40:COMMIT 2026-12-02 11:00:00 UTC;"})
    with ArchiveReader(st, fake_waldump, 1, SEG) as reader:
        first = reader.find(2 * SEG + 200, lambda r: r.is_commit, last_no=4)
        assert first.lsn == 4 * SEG + 40 and first.xact_time.hour == 11
        # never more than the two segments of the window on disk
        assert sorted(os.listdir(reader.dir)) == [segment_name(1, 3, SEG), segment_name(1, 4, SEG)]
        every = reader.find(2 * SEG, lambda r: True, last_no=4, first_only=False)
        assert [r.lsn for r in every] == [2 * SEG + 100, 4 * SEG + 40]  # each record once
        assert reader.find(2 * SEG, lambda r: r.kind == "ABORT", last_no=4) is None
        assert reader.last_record(4).lsn == 4 * SEG + 40
        assert reader.last_record(3).lsn == 2 * SEG + 100  # looked back a segment
        scratch = reader.dir
    assert not os.path.exists(scratch)


def test_a_missing_segment_ends_the_search(tmp_path, fake_waldump):
    st = archive(tmp_path, {2: "", 4: "40:COMMIT 2026-12-02 11:00:00 UTC;"})
    with ArchiveReader(st, fake_waldump, 1, SEG) as reader:
        assert reader.find(2 * SEG, lambda r: True, last_no=4) is None


def test_run_waldump_reports_a_real_failure(tmp_path):
    tool = tmp_path / "pg_waldump"
    tool.write_text("#!/bin/sh\necho 'pg_waldump: error: could not open directory' >&2\nexit 1\n")
    tool.chmod(0o755)
    with pytest.raises(ToolError) as exc:
        run_waldump(str(tool), str(tmp_path), 1, 0x2000000)
    assert "could not open directory" in str(exc.value)
