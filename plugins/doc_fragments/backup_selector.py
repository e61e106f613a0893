# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # drkit.backup.backup_selector; the spec is _ansible.backup_selector_spec()
    DOCUMENTATION = r"""
options:
  backup_id:
    description:
      - The backup, by its id (see M(drkit.backup.backup_info)), or V(latest) for the newest complete backup
        of the kind this module handles.
    type: str
    default: latest
  before:
    description:
      - With O(backup_id=latest), the newest backup finished at or before this time (ISO 8601).
    type: str
"""
