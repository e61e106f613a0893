# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # drkit.backup.backup_selector: the options of repo.manifest.BACKUP_SELECTOR
    # (_ansible.backup_selector_argument_spec)
    DOCUMENTATION = r"""
options:
  backup_id:
    description:
      - Id of the backup (as in M(drkit.backup.backup_info)), or V(latest) for the newest complete backup this
        module can read (narrowed by its source filter and O(before), if given).
      - V(latest) is never a backup whose manifest is dated in the future (its C(finished_at) more than 15
        minutes after the storage's own time of the manifest); such a backup is used only when named by its id.
        See C(docs/retention.md).
    type: str
    default: latest
  before:
    description:
      - With O(backup_id=latest), the newest backup finished at or before this time (ISO 8601, for example
        V(2026-11-25T21:00:00Z); without a zone it is UTC).
    type: str
"""
