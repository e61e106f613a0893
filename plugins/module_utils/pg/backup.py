# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.pg_backup / ``drkit pg-backup``: dispatch on ``mode``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ..core.errors import ConfigError
from .backup_logical import pg_backup_logical
from .backup_physical import pg_backup_physical


def pg_backup(params, check_mode=False, runner=None, progress=None):
    """pg_backup's engine: dispatch on ``mode`` (logical | physical)."""
    mode = params.get("mode") or "logical"
    if mode == "physical":
        return pg_backup_physical(params, check_mode=check_mode, runner=runner, progress=progress)
    if mode == "logical":
        return pg_backup_logical(params, check_mode=check_mode, runner=runner, progress=progress)
    raise ConfigError("mode must be logical or physical, got %r" % mode)
