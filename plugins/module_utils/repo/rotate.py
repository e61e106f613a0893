# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation: plan with the retention policy, check the safety rules, then
delete.  docs/retention.md describes it for users.

Safety rules that hold whatever the policy says:

* Everything is read first (listing, every manifest, the verification
  records needed); any listing or read error aborts before a delete.
* Only backups that count (BackupEntry.assess; with verify_keys also
  BackupEntry.check_trust: signed by a trusted key) are given to the
  policy; the others are reported in ``not_counted`` and never deleted,
  so a forged or unsigned manifest can neither fill a keep_* slot nor
  push a genuine backup out of one.
* In each group the newest backup, the one stored well after it
  (stored_last) and the newest backup whose latest verification record
  passed are never deleted; pinned backups (``backups/<id>/keep``) are
  never deleted; a plan that would leave a group without a backup is
  refused (SafetyError).  ``check_plan`` asserts these on the finished
  plan, independently of how it was made, and runs again right before
  deleting.
* Only complete backups (with a manifest) are candidates.  A directory
  without a manifest is removed only when nothing in it (object, multipart
  upload, temp file) was written within the grace period, so a running
  backup is never touched.  Stale uploads older than the grace period are
  aborted.
* A backup is deleted manifest first, then its other objects, so an
  interrupted run leaves an incomplete leftover (ignored by listing and
  removed by the next run), never a complete-looking broken backup.
* An empty policy deletes nothing at all.
* WAL (``wal/<timeline>/<segment>.zst``, layout of wal.py) older than the start segment of
  the oldest kept physical backup is pruned; history files and anything a
  kept backup needs are never deleted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import time
from collections import OrderedDict

from ..core import metrics
from ..core.errors import ConfigError, DrkitError, SafetyError
from ..core.options import Option, Options, resolve
from ..core.signing import VERIFYING, Trust
from ..storage.factory import STORAGE, open_storage, storage_options
from . import manifest as mf
from .retention import RETENTION, Duration, Policy, apply_policy, check_group_by, group_key
from .verification import newest_verified
from .wal_layout import WAL, classify, name_of_key, timeline_dirs

DEFAULT_GRACE = "1d"
MIN_GRACE_SECONDS = 3600

# drkit.backup.s3_rotate / drkit rotate
OPTIONS = Options(
    STORAGE, metrics.METRICS, RETENTION,
    mf.BACKUP_FILTERS,
    Option("incomplete_grace", "str", default=DEFAULT_GRACE, flags=("--incomplete-grace",), metavar="DURATION",
           help="leave incomplete backups younger than this (default 1d, at least 1h)"),
    Option("prune_wal", "bool", default=True, off_flags=("--no-prune-wal",),
           help="do not delete the WAL that no kept physical backup needs"),
    VERIFYING,
)
WAL_PREFIX = WAL + "/"
HOUSEKEEPING_PREFIXES = (mf.BACKUPS + "/", WAL_PREFIX)


_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")


# --------------------------------------------------------------------------
# WAL


def wal_position(key):
    """(timeline, segment number) of a prunable WAL file (a segment, a
    .partial segment or a backup history file, as wal.py names them), or
    None for what is never pruned: timeline history files,
    wal/SYSTEM_IDENTIFIER, anything else."""
    name = name_of_key(key)
    if name is None or classify(name) == "history":
        return None
    # The last 16 hex digits (log, segment) grow along the WAL whatever the
    # segment size, so comparing them as one number needs no size.
    return int(name[:8], 16), int(name[8:24], 16)


def wal_needed_from(kept_manifests):
    """(segment number, segment name, backup id, timeline) of the oldest
    start among the kept physical backups, and a reason; the first item is
    None when nothing may be pruned."""
    physical = [m for m in kept_manifests if m.get("kind") == "pg_physical"]
    if not physical:
        return None, "no kept physical backup: WAL left alone"
    starts = []
    for m in physical:
        data = m.get("data") or {}
        seg = data.get("wal_start_segment")
        if not isinstance(seg, str) or not _SEGMENT_RE.match(seg):
            return None, "kept physical backup %s records no valid wal_start_segment: WAL left alone" % (
                m.get("backup_id"),)
        starts.append((int(seg[8:], 16), seg, m.get("backup_id"), data.get("timeline")))
    first = min(starts)
    return first, "WAL before %s (start of %s, the oldest kept physical backup) is not needed" % (
        first[1], first[2])


def plan_wal_prune(wal_objects, kept_manifests):
    """Which WAL objects may go: (list of ObjectInfo, info dict).

    Needed from = the smallest start segment number among the kept physical
    backups.  Segment numbers (the last 16 hex digits: log and segment) grow
    along the WAL whatever the timeline, and no backup replays WAL from
    before its start, so a file whose number is below that is needed by no
    kept backup.  Without kept physical backups, or when one of them does
    not record its start segment, nothing is pruned."""
    info = {"count": 0, "bytes": 0, "needed_from": None, "needed_by": None, "first": None, "last": None}
    needed, reason = wal_needed_from(kept_manifests)
    info["reason"] = reason
    if needed is None:
        return [], info
    number, seg, bid, timeline = needed
    info.update(needed_from=seg, needed_by=bid, timeline=timeline)
    doomed = []
    for obj in wal_objects:
        pos = wal_position(obj.key)
        if pos is not None and pos[1] < number:
            doomed.append(obj)
    doomed.sort(key=lambda o: (wal_position(o.key)[1], o.key))
    info.update(count=len(doomed), bytes=sum(o.size or 0 for o in doomed),
                first=doomed[0].key if doomed else None, last=doomed[-1].key if doomed else None)
    return doomed, info


def list_wal_below(storage, number):
    """The WAL objects of every timeline directory up to the first one whose
    segment number is ``number`` or more.  Listings come in key order (S3
    and the file backend both sort), and WAL names sort by segment number,
    so the rest of the archive, which is still needed, is not listed at all.
    Were a listing not sorted, this would only prune less, never more."""
    for tli in timeline_dirs(storage):
        for info in storage.list("%s%s/" % (WAL_PREFIX, tli)):
            pos = wal_position(info.key)
            if pos is None:
                continue
            if pos[1] >= number:
                break
            yield info


def prune_wal(storage, kept_manifests, check_mode=False):
    """Delete the WAL no kept physical backup needs (``kept_manifests``:
    the manifests of every backup that stays).  Returns the info dict of
    plan_wal_prune plus ``keys`` (deleted, or that would be)."""
    needed = wal_needed_from(kept_manifests)[0]
    objects = list_wal_below(storage, needed[0]) if needed else []
    doomed, info = plan_wal_prune(objects, kept_manifests)
    keys = [o.key for o in doomed]
    if keys and not check_mode:
        storage.delete(keys)
    info["keys"] = keys
    return info


# --------------------------------------------------------------------------
# Plan


def parse_grace(value, minimum=MIN_GRACE_SECONDS):
    """The grace period for incomplete leftovers: a Duration, at least 1h."""
    d = Duration.parse(value if value not in (None, "") else DEFAULT_GRACE, "incomplete_grace")
    if minimum and not d.years and not d.months and d.seconds() < minimum:
        raise ConfigError("incomplete_grace %s is shorter than %d seconds" % (d, minimum),
                          "A short grace period could delete the files of a backup that is still running; "
                          "use 1h or more (default 1d)")
    return d


def _as_datetime(now):
    if now is None:
        return mf.utcnow()
    if isinstance(now, (int, float)):
        return datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return mf.parse_time(now)


class Plan(object):
    """What a rotation keeps and deletes, and why.  Items are plain dicts;
    keys starting with '_' are internal (object keys) and not returned."""

    def __init__(self, storage, policy, group_by, now, grace):
        self.storage = storage
        self.policy = policy
        self.group_by = group_by
        self.now = now
        self.grace = grace
        self.grace_cutoff = grace.before(now)
        self.groups = OrderedDict()  # group -> [backup ids], newest first
        self.verified = {}           # group -> backup id of its newest verified backup
        self.stored_last = {}        # group -> backup id whose manifest the storage received last
        self.not_counted = []        # backups that do not count: reported, never deleted
        self.pinned = set()
        self.kept = []
        self.delete = []
        self.incomplete = []         # leftovers to remove
        self.in_progress = []        # leftovers too recent to touch
        self.uploads = []            # IncompleteUpload to abort
        self.wal = {"count": 0, "keys": []}
        self.warnings = []

    @property
    def empty(self):
        return not (self.delete or self.incomplete or self.uploads or self.wal.get("keys"))


def _entry_item(entry, group):
    m = entry.manifest
    return {"backup_id": entry.backup_id, "finished_at": m["finished_at"], "kind": m["kind"],
            "group": group, "size": sum(a.get("size") or 0 for a in m["artifacts"])}


def plan_rotation(storage, policy, group_by=None, kind=None, source=None, database=None,
                  grace=DEFAULT_GRACE, now=None, wal=True, progress=None, trust=None):
    """Read everything, decide, check the safety rules. Deletes nothing.
    With ``trust`` (core.signing.Trust, verify_keys), a backup whose
    manifest no trusted key signed does not count: it neither fills a keep_*
    slot nor is deleted, like one dated in the future."""
    say = progress or (lambda msg: None)
    group_by = check_group_by(group_by)
    if not isinstance(grace, Duration):
        grace = parse_grace(grace)
    plan = Plan(storage.describe(), policy, group_by, _as_datetime(now), grace)
    cutoff = plan.grace_cutoff.timestamp() if plan.grace_cutoff else float("-inf")

    say("listing %s" % storage.describe())
    objects = mf.scan_objects(storage)
    keys_by_id = dict((bid, [i.key for i in infos]) for bid, infos in objects.items())
    say("reading manifests of %d backup directories" % len(objects))
    entries = mf.list_backups(storage, strict=True, groups=objects, doubtful=True, now=plan.now, trust=trust)[0]
    uploads = []
    if not policy.empty:
        for prefix in HOUSEKEEPING_PREFIXES:
            uploads.extend(storage.list_incomplete(prefix))

    # -- complete backups, group by group
    grouped = OrderedDict()
    for e in entries:  # newest first
        m = e.manifest
        if kind and m["kind"] != kind:
            continue
        if source and mf.source_key(m["source"]) != source:
            continue
        if database and (m["source"] or {}).get("database") != database:
            continue
        if not e.counts:
            plan.not_counted.append(dict(_entry_item(e, group_key(m, group_by)), reasons=e.doubts))
            continue
        grouped.setdefault(group_key(m, group_by), []).append(e)

    for group, members in grouped.items():
        decisions = apply_policy([(e.backup_id, e.finished) for e in members], policy)
        by_id = dict((e.backup_id, e) for e in members)
        plan.groups[group] = [d.backup_id for d in decisions]
        verified, record = newest_verified(storage, members)
        if verified is not None:
            plan.verified[group] = verified.backup_id
        last = stored_last(members)
        if last is not None:
            plan.stored_last[group] = last
        for n, d in enumerate(decisions):
            e = by_id[d.backup_id]
            item = _entry_item(e, group)
            reasons = list(d.reasons)
            if n == 0:
                reasons.append("newest backup (safety)")
            elif e.backup_id == plan.stored_last.get(group):
                reasons.append("stored last (safety: stored after the newest backup, so its clock was behind)")
            if verified is not None and e.backup_id == verified.backup_id:
                reasons.append("newest verified backup (safety, %s at %s)" % (
                    record.get("level", "?"), record.get("finished_at")))
            if e.pinned:
                plan.pinned.add(e.backup_id)
                reasons.append("pinned")
            if reasons:
                item["reasons"] = reasons
                plan.kept.append(item)
            else:
                item["_keys"] = list(e.keys)
                item["objects"] = len(e.keys)
                plan.delete.append(item)

    # -- incomplete leftovers and stale uploads
    if policy.empty:
        plan.warnings.append("The policy is empty (no keep_* count, no keep_within): nothing is deleted")
    else:
        activity = {}
        for up in uploads:
            bid = _backup_id_of(up.key)
            if bid is not None:
                started = up.started if up.started is not None else float("inf")
                activity[bid] = max(activity.get(bid, float("-inf")), started)
            if up.started is not None and up.started < cutoff:
                plan.uploads.append(up)
        for bid, infos in sorted(objects.items()):
            keys = keys_by_id[bid]
            if mf.manifest_key(bid) in keys:
                continue
            if not mf.ID_RE.match(bid):
                plan.warnings.append("%s/%s/ is not a backup id: left alone" % (mf.BACKUPS, bid))
                continue
            # Unknown mtimes count as "just now": never guess in favour of deleting.
            last = max([i.mtime if i.mtime is not None else float("inf") for i in infos]
                       + [activity.get(bid, float("-inf"))])
            item = {"backup_id": bid, "objects": len(infos), "bytes": sum(i.size or 0 for i in infos),
                    "last_write": _iso(last)}
            if last < cutoff:
                item["_keys"] = keys
                plan.incomplete.append(item)
            else:
                plan.in_progress.append(item)

        # -- WAL: what the physical backups that stay still need
        if wal:
            deleting = set(i["backup_id"] for i in plan.delete)
            kept_manifests = [e.manifest for e in entries if e.backup_id not in deleting]
            plan.wal = prune_wal(storage, kept_manifests, check_mode=True)

    check_plan(plan)
    return plan


def stored_last(members, tolerance=mf.CLOCK_SKEW_TOLERANCE):
    """The backup whose manifest the storage received last, more than
    ``tolerance`` s after the newest one's (``members`` newest first): taken
    later on a host whose clock was behind.  Usually None."""
    newest = members[0].stored if members else None
    if newest is None:
        return None
    last = max((e.stored, e.backup_id) for e in members if e.stored is not None)
    if last[1] == members[0].backup_id or last[0] <= newest + tolerance:
        return None
    return last[1]


def _backup_id_of(key):
    if not key.startswith(mf.BACKUPS + "/"):
        return None
    rest = key[len(mf.BACKUPS) + 1:]
    return rest.split("/", 1)[0] if "/" in rest else None


def _iso(epoch):
    if epoch in (None, float("inf"), float("-inf")):
        return None
    return mf.iso_from_epoch(epoch)


def check_plan(plan):
    """Assert the safety rules on a finished plan (SafetyError if broken).

    Deliberately independent of how the plan was made: it runs again right
    before deleting, so a bug in the policy or a tampered plan cannot lose
    the last good backup."""
    kept = set(i["backup_id"] for i in plan.kept)
    doomed = set(i["backup_id"] for i in plan.delete)
    both = kept & doomed
    if both:
        raise SafetyError("Rotation plan both keeps and deletes %s" % ", ".join(sorted(both)),
                          "This is a bug; nothing was deleted")
    hint = "Nothing was deleted. This is a bug or the plan was altered; please report it"
    for group, ids in plan.groups.items():
        if not ids:
            continue
        if not kept.intersection(ids):
            raise SafetyError("Rotation refused: the plan would delete all %d backups of group %s" % (
                len(ids), group), hint)
        if ids[0] in doomed or ids[0] not in kept:
            raise SafetyError("Rotation refused: the plan would delete %s, the newest backup of group %s" % (
                ids[0], group), hint)
        verified = plan.verified.get(group)
        if verified and (verified in doomed or verified not in kept):
            raise SafetyError("Rotation refused: the plan would delete %s, the newest verified backup of "
                              "group %s" % (verified, group), hint)
        last = plan.stored_last.get(group)
        if last and (last in doomed or last not in kept):
            raise SafetyError("Rotation refused: the plan would delete %s, the backup of group %s whose "
                              "manifest was stored last" % (last, group), hint)
    doubtful = doomed.intersection(i["backup_id"] for i in plan.not_counted)
    if doubtful:
        raise SafetyError("Rotation refused: the plan would delete backups that do not count (artifacts missing, "
                          "dated in the future or not signed by a trusted key): %s" % ", ".join(sorted(doubtful)),
                          hint)
    pinned = plan.pinned & doomed
    if pinned:
        raise SafetyError("Rotation refused: the plan would delete pinned backups %s" % ", ".join(sorted(pinned)),
                          hint)
    listed = set(b for ids in plan.groups.values() for b in ids)
    if doomed - listed:
        raise SafetyError("Rotation plan deletes backups it did not list: %s" % ", ".join(sorted(doomed - listed)),
                          hint)
    if plan.policy.empty and not plan.empty:
        raise SafetyError("Rotation refused: the policy is empty but the plan deletes something", hint)


# --------------------------------------------------------------------------
# Execute


def execute(storage, plan, progress=None):
    """Carry out a plan: backups (manifests first), leftovers, stale uploads,
    WAL.  Returns what was done; on a storage error the error's details say
    what had been done already."""
    say = progress or (lambda msg: None)
    check_plan(plan)
    done = {"deleted": [], "incomplete_removed": [], "uploads_aborted": [], "wal_deleted": [],
            "skipped": []}
    if plan.empty:
        return done
    cutoff = plan.grace_cutoff.timestamp() if plan.grace_cutoff else float("-inf")
    try:
        # Re-list: a pin set or a write made since planning wins over the plan.
        fresh = mf.scan_objects(storage)
        deleting = []
        for item in plan.delete:
            bid = item["backup_id"]
            keys = set(i.key for i in fresh.get(bid, [])) | set(item["_keys"])
            if (mf.backup_prefix(bid) + mf.PIN) in keys:
                done["skipped"].append({"backup_id": bid, "reason": "pinned since the plan was made"})
                continue
            deleting.append((item, keys))
        if deleting:
            say("deleting %d backups: manifests first" % len(deleting))
            # From this moment these backups no longer exist for listing and
            # restore; if we stop here, the rest is an incomplete leftover.
            storage.delete([mf.manifest_key(pair[0]["backup_id"]) for pair in deleting])
            done["deleted"] = [_public(pair[0]) for pair in deleting]
            rest = sorted(k for item, keys in deleting for k in keys if k != mf.manifest_key(item["backup_id"]))
            say("deleting %d artifacts and side files" % len(rest))
            storage.delete(rest)

        # Stale uploads first: a crashed writer's temp file would keep its directory.
        for up in plan.uploads:
            storage.abort_incomplete(up)
            done["uploads_aborted"].append(_upload_item(up))

        leftovers = []
        for item in plan.incomplete:
            bid = item["backup_id"]
            infos = fresh.get(bid, [])
            keys = [i.key for i in infos]
            if mf.manifest_key(bid) in keys:
                done["skipped"].append({"backup_id": bid, "reason": "its manifest appeared since the plan was made"})
                continue
            if any(i.mtime is None or i.mtime >= cutoff for i in infos):
                done["skipped"].append({"backup_id": bid, "reason": "written to since the plan was made"})
                continue
            if keys:
                leftovers.append((item, keys))
        if leftovers:
            say("removing %d incomplete leftovers" % len(leftovers))
            storage.delete([k for pair in leftovers for k in pair[1]])
            done["incomplete_removed"] = [_public(pair[0]) for pair in leftovers]

        wal_keys = plan.wal.get("keys") or []
        if wal_keys:
            say("pruning %d WAL files" % len(wal_keys))
            storage.delete(wal_keys)
            done["wal_deleted"] = list(wal_keys)
    except DrkitError as e:
        e.details = dict(e.details or {})
        e.details["done_before_error"] = done
        raise
    return done


def _public(item):
    return dict((k, v) for k, v in item.items() if not k.startswith("_"))


def _upload_item(up):
    return {"key": up.key, "started": _iso(up.started), "upload_id": up.upload_id}


# --------------------------------------------------------------------------
# Front door for the module and the CLI


def _wal_result(info, keys):
    out = dict((k, v) for k, v in info.items() if k != "keys")
    out["count"] = len(keys)
    return out


def _diff(plan, deleted_ids):
    def line(item):
        return "%s  %s  %s\n" % (item["backup_id"], item["finished_at"], item["group"])
    everything = sorted(plan.kept + plan.delete + plan.not_counted, key=lambda i: (i["finished_at"], i["backup_id"]),
                        reverse=True)
    return {"before_header": "%s (before)" % plan.storage, "after_header": "%s (after)" % plan.storage,
            "before": "".join(line(i) for i in everything),
            "after": "".join(line(i) for i in everything if i["backup_id"] not in deleted_ids)}


def build_result(plan, done=None, check_mode=False, diff=False):
    """The module/CLI result.  In check mode the lists say what would be done."""
    if done is None:
        deleted = [_public(i) for i in plan.delete]
        incomplete = [_public(i) for i in plan.incomplete]
        uploads = [_upload_item(u) for u in plan.uploads]
        wal_keys = plan.wal.get("keys") or []
        skipped = []
    else:
        deleted, incomplete = done["deleted"], done["incomplete_removed"]
        uploads, wal_keys, skipped = done["uploads_aborted"], done["wal_deleted"], done["skipped"]
    skipped_ids = set(s["backup_id"] for s in skipped)
    kept = list(plan.kept) + [dict(_public(i), reasons=["pinned since the plan was made"])
                              for i in plan.delete if i["backup_id"] in skipped_ids]
    changed = bool(deleted or incomplete or uploads or wal_keys)
    verb = "would delete" if check_mode else "deleted"
    msg = "%s %d of %d backups in %d groups, kept %d; %d incomplete leftovers, %d stale uploads, %d WAL files" % (
        verb, len(deleted), len(plan.kept) + len(plan.delete), len(plan.groups), len(kept),
        len(incomplete), len(uploads), len(wal_keys))
    if plan.not_counted:
        msg += "; %d backups not counted and left alone (see not_counted)" % len(plan.not_counted)
    warnings = list(plan.warnings) + ["%s does not count and was left alone: %s" % (
        i["backup_id"], "; ".join(i["reasons"])) for i in plan.not_counted]
    result = {
        "changed": changed, "msg": msg, "storage": plan.storage, "check_mode": bool(check_mode),
        "policy": plan.policy.describe(), "group_by": list(plan.group_by),
        "incomplete_grace": str(plan.grace),
        "groups": dict((g, len(ids)) for g, ids in plan.groups.items()),
        "kept": kept, "deleted": deleted,
        "incomplete_removed": incomplete, "incomplete_in_progress": [_public(i) for i in plan.in_progress],
        "uploads_aborted": uploads, "wal_deleted": _wal_result(plan.wal, wal_keys),
        "skipped": skipped, "warnings": warnings, "not_counted": [dict(i) for i in plan.not_counted],
    }
    if diff:
        result["diff"] = _diff(plan, set(d["backup_id"] for d in deleted))
    return result


def rotate(params, check_mode=False, diff=False, progress=None, now=None, storage=None):
    """Plan and (unless check_mode) execute a rotation. Returns (changed, result).
    ``now`` and ``storage`` are for tests (a clock, a storage with faults)."""
    p = resolve(OPTIONS, params)
    trust = Trust.from_params(p)
    policy = Policy.from_params(p)
    group_by = check_group_by(p["group_by"])
    grace = parse_grace(p["incomplete_grace"])
    if storage is None:
        storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    metrics_dir = None if check_mode else p["metrics_dir"]
    job = p["job_name"] or "rotate"
    try:
        plan = plan_rotation(storage, policy, group_by=group_by, kind=p["kind"], source=p["source"],
                             database=p["database"], grace=grace, now=now, wal=p["prune_wal"], progress=progress,
                             trust=trust)
        done = None if check_mode else execute(storage, plan, progress=progress)
    except DrkitError:
        _record(metrics_dir, job, ok=False)
        raise
    result = build_result(plan, done, check_mode=check_mode, diff=diff)
    report_space(result, storage.versioning() if result["changed"] else None)
    _record(metrics_dir, job, ok=True, kept=len(result["kept"]), deleted=len(result["deleted"]),
            not_counted=len(result["not_counted"]))
    return result["changed"], result


def report_space(result, versioning):
    """``bytes_deleted`` (of the backups, leftovers and WAL deleted),
    ``bytes_reclaimed`` (none of it on a versioned bucket: a delete there only
    adds a delete marker, the data stays as a noncurrent version until a
    lifecycle rule expires it, and Object Lock keeps it at least the
    retention) and ``versioning`` (storage.versioning()), with a warning
    where versions are kept and no rule expires them."""
    deleted = (sum(i.get("size") or 0 for i in result["deleted"])
               + sum(i.get("bytes") or 0 for i in result["incomplete_removed"])
               + (result["wal_deleted"].get("bytes") or 0 if result["wal_deleted"].get("count") else 0))
    result["bytes_deleted"] = deleted
    result["versioning"] = versioning
    status = (versioning or {}).get("status", "Off")
    result["bytes_reclaimed"] = deleted if status == "Off" else 0 if status in ("Enabled", "Suspended") else None
    if status in ("Enabled", "Suspended") and deleted:
        lock = versioning.get("object_lock")
        kept = ""
        if lock:
            period = "%s days" % lock["days"] if lock.get("days") else "%s years" % lock.get("years")
            kept = "; Object Lock (%s, %s) keeps each version at least that long" % (lock.get("mode"), period)
        expire = versioning.get("noncurrent_expiration_days")
        if expire:
            result["warnings"].append(
                "%s has versioning %s: the %d bytes deleted stay as noncurrent versions until the lifecycle rule "
                "expires them after %d days%s" % (result["storage"], status.lower(), deleted, expire, kept))
        else:
            result["warnings"].append(
                "%s has versioning %s and no lifecycle rule expires noncurrent versions: the %d bytes deleted are "
                "kept as old versions for ever%s. Add a NoncurrentVersionExpiration rule "
                "(docs/storage-security.md)" % (result["storage"], status.lower(), deleted, kept))
    elif status == "unknown" and deleted:
        result["warnings"].append("Could not read whether %s keeps old versions (%s): bytes_reclaimed is unknown" % (
            result["storage"], versioning.get("error")))


def _record(directory, job, ok, kept=None, deleted=None, not_counted=None):
    if not directory:
        return
    values = {"drkit_rotate_last_status": 1 if ok else 0}
    if ok:
        values.update({"drkit_rotate_last_success_timestamp_seconds": time.time(),
                       "drkit_rotate_kept_backups": kept, "drkit_rotate_deleted_backups": deleted,
                       "drkit_rotate_not_counted_backups": not_counted})
    try:
        metrics.update_textfile(directory, job, values)
    except DrkitError:
        if ok:
            raise


def format_report(result):
    """Human-readable text of a result, for the CLI."""
    lines = []
    for item in result["kept"]:
        lines.append("keep    %-44s %-28s %s" % (item["backup_id"], item["finished_at"], "; ".join(item["reasons"])))
    verb = "delete" if result["check_mode"] else "deleted"
    for item in result["deleted"]:
        lines.append("%-7s %-44s %-28s %s" % (verb, item["backup_id"], item["finished_at"], item["group"]))
    for item in result["incomplete_removed"]:
        lines.append("%-7s %-44s incomplete, last write %s" % (verb, item["backup_id"], item["last_write"]))
    for item in result["incomplete_in_progress"]:
        lines.append("leave   %-44s incomplete, last write %s (within grace: maybe running)" % (
            item["backup_id"], item["last_write"]))
    for up in result["uploads_aborted"]:
        lines.append("%-7s upload %s started %s" % (
            "abort" if result["check_mode"] else "aborted", up["key"], up["started"]))
    pruned = result["wal_deleted"]
    if pruned.get("count"):
        lines.append("%-7s %d WAL files %s .. %s (%s)" % (
            verb, pruned["count"], pruned["first"], pruned["last"], pruned.get("reason")))
    for s in result["skipped"]:
        lines.append("skipped %-44s %s" % (s["backup_id"], s["reason"]))
    if result.get("bytes_deleted"):
        reclaimed = result.get("bytes_reclaimed")
        lines.append("space   %d bytes %s, %s reclaimed" % (
            result["bytes_deleted"], "to delete" if result["check_mode"] else "deleted",
            "unknown bytes" if reclaimed is None else "%d bytes" % reclaimed))
    for w in result["warnings"]:
        lines.append("warning: %s" % w)
    return "\n".join(lines) + ("\n" if lines else "")
