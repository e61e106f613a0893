# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a physical base backup into a data directory: the directory
checks, the streamed extraction, the clean-up of a failed attempt.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import shutil
import time

from ..core.crypto import Keyring
from ..core.errors import ConfigError, IntegrityError, SafetyError
from ..core.progress import meter
from ..core.stream import decompressor_for, read_stored
from ..core.tar import TarExtractor
from ..repo import manifest as mf
from .backup_physical import ARTIFACT
from .cluster import pidfile_live


def check_data_directory(path):
    """Refuse anything but a new or empty directory; say so clearly for a
    running server's directory."""
    if not path or not os.path.isabs(path):
        raise ConfigError("data_directory must be an absolute path, got %r" % (path,))
    if not os.path.lexists(path):
        check_can_create(path)
        return "absent"
    if not os.path.isdir(path):
        raise SafetyError("data_directory %s exists and is not a directory" % path, "Choose a new path")
    pid = pidfile_live(path)
    if pid:
        raise SafetyError("data_directory %s belongs to a RUNNING PostgreSQL server (pid %d): a restore never "
                          "goes over a running server" % (path, pid),
                          "Restore into a new directory and switch over once it is checked")
    entries = os.listdir(path)
    if entries:
        what = "a PostgreSQL data directory" if "PG_VERSION" in entries else "not empty"
        raise SafetyError("data_directory %s is %s (%d entries): refusing to restore over it" % (
            path, what, len(entries)), "Restore into a new or empty directory; nothing was changed")
    if not _writable(path):
        raise ConfigError("data_directory %s is empty but this run's user (uid %d) cannot write it" % (
            path, os.geteuid()), "Run as a user who may write it (become: true), or chown/chmod it")
    return "empty"


def _writable(path):
    # effective ids: what open() and mkdir() use when Ansible became root
    return os.access(path, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


def check_can_create(path):
    """A new data directory needs an existing parent that this run's user
    may write: say which and how to fix it before anything is fetched
    (the plan of a point-in-time recovery checks it, not only the run)."""
    parent = os.path.dirname(os.path.normpath(path))
    if not os.path.isdir(parent):
        missing = parent
        while not os.path.isdir(os.path.dirname(missing)):
            missing = os.path.dirname(missing)
        raise ConfigError("The parent directory %s of data_directory %s does not exist%s" % (
            parent, path, "" if missing == parent else " (%s is missing)" % missing),
            "Create it first (mkdir -p %s, as root: root-owned, mode 0755, so the server's OS user can enter it), "
            "or choose a data_directory in an existing directory" % parent)
    if not _writable(parent):
        raise ConfigError("The parent directory %s of data_directory %s is not writable by this run's user "
                          "(uid %d)" % (parent, path, os.geteuid()),
                          "Run as a user who may create directories there (become: true), or create %s "
                          "yourself, empty, owned by the server's OS user, mode 0700" % path)


def require_base_key(entry, keyring):
    """ConfigError naming the recipients' fingerprints when the base backup
    is encrypted and ``keyring`` holds none of their identities: called
    before anything is created (and in check mode)."""
    if entry.manifest.artifact(ARTIFACT).get("encrypted"):
        keyring.check(entry.manifest.get("encryption") or {}, _what(entry))


def _what(entry):
    return "Artifact %s of backup %s" % (ARTIFACT, entry.backup_id)


def restore_base_backup(storage, entry, data_dir, ids=None, progress=None, skip=(), keyring=None):
    """Stream base.tar.zst from storage (checking size and sha256; an
    encrypted one decrypted with ``keyring``) into data_dir, leaving out the
    files named in ``skip``. Returns facts about it (``skipped``: those of
    them the backup held). age authenticates chunk by chunk: a damaged
    chunk fails the call after earlier chunks were extracted, as a sha256
    mismatch does; callers remove what was extracted."""
    progress = progress or (lambda msg: None)
    manifest = entry.manifest
    art = manifest.artifact(ARTIFACT)
    keyring = keyring or Keyring()
    require_base_key(entry, keyring)  # before the directory is touched
    # stored = encrypt(compress(tar)): decrypt first, then decompress
    transforms = [keyring.decryptor(manifest.get("encryption"), _what(entry))] if art.get("encrypted") else []
    if art.get("compressed", True):
        transforms.append(decompressor_for(manifest.get("compression")))
    key = mf.artifact_key(entry.backup_id, ARTIFACT)
    uid, gid = (ids[0], ids[1]) if ids else (None, None)
    if not os.path.isdir(data_dir):
        os.makedirs(data_dir, 0o700)
    os.chmod(data_dir, 0o700)
    if uid is not None:
        os.chown(data_dir, uid, gid)
    extractor = TarExtractor(data_dir, uid, gid, skip=skip)
    t0 = time.time()
    progress("restoring %s (%d bytes stored) into %s" % (entry.backup_id, art["size"], data_dir))
    try:
        with meter(progress, "restore", ARTIFACT, art["size"]) as m:
            read_stored(storage, key, art["size"], art["sha256"], transforms=transforms,
                        consumer=extractor.feed, meter=m)
    finally:
        extractor.close()
    if not extractor.ended:
        raise IntegrityError("The stored %s of %s ends without a tar end marker" % (ARTIFACT, entry.backup_id),
                             "The backup is damaged; use another one")
    for required in ("PG_VERSION", "backup_label", "global/pg_control"):
        if not os.path.exists(os.path.join(data_dir, required)):
            raise IntegrityError("The restored base backup has no %s" % required)
    return {"members": extractor.members, "bytes": extractor.bytes, "seconds": round(time.time() - t0, 3),
            "skipped": extractor.skipped}


def empty_dir(path):
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
