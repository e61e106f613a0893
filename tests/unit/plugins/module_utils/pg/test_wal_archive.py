# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_archive.py: wal-push checks a segment's header against its name and
the archive's cluster, wal-fetch round trip and prefetching."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConflictError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import (PREFETCH_DIR, WalMissing, fetch_file,
                                                                                  push_file, wal_fetch)
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import segment_name, wal_key
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
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
