# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.pg_backup / ``drkit pg-backup``: its options, and the
dispatch on ``mode``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ..container.client import DOCKER
from ..core import metrics
from ..core.errors import ConfigError
from ..core.options import Option, Options, resolve
from ..core.crypto import ENCRYPTION
from ..core.signing import SIGNING
from ..core.stream import COMPRESSION
from ..repo.session import LABELS
from ..storage.factory import STORAGE
from .backup_logical import COMPRESSION_BY, pg_backup_logical
from .backup_physical import pg_backup_physical
from .client import CONNECTION, MAINTENANCE_DB
from .dump import FORMATS, JOBS

OPTIONS = Options(
    CONNECTION, STORAGE, metrics.METRICS, DOCKER,
    Option("database", "str", aliases=("db",), flags=("--database", "-d")),
    Option("mode", "str", default="logical", choices=("logical", "physical"), flags=("--mode",)),
    # physical
    Option("wal_wait_timeout", "float", default=300, min=0, flags=("--wal-wait-timeout",),
           help="physical: seconds to wait for the backup's WAL to reach the archive (default 300)"),
    Option("checkpoint", "str", default="fast", choices=("fast", "spread"), flags=("--checkpoint",),
           help="physical: pg_basebackup --checkpoint"),
    # where mode: physical connects when no database is given
    MAINTENANCE_DB.but(module=False),
    # logical
    Option("format", "str", default="custom", choices=FORMATS, flags=("--format",)),
    JOBS.but(help="logical, format directory: parallel pg_dump jobs (default 1)"),
    COMPRESSION,
    ENCRYPTION,
    SIGNING,
    Option("compression_by", "str", default="auto", choices=COMPRESSION_BY, flags=("--compression-by",),
           help="who compresses a custom-format dump: pg_dump itself (zstd, pg_dump 16+), drkit's zstd, "
                "or auto (pg_dump when it can)"),
    Option("schemas", "list", elements="str", flags=("--schema",), help="only this schema (pg_dump -n); repeatable"),
    Option("exclude_schemas", "list", elements="str", flags=("--exclude-schema",),
           help="skip this schema (pg_dump -N); repeatable"),
    Option("tables", "list", elements="str", flags=("--table",), help="only this table (pg_dump -t); repeatable"),
    Option("exclude_tables", "list", elements="str", flags=("--exclude-table",),
           help="skip this table (pg_dump -T); repeatable"),
    Option("row_counts", "bool", default=True, off_flags=("--no-row-counts",),
           help="do not count rows in the dump's snapshot"),
    Option("work_dir", "path", flags=("--work-dir",), help="format directory: where pg_dump writes the dump"),
    LABELS,
)


def pg_backup(params, check_mode=False, runner=None, progress=None):
    """pg_backup's engine: resolve the options, dispatch on ``mode``
    (logical | physical)."""
    p = resolve(OPTIONS, params)
    if p["mode"] == "physical":
        if p["container"]:
            raise ConfigError("container is for mode: logical; a physical backup connects to the server from "
                              "outside its container, over the replication protocol",
                              "Leave container unset and point login_host and port at the server's published "
                              "port")
        return pg_backup_physical(p, check_mode=check_mode, runner=runner, progress=progress)
    return pg_backup_logical(p, check_mode=check_mode, runner=runner, progress=progress)
