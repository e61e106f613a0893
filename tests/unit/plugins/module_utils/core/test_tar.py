# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tar.py: TarStreamExtractor (one unpacker for dump directories and AOF
archives), TarTap following a base backup's tar stream whatever its
chunking, and TarExtractor restoring a data directory and refusing escapes."""

import io
import os
import tarfile

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.core.tar import TarExtractor, TarStreamExtractor, TarTap
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup_physical import CAPTURE, parse_backup_label


# --------------------------------------------------------------------------
# TarStreamExtractor: one unpacker for dump directories and AOF archives


def _tar_bytes(members):
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
    return buf.getvalue()


def _run_extractor(ex, data, chunk=4096):
    ex.start()
    fed_all = True
    try:
        for i in range(0, len(data), chunk):
            if ex.feed(data[i:i + chunk]) is False:
                fed_all = False
                break
    finally:
        ex.close()
        ex.join(10)
    return fed_all


def test_tar_extractor_unpacks_plain_files_under_prefix(tmp_path):
    data = _tar_bytes([("dump/toc.dat", b"t" * 5000, "file"), ("dump/3001.dat", b"d" * 70000, "file")])
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    assert _run_extractor(ex, data) is True
    assert ex.error is None and ex.names == ["toc.dat", "3001.dat"]
    assert (tmp_path / "out" / "3001.dat").read_bytes() == b"d" * 70000
    assert oct((tmp_path / "out" / "toc.dat").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("member", [
    ("dump/../escape", b"x", "file"), ("other/file", b"x", "file"), ("dump/sub/file", b"x", "file"),
    ("dump/link", b"", "link"),
])
def test_tar_extractor_refuses_anything_but_plain_files_under_prefix(tmp_path, member):
    data = _tar_bytes([member, ("dump/toc.dat", b"t", "file")])
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    _run_extractor(ex, data)
    assert isinstance(ex.error, IntegrityError) and "Unexpected member" in str(ex.error)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "link").exists()


def test_tar_extractor_only_stops_reading_once_its_names_are_out(tmp_path):
    big = bytes(bytearray(range(256))) * 8192  # 2 MiB after toc.dat: more than a pipe holds
    data = _tar_bytes([("dump/toc.dat", b"toc", "file"), ("dump/4000.dat", big, "file")])
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/", only=["toc.dat"])
    assert _run_extractor(ex, data) is False  # the feeder was told to stop
    assert ex.error is None and ex.names == ["toc.dat"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["toc.dat"]


# --------------------------------------------------------------------------
# TarTap and TarExtractor: a base backup's tar stream


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
