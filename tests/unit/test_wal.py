# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the WAL archive's pure parts and of the physical backup /
PITR helpers that need no server: names and keys, segment arithmetic, the
long page header, timeline chains, the streaming tar follower and
extractor, backup choice and recovery settings."""

import datetime
import io
import os
import struct
import tarfile

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.tar import TarTap
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup_physical import CAPTURE, parse_backup_label
from ansible_collections.drkit.backup.plugins.module_utils.core.tar import TarExtractor
from ansible_collections.drkit.backup.plugins.module_utils.pg.base_restore import check_data_directory
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import conf_quote
from ansible_collections.drkit.backup.plugins.module_utils.pg.pitr import (FATAL_TARGET, READY_LINE, can_reach,
                                                                           configure_recovery, log_facts,
                                                                           recovery_settings, validate_target)
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import (PREFETCH_DIR, WalMissing, fetch_file,
                                                                                  push_file, wal_fetch)
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_segments import (missing_segments, parse_history,
                                                                                   read_long_header, recovery_chain)
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import (classify, format_lsn, lsn_segment,
                                                                                   name_of_key, parse_lsn, segment_name,
                                                                                   segment_number, segment_range,
                                                                                   wal_key)
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConfigError, ConflictError,
                                                                               IntegrityError, SafetyError)

SEG = 16 << 20


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


def long_header(sysid=7712224962849331826, segno=2, tli=1, seg_size=SEG, info=2):
    head = struct.pack("<HHIQI4xQII", 0xD110, info, tli, segno * seg_size, 0, sysid, seg_size, 8192)
    return head + b"\0" * (8192 - len(head))


def test_long_page_header():
    facts = read_long_header(long_header())
    assert facts["system_identifier"] == "7712224962849331826"
    assert facts["segment_size"] == SEG and facts["pageaddr"] == 2 * SEG
    with pytest.raises(IntegrityError):
        read_long_header(long_header(info=0))  # a short header: not a segment start
    with pytest.raises(IntegrityError):
        read_long_header(b"\0" * 10)


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


def test_parse_history_and_recovery_chain(tmp_path):
    st = storage.open_storage("file://%s/a" % tmp_path)

    def put(name, data=b"x"):
        import zstandard
        st.put_bytes(wal_key(name), zstandard.ZstdCompressor(write_checksum=True).compress(data))
    for n in range(2, 9):
        put(segment_name(1, n))
    # timeline 2 branched off timeline 1 at 0/6000100 (inside segment 6)
    put("00000002.history", b"1\t0/6000100\tbefore 2026-11-25 10:00:00+00\n")
    for n in range(6, 10):
        put(segment_name(2, n))
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


def make_tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            if data is None:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 4096, 1 << 20])
def test_tar_tap_follows_any_chunking(chunk):
    label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"
    data = make_tar([("global", None), ("global/pg_control", b"\x07" * 8192), ("base/1/123", os.urandom(3000)),
                     ("backup_label", label), ("./pg_wal/archive_status", None), ("backup_manifest", b"{}")])
    seen = []
    tap = TarTap(CAPTURE, on_member=seen.append)
    for i in range(0, len(data), chunk):
        tap.feed(data[i:i + chunk])
    assert tap.ended and tap.members == 6
    assert tap.captured["backup_label"] == label and tap.captured["backup_manifest"] == b"{}"
    assert "global/pg_control" in seen
    assert tap.data_size == 8192 + 3000 + len(label) + 2
    facts = parse_backup_label(label.decode())
    assert facts["wal_start_segment"] == "000000010000000000000002" and facts["timeline"] == 1


def test_tar_extractor_restores_files_and_refuses_escapes(tmp_path):
    data = make_tar([("global", None), ("global/pg_control", b"ctl"), ("./pg_wal/archive_status", None),
                     ("PG_VERSION", b"15\n")])
    root = tmp_path / "data"
    root.mkdir()
    ex = TarExtractor(str(root))
    for i in range(0, len(data), 1000):
        ex.feed(data[i:i + 1000])
    ex.close()
    assert ex.ended
    assert (root / "global" / "pg_control").read_bytes() == b"ctl"
    assert (root / "pg_wal" / "archive_status").is_dir()
    assert oct((root / "PG_VERSION").stat().st_mode & 0o777) == oct(0o600)
    for evil in ("../escape", "/etc/passwd", "a/../../b"):
        ex = TarExtractor(str(tmp_path / "data"))
        with pytest.raises(IntegrityError):
            ex.feed(make_tar([(evil, b"x")]))
    assert not (tmp_path / "escape").exists()


def manifest(stop_time, stop_lsn="0/5000000", next_xid=900):
    return {"finished_at": stop_time, "data": {"stop_time": stop_time, "stop_lsn": stop_lsn, "next_xid": next_xid}}


def test_can_reach_is_conservative():
    m = manifest("2026-11-25T10:00:00.000000Z")
    t = validate_target("time", "2026-11-25T10:00:01Z")[1]
    assert can_reach(m, "time", t)
    assert not can_reach(m, "time", validate_target("time", "2026-11-25T09:59:59Z")[1])
    assert can_reach(m, "lsn", parse_lsn("0/5000000"))
    assert not can_reach(m, "lsn", parse_lsn("0/4FFFFFF"))
    assert can_reach(m, "xid", 900) and not can_reach(m, "xid", 899)
    assert can_reach(manifest("2026-11-25T10:00:00Z", next_xid=(1 << 32) + 900), "xid", 950)
    assert can_reach(m, "name", "before-migration") and can_reach(m, "latest", None)


def test_validate_target_and_settings():
    with pytest.raises(ConfigError):
        validate_target("time", None)
    with pytest.raises(ConfigError):
        validate_target("latest", "x")
    with pytest.raises(ConfigError):
        validate_target("yesterday", None)
    target, value = validate_target("time", "2026-11-25T14:30:00+02:00")
    s = recovery_settings(target, value)
    assert s["recovery_target_time"] == "2026-11-25 12:30:00.000000+00"
    assert s["recovery_target_action"] == "promote" and s["recovery_target_inclusive"] is True
    assert recovery_settings("immediate", None)["recovery_target"] == "immediate"
    assert recovery_settings("lsn", parse_lsn("0/3000060"), False)["recovery_target_lsn"] == "0/3000060"
    assert conf_quote("it's") == "'it''s'" and conf_quote(5432) == "5432"
    assert isinstance(value, datetime.datetime)


def test_check_data_directory(tmp_path):
    assert check_data_directory(str(tmp_path / "new")) == "absent"
    (tmp_path / "empty").mkdir()
    assert check_data_directory(str(tmp_path / "empty")) == "empty"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "PG_VERSION").write_text("15\n")
    with pytest.raises(SafetyError) as exc:
        check_data_directory(str(tmp_path / "used"))
    assert "PostgreSQL data directory" in str(exc.value)
    # a live "postmaster": this very process (its cmdline holds no "postgres",
    # so fake one with a pid whose cmdline does... skip when none runs)
    with pytest.raises(ConfigError):
        check_data_directory("relative/path")


def test_configure_recovery_appends_last_wins(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "postgresql.auto.conf").write_text("restore_command = 'old'\n")
    created = configure_recovery(str(d), {"restore_command": "drkit wal-fetch %f %p", "port": 5433,
                                                  "recovery_target_action": "promote"})
    text = (d / "postgresql.auto.conf").read_text()
    assert text.index("'old'") < text.index("drkit wal-fetch %f %p")
    assert "port = 5433" in text and (d / "recovery.signal").exists()
    assert sorted(created) == ["pg_hba.conf", "pg_ident.conf", "postgresql.conf"]
    with pytest.raises(ConfigError):
        configure_recovery(str(d), {"bad name; DROP": 1})


def test_log_facts():
    text = ("2026-11-25 21:44:54.8 UTC [1] LOG:  recovery stopping before commit of transaction 803, time "
            "2026-11-25 21:44:54.729764+00\n"
            "2026-11-25 21:44:54.8 UTC [1] LOG:  redo done at 0/5000110 system usage: CPU\n"
            "2026-11-25 21:44:54.8 UTC [1] LOG:  last completed transaction was at log time 2026-11-25 21:44:52+00\n"
            "drkit wal-fetch: error: Could not read wal/x: cannot connect\n"
            "2026-11-25 21:44:54.9 UTC [1] LOG:  selected new timeline ID: 2\n"
            "2026-11-25 21:44:55.0 UTC [1] FATAL:  recovery ended before configured recovery target was reached\n")
    f = log_facts(text)
    assert f["recovery_stop"].startswith("recovery stopping before commit of transaction 803")
    assert f["redo_done_lsn"] == "0/5000110" and f["new_timeline"] == 2
    assert f["wal_fetch_errors"] == ["Could not read wal/x: cannot connect"]
    assert FATAL_TARGET in f["fatal"][0]
    assert not READY_LINE.search("LOG:  database system is ready to accept read-only connections\n")
    assert READY_LINE.search("x LOG:  database system is ready to accept connections\n")


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
