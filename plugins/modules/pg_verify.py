#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_verify
short_description: Prove a PostgreSQL backup restores, by checksum, structure or a real test-restore
version_added: 0.1.0
description:
  - Verifies one backup (by id, C(latest), or the newest before a time) at a chosen O(level).
  - V(checksum) re-reads every artifact from storage and compares size and SHA-256 with the manifest.
  - V(structure) also runs C(pg_restore --list) on the decompressed stream and compares the number of
    entries with the manifest.
  - V(restore) also restores into a scratch database on the server given by the C(login_*) options
    (a unique C(drkit_verify_*) name, always dropped afterwards, also on failure or SIGTERM), compares
    every table's row count with the counts recorded from C(pg_dump)'s own snapshot, and runs the
    optional O(checks). With O(container) the test-restore runs by default in a scratch PostgreSQL started
    from the container's image (O(verify_in)); the C(login_*) options are not used then.
  - Each run writes a verification record next to the manifest (C(backups/<id>/verify-<time>.json);
    the manifest itself is never rewritten) and, with O(metrics_dir), updates the job's metrics.
  - A failed verification fails the task with a message naming the artifact and what differed.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.postgres
  - drkit.backup.postgres.restore_settings
  - drkit.backup.container
  - drkit.backup.container.scratch_verify
  - drkit.backup.storage
  - drkit.backup.storage.metrics
  - drkit.backup.backup_selector
  - drkit.backup.encryption.decryption
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description: Resolves the backup and reports what would be verified; reads no data, writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  source_database:
    description:
      - With O(backup_id=latest), only consider backups of this database.
    type: str
  level:
    description:
      - How deep to verify.
    type: str
    default: structure
    choices: [checksum, structure, restore]
  jobs:
    description:
      - Parallel C(pg_restore) jobs for O(level=restore), at least V(1). With more than one, the dump is first
        decompressed into O(work_dir).
    type: int
    default: 1
  checks:
    description:
      - Extra SQL checks run in the scratch database for O(level=restore). Each is a SQL string or a
        mapping with C(sql) and optional C(name), C(min), C(max), C(equals). The query must return one
        value; without C(min)/C(max)/C(equals) the value must be truthy (non-zero, true, non-empty).
    type: list
    elements: raw
  no_owner:
    description:
      - Restore the scratch copy without setting object owners (roles may not exist on the scratch server).
    type: bool
    default: true
  no_privileges:
    description:
      - Restore the scratch copy without GRANTs.
    type: bool
    default: true
  maintenance_db:
    description:
      - Database to connect to for creating and dropping the scratch database.
    type: str
    default: postgres
  work_dir:
    description:
      - Local directory for decompressed dumps when O(jobs) > 1 or the dump is in directory format.
    type: path
requirements:
  - zstandard (Python library on the managed host)
seealso:
  - module: drkit.backup.pg_backup
  - module: drkit.backup.pg_restore
"""

EXAMPLES = r"""
- name: Weekly proof that the newest backup restores
  drkit.backup.pg_verify:
    storage_url: s3://prod-backups/postgresql
    level: restore
    login_host: 127.0.0.1
    login_user: postgres
    login_password: "{{ vault_pg_password }}"
    checks:
      - name: agents present
        sql: SELECT count(*) FROM mcp_documents.agents
        min: 1
    metrics_dir: /var/lib/prometheus/node-exporter

- name: Quick integrity check of one backup
  drkit.backup.pg_verify:
    storage_url: file:///var/backups/drkit
    backup_id: 20261125T211500Z-pg-logical-3fa9c1
    level: checksum
"""

RETURN = r"""
backup_id:
  description: The backup that was verified.
  returned: always
  type: str
passed_over:
  description: With O(backup_id=latest), newer backups not verified because their manifest is dated in the
    future, with the reason.
  returned: always
  type: list
  elements: str
passed:
  description: Whether verification passed (null in check mode).
  returned: always
  type: bool
level:
  description: The level verified.
  returned: always
  type: str
findings:
  description: What differed or failed; empty when it passed.
  returned: success
  type: list
  elements: str
tables:
  description:
    - Per-table comparison for O(level=restore) (C(schema), C(table), C(name), C(expected), C(actual), C(ok)).
    - C(schema) and C(table) are kept apart (a table is the pair, C("a.b".c) and C(a."b.c") are two tables);
      C(name) is both for people, quoted as psql quotes them.
  returned: success
  type: list
  elements: dict
checks:
  description: Results of O(checks) (C(name), C(value), C(ok)).
  returned: success
  type: list
  elements: dict
timings:
  description: Seconds spent downloading, restoring and checking.
  returned: success
  type: dict
  sample: {download_seconds: 1.2, restore_seconds: 25.3, check_seconds: 1.1}
backup_age_seconds:
  description: Age of the backup when verification started (the RPO achieved at that moment).
  returned: success
  type: float
duration:
  description: Seconds the whole verification took.
  returned: success
  type: float
record_key:
  description: Key of the verification record written next to the manifest.
  returned: success
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
from ..module_utils.pg.verify import OPTIONS, pg_verify


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("psycopg", "psycopg"), ("zstandard", "zstandard")])
    run_engine(module, pg_verify, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
