# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # drkit.backup.compression; the spec is _ansible.compression_argument_spec()
    DOCUMENTATION = r"""
options:
  compression_level:
    description:
      - zstd level, 1 (fastest) to 19 (smallest).
    type: int
    default: 3
  compression_threads:
    description:
      - zstd worker threads; C(0) compresses in the calling thread.
    type: int
    default: 0
"""
