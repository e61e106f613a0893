# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tar streams, read on the fly by one header parser (TarReader: ustar,
GNU long names, pax extended headers) that three followers share:

* TarTap captures a base backup's control files while the stream passes;
* TarExtractor writes a base backup into a data directory (regular files
  0600 and directories 0700 only, no absolute paths, no '..');
* TarStreamExtractor unpacks the plain files directly under one prefix (a
  dump directory, an AOF directory) in a thread, as the archive is read back.

None of them holds more than a header block and the chunk being fed: member
data goes straight from the fed buffer to its destination.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading

from .errors import IntegrityError
from .stream import CHUNK

BLOCK = 512
ZERO_BLOCK = b"\0" * BLOCK
REGULAR = (b"0", b"\0")
DIRECTORY = b"5"
SYMLINK = b"2"
# Headers that describe the next member: GNU long name / long link name,
# pax extended (this member) and pax global (all following members).
LONG_NAME, LONG_LINK, PAX, PAX_GLOBAL = b"L", b"K", b"x", b"g"
EXTENDED_LIMIT = 1 << 20  # a longer extended header is not something drkit writes or reads


def tar_number(field):
    """A numeric header field: octal text, or GNU base-256 for big values.
    None when it is neither."""
    if field[:1] and ord(field[:1]) & 0x80:  # base-256 (GNU) for big sizes
        value = 0
        for b in bytearray(field[1:]):
            value = (value << 8) | b
        return value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _text(field):
    # surrogateescape: names that are not UTF-8 map back to their bytes in os calls
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class TarHeader(object):
    """One parsed 512-byte header: name (with the ustar prefix, or the GNU
    long name / pax path that preceded it), size, typeflag and, for links,
    linkname. (Modes and owners are not read: drkit gives its own.)"""

    __slots__ = ("name", "size", "typeflag", "linkname")

    def __init__(self, name, size, typeflag, linkname=None):
        self.name, self.size, self.typeflag, self.linkname = name, size, typeflag, linkname

    @property
    def isfile(self):
        return self.typeflag in REGULAR

    @property
    def isdir(self):
        return self.typeflag == DIRECTORY


def parse_header(block):
    """The TarHeader of a 512-byte header block; IntegrityError for a block
    that is not one (bad checksum or number fields). The all-zero end block
    is the caller's to recognise."""
    stored = tar_number(block[148:156])
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    if stored != unsigned and stored != unsigned - 256 * sum(1 for b in bytearray(block) if b & 0x80) + \
            256 * sum(1 for b in bytearray(block[148:156]) if b & 0x80):  # old tars summed signed bytes
        raise ValueError("bad header checksum")
    size = tar_number(block[124:136])
    if size is None:
        raise ValueError("bad size field")
    name = _text(block[0:100])
    if block[257:263] == b"ustar\0":  # POSIX ustar (GNU's "ustar  \0" has no prefix field)
        prefix = _text(block[345:500])
        if prefix:
            name = prefix + "/" + name
    typeflag = block[156:157]
    return TarHeader(name, size, typeflag, _text(block[157:257]) if typeflag in (b"1", SYMLINK) else None)


def parse_pax(data):
    """{keyword: value} of pax extended header records ("LEN key=value\\n")."""
    out = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            length = 0
        record = data[pos:pos + length]
        if space < 0 or length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ValueError("bad pax record at byte %d" % pos)
        key, value = record[space - pos + 1:-1].split(b"=", 1)
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def safe_parts(name):
    """The path components of a member name relative to the extraction
    root ('./' prefixes and a trailing '/' dropped); None when the name is
    absolute, empty or holds '', '.' or '..' components."""
    name = name.rstrip("/")
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return parts


class TarReader(object):
    """Follows a tar stream fed in chunks of any size: no thread, no copy of
    member data. For each member ``member(header)`` is called; it returns a
    callable that gets the member's data (memoryview slices, valid only
    during the call) or None to skip it, and ``member_done()`` is called
    when that data is complete. GNU long names and pax headers are applied
    to the member they describe; ``ended`` is set at the end marker."""

    what = "The tar stream"
    hint = None

    def __init__(self):
        self.members = 0
        self.ended = False
        self._hdr = bytearray()
        self._remaining = 0   # data and padding of the current member still to come
        self._data_left = 0   # of which data for the sink
        self._sink = None
        self._extended = None  # (typeflag, bytearray) while an extended header's data comes
        self._pending = {}
        self._global = {}
        self._zero = 0

    # -- hooks -----------------------------------------------------------

    def member(self, header):
        return None

    def member_done(self):
        pass

    # -- the stream ------------------------------------------------------

    def feed(self, data):
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n and not self.ended:
            if self._remaining:
                take = min(self._remaining, n - i)
                if self._data_left:
                    c = min(take, self._data_left)
                    self._sink(mv[i:i + c])
                    self._data_left -= c
                    if not self._data_left:
                        self._data_done()
                self._remaining -= take
                i += take
                continue
            if not self._hdr and n - i >= BLOCK:
                block = mv[i:i + BLOCK].tobytes()
                i += BLOCK
                self._header(block)
                continue
            take = min(BLOCK - len(self._hdr), n - i)
            self._hdr += mv[i:i + take]
            i += take
            if len(self._hdr) == BLOCK:
                block = bytes(self._hdr)
                del self._hdr[:]
                self._header(block)

    @property
    def in_member(self):
        """True while a header or a member's data is only partly read."""
        return bool(self._hdr or self._remaining)

    def invalid(self, problem):
        return IntegrityError("%s is not a valid tar archive (%s after %d members)" % (
            self.what, problem, self.members), self.hint)

    def _header(self, block):
        if block == ZERO_BLOCK:
            self._zero += 1
            self.ended = self._zero >= 2
            return
        self._zero = 0
        try:
            header = parse_header(block)
        except ValueError as e:
            raise self.invalid(str(e))
        self._remaining = (header.size + 511) // 512 * 512
        if header.typeflag in (LONG_NAME, LONG_LINK, PAX, PAX_GLOBAL):
            if header.size > EXTENDED_LIMIT:
                raise self.invalid("an extended header of %d bytes" % header.size)
            self._extended = (header.typeflag, bytearray())
            self._start_data(self._extended[1].extend, header.size)
            return
        self._apply_extended(header)
        if header.typeflag == DIRECTORY:
            header.name = header.name.rstrip("/")
        self.members += 1
        sink = self.member(header)
        if sink is not None:
            self._start_data(sink, header.size)

    def _start_data(self, sink, size):
        self._sink = sink
        self._data_left = size
        if size == 0:
            self._data_done()

    def _data_done(self):
        self._sink = None
        if self._extended is None:
            self.member_done()
            return
        typeflag, data = self._extended
        self._extended = None
        if typeflag in (LONG_NAME, LONG_LINK):
            self._pending["path" if typeflag == LONG_NAME else "linkpath"] = _text(bytes(data))
            return
        try:
            records = parse_pax(bytes(data))
        except ValueError as e:
            raise self.invalid(str(e))
        if any(k.startswith("GNU.sparse.") for k in records):
            raise self.invalid("a sparse member")
        (self._global if typeflag == PAX_GLOBAL else self._pending).update(records)

    def _apply_extended(self, header):
        if not (self._pending or self._global):
            return
        facts = dict(self._global)
        facts.update(self._pending)
        self._pending = {}
        if "path" in facts:
            header.name = facts["path"]
        if "linkpath" in facts:
            header.linkname = facts["linkpath"]
        if "size" in facts:
            try:
                header.size = int(facts["size"])
            except ValueError:
                raise self.invalid("a bad pax size %r" % facts["size"])
            self._remaining = (header.size + 511) // 512 * 512


# --------------------------------------------------------------------------
# following a base backup as it passes


class TarTap(TarReader):
    """Keeps the content of a few small members by name while the stream
    passes (``captured``), and counts members and data bytes.

    ``on_member(name)`` is called when a captured member is complete."""

    what = "The base backup stream"
    hint = "pg_basebackup's output was damaged; nothing was stored"

    def __init__(self, wanted, limit=256 << 20, on_member=None):
        super(TarTap, self).__init__()
        self.wanted = set(wanted)
        self.limit = limit
        self.on_member = on_member
        self.captured = {}
        self.data_size = 0
        self._cap = None
        self._cap_name = None

    def member(self, header):
        if not header.isfile:
            return None
        self.data_size += header.size
        name = header.name
        while name.startswith("./"):
            name = name[2:]
        if name not in self.wanted or header.size > self.limit:
            return None
        self._cap = bytearray()
        self._cap_name = name
        return self._cap.extend

    def member_done(self):
        name = self._cap_name
        self.captured[name] = bytes(self._cap)
        self._cap = None
        self._cap_name = None
        if self.on_member:
            self.on_member(name)


class _TapReader(object):
    """A read()-only view of a process's stdout that shows each chunk to a
    TarTap (pump() uses read() when there is no fileno())."""

    def __init__(self, fileobj, tap):
        self._fd = fileobj.fileno()
        self._tap = tap

    def read(self, n):
        data = os.read(self._fd, n)
        if data:
            self._tap.feed(data)
        return data


# --------------------------------------------------------------------------
# writing a base backup into a data directory


class TarExtractor(TarReader):
    """Writes a base backup's tar stream into a directory as it passes:
    regular files (0600) and directories (0700) only, no absolute paths, no
    '..'. ``uid``/``gid``: the owner of what it creates. Regular files named
    in ``skip`` (paths inside the archive) are left out and listed in
    ``skipped``."""

    what = "The base backup"
    hint = "The backup is damaged; use another"

    def __init__(self, root, uid=None, gid=None, skip=()):
        super(TarExtractor, self).__init__()
        self.root = os.path.realpath(root)
        self.uid, self.gid = uid, gid
        self.skip = frozenset(skip)
        self.skipped = []
        self.bytes = 0
        self._fh = None

    def _own(self, path):
        if self.uid is not None:
            os.lchown(path, self.uid, self.gid)

    def member(self, header):
        parts = safe_parts(header.name)
        if parts is None:
            raise IntegrityError("Unsafe path %r in the base backup" % header.name, self.hint)
        path = os.path.join(self.root, *parts)
        if header.isdir:
            if not os.path.isdir(path):
                os.makedirs(path, 0o700)
                self._own(path)
            return None
        if header.isfile:
            if "/".join(parts) in self.skip:
                self.skipped.append("/".join(parts))
                return None
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o700)
                self._own(parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._own(path)
            self._fh = os.fdopen(fd, "wb")
            self.bytes += header.size
            return self._fh.write
        if header.typeflag == SYMLINK:
            raise IntegrityError("The base backup holds a symbolic link %s (a tablespace?)" % header.name,
                                 "Tablespaces are not supported by drkit physical backups")
        raise IntegrityError("The base backup holds %s of tar type %r, which drkit does not restore" % (
            header.name, header.typeflag))

    def member_done(self):
        self.close()

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# --------------------------------------------------------------------------
# unpacking an archive as it is read back


class _FlatExtractor(TarReader):
    """TarStreamExtractor's reader: plain files directly under ``prefix``."""

    def __init__(self, out_dir, prefix, only):
        super(_FlatExtractor, self).__init__()
        self.out_dir = out_dir
        self.prefix = prefix
        self.only = only
        self.names = []
        self._fh = None
        self._name = None

    def member(self, header):
        name = header.name[len(self.prefix):] if header.name.startswith(self.prefix) else ""
        if not header.isfile or safe_parts(name) != [name]:
            raise IntegrityError("Unexpected member %r in the archive" % header.name)
        if self.only is not None and name not in self.only:
            return None
        fd = os.open(os.path.join(self.out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._name = name
        return self._fh.write

    def member_done(self):
        self.close()
        self.names.append(self._name)
        if self.only is not None and self.only <= set(self.names):
            self.ended = True  # all that was asked for is out: follow no further

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class TarStreamExtractor(threading.Thread):
    """Unpacks a tar stream written to feed() into out_dir, in a thread, so a
    stored archive is unpacked while it is read back and hashed.

    Only plain files directly under ``prefix`` are accepted; anything else
    (links, directories, paths with '/' or '..') is an IntegrityError, so a
    tampered archive cannot write outside out_dir. With ``only``, just those
    names are extracted and reading stops once they are out: feed() then
    returns False and the caller stops decompressing but goes on hashing."""

    def __init__(self, out_dir, prefix, only=None):
        super(TarStreamExtractor, self).__init__()
        self.daemon = True
        self.out_dir = out_dir
        self._tar = _FlatExtractor(out_dir, prefix, set(only) if only is not None else None)
        r, w = os.pipe()
        self._r = r
        self._w = os.fdopen(w, "wb")
        self._open = True
        self.error = None

    @property
    def names(self):
        return self._tar.names

    def feed(self, data):
        if not self._open:
            return False
        try:
            self._w.write(data)
        except (BrokenPipeError, OSError, ValueError):
            self._open = False
            return False
        return True

    def close(self):
        self._open = False
        try:
            self._w.close()
        except (OSError, ValueError):
            pass

    def run(self):
        try:
            if not os.path.isdir(self.out_dir):
                os.makedirs(self.out_dir, 0o700)
            while not self._tar.ended:
                data = os.read(self._r, CHUNK)
                if not data:
                    if self._tar.in_member:
                        raise self._tar.invalid("the stream ends inside a member")
                    return
                self._tar.feed(data)
            # the end, or all of ``only``: the read end closes below and the feeder stops
        except Exception as e:  # pylint: disable=broad-except
            self.error = e
            # Drain so the writer side never blocks on a full pipe.
            try:
                while os.read(self._r, CHUNK):
                    pass
            except OSError:
                pass
        finally:
            self._tar.close()
            os.close(self._r)
