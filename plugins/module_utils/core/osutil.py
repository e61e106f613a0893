# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operating-system helpers: users and groups, directory traversal
checks, fsync of directories, atomic writes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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


def atomic_write(path, data):
    directory = os.path.dirname(path) or "."
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        fd, tmp = tempfile.mkstemp(prefix=".drkit-", suffix=".prom.tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            # node_exporter runs as its own user: the file must be world-readable.
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except (IOError, OSError) as e:
        raise StorageError("Could not write metrics file %s: %s" % (path, e),
                           "Check metrics_dir exists and is writable by this user")


def write_owned_file(path, text, ids):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if ids:
        os.chown(path, ids[0], ids[1])


def uid_of(owner):
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ConfigError("No such user %r" % owner)


def gid_of(group):
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError("No such group %r" % group)


def set_owner(path, uid, gid, mode):
    os.chmod(path, mode)
    if (uid, gid) != (os.stat(path).st_uid, os.stat(path).st_gid):
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            raise ConfigError("Cannot give %s to uid %d gid %d" % (path, uid, gid),
                              "Run the restore as root (become: true) or as the redis user")
