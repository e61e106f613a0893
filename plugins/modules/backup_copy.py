#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: backup_copy
short_description: Copy complete backups and the WAL archive into a second repository
version_added: 0.2.0
description:
  - Copies every complete backup of O(storage_url) that the destination O(to_storage_url) lacks (another
    bucket, region, provider or directory), oldest first, and the WAL archive. Each artifact is read once from
    the source, checked against the manifest's size and SHA-256 as it streams into the destination, then read
    back from the destination and checked again; the manifest is written last, create-only and byte for byte.
    Until then the copy does not exist at the destination.
  - Resumable and idempotent. A backup the destination has a manifest for is done; an artifact it already holds
    with the right size and SHA-256 is kept. An artifact there with other content is refused and left alone
    (artifacts are never overwritten).
  - WAL segments and history files are copied create-only (an identical one there is fine, a different one is
    refused); of streamed partials only the newest of a segment not stored in full.
  - Verification records and pins are not copied; run M(drkit.backup.pg_verify) and
    M(drkit.backup.s3_rotate) against the destination for its own verification and retention.
  - The destination's storage options are the storage options prefixed with C(to_); none of them falls back to
    an environment variable (those are the source's).
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage
  - drkit.backup.storage.metrics
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description: Lists what would be copied, writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  to_storage_url:
    description:
      - The destination repository, C(file:///absolute/path), C(s3://bucket/prefix) or
        C(az://container/prefix); not the source.
    type: str
    required: true
  to_endpoint_url:
    description:
      - Endpoint of the destination's S3-compatible store.
    type: str
  to_region:
    description:
      - The destination's S3 region.
    type: str
  to_access_key:
    description:
      - The destination's S3 access key id.
    type: str
    aliases: [to_aws_access_key]
  to_secret_key:
    description:
      - The destination's S3 secret access key.
    type: str
    aliases: [to_aws_secret_key]
  to_session_token:
    description:
      - The destination's S3 session token.
    type: str
  to_profile:
    description:
      - Named AWS profile for the destination.
    type: str
  to_ca_bundle:
    description:
      - CA bundle to validate the destination's S3 endpoint.
    type: path
  to_validate_certs:
    description:
      - Whether to validate the destination's TLS certificate. Only turn this off for tests.
    type: bool
    default: true
  to_server_side_encryption:
    description:
      - S3 server-side encryption of the copies (see O(server_side_encryption)).
    type: str
    choices: [AES256, "aws:kms", "aws:kms:dsse"]
  to_sse_kms_key_id:
    description:
      - The KMS key for the copies with O(to_server_side_encryption=aws:kms).
    type: str
  to_azure_account_name:
    description:
      - The destination's Azure storage account (C(az://) destinations).
    type: str
  to_azure_account_key:
    description:
      - The destination's Azure storage account key.
    type: str
  to_azure_sas_token:
    description:
      - A SAS token for the destination's container.
    type: str
  to_azure_connection_string:
    description:
      - The destination's Azure Storage connection string.
    type: str
  to_azure_endpoint:
    description:
      - The destination's Azure Blob endpoint (Azurite, sovereign clouds).
    type: str
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
      - Only backups of this source, written C(type:host:port[:database]).
    type: str
  backup_id:
    description:
      - Copy this backup only.
    type: str
  copy_wal:
    description:
      - Whether to copy the WAL archive too.
    type: bool
    default: true
seealso:
  - module: drkit.backup.s3_rotate
  - module: drkit.backup.backup_info
"""

EXAMPLES = r"""
- name: Copy last night's backups and the WAL into the second region
  drkit.backup.backup_copy:
    storage_url: s3://backups-eu-west/pg-main
    to_storage_url: s3://backups-eu-central/pg-main
    to_endpoint_url: https://s3.eu-central-1.amazonaws.com
    to_region: eu-central-1
    to_access_key: "{{ vault_copy_access_key }}"
    to_secret_key: "{{ vault_copy_secret_key }}"
    metrics_dir: /var/lib/prometheus/node-exporter
    job_name: copy_pg_main
"""

RETURN = r"""
source:
  description: The source repository, as a URL without secrets.
  returned: always
  type: str
destination:
  description: The destination repository, as a URL without secrets.
  returned: always
  type: str
to_copy:
  description: Ids of the complete backups the destination lacked, oldest first.
  returned: always
  type: list
  elements: str
copied:
  description: Ids of the backups copied (empty in check mode).
  returned: always
  type: list
  elements: str
bytes:
  description: Bytes of backup artifacts copied (artifacts the destination already held are not counted).
  returned: always
  type: int
wal_objects:
  description: WAL objects copied.
  returned: always
  type: int
wal_bytes:
  description: Bytes of WAL copied.
  returned: always
  type: int
partials_pruned:
  description: Streamed partials removed at the destination because their segment is stored there in full.
  returned: always
  type: int
problems:
  description: Source backups left out (an unreadable manifest, missing artifacts), one message each.
  returned: always
  type: list
  elements: str
seconds:
  description: Duration of the copy.
  returned: success
  type: float
msg:
  description: One-line summary.
  returned: always
  type: str
steps:
  description:
    - The byte streams of the run, in order, one per artifact and step (C(copy) from the source into the
      destination, C(re-read) at the destination), with their throughput. Empty in check mode or when
      everything was there already.
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: What the bytes went through.
      type: str
      sample: copy
    what:
      description: The artifact.
      type: str
      sample: database.pgdump
    bytes:
      description: Bytes that went through.
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

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.repo.copy import OPTIONS, backup_copy


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    run_engine(module, backup_copy, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
