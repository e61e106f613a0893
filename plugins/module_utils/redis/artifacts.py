# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a stored Redis backup: which backup, its artifact, fetched into a
directory, checked with redis-check-rdb/-aof.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..core.crypto import Keyring
from ..core.errors import ConfigError, IntegrityError, NotFoundError
from ..core.options import Option, resolve
from ..core.progress import meter
from ..core.signing import VERIFYING, Trust
from ..core.stream import decompressor_for, read_stored
from ..core.tar import TarStreamExtractor
from ..repo import manifest as mf
from .tools import (
    AOF_PREFIX,
    RdbChecker,
    check_aof_copy,
    check_aof_dir,
    check_rdb_file,
    find_redis_tool,
    locate_redis_tool,
)

REDIS_KINDS = ("redis_rdb", "redis_aof")
# Which Redis backup redis_verify and redis_restore read.
SELECTOR = mf.BACKUP_SELECTOR + (
    Option("source", "str", flags=("--source",), help="only backups of this source (redis:<host>:<port>)"),
) + VERIFYING


# --------------------------------------------------------------------------
# finding and fetching a backup


def resolve_redis(storage, params):
    """The BackupEntry of a Redis backup: an id, or the newest (optionally at
    or before ``before``, optionally from one ``source``)."""
    p = resolve(SELECTOR, params)
    bid = p["backup_id"]
    trust = Trust.from_params(p)
    if bid != "latest":
        entry = mf.resolve(storage, bid, trust=trust)
        if entry.manifest["kind"] not in REDIS_KINDS:
            raise ConfigError("Backup %s is a %s backup, not a Redis backup" % (bid, entry.manifest["kind"]),
                              "Use pg_verify / pg_restore for PostgreSQL backups")
        return entry
    # Never a backup dated in the future, nor one not signed by a key of verify_keys (when set); a damaged
    # newest one is taken, and its checks fail it.
    entries, _problems = mf.list_backups(storage, source=p["source"] or None, strict=False, doubtful=True,
                                         trust=trust)
    entries = [e for e in entries if e.manifest["kind"] in REDIS_KINDS]
    if p["before"]:
        limit = mf.parse_time(p["before"])
        entries = [e for e in entries if e.finished <= limit]
    passed_over = ["%s: %s" % (e.backup_id, e.future or e.untrusted) for e in entries if e.future or e.untrusted]
    entries = [e for e in entries if not (e.future or e.untrusted)]
    if not entries:
        raise NotFoundError("No complete Redis backup in %s%s" % (
            storage.describe(), " finished at or before %s" % p["before"] if p["before"] else ""),
            "Take one with redis_snapshot first, or check storage_url, source and before")
    entries[0].passed_over = passed_over
    return entries[0]


def main_artifact(manifest):
    if not manifest["artifacts"]:
        raise IntegrityError("Backup %s lists no artifacts" % manifest.backup_id)
    return manifest["artifacts"][0]


def _what(manifest, art):
    return "Artifact %s of backup %s" % (art["name"], manifest.backup_id)


def require_key(manifest, keyring):
    """ConfigError naming the recipients' fingerprints when the backup is
    encrypted and ``keyring`` (core.crypto.Keyring) holds none of their
    identities: called before anything is fetched, stopped or created."""
    art = main_artifact(manifest)
    if art.get("encrypted"):
        (keyring or Keyring()).check(manifest.get("encryption") or {}, _what(manifest, art))


def _transforms(manifest, art, keyring):
    # stored = encrypt(compress(data)): decrypt first, then decompress
    out = []
    if art.get("encrypted"):
        out.append((keyring or Keyring()).decryptor(manifest.get("encryption"), _what(manifest, art)))
    if art.get("compressed"):
        out.append(decompressor_for(manifest.get("compression")))
    return out


def read_artifact(storage, manifest, art, consumer=None, progress=None, step="download", keyring=None):
    """Read an artifact back, checking size and sha256 of the stored bytes;
    with ``consumer`` the decoded content (decrypted with ``keyring``,
    decompressed) goes to it. Decrypted bytes are provisional until this
    returns: age authenticates chunk by chunk, and a damaged or truncated
    ciphertext is only known at the damaged chunk or at the end."""
    key = mf.artifact_key(manifest.backup_id, art["name"])
    if storage.stat(key) is None:
        raise IntegrityError("Artifact %s of backup %s is missing from %s" % (
            art["name"], manifest.backup_id, storage.describe()), "The backup is damaged; use another backup")
    with meter(progress, step, art["name"], art["size"]) as m:
        return read_stored(storage, key, art["size"], art["sha256"],
                           transforms=_transforms(manifest, art, keyring) if consumer else (), consumer=consumer,
                           meter=m)


def fetch_backup(storage, manifest, dest_dir, aof_dirname="appendonlydir", progress=None, keyring=None):
    """Download the backup into dest_dir, checking size and sha256 on the way
    (and decrypting it with ``keyring`` when it is encrypted). Returns ('rdb',
    path of dump.rdb) or ('aof', path of the AOF directory). When it raises,
    what it wrote into dest_dir is unchecked: the caller removes dest_dir
    (a staging directory, never the place Redis loads from)."""
    art = main_artifact(manifest)
    if manifest["kind"] == "redis_rdb":
        path = os.path.join(dest_dir, "dump.rdb")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            read_artifact(storage, manifest, art, consumer=out.write, progress=progress, keyring=keyring)
        return "rdb", path
    aofdir = os.path.join(dest_dir, aof_dirname)
    os.mkdir(aofdir, 0o700)
    ex = TarStreamExtractor(aofdir, AOF_PREFIX)
    ex.start()
    try:
        read_artifact(storage, manifest, art, consumer=ex.feed, progress=progress, keyring=keyring)
    finally:
        ex.close()
        ex.join()
    if ex.error:
        raise IntegrityError("Cannot unpack %s: %s" % (art["name"], ex.error),
                             "The backup is damaged; use another backup")
    fname = manifest["data"].get("aof", {}).get("appendfilename", "appendonly.aof")
    if fname + ".manifest" not in ex.names:
        raise IntegrityError("%s holds no %s.manifest" % (art["name"], fname))
    return "aof", aofdir


def aof_manifest_path(aofdir):
    found = [n for n in os.listdir(aofdir) if n.endswith(".manifest")]
    if len(found) != 1:
        raise IntegrityError("Expected one AOF manifest in %s, found %s" % (aofdir, found or "none"))
    return os.path.join(aofdir, found[0])


def _aof_facts(ok, facts, text):
    """redis-check-aof's verdict on a backup's AOF: its facts, or
    IntegrityError with the tool's last lines."""
    if not ok:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        raise IntegrityError("redis-check-aof rejected the AOF of this backup: %s" % " | ".join(lines[-3:]),
                             "The backup is damaged; use another backup")
    facts.pop("files", None)
    return facts


def check_structure(runner, layout, path, bin_dir=None):
    if layout == "rdb":
        return check_rdb_file(runner, find_redis_tool("redis-check-rdb", bin_dir), path)
    ok, facts, text = check_aof_dir(runner, find_redis_tool("redis-check-aof", bin_dir), aof_manifest_path(path))
    return _aof_facts(ok, facts, text)


def check_structure_with(runner, layout, path, bin_dir=None):
    """check_structure with the tools where ``runner`` runs them: inside a
    container too (the local files streamed in: the RDB on the tool's
    stdin, the AOF as a tar into a temp directory there)."""
    if layout == "rdb":
        tool = locate_redis_tool(runner, "redis-check-rdb", bin_dir)[0]
        checker = RdbChecker(runner, tool, "the backup's RDB")
        try:
            with open(path, "rb") as f:
                while True:
                    data = f.read(1 << 20)
                    if not data:
                        break
                    checker.feed(data)
            return checker.finish()
        finally:
            checker.close()
    tool = locate_redis_tool(runner, "redis-check-aof", bin_dir)[0]
    ok, facts, text = check_aof_copy(runner, tool, path, os.path.basename(aof_manifest_path(path)))
    return _aof_facts(ok, facts, text)
