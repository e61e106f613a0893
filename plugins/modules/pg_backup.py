#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_backup
short_description: Verified, compressed, checksummed PostgreSQL backups to a directory or S3
version_added: 0.1.0
description:
  - Backs up one PostgreSQL database with C(pg_dump), streaming it through zstd compression and
    SHA-256 into a C(file://) directory or an C(s3://) bucket, without a full-size local copy
    (except for O(format=directory), where C(pg_dump) itself needs a directory).
  - Row counts of every dumped table are taken inside the very snapshot C(pg_dump) uses
    (the function pg_export_snapshot() and C(pg_dump --snapshot)) and recorded in the manifest, so a
    later test-restore can prove it got exactly the data that was backed up.
  - After the upload the stored object is read back, its size and SHA-256 compared with what was
    written, and its structure checked with C(pg_restore --list). Only then is the manifest
    written; a backup without a manifest does not exist for listing, rotation or restore.
  - Any failure (including a C(pg_dump) that exits 0 after printing an error) fails the task and
    removes what was written; nothing that looks like a backup is left behind.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.postgres
  - drkit.backup.container
  - drkit.backup.storage
  - drkit.backup.storage.metrics
  - drkit.backup.compression
  - drkit.backup.encryption
  - drkit.backup.signing
attributes:
  check_mode:
    support: full
    description:
      - Connects to the server read-only, proves that the storage can be written (the storage contract's
        probe object C(probe/<host>-<time>), created and removed again on C(file://), left for a lifecycle
        rule on S3) and reports what would be done. No backup is written.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  database:
    description:
      - Name of the database to back up. Required with O(mode=logical).
      - With O(mode=physical) the whole cluster is backed up; the database is only where drkit connects
        to read the server's settings (default C(postgres)).
    type: str
    aliases: [db]
  mode:
    description:
      - C(logical) backs up one database with C(pg_dump).
      - C(physical) takes a base backup of the whole cluster with C(pg_basebackup) (tar format, streamed,
        no local copy) for point-in-time recovery with M(drkit.backup.pg_pitr). The server must archive its
        WAL with C(drkit wal-push) to the same O(storage_url) (role M(drkit.backup.postgresql_wal_archive)).
        The backup is complete, and its manifest written, only once every WAL segment from its start to its
        stop LSN is in the archive. The manifest records start/stop LSN, timeline, WAL segments, system
        identifier and server version, and PostgreSQL's own C(backup_manifest) is stored beside it.
      - With O(mode=physical), O(login_user) needs the REPLICATION attribute (and a C(replication) line in
        C(pg_hba.conf)); user tablespaces are not supported.
    type: str
    default: logical
    choices: [logical, physical]
  wal_wait_timeout:
    description:
      - O(mode=physical) only. Seconds (V(0) or more) to wait, after the data has been streamed, for the backup's
        WAL to reach the archive. When they pass, the backup fails (nothing is recorded) and the server's wait is
        cancelled.
    type: float
    default: 300
  checkpoint:
    description:
      - O(mode=physical) only. C(fast) starts the backup with an immediate checkpoint, C(spread) waits for a
        spread one (less I/O, slower start).
    type: str
    default: fast
    choices: [fast, spread]
  format:
    description:
      - C(custom) (C(pg_dump -Fc)) streams straight into storage.
      - C(directory) (C(pg_dump -Fd)) dumps in parallel with O(jobs) into a local work directory,
        then streams it into storage as one tar. Needs free space in O(work_dir) for the
        uncompressed dump.
    type: str
    default: custom
    choices: [custom, directory]
  jobs:
    description:
      - Parallel C(pg_dump) workers, at least V(1). More than one only with O(format=directory)
        (O(mode=logical)).
    type: int
    default: 1
  compression_by:
    description:
      - Who compresses a O(format=custom) dump (O(mode=logical)).
      - C(pg_dump) - C(pg_dump --compress=zstd:LEVEL) (PostgreSQL 16 and later) writes C(database.pgdump), a plain
        pg_dump archive any C(pg_restore) 16+ reads as it is; a restore downloads the compressed size and
        C(pg_restore -j) decompresses in its workers. Fails with an older C(pg_dump).
      - C(drkit) - C(pg_dump -Z0) through drkit's zstd, C(database.pgdump.zst).
      - C(auto) - C(pg_dump) when C(pg_dump) is 16 or later, else C(drkit).
      - The directory format is always compressed by drkit.
    type: str
    choices: [auto, drkit, pg_dump]
    default: auto
  schemas:
    description:
      - Only these schemas (C(pg_dump --schema)). Shell-style wildcards allowed.
    type: list
    elements: str
  exclude_schemas:
    description:
      - Skip these schemas (C(pg_dump --exclude-schema)).
    type: list
    elements: str
  tables:
    description:
      - Only these tables (C(pg_dump --table)), as C(schema.table) or C(table).
    type: list
    elements: str
  exclude_tables:
    description:
      - Skip these tables (C(pg_dump --exclude-table)).
    type: list
    elements: str
  row_counts:
    description:
      - Count every table's rows in the dump's snapshot and record them in the manifest.
      - Costs one sequential scan per table while C(pg_dump) runs; turn off for huge tables.
    type: bool
    default: true
  work_dir:
    description:
      - Where O(format=directory) writes the dump before streaming it. Defaults to the system temp
        directory.
    type: path
  labels:
    description:
      - Free-form labels recorded in the manifest.
    type: dict
notes:
  - Run the module on a host that has the drkit Python requirements (psycopg, zstandard, obstore, boto3;
    Python 3.11 or later); the C(drkit.backup.postgresql_backup) role installs them into C(/opt/drkit).
seealso:
  - module: drkit.backup.backup_info
"""

EXAMPLES = r"""
- name: Back up the platform database to S3-compatible storage
  drkit.backup.pg_backup:
    login_host: 127.0.0.1
    port: 5432
    login_user: backup
    login_password: "{{ vault_pg_password }}"
    database: agentic_platform
    storage_url: s3://prod-backups/postgresql
    endpoint_url: https://s3.example.internal
  register: backup

- name: Parallel directory-format dump to a local directory, with metrics
  drkit.backup.pg_backup:
    database: agentic_platform
    format: directory
    jobs: 4
    storage_url: file:///var/backups/drkit
    metrics_dir: /var/lib/prometheus/node-exporter

- name: Physical base backup of the whole cluster, for point-in-time recovery
  drkit.backup.pg_backup:
    mode: physical
    login_user: replicator
    login_password: "{{ vault_replicator_password }}"
    storage_url: s3://prod-backups/pg-main
    wal_wait_timeout: 600

- name: Only the documents schema, without row counts
  drkit.backup.pg_backup:
    database: agentic_platform
    schemas: [mcp_documents]
    row_counts: false
    storage_url: file:///var/backups/drkit
"""

RETURN = r"""
backup_id:
  description: Id of the new backup (sortable UTC time, kind, random suffix).
  returned: success and not check mode
  type: str
  sample: 20261125T211500Z-pg-logical-3fa9c1
manifest:
  description:
    - The manifest written to storage (see docs/storage-layout.md). For O(mode=physical) its C(data)
      holds C(start_lsn), C(stop_lsn), C(timeline), C(wal_start_segment), C(wal_stop_segment),
      C(system_identifier), C(server_version) and more (see docs/pitr.md).
  returned: success and not check mode
  type: dict
manifest_key:
  description: Key of the manifest under the storage root.
  returned: success and not check mode
  type: str
  sample: backups/20261125T211500Z-pg-logical-3fa9c1/manifest.json
size:
  description: Stored (compressed) size in bytes.
  returned: success and not check mode
  type: int
  sample: 181234567
sha256:
  description: SHA-256 of the stored dump artifact.
  returned: success and not check mode
  type: str
duration:
  description: Seconds from start to manifest written.
  returned: success and not check mode
  type: float
  sample: 5.42
signed_by:
  description: Key id (SHA-256 of the raw Ed25519 public key) of O(signing_key_file) that signed the manifest,
    null when it is not signed.
  returned: success and not check mode
  type: str
storage:
  description: The storage, as a URL without secrets.
  returned: always
  type: str
probe:
  description:
    - Check mode only. Key of the probe object that proved the storage writable (removed again on C(file://);
      on S3 it stays for the lifecycle rule on C(probe/), see docs/storage-layout.md).
  returned: check mode
  type: str
  sample: probe/db1-20261125T211500.123456Z
msg:
  description: What was done (or would be done in check mode).
  returned: always
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
from ..module_utils.pg.backup import OPTIONS, pg_backup


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True,
                           required_if=[("mode", "logical", ["database"])])
    check_libraries(module, [("psycopg", "psycopg"), ("zstandard", "zstandard")])
    run_engine(module, pg_backup, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
