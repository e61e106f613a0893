# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tar.py: TarStreamExtractor (one unpacker for dump directories and AOF
archives), TarTap following a base backup's tar stream whatever its
chunking, and TarExtractor restoring a data directory and refusing escapes.

tar.py: the one header parser (parse_header, TarReader) on ustar, GNU and
pax input, and what its three followers refuse.
"""

import io
import os
import tarfile

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.core.tar import (
    TarExtractor,
    TarReader,
    TarStreamExtractor,
    TarTap,
    parse_header,
    safe_parts,
)
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup_physical import CAPTURE, parse_backup_label


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
    # a file the caller keeps out (drkit's own marker in a backup of a directory promoted by hand)
    skip_root = tmp_path / "skip"
    skip_root.mkdir()
    ex = TarExtractor(str(skip_root), skip=["drkit-pitr.incomplete"])
    ex.feed(make_tar([("./drkit-pitr.incomplete", b"{}"), ("PG_VERSION", b"15\n")]))
    ex.close()
    assert ex.skipped == ["drkit-pitr.incomplete"] and sorted(os.listdir(str(skip_root))) == ["PG_VERSION"]
    for evil in ("../escape", "/etc/passwd", "a/../../b"):
        ex = TarExtractor(str(tmp_path / "data"))
        with pytest.raises(IntegrityError):
            ex.feed(make_tar([(evil, b"x")]))
    assert not (tmp_path / "escape").exists()


LONG = "base/16384/" + "d" * 60 + "/" + "f" * 90  # over 100 bytes: prefix, long name or pax path


def tar_of(members, fmt):
    """members: (name, data) with data None for a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000.25  # a float: PAX_FORMAT writes a pax header for every member
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def raw_header(name, size, typeflag=b"0", magic=b"ustar\x0000"):
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = magic
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data):
    return data + b"\0" * (-len(data) % 512)


class Collect(TarReader):
    def __init__(self):
        super(Collect, self).__init__()
        self.seen = []

    def member(self, header):
        self.seen.append([header.name, header.typeflag, header.size, bytearray()])
        return self.seen[-1][3].extend


def follow(data, chunk):
    r = Collect()
    for i in range(0, len(data), chunk):
        r.feed(data[i:i + chunk])
    return r


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("chunk", [1, 100, 512, 513, 1 << 20])
def test_reader_gives_names_sizes_and_data_in_every_format_and_chunking(fmt, chunk):
    data = tar_of([("global", None), (LONG, b"x" * 1500), ("PG_VERSION", b"15\n"), ("empty", b"")], fmt)
    r = follow(data, chunk)
    assert r.ended and r.members == 4 and not r.in_member
    assert [(n, t, s, bytes(d)) for n, t, s, d in r.seen] == [
        ("global", b"5", 0, b""), (LONG, b"0", 1500, b"x" * 1500), ("PG_VERSION", b"0", 3, b"15\n"),
        ("empty", b"0", 0, b"")]


def test_pax_path_and_size_override_the_ustar_fields():
    pax = b"13 size=1000\n" + b"%d path=%s\n" % (len(LONG) + 10, LONG.encode())
    data = padded(raw_header(b"././@PaxHeader", len(pax), b"x") + pax)
    data += padded(raw_header(b"short", 0) + b"y" * 1000) + b"\0" * 1024
    r = follow(data, 700)
    assert r.ended and [(n, s, len(d)) for n, _t, s, d in r.seen] == [(LONG, 1000, 1000)]


def test_gnu_magic_has_no_prefix_field():
    block = bytearray(raw_header(b"name", 0, magic=b"ustar  \0"))
    block[345:350] = b"12345"  # GNU keeps atime here: not a path prefix
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    assert parse_header(bytes(block)).name == "name"
    posix = bytearray(raw_header(b"name", 0))
    posix[345:348] = b"dir"
    posix[148:156] = b" " * 8
    posix[148:156] = b"%06o\0 " % sum(posix)
    assert parse_header(bytes(posix)).name == "dir/name"


def test_bad_checksum_or_size_field_is_not_a_tar():
    block = bytearray(raw_header(b"PG_VERSION", 3))
    block[0] = ord("Q")
    with pytest.raises(ValueError):
        parse_header(bytes(block))
    with pytest.raises(IntegrityError) as exc:
        TarTap({"PG_VERSION"}).feed(bytes(block))
    assert "not a valid tar archive" in str(exc.value)
    block = bytearray(raw_header(b"x", 0))
    block[124:136] = b"12z4\0\0\0\0\0\0\0\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    with pytest.raises(ValueError):
        parse_header(bytes(block))


def test_safe_parts():
    assert safe_parts("./pg_wal/archive_status/") == ["pg_wal", "archive_status"]
    for bad in ("", "/etc/passwd", "../x", "a/../../b", "a//b", "./", "a/./b"):
        assert safe_parts(bad) is None, bad


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_cannot_smuggle_an_escape(tmp_path, fmt):
    evil = "../" * 40 + "escape"  # longer than 100 bytes: a GNU long name or a pax path
    data = tar_of([(evil, b"x")], fmt)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(IntegrityError) as exc:
        TarExtractor(str(root)).feed(data)
    assert "Unsafe path" in str(exc.value)
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    ex.start()
    ex.feed(tar_of([("dump/" + evil, b"x")], fmt))
    ex.close()
    ex.join(10)
    assert isinstance(ex.error, IntegrityError) and "Unexpected member" in str(ex.error)
    assert not (tmp_path / "escape").exists()


def test_extractor_restores_a_name_that_is_not_utf8(tmp_path):
    # pg_basebackup copies whatever sits in the data directory, whatever its name's encoding
    data = padded(raw_header(b"caf\xe9.txt", 2) + b"ok") + b"\0" * 1024
    root = tmp_path / "data"
    root.mkdir()
    ex = TarExtractor(str(root))
    ex.feed(data)
    ex.close()
    assert ex.ended and os.listdir(os.fsencode(str(root))) == [b"caf\xe9.txt"]


def test_tap_captures_members_behind_pax_and_gnu_headers():
    label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        data = tar_of([(LONG, b"z" * 3000), ("backup_label", label)], fmt)
        seen = []
        tap = TarTap({"backup_label", LONG}, on_member=seen.append)
        tap.feed(data)
        assert tap.ended and tap.members == 2 and tap.data_size == 3000 + len(label)
        assert tap.captured == {LONG: b"z" * 3000, "backup_label": label} and seen == [LONG, "backup_label"]


def test_stream_extractor_reads_what_backups_write(tmp_path):
    # pg_backup's directory format and the AOF archive: tar.add() of real files, PAX_FORMAT
    src = tmp_path / "src"
    src.mkdir()
    (src / "toc.dat").write_bytes(b"toc")
    (src / "3001.dat.gz").write_bytes(os.urandom(300000))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("toc.dat", "3001.dat.gz"):
            tar.add(str(src / name), arcname="dump/" + name, recursive=False)
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    ex.start()
    data = buf.getvalue()
    for i in range(0, len(data), 65536):
        assert ex.feed(data[i:i + 65536]) is True
    ex.close()
    ex.join(10)
    assert ex.error is None and ex.names == ["toc.dat", "3001.dat.gz"]
    assert (tmp_path / "out" / "3001.dat.gz").read_bytes() == (src / "3001.dat.gz").read_bytes()


def test_stream_extractor_names_a_stream_cut_inside_a_member(tmp_path):
    data = tar_of([("dump/toc.dat", b"t" * 5000)], tarfile.PAX_FORMAT)
    ex = TarStreamExtractor(str(tmp_path / "out"), "dump/")
    ex.start()
    ex.feed(data[:3000])
    ex.close()
    ex.join(10)
    assert isinstance(ex.error, IntegrityError) and "ends inside a member" in str(ex.error)
