#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_restore
short_description: Restore a PostgreSQL logical backup into a database
version_added: 0.1.0
description:
  - Restores a chosen backup (V(latest), an id, or the newest finished at or before O(before)) into
    O(target_database), with parallel O(jobs).
  - The restore always goes into a new database under a temporary name; the stored dump's size and
    SHA-256 are checked while it is read, and every table's row count is compared with the manifest.
    Only a complete, checked restore is renamed to O(target_database). A failed restore never touches
    the target.
  - If O(target_database) exists and holds any user objects, the module refuses unless O(force=true).
    With O(force=true) the restored copy is swapped in (sessions on the old database are terminated,
    the old database is renamed away in the same transaction that renames the restored copy in, then
    dropped, or kept with O(keep_old=true)).
  - An existing empty database is replaced without O(force).
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.postgres
  - drkit.backup.container
  - drkit.backup.postgres.restore_settings
  - drkit.backup.storage
  - drkit.backup.backup_selector
  - drkit.backup.encryption.decryption
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description: Resolves the backup, inspects the target and reports what would be restored.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  source_database:
    description:
      - With O(backup_id=latest), only consider backups of this database.
    type: str
  target_database:
    description:
      - Database to restore into.
    type: str
    required: true
  force:
    description:
      - Replace a non-empty O(target_database) by swapping the restored copy in.
    type: bool
    default: false
  keep_old:
    description:
      - With O(force=true), keep the replaced database under a C(<target>__drkit_old_*) name instead of dropping it.
    type: bool
    default: false
  jobs:
    description:
      - Parallel C(pg_restore) jobs, at least V(1). With 1 the dump streams from storage into C(pg_restore) with no
        local copy; with more it is first decompressed into O(work_dir) (parallel restore needs a seekable file).
        The download starts before the target is inspected and the database created, and the C(pre-data)
        section (schemas, tables) is restored from the head of the file while the rest still downloads; the
        C(data) and C(post-data) sections then run with O(jobs) as soon as every byte is there. The sha256 of a
        dump compressed by pg_dump is computed beside them and must match the manifest before anything is
        renamed into place (a drkit-compressed one is checked while it is decompressed).
    type: int
    default: 1
  no_owner:
    description:
      - C(pg_restore --no-owner) - do not set object owners.
    type: bool
    default: false
  no_privileges:
    description:
      - C(pg_restore --no-privileges) - do not restore GRANTs.
    type: bool
    default: false
  role:
    description:
      - C(pg_restore --role) - role to restore as.
    type: str
  owner:
    description:
      - Owner of the new database.
    type: str
  check_row_counts:
    description:
      - Compare every table's row count with the manifest before putting the database in place.
    type: bool
    default: true
  row_count_method:
    description:
      - How O(check_row_counts) gets the restored counts. V(stats) reads what PostgreSQL's statistics counted
        into each table while C(pg_restore) loaded the new database (C(n_tup_ins), with partitions and
        inheritance children; nothing to scan) and runs SELECT count(*) on any table where that differs from the
        manifest, so a mismatch is always confirmed by a real count. V(count) runs SELECT count(*) on every table.
      - M(drkit.backup.pg_verify) always counts with SELECT count(*).
    type: str
    choices: [stats, count]
    default: stats
  maintenance_db:
    description:
      - Database to connect to for creating, renaming and dropping databases.
    type: str
    default: postgres
  work_dir:
    description:
      - Local directory for the decompressed dump when O(jobs) > 1 or the dump is in directory format.
    type: path
requirements:
  - zstandard (Python library on the managed host)
seealso:
  - module: drkit.backup.pg_backup
  - module: drkit.backup.pg_verify
"""

EXAMPLES = r"""
- name: Restore last night's backup into a new database
  drkit.backup.pg_restore:
    storage_url: s3://prod-backups/postgresql
    source_database: agentic_platform
    before: "2026-11-25T06:00:00Z"
    target_database: agentic_platform_restored
    jobs: 4

- name: Replace the production database with the latest backup (disaster recovery)
  drkit.backup.pg_restore:
    storage_url: s3://prod-backups/postgresql
    target_database: agentic_platform
    force: true
    keep_old: true
"""

RETURN = r"""
backup_id:
  description: The backup restored.
  returned: always
  type: str
passed_over:
  description: With O(backup_id=latest), newer backups not restored because their manifest is dated in the
    future (C(finished_at) more than 15 minutes after the storage's time of the manifest), with the reason.
    When the newest backup has artifacts missing the restore is refused and names the newest one that can be
    restored.
  returned: always
  type: list
  elements: str
target_database:
  description: The database restored into.
  returned: always
  type: str
target_exists:
  description: Whether the target existed before.
  returned: always
  type: bool
duration:
  description: Seconds from start to the database in place.
  returned: success and not check mode
  type: float
timings:
  description: Seconds spent downloading, restoring and checking.
  returned: success and not check mode
  type: dict
tables:
  description: Per-table row count comparison with the manifest (C(schema), C(table), C(name), C(expected),
    C(actual), C(ok)), as pg_verify returns it.
  returned: success and not check mode
  type: list
  elements: dict
old_database:
  description: Name of the kept old database with O(keep_old=true), else null.
  returned: success and not check mode
  type: str
steps:
  description:
    - The byte streams of the run, in order, one per artifact and step (C(dump), C(upload), C(re-read),
      C(download), C(restore) or C(verify)), with their throughput. Empty in check mode.
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: What the bytes went through.
      type: str
      sample: upload
    what:
      description: The artifact.
      type: str
      sample: database.pgdump
    bytes:
      description: Bytes that went through (what the tool wrote for an upload, what was stored otherwise).
      type: int
      sample: 1288490189
    seconds:
      description: How long it took.
      type: float
      sample: 61.2
    bytes_per_second:
      description: bytes / seconds (null when it took no measurable time).
      type: int
      sample: 21053761
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, check_libraries, run_engine
from ..module_utils.pg.restore import OPTIONS, pg_restore_backup


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("psycopg", "psycopg"), ("zstandard", "zstandard")])
    run_engine(module, pg_restore_backup, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
