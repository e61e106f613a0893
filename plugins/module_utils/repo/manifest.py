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
rotation and restore.  A backup with a manifest counts only when the
manifest is intact (its digest matches) and every artifact it lists is
stored with the recorded size, and when its finished_at is no later than
the storage's own time of the manifest plus CLOCK_SKEW_TOLERANCE
(docs/retention.md, "Which backups count"), and, when the reader trusts
signing keys (verify_keys), when it is signed by one of them
(core/signing.py, docs/encryption.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import datetime
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from ..core.errors import ConfigError, IntegrityError, NotFoundError
from ..core.options import Option
from ..storage.base import ObjectExists

FORMAT = "drkit.backup/manifest"
# 2: a logical backup's row counts are data.table_rows, keyed by (schema,
# table); version 1 keyed data.row_counts by "schema.table" (still read).
VERSION = 2
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
# SHA-256 over the manifest's canonical JSON without this key (Manifest.digest).
DIGEST = "manifest_sha256"
# Ed25519 signature over the canonical JSON without this key and the digest
# (Manifest.canonical, core/signing.py); old readers ignore it.
SIGNATURE = "signature"
# How far a manifest's finished_at may lie after the storage's time of the
# manifest object (S3 LastModified, file mtime) or the reader's clock: the
# 15 minutes of clock skew S3 request signing accepts, so a manifest any
# accepted writer stored passes, and a later one is dated in the future.
CLOCK_SKEW_TOLERANCE = 900


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(dt):
    """UTC ISO 8601 with a Z, to the microsecond: sortable and unambiguous."""
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_from_epoch(epoch):
    """isoformat() of a Unix time."""
    return isoformat(datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc))


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

    @property
    def sealed(self):
        """Whether the manifest carries a digest (those written before
        drkit had one do not)."""
        return DIGEST in self

    @property
    def signed_by(self):
        """The key id the manifest names as its signer (unchecked), or None."""
        sig = self.get(SIGNATURE)
        return sig.get("key_id") if isinstance(sig, dict) else None

    @staticmethod
    def canonical(obj):
        """What the signature covers: the canonical JSON (keys sorted, no
        whitespace, ASCII) of a parsed manifest without its signature and
        digest."""
        body = dict((k, v) for k, v in obj.items() if k not in (DIGEST, SIGNATURE))
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def check_signature(self, trust, where="manifest"):
        """The key id of the trusted key that signed it (core.signing.Trust);
        IntegrityError if none did. ``trust`` None: not checked, None."""
        if trust is None:
            return None
        return trust.check(self.get(SIGNATURE), self.canonical(self), where)

    @staticmethod
    def digest(obj):
        """SHA-256 of a parsed manifest's canonical JSON (keys sorted, no
        whitespace, ASCII), the digest key itself left out."""
        body = dict((k, v) for k, v in obj.items() if k != DIGEST)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def to_json(self, signer=None):
        """The stored form, signed by ``signer`` (core.signing.Signer) if
        given, then sealed with the digest of its content (both over the
        content as a reader will parse it: JSON turns tuples into lists,
        keys into strings)."""
        body = json.loads(json.dumps(dict((k, v) for k, v in self.items() if k not in (DIGEST, SIGNATURE))))
        if signer is not None:
            self[SIGNATURE] = body[SIGNATURE] = signer.sign(self.canonical(body))
        elif SIGNATURE in self:
            body[SIGNATURE] = self[SIGNATURE]
        self[DIGEST] = self.digest(body)
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
        if DIGEST in obj and obj[DIGEST] != cls.digest(obj):
            raise IntegrityError("%s does not match its %s: it was changed after drkit wrote it" % (where, DIGEST),
                                 "The manifest is corrupt or was edited; do not trust this backup, "
                                 "use another one")
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


def write_manifest(storage, manifest, signer=None):
    """Written LAST: from this moment on the backup exists. Create-only: a
    manifest is never replaced (storage contract, docs/storage-layout.md);
    ObjectExists (exit 5) when the key holds one already. Signed by
    ``signer`` (core.signing.Signer) when given."""
    key = manifest_key(manifest.backup_id)
    try:
        storage.put_bytes(key, manifest.to_json(signer), create=True)
    except ObjectExists:
        raise ObjectExists("Backup %s already has a manifest in %s" % (manifest.backup_id, storage.describe()),
                           "Two backups got the same id; the one that finished first keeps it and this one "
                           "was not recorded: run it again")


def load_manifest(storage, backup_id, trust=None):
    """The manifest of a backup; with ``trust`` (core.signing.Trust), only
    when one of its keys signed it (IntegrityError otherwise)."""
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
    manifest.check_signature(trust, "%s of %s" % (key, storage.describe()))
    return manifest


# --------------------------------------------------------------------------
# Catalog


class BackupEntry(object):
    """A backup with a manifest as seen by listing: the manifest, the stored
    objects of its directory (ObjectInfo: sizes and storage times), and,
    once ``assess`` ran, why it does not count (``doubts``)."""

    def __init__(self, manifest, objects):
        self.manifest = manifest
        self.objects = dict((o.key, o) for o in objects)
        self.keys = sorted(self.objects)
        self.missing = []       # artifact names not stored with their recorded size
        self.future = None      # "finished_at ... after ..." when dated in the future
        self.untrusted = None   # why its signature is not trusted (set by check_trust; verify_keys set)
        self.signature_verified = None  # True/False once check_trust ran with verify_keys, else None
        self.passed_over = []   # set by resolve(): newer backups it did not pick, and why

    @property
    def backup_id(self):
        return self.manifest.backup_id

    @property
    def finished(self):
        return self.manifest.finished

    @property
    def stored(self):
        """The storage's time of the manifest object (epoch), None if unknown."""
        info = self.objects.get(manifest_key(self.backup_id))
        return info.mtime if info is not None else None

    @property
    def pinned(self):
        return (backup_prefix(self.backup_id) + PIN) in self.objects

    @property
    def verification_keys(self):
        p = backup_prefix(self.backup_id) + "verify-"
        return [k for k in self.keys if k.startswith(p) and k.endswith(".json")]

    def check_trust(self, trust, where=None):
        """With ``trust`` (verify_keys set): note whether a trusted key
        signed the manifest; an unsigned or forged one does not count. Returns self."""
        self.untrusted = None
        self.signature_verified = None
        if trust is not None:
            try:
                self.manifest.check_signature(trust, where or manifest_key(self.backup_id))
                self.signature_verified = True
            except IntegrityError as e:
                self.untrusted = "signature: %s" % e
                self.signature_verified = False
        return self

    def assess(self, now=None, tolerance=CLOCK_SKEW_TOLERANCE):
        """Check what the listing can tell without reading an artifact: every
        artifact is stored with its recorded size, and finished_at is not
        later than the manifest's storage time (and ``now``) plus
        ``tolerance`` seconds.  One-sided: an earlier finished_at (a copied
        or restored repository, a slow upload) is fine.  Returns self."""
        self.missing = []
        for a in self.manifest["artifacts"]:
            info = self.objects.get(artifact_key(self.backup_id, a["name"]))
            if info is None:
                self.missing.append("%s (missing)" % a["name"])
            elif info.size is not None and info.size != a["size"]:
                self.missing.append("%s (%d bytes stored, manifest says %d)" % (a["name"], info.size, a["size"]))
        now = (now or utcnow()).timestamp()
        stored = self.stored
        limit, what = (now, "the time now") if stored is None or stored > now else (stored, "its storage time")
        self.future = None
        if self.finished.timestamp() > limit + tolerance:
            self.future = "finished_at %s is later than %s %s plus %d s: dated in the future" % (
                self.manifest["finished_at"], what, iso_from_epoch(limit), tolerance)
        return self

    @property
    def doubts(self):
        """Why this backup does not count (empty: it counts)."""
        out = []
        if self.missing:
            out.append("artifacts missing or truncated: %s" % ", ".join(self.missing))
        if self.future:
            out.append(self.future)
        if self.untrusted:
            out.append(self.untrusted)
        return out

    @property
    def counts(self):
        return not self.doubts

    def summary(self):
        m = self.manifest
        return {
            "backup_id": m.backup_id, "kind": m["kind"], "source": m["source"],
            "started_at": m["started_at"], "finished_at": m["finished_at"],
            "size": sum(a["size"] for a in m["artifacts"]),
            "artifacts": [a["name"] for a in m["artifacts"]],
            "source_key": source_key(m["source"]),
            "pinned": self.pinned, "verifications": len(self.verification_keys),
            "stored_at": iso_from_epoch(self.stored) if self.stored is not None else None,
            "digest": m.sealed, "counted": self.counts, "doubts": self.doubts,
            "artifacts_missing": list(self.missing), "future_dated": bool(self.future),
            "signed_by": m.signed_by, "signature_verified": self.signature_verified,
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
    (with sizes and storage times: what list_backups and rotation check)."""
    groups = {}
    for info in storage.list(BACKUPS + "/"):
        rest = info.key[len(BACKUPS) + 1:]
        if "/" not in rest:
            continue
        bid = rest.split("/", 1)[0]
        groups.setdefault(bid, []).append(info)
    return groups


def list_backups(storage, kind=None, source=None, database=None, strict=True, workers=16, groups=None,
                 doubtful=False, now=None, tolerance=CLOCK_SKEW_TOLERANCE, trust=None):
    """Backups with a manifest, newest first by the finish time in their
    manifest, each assessed (BackupEntry.assess) from the one listing.

    Returns (entries, problems).  With strict=True an unreadable or invalid
    manifest raises; otherwise it is reported in problems and skipped.
    Backups that do not count (artifacts missing, dated in the future, with
    ``trust``: not signed by a trusted key) are left out and reported in
    problems too, unless ``doubtful`` is true: then they are in entries,
    with their ``doubts``.  ``groups`` is a
    scan_objects() result to reuse instead of listing again."""
    if groups is None:
        groups = scan_objects(storage)
    complete = [(bid, infos) for bid, infos in groups.items()
                if ID_RE.match(bid) and any(i.key == manifest_key(bid) for i in infos)]

    def load(item):
        bid, infos = item
        try:
            return BackupEntry(load_manifest(storage, bid), infos), None
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
    now = now or utcnow()
    out = []
    for e in entries:
        m = e.manifest
        if kind and m["kind"] != kind:
            continue
        if source and source_key(m["source"]) != source:
            continue
        if database and m["source"].get("database") != database:
            continue
        e.assess(now, tolerance)
        e.check_trust(trust)
        if e.counts or doubtful:
            out.append(e)
        else:
            problems.append("%s: not counted: %s" % (e.backup_id, "; ".join(e.doubts)))
    out.sort(key=lambda e: (e.finished, e.backup_id), reverse=True)
    return out, problems


def resolve(storage, backup_id="latest", kind=None, before=None, database=None, source=None, now=None,
            restorable=False, trust=None):
    """The BackupEntry for an id, 'latest', or the newest at or before a time.

    'latest' is never a backup dated in the future, nor, with ``trust``
    (verify_keys), one not signed by a trusted key: those are passed over
    and named in the entry's ``passed_over``; such a backup named by its id
    is refused (IntegrityError naming the key ids).  A newer backup whose manifest
    cannot be read stops the choice (IntegrityError).  When the newest
    backup left has artifacts missing, a verification gets it (and fails
    it, with a record); with ``restorable`` (a restore) it is refused with
    the newest backup that counts named in the hint, so an older backup is
    never restored in silence.  A backup named by its id is returned as it
    is (its own checks say what is wrong with it)."""
    if backup_id not in (None, "", "latest"):
        check_backup_id(backup_id)
        manifest = load_manifest(storage, backup_id, trust)
        if kind and manifest["kind"] != kind:
            raise ConfigError("Backup %s is a %s backup, not %s" % (backup_id, manifest["kind"], kind))
        return BackupEntry(manifest, storage.list(backup_prefix(backup_id))).assess(now).check_trust(trust)
    entries, problems = list_backups(storage, kind=kind, database=database, source=source, strict=False,
                                     doubtful=True, now=now, trust=trust)
    if before is not None:
        limit = parse_time(before)
        entries = [e for e in entries if e.finished <= limit]
    passed_over = ["%s: %s" % (e.backup_id, e.future or e.untrusted) for e in entries if e.future or e.untrusted]
    skipped = [e for e in entries if e.future or e.untrusted]
    entries = [e for e in entries if not (e.future or e.untrusted)]
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
        why = "dated in the future" if all(e.future for e in skipped) else "passed over"
        raise NotFoundError("No complete %s in %s%s" % (
            what, storage.describe(), "; %s: %s" % (why, " | ".join(passed_over)) if passed_over else ""),
            "Take a backup first, or check storage_url and filters" if not passed_over else
            "A backup dated in the future is used only when named by its backup_id (docs/retention.md); one not "
            "signed by a key of verify_keys is never used (docs/encryption.md)")
    entry = entries[0]
    if restorable and entry.missing:
        good = [e for e in entries if e.counts]
        raise IntegrityError(
            "Backup %s, the newest%s, cannot be restored: artifacts missing or truncated: %s" % (
                entry.backup_id, " finished at or before %s" % before if before is not None else "",
                ", ".join(entry.missing)),
            "Nothing was restored. The newest backup that can be is %s (finished %s): name it with backup_id" % (
                good[0].backup_id, good[0].manifest["finished_at"]) if good else
            "Nothing was restored, and no other backup can be restored either")
    entry.passed_over = passed_over
    return entry
