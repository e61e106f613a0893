# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup ids, the manifest, and the catalog of complete backups.

Storage layout (see docs/storage-layout.md):

    <root>/backups/<backup_id>/<artifact>...     data, written first
    <root>/backups/<backup_id>/manifest.json     written LAST: the backup exists
    <root>/backups/<backup_id>/verify-<ts>.json  verification records
    <root>/backups/<backup_id>/keep              pin: rotation never deletes it

A backup without manifest.json is incomplete and ignored by listing,
rotation and restore.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import datetime
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from ..core.errors import ConfigError, IntegrityError, NotFoundError
from ..core.options import Option
from ..storage.base import ObjectExists

FORMAT = "drkit.backup/manifest"
VERSION = 1
BACKUPS = "backups"
MANIFEST = "manifest.json"
PIN = "keep"
KINDS = ("pg_logical", "pg_physical", "redis_rdb", "redis_aof")

# Which backup a restore or verification reads (doc fragment
# drkit.backup.backup_selector): an id, or the newest one (before a time).
BACKUP_SELECTOR = (
    Option("backup_id", "str", default="latest", flags=("--backup-id",), help="an id, or latest (default)"),
    Option("before", "str", flags=("--before",), help="newest backup finished at or before this time (ISO 8601)"),
)
# The filters of listing and rotation (list_backups).
BACKUP_FILTERS = (
    Option("kind", "str", choices=KINDS, flags=("--kind",), help="only backups of this kind"),
    Option("database", "str", flags=("--database", "-d"), help="only backups of this database"),
    Option("source", "str", flags=("--source",), help="only backups of this source (e.g. redis:host:6379)"),
)
ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([a-z0-9-]+)-([0-9a-f]{6})$")
REQUIRED = ("format", "version", "backup_id", "kind", "started_at", "finished_at", "source", "artifacts")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(dt):
    """UTC ISO 8601 with a Z, to the microsecond: sortable and unambiguous."""
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value):
    """Parse an ISO 8601 timestamp (Z or offset; naive means UTC)."""
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError("Cannot read %r as a timestamp" % (value,),
                              "Use ISO 8601, e.g. 2026-11-25T14:30:00Z")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def new_backup_id(kind, when=None):
    if kind not in KINDS:
        raise ConfigError("Unknown backup kind %r" % kind)
    when = when or utcnow()
    return "%s-%s-%s" % (when.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
                         kind.replace("_", "-"), binascii.hexlify(os.urandom(3)).decode("ascii"))


def check_backup_id(backup_id):
    if not isinstance(backup_id, str) or not ID_RE.match(backup_id):
        raise ConfigError("%r is not a backup id" % (backup_id,),
                          "Use 'latest' or an id as printed by backup_info / drkit list, "
                          "e.g. 20261125T211500Z-pg-logical-3fa9c1")
    return backup_id


def backup_prefix(backup_id):
    return "%s/%s/" % (BACKUPS, backup_id)


def manifest_key(backup_id):
    return backup_prefix(backup_id) + MANIFEST


def artifact_key(backup_id, name):
    return backup_prefix(backup_id) + name


class Manifest(dict):
    """The manifest is a plain JSON object; this class adds validation."""

    @classmethod
    def new(cls, backup_id, kind, started_at, source, tools=None, compression=None,
            encryption=None, options=None, labels=None):
        return cls(format=FORMAT, version=VERSION, backup_id=backup_id, kind=kind,
                   started_at=isoformat(started_at), finished_at=None, duration_seconds=None,
                   source=source, tools=tools or {}, compression=compression,
                   encryption=encryption, options=options or {}, labels=labels or {},
                   artifacts=[], data={})

    def add_artifact(self, name, size, sha256, **extra):
        entry = dict(name=name, size=size, sha256=sha256)
        entry.update(extra)
        self["artifacts"].append(entry)
        return entry

    def artifact(self, name):
        for a in self["artifacts"]:
            if a["name"] == name:
                return a
        raise IntegrityError("Manifest of %s lists no artifact %r" % (self["backup_id"], name))

    def finish(self, finished_at):
        self["finished_at"] = isoformat(finished_at)
        self["duration_seconds"] = round(
            (finished_at - parse_time(self["started_at"])).total_seconds(), 3)

    @property
    def backup_id(self):
        return self["backup_id"]

    @property
    def finished(self):
        return parse_time(self["finished_at"])

    def to_json(self):
        return (json.dumps(self, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data, where="manifest"):
        try:
            obj = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except ValueError as e:
            raise IntegrityError("%s is not valid JSON: %s" % (where, e),
                                 "The manifest is corrupt; this backup cannot be trusted")
        if not isinstance(obj, dict):
            raise IntegrityError("%s is not a JSON object" % where)
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            raise IntegrityError("%s lacks %s" % (where, ", ".join(missing)),
                                 "The manifest is corrupt or not a drkit manifest")
        if obj["format"] != FORMAT:
            raise IntegrityError("%s has format %r, expected %r" % (where, obj["format"], FORMAT))
        if not isinstance(obj["version"], int) or obj["version"] > VERSION:
            raise IntegrityError("%s has version %r; this drkit reads up to %d" % (
                where, obj["version"], VERSION), "Upgrade drkit")
        for a in obj["artifacts"]:
            if not isinstance(a, dict) or not all(k in a for k in ("name", "size", "sha256")):
                raise IntegrityError("%s has a malformed artifact entry %r" % (where, a))
        if not ID_RE.match(str(obj["backup_id"])):
            raise IntegrityError("%s has an invalid backup_id %r" % (where, obj["backup_id"]))
        try:
            parse_time(obj["finished_at"])
            parse_time(obj["started_at"])
        except ConfigError as e:
            raise IntegrityError("%s has an invalid time: %s" % (where, e))
        return cls(obj)


def write_manifest(storage, manifest):
    """Written LAST: from this moment on the backup exists. Create-only: a
    manifest is never replaced (storage contract, docs/storage-layout.md);
    ObjectExists (exit 5) when the key holds one already."""
    key = manifest_key(manifest.backup_id)
    try:
        storage.put_bytes(key, manifest.to_json(), create=True)
    except ObjectExists:
        raise ObjectExists("Backup %s already has a manifest in %s" % (manifest.backup_id, storage.describe()),
                           "Two backups got the same id; the one that finished first keeps it and this one "
                           "was not recorded: run it again")


def load_manifest(storage, backup_id):
    check_backup_id(backup_id)
    key = manifest_key(backup_id)
    try:
        data = storage.get_bytes(key)
    except NotFoundError:
        raise NotFoundError("Backup %s has no manifest in %s" % (backup_id, storage.describe()),
                            "It is incomplete or does not exist; list backups with backup_info or drkit list")
    manifest = Manifest.from_json(data, where="%s of %s" % (key, storage.describe()))
    if manifest.backup_id != backup_id:
        raise IntegrityError("%s claims backup id %s" % (key, manifest.backup_id),
                             "The manifest was moved or edited; do not trust this backup")
    return manifest


# --------------------------------------------------------------------------
# Catalog


class BackupEntry(object):
    """A complete backup as seen by listing: its manifest plus side files."""

    def __init__(self, manifest, keys):
        self.manifest = manifest
        self.keys = sorted(keys)

    @property
    def backup_id(self):
        return self.manifest.backup_id

    @property
    def finished(self):
        return self.manifest.finished

    @property
    def pinned(self):
        return (backup_prefix(self.backup_id) + PIN) in self.keys

    @property
    def verification_keys(self):
        p = backup_prefix(self.backup_id) + "verify-"
        return [k for k in self.keys if k.startswith(p) and k.endswith(".json")]

    def summary(self):
        m = self.manifest
        return {
            "backup_id": m.backup_id, "kind": m["kind"], "source": m["source"],
            "started_at": m["started_at"], "finished_at": m["finished_at"],
            "size": sum(a["size"] for a in m["artifacts"]),
            "artifacts": [a["name"] for a in m["artifacts"]],
            "source_key": source_key(m["source"]),
            "pinned": self.pinned, "verifications": len(self.verification_keys),
        }


def source_key(source):
    """A stable string naming a backup's source, for grouping and filters."""
    if not isinstance(source, dict):
        return str(source)
    parts = [source.get("type", "?"), str(source.get("host", "?")), str(source.get("port", "?"))]
    if source.get("database"):
        parts.append(str(source["database"]))
    return ":".join(parts)


def scan_objects(storage):
    """Group every object under backups/ by backup id: {id: [ObjectInfo]}
    (with sizes and mtimes, for rotation)."""
    groups = {}
    for info in storage.list(BACKUPS + "/"):
        rest = info.key[len(BACKUPS) + 1:]
        if "/" not in rest:
            continue
        bid = rest.split("/", 1)[0]
        groups.setdefault(bid, []).append(info)
    return groups


def scan(storage):
    """Group every object under backups/ by backup id: {id: [keys]}."""
    return dict((bid, [i.key for i in infos]) for bid, infos in scan_objects(storage).items())


def list_backups(storage, kind=None, source=None, database=None, strict=True, workers=16, groups=None):
    """Complete backups, newest first by the finish time in their manifest.

    Returns (entries, problems). With strict=True an unreadable or invalid
    manifest raises; otherwise it is reported in problems and skipped.
    ``groups`` is a scan() result to reuse instead of listing again."""
    if groups is None:
        groups = scan(storage)
    complete = [(bid, keys) for bid, keys in groups.items()
                if (backup_prefix(bid) + MANIFEST) in keys and ID_RE.match(bid)]

    def load(item):
        bid, keys = item
        try:
            return BackupEntry(load_manifest(storage, bid), keys), None
        except (IntegrityError, NotFoundError) as e:
            if strict:
                raise
            return None, "%s: %s" % (bid, e)

    entries, problems = [], []
    if complete:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(complete)))) as pool:
            for entry, problem in pool.map(load, complete):
                if problem:
                    problems.append(problem)
                elif entry is not None:
                    entries.append(entry)
    out = []
    for e in entries:
        m = e.manifest
        if kind and m["kind"] != kind:
            continue
        if source and source_key(m["source"]) != source:
            continue
        if database and m["source"].get("database") != database:
            continue
        out.append(e)
    out.sort(key=lambda e: (e.finished, e.backup_id), reverse=True)
    return out, problems


def resolve(storage, backup_id="latest", kind=None, before=None, database=None, source=None):
    """The BackupEntry for an id, 'latest', or the newest at or before a time."""
    if backup_id not in (None, "", "latest"):
        check_backup_id(backup_id)
        manifest = load_manifest(storage, backup_id)
        if kind and manifest["kind"] != kind:
            raise ConfigError("Backup %s is a %s backup, not %s" % (backup_id, manifest["kind"], kind))
        keys = [i.key for i in storage.list(backup_prefix(backup_id))]
        return BackupEntry(manifest, keys)
    entries, problems = list_backups(storage, kind=kind, database=database, source=source, strict=False)
    if before is not None:
        limit = parse_time(before)
        entries = [e for e in entries if e.finished <= limit]
    # A newer backup whose manifest cannot be read must not be skipped in
    # silence: 'latest' would quietly mean an older backup.
    newest_ok = entries[0].backup_id if entries else ""
    broken = sorted(p for p in problems if p.split(":", 1)[0] > newest_ok)
    if broken and before is None:
        raise IntegrityError("The newest backup's manifest cannot be read: %s" % broken[-1],
                             "Investigate it, or name an older backup_id explicitly")
    if not entries:
        what = "%s backup" % kind if kind else "backup"
        if before is not None:
            what += " finished at or before %s" % before
        raise NotFoundError("No complete %s in %s" % (what, storage.describe()),
                            "Take a backup first, or check storage_url and filters")
    return entries[0]
