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
    read or is invalid is reported in RV(problems) and skipped.
  - Read-only.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage
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
count:
  description: Number of backups returned.
  returned: always
  type: int
latest:
  description: The newest backup, or null when there is none.
  returned: always
  type: dict
problems:
  description: Manifests that could not be read, one message each.
  returned: always
  type: list
  elements: str
storage:
  description: The storage, as a URL without secrets.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.repo.listing import OPTIONS, backup_info


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    run_engine(module, backup_info, module.params)


if __name__ == "__main__":
    main()
