# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""file:// storage: temp file + fsync + rename + directory fsync, 0600 files
in 0700 directories.

Create-only writes (``writer(key, create=True)``) end with link(temp, key)
instead of the rename: link() never replaces an existing name (EEXIST), so
of two writers of one key exactly one succeeds, whatever the timing; then
the temp name is removed and the directory fsynced. On a file system
without hard links, renameat2(RENAME_NOREPLACE) does the same in one step;
with neither, a create-only write fails: it never falls back to a check
followed by a rename.

A root that this user cannot write (not its owner, or missing in a
directory it may not create it in) is told once, by ``not_writable``,
naming the root, the user and the fix: for the probe of check mode and for
the real run's up-front check alike.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat
import uuid

from ..core.errors import ConfigError, NotFoundError, StorageError
from ..core.osutil import current_user, fsync_dir, is_disk_full, owner_and_mode
from .base import (
    READ_CHUNK,
    TEMP_MARKER,
    IncompleteUpload,
    ObjectExists,
    ObjectInfo,
    ObjectWriter,
    Storage,
    check_key,
    write_probe,
)

# link() errors meaning "this file system has no hard links"
NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def rename_noreplace(src, dst):
    """rename(src, dst) that fails with EEXIST instead of replacing dst:
    renameat2(RENAME_NOREPLACE) through glibc (2.28 and later). ctypes is
    imported here: only file systems without hard links need it."""
    import ctypes  # pylint: disable=import-outside-toplevel
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        raise OSError(errno.ENOSYS, "renameat2 is not available", dst)
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    if fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def place_new(src, dst):
    """Give the file ``src`` the name ``dst`` only if ``dst`` does not exist:
    True when done (``src`` is gone), False when ``dst`` exists (``src``
    is left for the caller to remove). Atomic: link(), or renameat2 with
    RENAME_NOREPLACE where there are no hard links; OSError otherwise."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        if e.errno not in NO_HARD_LINKS:
            raise
        try:
            rename_noreplace(src, dst)
        except OSError as e2:
            if e2.errno == errno.EEXIST:
                return False
            raise OSError(e2.errno, "the file system supports neither hard links (%s) nor renameat2 "
                          "RENAME_NOREPLACE (%s), which create-only writes need" % (
                              e.strerror, e2.strerror), dst)
        return True
    os.unlink(src)
    return True


# --------------------------------------------------------------------------
# file://


class _FileWriter(ObjectWriter):
    def __init__(self, backend, key, create=False):
        super(_FileWriter, self).__init__()
        self._backend = backend
        self._final = backend._path(key)
        self._key = key
        self._create = create
        directory = os.path.dirname(self._final)
        self._tmp = os.path.join(directory, "%s%s" % (TEMP_MARKER, uuid.uuid4().hex))
        for attempt in (1, 2):
            backend._makedirs(directory)
            try:
                fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                backend._give_to_owner(fd=fd)
                break
            except OSError as e:
                # ENOENT: another writer's abort pruned the fresh directory; once more.
                if e.errno != errno.ENOENT or attempt == 2:
                    raise _file_error("create a temporary file in %s" % directory, e)
        self._fh = os.fdopen(fd, "wb", 0)

    def write(self, data):
        try:
            self._fh.write(data)
        except OSError as e:
            self.abort()
            raise _file_error("write %s" % self._final, e)
        self.size += len(data)

    def commit(self):
        if self._done:
            return
        try:
            os.fsync(self._fh.fileno())
            self._fh.close()
            if not self._create:
                os.rename(self._tmp, self._final)
            elif not place_new(self._tmp, self._final):
                self.abort()
                raise ObjectExists("%s already exists in %s" % (self._key, self._backend.describe()),
                                   "It was left untouched")
            fsync_dir(os.path.dirname(self._final))
        except OSError as e:
            self.abort()
            raise _file_error("store %s" % self._final, e)
        self._done = True

    def abort(self):
        if self._done:
            return
        self._done = True
        try:
            self._fh.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
        # No empty backups/<id>/ directory left behind by a failed run.
        self._backend._prune_empty(os.path.dirname(self._final))


def _file_error(action, exc):
    hint = "Check the path, its permissions and free space"
    if is_disk_full(exc):
        hint = "The file system is full: free space or point storage_url elsewhere"
    elif getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        hint = "Permission denied: run as a user that owns the backup directory"
    elif getattr(exc, "errno", None) == errno.EROFS:
        hint = "The file system is read-only"
    return StorageError("Could not %s: %s" % (action, exc.strerror or exc), hint)


class FileStorage(Storage):
    scheme = "file"

    def __init__(self, root):
        if not os.path.isabs(root):
            raise ConfigError("file:// storage needs an absolute path, got %r" % root,
                              "Write it as file:///absolute/path (three slashes)")
        self.root = os.path.normpath(root)
        self._owner = None

    def describe(self):
        return "file://" + self.root

    def _give_to_owner(self, path=None, fd=None):
        """Run as root in a storage root that another user owns (a base
        backup by root into the archive that postgres's archive_command
        writes), new files and directories go to that user: a root-owned
        0600 wal/SYSTEM_IDENTIFIER would make every later wal-push fail."""
        if self._owner is None:
            self._owner = ()
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                try:
                    st = os.stat(self.root)
                except OSError:
                    st = None
                if st is not None and st.st_uid != 0:
                    self._owner = (st.st_uid, st.st_gid)
        if not self._owner:
            return
        try:
            if fd is not None:
                os.fchown(fd, *self._owner)
            else:
                os.chown(path, *self._owner)
        except OSError as e:
            raise _file_error("hand %s to the owner of %s" % (path or "a new file", self.root), e)

    def _path(self, key):
        check_key(key)
        return os.path.join(self.root, *key.split("/"))

    def _makedirs(self, directory):
        if os.path.isdir(directory):
            return
        parent = os.path.dirname(directory)
        if parent and parent != directory:
            self._makedirs(parent)
        try:
            os.mkdir(directory, 0o700)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise _file_error("create directory %s" % directory, e)
            return
        if directory.startswith(self.root + os.sep):
            self._give_to_owner(path=directory)

    def writer(self, key, create=False):
        return _FileWriter(self, key, create=create)

    def iter_read(self, key, chunk_size=READ_CHUNK):
        path = self._path(key)
        try:
            fh = open(path, "rb")
        except (IOError, OSError) as e:
            if e.errno == errno.ENOENT:
                raise NotFoundError("%s does not exist in %s" % (key, self.describe()),
                                    "Check the backup id and storage_url")
            raise _file_error("read %s" % path, e)
        return iter_file(fh, chunk_size)

    def stat(self, key):
        try:
            st = os.stat(self._path(key))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise _file_error("stat %s" % key, e)
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def _walk(self, prefix):
        base = self.root
        if not os.path.isdir(base):
            return
        # Walk only the part of the tree that can hold prefix.
        start_dir = base
        if "/" in prefix:
            start_dir = os.path.join(base, *prefix.rsplit("/", 1)[0].split("/"))
            if not os.path.isdir(start_dir):
                return

        def onerror(e):
            if getattr(e, "errno", None) == errno.ENOENT and getattr(e, "filename", None) != start_dir:
                return  # removed while we listed (a concurrent delete): it holds nothing now
            raise _file_error("list %s" % getattr(e, "filename", base), e)

        for dirpath, dirnames, filenames in os.walk(start_dir, onerror=onerror):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                yield dirpath, rel_dir + name, name

    def list(self, prefix=""):
        for dirpath, key, name in self._walk(prefix):
            if name.startswith(TEMP_MARKER) or not key.startswith(prefix):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # deleted while we listed
                raise _file_error("stat %s" % key, e)
            if stat.S_ISREG(st.st_mode):
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def list_dirs(self, prefix):
        path = os.path.join(self.root, *[p for p in prefix.split("/") if p])
        try:
            names = os.listdir(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return []
            raise _file_error("list %s" % path, e)
        return sorted(n for n in names if os.path.isdir(os.path.join(path, n))
                      and not n.startswith(TEMP_MARKER))

    def delete(self, keys):
        deleted = []
        dirs = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
                deleted.append(key)
                dirs.add(os.path.dirname(path))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise _file_error("delete %s" % path, e)
        for d in dirs:
            try:
                fsync_dir(d)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise _file_error("sync %s" % d, e)
                continue  # a concurrent delete (another rotation) removed it, emptied
            self._prune_empty(d)
        return deleted

    def _prune_empty(self, directory):
        while directory != self.root and directory.startswith(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def list_incomplete(self, prefix=""):
        for dirpath, key, name in self._walk(prefix):
            if name.startswith(TEMP_MARKER):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                yield IncompleteUpload(key, None, st.st_mtime)

    def abort_incomplete(self, upload):
        path = os.path.join(self.root, *upload.key.split("/"))
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise _file_error("remove %s" % path, e)

    def require_root(self):
        """For the commands that only read: a root that does not exist is
        an error naming it (a typo, or a file system not mounted), not an
        empty storage. Exit code 2, never "not found" (wal-fetch's "not
        archived" would end a recovery)."""
        try:
            st = os.stat(self.root)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise _file_error("open the storage root %s" % self.root, e)
            raise ConfigError("The storage root %s does not exist" % self.describe(),
                              "Check storage_url (a typo? a file system that is not mounted?); only backups "
                              "and wal-push create it, commands that read never do")
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError("The storage root %s is not a directory" % self.describe(), "Check storage_url")

    def check_writable(self):
        user = current_user()
        try:
            self._makedirs(self.root)
        except StorageError as e:
            raise not_writable(self.root, user, e)
        if not _can(self.root, os.W_OK | os.X_OK):
            raise not_writable(self.root, user)

    def probe(self, user=None):
        """Create, write, fsync (the create-only writer's link and directory
        fsync) and remove a probe object, as this user; the directories it
        had to create, the root included, are removed again."""
        user = user or current_user()
        created = _missing_dirs(self.root)
        try:
            key = write_probe(self, user)
            self.delete([key])
        except StorageError as e:
            raise not_writable(self.root, user, e)
        finally:
            for directory in created:  # deepest first; only if still empty
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
        return key


def _can(path, mode):
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _missing_dirs(path):
    """``path`` and its ancestors that do not exist, deepest first."""
    missing = []
    while True:
        try:
            os.lstat(path)
            return missing
        except OSError as e:
            if e.errno != errno.ENOENT:
                return missing  # cannot tell (a directory on the way is closed): not ours to remove
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return missing
        path = parent


def not_writable(root, user, exc=None):
    """The StorageError for a file:// root that ``user`` cannot write:
    what stands in the way (the root's owner and mode, the directory it
    would have to be created in, a directory on the way it may not pass)
    and how to fix it. ``exc``: the error the attempt raised, for the
    causes not told apart here (a full or read-only file system)."""
    url = "file://" + root
    create = ("create it owned by %s, mode 0750 (install -d -o %s -m 0750 %s), or let the drkit.backup role "
              "that schedules the job create it (it does for a file:// storage_url)" % (user, user, root))
    missing = _missing_dirs(root)
    existing = os.path.dirname(missing[-1]) if missing else root
    blocked = _first_not_passable(existing)
    if blocked:
        return StorageError("Cannot write to %s as user %s: it may not enter %s (%s)" % (
            url, user, blocked, owner_and_mode(blocked)),
            "Let %s pass (chmod o+x %s, or a group of %s), or put the storage elsewhere" % (user, blocked, user))
    if not missing:
        if not os.path.isdir(root):
            return StorageError("Cannot write to %s: %s is not a directory" % (url, root),
                                "Point storage_url at a directory")
        if not _can(root, os.W_OK | os.X_OK):
            return StorageError("Cannot write to %s as user %s: it may not create files in %s (%s)" % (
                url, user, root, owner_and_mode(root)),
                "Give it to %s (chown %s %s; chmod 0750 %s), or point storage_url at a directory that does not "
                "exist yet and let the drkit.backup role create it" % (user, user, root, root))
    elif not _can(existing, os.W_OK | os.X_OK):
        return StorageError("Cannot write to %s as user %s: %s does not exist and %s may not create it in %s (%s)" % (
            url, user, root, user, existing, owner_and_mode(existing)), create[0].upper() + create[1:])
    if exc is None:
        return StorageError("Cannot write to %s as user %s" % (url, user), "Check the path and its permissions")
    return StorageError("Cannot write to %s as user %s: %s" % (url, user, getattr(exc, "message", exc)),
                        getattr(exc, "hint", None))


def _first_not_passable(path):
    """The first directory from / down to ``path`` that this user may not
    enter (search permission), or None."""
    parts = [p for p in path.split(os.sep) if p]
    current = os.sep
    for part in [None] + parts:
        if part is not None:
            current = os.path.join(current, part)
        if os.path.isdir(current) and not _can(current, os.X_OK):
            return current
    return None


def iter_file(fh, chunk_size):
    with fh:
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                return
            yield chunk
