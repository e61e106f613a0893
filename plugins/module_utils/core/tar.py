# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ustar streams: read on the fly (TarTap, a base backup's control files
captured while it streams), extracted safely (TarExtractor, TarStreamExtractor:
regular files and directories only, no absolute paths, no '..').
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tarfile
import threading

from .errors import IntegrityError
from .stream import CHUNK


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
        self.prefix = prefix
        self.only = set(only) if only is not None else None
        r, w = os.pipe()
        self._r = os.fdopen(r, "rb")
        self._w = os.fdopen(w, "wb")
        self._open = True
        self.error = None
        self.names = []

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
            with tarfile.open(fileobj=self._r, mode="r|") as tar:
                for member in tar:
                    name = member.name[len(self.prefix):] if member.name.startswith(self.prefix) else ""
                    if not member.isfile() or not name or "/" in name or name in (".", ".."):
                        raise IntegrityError("Unexpected member %r in the archive" % member.name)
                    if self.only is not None and name not in self.only:
                        continue
                    fd = os.open(os.path.join(self.out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(tar.extractfile(member), out, CHUNK)
                    self.names.append(name)
                    if self.only is not None and self.only <= set(self.names):
                        return  # the read end closes below: the feeder stops
        except Exception as e:  # pylint: disable=broad-except
            self.error = e
            # Drain so the writer side never blocks on a full pipe.
            try:
                while self._r.read(CHUNK):
                    pass
            except (OSError, ValueError):
                pass
        finally:
            self._r.close()


# --------------------------------------------------------------------------
# following a tar stream as it passes


class TarTap(object):
    """Follows a ustar stream chunk by chunk (no copy, no thread) and keeps
    the content of a few small members by name.

    ``on_member(name)`` is called when a captured member is complete."""

    def __init__(self, wanted, limit=256 << 20, on_member=None):
        self.wanted = set(wanted)
        self.limit = limit
        self.on_member = on_member
        self.captured = {}
        self.members = 0
        self.data_size = 0
        self.ended = False
        self.names = []
        self._hdr = bytearray()
        self._remaining = 0
        self._cap = None
        self._cap_name = None
        self._cap_left = 0
        self._zero_blocks = 0

    def feed(self, data):
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n:
            if self.ended:
                return
            if self._remaining:
                take = min(self._remaining, n - i)
                if self._cap_left:
                    c = min(take, self._cap_left)
                    self._cap += mv[i:i + c]
                    self._cap_left -= c
                    if not self._cap_left:
                        self._done_capture()
                self._remaining -= take
                i += take
                continue
            take = min(512 - len(self._hdr), n - i)
            self._hdr += mv[i:i + take]
            i += take
            if len(self._hdr) == 512:
                block = bytes(self._hdr)
                self._hdr = bytearray()
                self._header(block)

    def _header(self, block):
        if block == b"\0" * 512:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self.ended = True
            return
        self._zero_blocks = 0
        name = block[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = prefix + "/" + name
        while name.startswith("./"):
            name = name[2:]
        size = tar_number(block[124:136])
        if size is None:
            raise IntegrityError("The base backup stream is not a valid tar archive (bad size field after %d members)"
                                 % self.members, "pg_basebackup's output was damaged; nothing was stored")
        typeflag = block[156:157]
        self.members += 1
        if typeflag in (b"0", b"\0"):
            self.data_size += size
        self._remaining = (size + 511) // 512 * 512
        if name in self.wanted and size <= self.limit and typeflag in (b"0", b"\0"):
            self._cap = bytearray()
            self._cap_name = name
            self._cap_left = size
            if size == 0:
                self._done_capture()

    def _done_capture(self):
        self.captured[self._cap_name] = bytes(self._cap)
        name = self._cap_name
        self._cap = None
        self._cap_name = None
        if self.on_member:
            self.on_member(name)


def tar_number(field):
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


class TarExtractor(object):
    """Writes a ustar stream into a directory as it passes: regular files
    (0600) and directories (0700) only, no absolute paths, no '..'."""

    def __init__(self, root, uid=None, gid=None):
        self.root = os.path.realpath(root)
        self.uid, self.gid = uid, gid
        self.members = 0
        self.bytes = 0
        self.ended = False
        self._hdr = bytearray()
        self._remaining = 0
        self._data_left = 0
        self._fh = None
        self._zero = 0

    def _path(self, name):
        name = name.rstrip("/")
        while name.startswith("./"):  # pg_basebackup writes ./pg_wal/archive_status
            name = name[2:]
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise IntegrityError("Unsafe path %r in the base backup" % name, "The backup is damaged; use another")
        return os.path.join(self.root, *parts)

    def _own(self, path):
        if self.uid is not None:
            os.lchown(path, self.uid, self.gid)

    def feed(self, data):
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n and not self.ended:
            if self._remaining:
                take = min(self._remaining, n - i)
                if self._data_left:
                    c = min(take, self._data_left)
                    self._fh.write(mv[i:i + c])
                    self._data_left -= c
                    if not self._data_left:
                        self._close_file()
                self._remaining -= take
                i += take
                continue
            take = min(512 - len(self._hdr), n - i)
            self._hdr += mv[i:i + take]
            i += take
            if len(self._hdr) == 512:
                block = bytes(self._hdr)
                self._hdr = bytearray()
                self._header(block)

    def _close_file(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _header(self, block):
        if block == b"\0" * 512:
            self._zero += 1
            self.ended = self._zero >= 2
            return
        self._zero = 0
        name = block[0:100].split(b"\0", 1)[0].decode("utf-8")
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8")
            if prefix:
                name = prefix + "/" + name
        size = tar_number(block[124:136])
        typeflag = block[156:157]
        if size is None:
            raise IntegrityError("The base backup is not a valid tar archive (member %d)" % self.members)
        self.members += 1
        path = self._path(name)
        self._remaining = (size + 511) // 512 * 512
        if typeflag == b"5":
            if not os.path.isdir(path):
                os.makedirs(path, 0o700)
                self._own(path)
        elif typeflag in (b"0", b"\0"):
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o700)
                self._own(parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._own(path)
            self._fh = os.fdopen(fd, "wb")
            self._data_left = size
            self.bytes += size
            if size == 0:
                self._close_file()
        elif typeflag == b"2":
            raise IntegrityError("The base backup holds a symbolic link %s (a tablespace?)" % name,
                                 "Tablespaces are not supported by drkit physical backups")
        else:
            raise IntegrityError("The base backup holds %s of tar type %r, which drkit does not restore" % (
                name, typeflag))

    def close(self):
        self._close_file()
