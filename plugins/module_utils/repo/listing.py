# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only listing of complete backups (those with a manifest)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ..core.errors import ConfigError
from ..core.options import Option, Options, resolve
from ..core.signing import VERIFYING, Trust
from ..storage.factory import STORAGE, open_storage, storage_options
from . import manifest as mf
from . import wal_layout

# drkit.backup.backup_info / drkit list
OPTIONS = Options(
    STORAGE, mf.BACKUP_FILTERS,
    Option("backup_id", "str"),
    Option("limit", "int", min=1, hint="Use 1 or more, or leave limit unset for every backup"),
    Option("wal", "bool", default=False, flags=("--wal",),
           help="also report the WAL archive's newest file and its age (the RPO of a point-in-time recovery now)"),
    Option("backups", "bool", default=True, off_flags=("--no-backups",),
           help="with --wal, report only the WAL archive: no manifest is read"),
    VERIFYING,
)


def backup_info(params):
    """Returns (False, result): listing never changes anything."""
    p = resolve(OPTIONS, params)
    if not p["backups"] and not p["wal"]:
        raise ConfigError("backups: false with wal: false would report nothing",
                          "Set wal: true (--wal) to report only the WAL archive, or leave backups at true")
    trust = Trust.from_params(p)
    storage = open_storage(p["storage_url"], must_exist=True, **storage_options(p))
    if not p["backups"]:
        # the WAL archive alone: a rehearsal's RPO without reading every manifest
        return False, {"changed": False, "storage": storage.describe(), "backups": [], "count": 0, "latest": None,
                       "not_counted": 0, "problems": [], "verify_keys": trust.ids() if trust else [],
                       "wal_archive": wal_archive_facts(storage)}
    # Backups that do not count (artifacts missing, dated in the future, not
    # signed by a key of verify_keys) are listed too, marked: counted false
    # and their doubts.
    entries, problems = mf.list_backups(storage, kind=p["kind"], source=p["source"], database=p["database"],
                                        strict=False, doubtful=True, trust=trust)
    if p["backup_id"]:
        entries = [e for e in entries if e.backup_id == p["backup_id"]]
    if p["limit"]:
        entries = entries[:p["limit"]]
    backups = []
    for e in entries:
        item = e.summary()
        item["manifest"] = dict(e.manifest)
        backups.append(item)
    counted = [b for b in backups if b["counted"]]
    result = {"changed": False, "storage": storage.describe(), "backups": backups,
              "count": len(backups), "latest": counted[0] if counted else None,
              "not_counted": len(backups) - len(counted), "problems": problems,
              "verify_keys": trust.ids() if trust else []}
    if p["wal"]:
        result["wal_archive"] = wal_archive_facts(storage)
    return False, result


def wal_archive_facts(storage):
    """The WAL archive under this storage: its cluster and newest file."""
    newest = wal_layout.newest_archived(storage)
    if newest is not None:
        newest = dict(newest, stored_at=mf.iso_from_epoch(newest["stored_at"]))
    return {"system_identifier": wal_layout.archive_system_identifier(storage), "newest": newest}
