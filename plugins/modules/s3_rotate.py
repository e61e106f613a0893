#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: s3_rotate
short_description: Delete old backups with a grandfather-father-son policy that cannot lose the last good backup
version_added: 0.1.0
description:
  - Applies a retention policy (keep last / daily / weekly / monthly / yearly / within) to the
    complete backups under O(storage_url) and deletes the rest. Works on C(s3://) and C(file://)
    storage alike, despite its name.
  - The policy follows restic's C(forget) exactly. Backups are grouped (O(group_by)) and sorted
    newest first by the finish time recorded in their manifest (never by name or object date).
    Each rule walks from newest to oldest and keeps a backup when its period (day, ISO week,
    month, year in O(timezone)) differs from the period of the last backup that rule kept, until
    its count is used up; a rule with count left when it reaches the oldest backup keeps the
    oldest one. Rules overlap. O(keep_within) keeps everything newer than the newest backup
    minus the duration. See C(docs/retention.md).
  - An empty policy (every C(keep_*) count 0 and no O(keep_within)) deletes nothing at all.
  - "Safety rules that hold whatever the policy says: in each group the newest backup and the
    newest backup whose latest verification record passed are never deleted; pinned backups
    (a C(keep) object next to the manifest) are never deleted; a listing or read error aborts the
    run before anything is deleted; a plan that would delete every backup of a group is refused."
  - "Only backups that count are grouped and given to the policy: manifest intact, every artifact
    stored with its recorded size, and C(finished_at) no later than the storage's own time of the
    manifest (S3 LastModified, file mtime) plus 15 minutes. The others (a forged or future-dated
    manifest, a backup with artifacts missing) are reported in RV(not_counted) and RV(warnings),
    never fill a keep slot and are never deleted. A backup stored more than 15 minutes after the
    group's newest one (taken on a host whose clock was behind) is kept too."
  - Only complete backups (with a manifest) are candidates. A backup directory without a manifest
    is removed only when nothing in it was written within O(incomplete_grace), so a running
    backup is never touched; multipart uploads and temp files older than O(incomplete_grace)
    are aborted.
  - A backup is deleted manifest first, then its artifacts, so an interrupted run never leaves
    a half-deleted backup that looks complete. Deletes are batched (1000 keys per S3 request).
  - WAL under C(wal/) older than the start segment of the oldest kept physical backup is
    pruned (O(prune_wal)); timeline history files and WAL a kept backup needs are never deleted.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage
  - drkit.backup.storage.metrics
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description: Reads everything and returns the full plan (what would be kept, with the reasons,
      and what would be deleted); deletes nothing.
  diff_mode:
    support: full
    description: The backups before and after, one line each (id, finish time, group).
options:
  keep_last:
    description:
      - Keep the newest N backups. C(-1) keeps all.
    type: int
    default: 0
  keep_daily:
    description:
      - For the last N days which have backups, keep the newest backup of each day. C(-1) for unlimited.
    type: int
    default: 0
  keep_weekly:
    description:
      - For the last N ISO weeks which have backups, keep the newest backup of each week. C(-1) for unlimited.
    type: int
    default: 0
  keep_monthly:
    description:
      - For the last N months which have backups, keep the newest backup of each month. C(-1) for unlimited.
    type: int
    default: 0
  keep_yearly:
    description:
      - For the last N years which have backups, keep the newest backup of each year. C(-1) for unlimited.
    type: int
    default: 0
  keep_within:
    description:
      - Keep every backup newer than the newest backup (of its group) minus this duration.
      - A number and a unit, units in the order C(y) (years), C(m) (months), C(w) (weeks), C(d) (days),
        C(h) (hours), for example C(2d), C(12h), C(1w), C(1m), C(1y), C(1y6m). Years and months are
        calendar months (31 March minus C(1m) is the last day of February); days keep the wall-clock
        time in O(timezone); hours are elapsed time.
    type: str
  timezone:
    description:
      - IANA time zone in which days, weeks, months and years begin, for example C(Europe/Berlin).
    type: str
    default: UTC
  group_by:
    description:
      - Backups are rotated per group; the safety rules hold per group.
      - C(source) is the server and database (C(type:host:port:database)); C(none) puts all backups in one group.
    type: list
    elements: str
    choices: [kind, source, database, none]
    default: [kind, source]
  kind:
    description:
      - Only rotate backups of this kind; others are left alone.
    type: str
    choices: [pg_logical, pg_physical, redis_rdb, redis_aof]
  database:
    description:
      - Only rotate backups of this database.
    type: str
  source:
    description:
      - Only rotate backups of this source, written C(type:host:port[:database]) as
        M(drkit.backup.backup_info) returns it in C(source_key).
    type: str
  incomplete_grace:
    description:
      - Backup directories without a manifest, multipart uploads and temp files are removed only when
        nothing was written to them for this long (same syntax as O(keep_within), at least C(1h)).
      - Must be longer than the longest gap between two writes of a running backup (the upload and
        re-read of its largest artifact).
    type: str
    default: 1d
  prune_wal:
    description:
      - Delete WAL older than the start segment of the oldest kept physical backup.
    type: bool
    default: true
seealso:
  - module: drkit.backup.backup_info
  - name: restic forget
    description: The policy semantics this module follows.
    link: https://restic.readthedocs.io/en/stable/060_forget.html
"""

EXAMPLES = r"""
- name: Grandfather-father-son retention of the PostgreSQL backups
  drkit.backup.s3_rotate:
    storage_url: s3://prod-backups/postgresql
    keep_last: 3
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    keep_yearly: 7
    keep_within: 2d
    timezone: Europe/Berlin
    metrics_dir: /var/lib/prometheus/node-exporter

- name: Show what would be deleted, and why the others stay
  drkit.backup.s3_rotate:
    storage_url: file:///var/backups/drkit
    keep_daily: 7
  check_mode: true
  diff: true
  register: plan

- name: Print the plan
  ansible.builtin.debug:
    msg: "{{ item.backup_id }}: {{ item.reasons | join(', ') }}"
  loop: "{{ plan.kept }}"
"""

RETURN = r"""
kept:
  description: Backups kept (in check mode, that would be kept), newest first per group, with the reasons.
  returned: always
  type: list
  elements: dict
  contains:
    backup_id:
      description: The backup's id.
      type: str
      sample: 20261125T211500Z-pg-logical-3fa9c1
    finished_at:
      description: Finish time from the manifest (UTC, ISO 8601).
      type: str
    kind:
      description: Backup kind.
      type: str
    group:
      description: The group it was rotated in.
      type: str
      sample: pg_logical|postgresql:db1:5432:app
    size:
      description: Stored bytes of its artifacts.
      type: int
    reasons:
      description: Every rule that keeps it, for example C(daily 2026-11-25), C(weekly 2026-W48),
        V(within 2d), V(newest backup (safety\)), V(stored last (safety ...\)), V(pinned).
      type: list
      elements: str
not_counted:
  description: Backups that do not count (artifacts missing, or dated in the future), left alone; backup_id,
    finished_at, kind, group, size and reasons.
  returned: always
  type: list
  elements: dict
deleted:
  description: Backups deleted (in check mode, that would be deleted), with backup_id, finished_at,
    kind, group, size and objects (number of objects).
  returned: always
  type: list
  elements: dict
incomplete_removed:
  description: Backup directories without a manifest, older than the grace period, removed
    (backup_id, objects, bytes, last_write).
  returned: always
  type: list
  elements: dict
incomplete_in_progress:
  description: Backup directories without a manifest written to within the grace period, left alone
    (possibly running backups).
  returned: always
  type: list
  elements: dict
uploads_aborted:
  description: Multipart uploads and temp files older than the grace period, aborted (key, started, upload_id).
  returned: always
  type: list
  elements: dict
wal_deleted:
  description: WAL pruning. C(count) files and C(bytes) from C(first) to C(last) deleted; C(needed_from)
    is the start segment of the oldest kept physical backup C(needed_by); C(reason) says why (or why not).
  returned: always
  type: dict
skipped:
  description: Planned deletions not done because the storage changed meanwhile (a pin set, a manifest
    written).
  returned: always
  type: list
  elements: dict
groups:
  description: Number of backups per group before rotation.
  returned: always
  type: dict
policy:
  description: The policy applied.
  returned: always
  type: dict
bytes_deleted:
  description: Bytes of the backups, incomplete leftovers and WAL deleted (in check mode, to delete).
  returned: always
  type: int
bytes_reclaimed:
  description:
    - Of RV(bytes_deleted), what the storage frees now. V(0) on a versioned S3 bucket (a delete adds a delete
      marker; the data stays as a noncurrent version until a lifecycle rule expires it, and at least as long as
      an Object Lock retention); V(null) when the bucket's versioning could not be read.
  returned: always
  type: int
versioning:
  description:
    - The S3 bucket's C(status) (V(Enabled), V(Suspended), V(Off) or V(unknown) with an C(error)),
      C(object_lock) (C(mode), C(days), C(years) of the default retention) and C(noncurrent_expiration_days)
      (the lifecycle rule that expires old versions under the prefix). V(null) for file:// and az://, and
      when nothing was deleted.
  returned: always
  type: dict
warnings:
  description: Things left alone on purpose (an empty policy, directories that are not backups, backups that
    do not count), and deleted data a versioned bucket keeps.
  returned: always
  type: list
  elements: str
msg:
  description: One-line summary.
  returned: always
  type: str
storage:
  description: The storage, as a URL without secrets.
  returned: always
  type: str
check_mode:
  description: Whether this was a plan only (check mode); then the lists say what would be done.
  returned: always
  type: bool
group_by:
  description: The grouping applied.
  returned: always
  type: list
  elements: str
incomplete_grace:
  description: The grace period applied to incomplete leftovers and uploads.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.repo.rotate import OPTIONS, rotate


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    run_engine(module, rotate, module.params, check_mode=module.check_mode, diff=module._diff)


if __name__ == "__main__":
    main()
