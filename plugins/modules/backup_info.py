#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: backup_info
short_description: List the complete backups in a drkit storage location
version_added: 0.1.0
description:
  - Lists the backups under O(storage_url) that have a manifest, newest first by the finish time
    recorded in the manifest (never by name or object date), with their manifests.
  - Incomplete backups (artifacts without a manifest) are not listed. A manifest that cannot be
    read, is invalid or does not match its digest is reported in RV(problems) and skipped.
  - A backup whose artifacts are missing (or stored with another size than its manifest records),
    or whose manifest is dated in the future (C(finished_at) more than 15 minutes after the
    storage's own time of the manifest), is listed with C(counted=false) and its C(doubts);
    rotation, restore and verification do not count it (see C(docs/retention.md)).
  - Read-only.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  kind:
    description:
      - Only backups of this kind.
    type: str
    choices: [pg_logical, pg_physical, redis_rdb, redis_aof]
  database:
    description:
      - Only backups of this database.
    type: str
  source:
    description:
      - Only backups of this source, written C(type:host:port[:database]) as in RV(backups[].source_key).
    type: str
  backup_id:
    description:
      - Only this backup.
    type: str
  limit:
    description:
      - At most this many backups (V(1) or more), the newest. Unset lists them all.
    type: int
  wal:
    description:
      - Also report the WAL archive under O(storage_url) (RV(wal_archive)), its newest file and how long ago
        it was stored, which is the RPO a point-in-time recovery achieves at this moment. The DR rehearsal
        puts it in its report.
    type: bool
    default: false
  backups:
    description:
      - List the backups (RV(backups)). V(false) with O(wal) reports only the WAL archive and reads no manifest
        (RV(backups) is then empty), as the DR rehearsal does for its RPO with PITR.
    type: bool
    default: true
seealso:
  - module: drkit.backup.pg_backup
"""

EXAMPLES = r"""
- name: Find the newest backup of the platform database
  drkit.backup.backup_info:
    storage_url: s3://prod-backups/postgresql
    kind: pg_logical
    database: agentic_platform
    limit: 1
  register: info

- name: Show it
  ansible.builtin.debug:
    msg: "{{ info.latest.backup_id }} finished {{ info.latest.finished_at }}"
  when: info.latest
"""

RETURN = r"""
backups:
  description: Complete backups, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    backup_id:
      description: The backup's id.
      type: str
      sample: 20261125T211500Z-pg-logical-3fa9c1
    kind:
      description: pg_logical, pg_physical, redis_rdb or redis_aof.
      type: str
    source:
      description: Where the backup came from (host, port, database, server version).
      type: dict
    source_key:
      description: The source as one string, for the O(source) filter.
      type: str
    started_at:
      description: UTC start time, ISO 8601.
      type: str
    finished_at:
      description: UTC finish time, ISO 8601.
      type: str
    size:
      description: Stored bytes of all artifacts.
      type: int
    pinned:
      description: Whether a C(keep) marker protects it from rotation.
      type: bool
    verifications:
      description: Number of verification records stored next to it.
      type: int
    manifest:
      description: The full manifest.
      type: dict
    counted:
      description: Whether the backup counts (artifacts stored with their recorded sizes, not dated in the future,
        and, with O(verify_keys), signed by one of those keys).
      type: bool
    doubts:
      description: Why it does not count, one message each (empty when it counts).
      type: list
      elements: str
    artifacts_missing:
      description: Artifacts missing or stored with another size, with what was found.
      type: list
      elements: str
    future_dated:
      description: Whether C(finished_at) lies more than 15 minutes after the storage's time of the manifest.
      type: bool
    stored_at:
      description: The storage's time of the manifest (S3 LastModified, file mtime), UTC ISO 8601.
      type: str
    digest:
      description: Whether the manifest carries its digest (C(manifest_sha256)); manifests written before
        drkit sealed them do not, and are read as before.
      type: bool
    signed_by:
      description: The key id (SHA-256 of the raw Ed25519 public key) the manifest names as its signer, null when
        it is not signed. Checked only with O(verify_keys).
      type: str
    signature_verified:
      description: With O(verify_keys), whether one of those keys signed the manifest as it is; null without.
      type: bool
count:
  description: Number of backups returned.
  returned: always
  type: int
latest:
  description: The newest backup that counts, or null when there is none.
  returned: always
  type: dict
not_counted:
  description: Number of listed backups that do not count.
  returned: always
  type: int
problems:
  description: Manifests that could not be read, one message each.
  returned: always
  type: list
  elements: str
storage:
  description: The storage, as a URL without secrets.
  returned: always
  type: str
wal_archive:
  description: With O(wal), the WAL archive under O(storage_url).
  returned: when O(wal) is true
  type: dict
  contains:
    system_identifier:
      description: The cluster the archive belongs to (null when nothing was archived yet).
      type: str
    newest:
      description:
        - The segment or partial of the newest timeline stored last (null when the archive holds no WAL) with
          its C(key), C(name), C(timeline), C(stored_at) (ISO 8601, UTC) and C(age_seconds) at the time of
          the listing.
      type: dict
verify_keys:
  description: The key ids of O(verify_keys) the signatures were checked against (empty when unset).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.repo.listing import OPTIONS, backup_info


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    run_engine(module, backup_info, module.params)


if __name__ == "__main__":
    main()
