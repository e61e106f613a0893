# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operating-system helpers: users and groups, directory traversal
checks, fsync of directories, atomic writes (the one way drkit replaces a
file that someone may read meanwhile), what a full file system means for a
local write (the one place that says "disk full"), files in memory for a
child process.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import grp
import os
import pwd
import stat
import tempfile

from .errors import ConfigError, StorageError


def user_ids(user):

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError("The OS user %r does not exist" % user,
                          "Install PostgreSQL from the distribution packages (they create it) or pass os_user=")
    groups = set([pw.pw_gid] + [g.gr_gid for g in grp.getgrall() if user in g.gr_mem])
    return pw.pw_uid, pw.pw_gid, groups, pw.pw_dir


def current_user():
    """The name of the user this process runs as (its uid when it has none)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid


def owner_and_mode(path):
    """``owned by root:root, mode 0755`` for a message, or "" when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "owned by %s:%s, mode %04o" % (user, group, stat.S_IMODE(st.st_mode))


def check_traversable(path, uid, gids):
    """Raise ConfigError unless every ancestor of ``path`` can be entered by
    uid/gids (the classic permission bits; ACLs are not looked at)."""
    path = os.path.abspath(path)
    parts = []
    cur = os.path.dirname(path)
    while True:
        parts.append(cur)
        nxt = os.path.dirname(cur)
        if nxt == cur:
            break
        cur = nxt
    for p in reversed(parts):
        st = os.stat(p)
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise ConfigError(
                "The scratch directory %s is below %s (mode %o), which the OS user of the "
                "server cannot enter" % (path, p, stat.S_IMODE(st.st_mode)),
                "Use a directory such as one from sandbox.make_scratch_dir() (under /tmp), "
                "or make %s traversable (chmod o+x)" % p)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path, mode=0o600, owner=None, sync=True, sync_dir=True):
    """A binary file object whose content replaces ``path`` when the with
    block ends without an exception: it is written under a temporary name in
    the same directory, flushed, fsync'ed (``sync``), given ``mode`` and
    ``owner`` ((uid, gid, ...) or None), renamed over ``path`` and the
    directory fsync'ed (``sync_dir``). A reader sees the old file or the
    whole new one, never a part; on any failure the temp file is removed and
    the old file is left as it was. Raises OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".drkit-tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), owner[0], owner[1])
            os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.rename(tmp, path)
        tmp = None
        if sync_dir:
            fsync_dir(directory)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write(path, data, mode=0o600, owner=None, sync=True, sync_dir=True):
    """Replace ``path`` with ``data`` (bytes, or text written as UTF-8) the
    way atomic_writer() does."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    with atomic_writer(path, mode, owner, sync, sync_dir) as fh:
        fh.write(data)
    return path


FD_PATH = "/proc/%d/fd/%d"


def unlink_quietly(path):
    """Remove a file if it is there; True when this call removed it."""
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def memory_file_path(fd):
    """The path under which processes of this user (our children, and theirs:
    a wrapper script around pg_dump that closes its descriptors) open the
    memory file ``fd`` while this process lives: /proc/<our pid>/fd/<fd>."""
    return FD_PATH % (os.getpid(), fd)


def memory_file(data, name="drkit"):
    """A file that exists only in memory (memfd_create), mode 0600, holding
    ``data`` (bytes), open as memory_file_path(fd) by processes of this user
    for as long as this process keeps the descriptor open. Nothing is on any
    file system: the memory goes when the descriptor closes, at the latest
    when drkit ends, however it ends. Returns the descriptor (close-on-exec,
    never inherited), or None where memory files are not available (no
    memfd_create, no /proc)."""
    try:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return None
    try:
        os.fchmod(fd, 0o600)  # memfd_create makes it 0777
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if os.path.exists(memory_file_path(fd)):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _id_of(value, lookup, attr, what):
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return getattr(lookup(value), attr)
    except KeyError:
        raise ConfigError("No such %s %r" % (what, value))


def uid_of(owner):
    return _id_of(owner, pwd.getpwnam, "pw_uid", "user")


def gid_of(group):
    return _id_of(group, grp.getgrnam, "gr_gid", "group")


def set_owner(path, uid, gid, mode):
    os.chmod(path, mode)
    if (uid, gid) != (os.stat(path).st_uid, os.stat(path).st_gid):
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            raise ConfigError("Cannot give %s to uid %d gid %d" % (path, uid, gid),
                              "Run the restore as root (become: true) or as the redis user")


# --------------------------------------------------------------------------
# disk full

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# What a tool that ran out of room prints (strerror, C locale) and what is
# left on a full file system after the failed write (less than one tool's
# write buffer, whatever the locale of the tool's messages).
_DISK_FULL_TEXT = tuple(os.strerror(e) for e in DISK_FULL)
_ALMOST_NOTHING = 1 << 20


def is_disk_full(exc):
    """Whether an OSError is ENOSPC or EDQUOT."""
    return getattr(exc, "errno", None) in DISK_FULL


def ran_out_of_room(path, tool_output=""):
    """After a tool failed writing below ``path``: whether it ran out of
    room (it said so, or the file system holding ``path`` is as good as full)."""
    if any(text in (tool_output or "") for text in _DISK_FULL_TEXT):
        return True
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < _ALMOST_NOTHING


def local_write_error(exc, directory, what, option, need=None, alternative=None):
    """StorageError for a failed write of ``what`` below ``directory`` (a
    work dir, a download's temp dir), ``option`` being the setting that
    points there (``alternative``: another way out, in words). A full file
    system says so, names the directory and what to do; exit code 3 on the
    command line, like a full storage. ``exc`` None: known to be full."""
    if exc is None or is_disk_full(exc):
        room = " (about %d bytes)" % need if need else ""
        other = ", or %s" % alternative if alternative else ""
        return StorageError("The file system of %s is full: no room for %s" % (directory, what),
                            "Free space there, or point %s at a file system with room for it%s%s; "
                            "nothing was kept from this run" % (option, room, other))
    return StorageError("Could not write %s in %s: %s" % (what, directory, exc.strerror or exc),
                        "Check that %s exists and is writable, or point %s elsewhere" % (directory, option))
