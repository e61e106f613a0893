#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: dr_report
short_description: Write the DR rehearsal report (JSON, Markdown, HTML with a timeline) and its metrics
version_added: 0.1.0
description:
  - Turns the registered results of a rehearsal's backup and restore-level verification steps into a
    report - C(report.json), C(report.md), C(report.html) and C(timeline.svg) in O(report_dir) - with
    the measured RTO (download + restore + checks) and the achieved RPO (age of the backup when the
    restore started) per component and for the whole platform.
  - With O(metrics_dir), writes C(drkit_dr_rehearsal_*) metrics so an alert fires when rehearsals fail
    or stop running.
  - "Used by C(playbooks/dr_rehearsal.yml); usually run with C(delegate_to: localhost)."
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage.metrics
attributes:
  check_mode:
    support: full
    description: Builds the report and returns it without writing files or metrics.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  components:
    description:
      - One entry per restored component, each a mapping with C(name), C(verification) (the registered
        result of M(drkit.backup.pg_verify) or M(drkit.backup.redis_verify) at restore level) and optionally
        C(backup) (the registered result of the backup step when the rehearsal took a fresh backup).
    type: list
    elements: dict
    required: true
  report_dir:
    description:
      - Directory to write the report files into (created if missing).
    type: path
    required: true
  title:
    description:
      - Title of the report.
    type: str
    default: DR rehearsal
  started_at:
    description:
      - When the rehearsal started (ISO 8601); defaults to the first step's start.
    type: str
  storage:
    description:
      - Storage URL shown in the report (no secrets).
    type: str
  wal_archive:
    description:
      - The RV(drkit.backup.backup_info#module:wal_archive) of M(drkit.backup.backup_info) with
        O(drkit.backup.backup_info#module:wal=true) for the WAL archive of the rehearsed cluster.
      - The report then also gives the RPO a point-in-time recovery achieves (the age of the newest archived
        WAL file) and the metric C(drkit_dr_rehearsal_wal_rpo_seconds).
    type: dict
  wal_error:
    description:
      - Why the WAL archive could not be read (the message of the M(drkit.backup.backup_info) task that failed).
        The report then fails with that finding (a point-in-time recovery would fail the same way), O(wal_archive)
        is ignored and C(drkit_dr_rehearsal_wal_rpo_seconds) is NaN.
    type: str
  notes:
    description:
      - Lines on what the numbers mean in this rehearsal, shown under the header of the Markdown and HTML reports
        and kept in RV(report) (the region-loss scenario of C(playbooks/dr_rehearsal.yml) says where it restored
        from and what its RPO includes).
    type: list
    elements: str
seealso:
  - module: drkit.backup.pg_verify
"""

EXAMPLES = r"""
- name: Write the rehearsal report on the controller
  drkit.backup.dr_report:
    components:
      - name: postgresql
        backup: "{{ pg_backup_result }}"
        verification: "{{ pg_verify_result }}"
    report_dir: "{{ playbook_dir }}/../reports/{{ inventory_hostname }}"
    metrics_dir: /var/lib/prometheus/node-exporter
  delegate_to: localhost
"""

RETURN = r"""
passed:
  description: Whether every component passed.
  returned: always
  type: bool
rto_seconds:
  description: Measured RTO of the whole platform (sum over components).
  returned: always
  type: float
rpo_seconds:
  description: Achieved RPO (the oldest backup's age at restore time).
  returned: always
  type: float
wal_rpo_seconds:
  description:
    - With O(wal_archive), the RPO of a point-in-time recovery (the age of the newest archived WAL file when
      it was listed); null without a WAL archive or when it holds no WAL.
  returned: always
  type: float
summary:
  description: A few lines to print.
  returned: always
  type: list
  elements: str
report:
  description: The full report as written to C(report.json).
  returned: always
  type: dict
paths:
  description: Files written, by name.
  returned: when not check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.repo.report import OPTIONS, write_report


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    run_engine(module, write_report, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
