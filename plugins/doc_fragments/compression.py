# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # drkit.backup.compression: the options of core.stream.COMPRESSION
    # (_ansible.compression_argument_spec), docs/options.md
    DOCUMENTATION = r"""
options:
  compression_level:
    description:
      - zstd compression level, from V(1) (fastest) to V(19) (smallest); the default V(3) is fast and
        compresses database dumps well.
      - Values outside 1-19 fail the task before anything is written. zstd's own level V(0) (which means
        "zstd's default") is refused rather than silently read as V(3); leave the option unset for the default.
    type: int
    default: 3
  compression_threads:
    description:
      - zstd worker threads for drkit's own compression. V(0) compresses in the calling thread, V(1) to
        V(256) use that many worker threads, V(-1) one per CPU.
    type: int
    default: 0
requirements:
  - zstandard (Python library on the managed host)
"""
