# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_verify's choices made before anything runs."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.pg import verify


class Entry(object):
    backup_id = "20261203T120000Z-pg-physical-abcdef"
    manifest = {"kind": "pg_physical", "source": {}}


def test_a_physical_backup_with_a_container_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(verify, "open_storage", lambda *a, **kw: object())
    monkeypatch.setattr(verify.mf, "resolve", lambda *a, **kw: Entry())
    monkeypatch.setattr(verify, "verify_physical", lambda *a, **kw: pytest.fail("the scratch server was started"))
    with pytest.raises(ConfigError) as e:
        verify.pg_verify({"storage_url": "file:///nowhere", "container": "agentic-postgres", "level": "restore"})
    assert "container is for logical backups" in str(e.value) and Entry.backup_id in str(e.value)
    assert "Leave container unset" in str(e.value)
