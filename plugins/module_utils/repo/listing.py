# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only listing of complete backups (those with a manifest)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ..storage.factory import open_storage, storage_options
from . import manifest as mf


def backup_info(params):
    """Returns (False, result): listing never changes anything."""
    storage = open_storage(params.get("storage_url"), **storage_options(params))
    entries, problems = mf.list_backups(storage, kind=params.get("kind"), source=params.get("source"),
                                        database=params.get("database"), strict=False)
    backup_id = params.get("backup_id")
    if backup_id:
        entries = [e for e in entries if e.backup_id == backup_id]
    limit = params.get("limit")
    if limit:
        entries = entries[:int(limit)]
    backups = []
    for e in entries:
        item = e.summary()
        item["manifest"] = dict(e.manifest)
        backups.append(item)
    return False, {"changed": False, "storage": storage.describe(), "backups": backups,
                   "count": len(backups), "latest": backups[0] if backups else None,
                   "problems": problems}
