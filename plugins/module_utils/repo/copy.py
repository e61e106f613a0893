# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``drkit copy`` / drkit.backup.backup_copy: copy complete backups and the
WAL archive from one repository to another (a second bucket, region or
provider), by the storage contract on both sides.

* A backup is copied artifact by artifact, each read once from the source,
  checked against the source manifest's size and SHA-256 while it streams
  into the destination, then read back from the destination and checked
  again; the manifest goes last, create-only and byte for byte (its seal
  stays valid). Until then the copy does not exist for listing, rotation or
  restore at the destination.
* Resumable: a backup whose manifest the destination has is done; an
  artifact the destination already holds with the manifest's size and
  SHA-256 (an interrupted earlier copy) is kept, not copied again. An
  artifact there with other content is refused and left alone: artifacts
  are never overwritten. An interrupted stream leaves only a temp object or
  a multipart upload, which the destination's rotation removes after its
  grace period.
* Verification records and pins are not copied: the destination gets its
  own verification (``drkit verify`` against it) and its own retention
  (``drkit rotate`` against it).
* WAL: every segment and history file the destination lacks, create-only
  (an identical one already there is fine, a different one is refused and
  left untouched) and read back; one the destination lists already counts
  as copied when its size agrees (a different size is refused). Of streamed partials only the newest of a
  segment the source does not hold in full is copied, and the
  destination's partials of a segment now stored in full are pruned, as the
  streamer does at the source.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..core import metrics
from ..core.errors import ConfigError, ConflictError, IntegrityError
from ..core.options import Option, Options, resolve
from ..core.progress import meter
from ..core.signing import VERIFYING, Trust
from ..core.stream import read_stored
from ..storage.base import put_new
from ..storage.factory import STORAGE, open_storage, storage_options
from . import manifest as mf
from .wal_layout import WAL, classify, name_of_key, stream_end

# The destination: the storage options again, each prefixed with to_
# (config keys to_storage_url, to_secret_key, ...; flags --to-storage-url, ...).
DESTINATION = tuple(
    o.but(name="to_" + o.name, aliases=tuple("to_" + a for a in o.aliases), env=(),
          flags=tuple("--to-" + f[2:] for f in o.flags), off_flags=tuple("--to-" + f[2:] for f in o.off_flags),
          help=(o.help or o.name) + " (the destination)")
    for o in STORAGE)

OPTIONS = Options(
    STORAGE, DESTINATION, metrics.METRICS, mf.BACKUP_FILTERS,
    Option("backup_id", "str", flags=("--backup-id",),
           help="copy this backup only (default: every complete backup the destination lacks)"),
    Option("copy_wal", "bool", default=True, off_flags=("--no-wal",), help="do not copy the WAL archive"),
    VERIFYING,
)


def destination_params(p):
    """The destination's storage parameters, named as for any storage."""
    out = {}
    for o in STORAGE:
        value = p.get("to_" + o.name)
        if value is not None:
            out[o.name] = value
    return out


def _same_repository(src, dst):
    return src.describe() == dst.describe()


def copy_artifact(src, dst, key, size, sha256, progress=None):
    """Copy one artifact, checked on the way (the source's bytes against the
    manifest) and read back at the destination. Returns the bytes copied
    (0 when the destination already held it, checked). Progress meters:
    steps "copy" and "re-read"."""
    name = key.rsplit("/", 1)[-1]
    info = dst.stat(key)
    if info is not None:
        try:
            read_stored(dst, key, expected_size=size, expected_sha256=sha256)
        except IntegrityError:
            raise ConflictError("%s in %s holds other content than the source's manifest says" % (
                key, dst.describe()), "Artifacts are never overwritten: investigate the destination's object "
                "(a different backup under the same id, or damage) and remove it by hand if it is not needed")
        return 0
    with meter(progress, "copy", name, size) as m, dst.writer(key) as w:
        read_stored(src, key, expected_size=size, expected_sha256=sha256, consumer=w.write, meter=m)
    try:
        with meter(progress, "re-read", name, size) as m:
            read_stored(dst, key, expected_size=size, expected_sha256=sha256, meter=m)
    except IntegrityError as e:
        raise IntegrityError("The copy in the destination does not read back as sent: %s" % e.message,
                             "No manifest was written, so the destination's copy does not count. Run the copy "
                             "again; if it fails again, the destination or the network to it damages data")
    return size


def copy_backup(src, dst, entry, progress):
    """Copy one backup; returns the bytes copied."""
    m = entry.manifest
    copied = 0
    for a in m["artifacts"]:
        key = mf.artifact_key(m.backup_id, a["name"])
        copied += copy_artifact(src, dst, key, a["size"], a["sha256"], progress)
    raw = src.get_bytes(mf.manifest_key(m.backup_id))
    if mf.Manifest.from_json(raw) != m:
        raise IntegrityError("The manifest of %s in %s changed while it was copied" % (m.backup_id, src.describe()),
                             "Run the copy again")
    # byte for byte: the destination's manifest is the source's, seal included
    put_new(dst, mf.manifest_key(m.backup_id), raw)
    progress("copied backup %s (%d bytes)" % (m.backup_id, copied))
    return copied


def _wal_names(storage):
    """{name: ObjectInfo} of the WAL archive's objects."""
    out = {}
    for info in storage.list(WAL + "/"):
        name = name_of_key(info.key)
        if name:
            out[name] = info
    return out


def _wal_conflict(name, src, dst):
    return ConflictError("WAL %s in %s differs from the source's %s" % (name, dst.describe(), src.describe()),
                         "Two clusters archive into the destination, or it was restored from elsewhere: it was "
                         "left untouched; give the copy a destination of its own")


def copy_wal(src, dst, progress):
    """Copy the WAL the destination lacks; returns (objects, bytes, partials pruned)."""
    have = _wal_names(src)
    there = _wal_names(dst)
    full = set(n for n in have if classify(n) == "segment")
    newest_partial = {}  # segment -> its newest streamed partial, for segments not stored in full
    for name in sorted((n for n in have if classify(n) == "stream" and n[:24] not in full), key=stream_end):
        newest_partial[name[:24]] = name
    wanted = [n for n in sorted(have) if classify(n) != "stream" or newest_partial.get(n[:24]) == n]
    objects = nbytes = 0
    for name in wanted:
        key = have[name].key
        if name in there:
            # there already: taken as copied when the size agrees (reading
            # every WAL object of both archives on every run would not scale)
            if there[name].size != have[name].size:
                raise _wal_conflict(name, src, dst)
            continue
        data = src.get_bytes(key)
        try:
            created = put_new(dst, key, data)
        except ConflictError:
            raise _wal_conflict(name, src, dst)
        if created and dst.get_bytes(key) != data:
            raise IntegrityError("WAL %s read back from %s differs from what was sent" % (name, dst.describe()),
                                 "The destination damages objects: do not rely on it")
        objects += 1
        nbytes += len(data)
    # partials at the destination of a segment now stored there in full
    stale = [info.key for name, info in _wal_names(dst).items()
             if classify(name) == "stream" and name[:24] in full]
    if stale:
        dst.delete(stale)
    if objects:
        progress("copied %d WAL object(s), %d bytes" % (objects, nbytes))
    return objects, nbytes, len(stale)


def backup_copy(params, check_mode=False, progress=None):
    """Engine entry point; returns (changed, result)."""
    progress = progress or (lambda msg: None)
    p = resolve(OPTIONS, params)
    dest = destination_params(p)
    if not dest.get("storage_url"):
        raise ConfigError("to_storage_url is required: the repository to copy into",
                          "Give the destination as to_storage_url (--to-storage-url), its credentials as "
                          "to_access_key/to_secret_key in the config file")
    trust = Trust.from_params(p)
    src = open_storage(p["storage_url"], **storage_options(p))
    dst = open_storage(dest["storage_url"], **storage_options(dest))
    if _same_repository(src, dst):
        raise ConfigError("The source and the destination are the same repository (%s)" % src.describe(),
                          "Copy into another bucket, prefix or directory")
    t0 = time.time()
    # with verify_keys, a backup not signed by a trusted key is not copied (it is in problems)
    entries, problems = mf.list_backups(src, kind=p.get("kind"), source=p.get("source"),
                                        database=p.get("database"), strict=False, trust=trust)
    if p.get("backup_id"):
        entries = [e for e in entries if e.backup_id == p["backup_id"]]
        if not entries:
            raise ConfigError("Backup %s is not a complete backup in %s" % (p["backup_id"], src.describe()),
                              "List them with drkit list")
    done = set(e.backup_id for e in mf.list_backups(dst, strict=False, doubtful=True)[0])
    todo = [e for e in reversed(entries) if e.backup_id not in done]  # oldest first
    result = {"source": src.describe(), "destination": dst.describe(), "problems": problems,
              "to_copy": [e.backup_id for e in todo], "copied": [], "bytes": 0,
              "wal_objects": 0, "wal_bytes": 0, "partials_pruned": 0}
    if check_mode:
        result["msg"] = "would copy %d backup(s) from %s to %s" % (len(todo), src.describe(), dst.describe())
        return bool(todo), result
    try:
        for e in todo:
            result["bytes"] += copy_backup(src, dst, e, progress)
            result["copied"].append(e.backup_id)
        if p["copy_wal"]:
            result["wal_objects"], result["wal_bytes"], result["partials_pruned"] = copy_wal(src, dst, progress)
    except Exception:
        _metrics(p, False, result, entries, dst)
        raise
    result["seconds"] = round(time.time() - t0, 3)
    _metrics(p, True, result, entries, dst)
    result["msg"] = "copied %d backup(s) (%d bytes) and %d WAL object(s) from %s to %s" % (
        len(result["copied"]), result["bytes"], result["wal_objects"], src.describe(), dst.describe())
    return bool(result["copied"] or result["wal_objects"] or result["partials_pruned"]), result


def _metrics(p, ok, result, entries, dst):
    if not p.get("metrics_dir"):
        return
    values = {"drkit_copy_last_status": 1 if ok else 0,
              "drkit_copy_last_attempt_timestamp_seconds": time.time()}
    if ok:
        values["drkit_copy_last_success_timestamp_seconds"] = time.time()
        values["drkit_copy_backups_total"] = len(result["copied"])
        values["drkit_copy_bytes_total"] = result["bytes"] + result["wal_bytes"]
        if entries:
            # the newest source backup's time: what the destination now holds
            values["drkit_copy_newest_backup_timestamp_seconds"] = entries[0].finished.timestamp()
    metrics.update_textfile(p["metrics_dir"], p.get("job_name") or "copy", values, labels={"kind": "copy"})
