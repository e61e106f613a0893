# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_logical.py: compression_by, who compresses a logical dump, decided
before pg_dump runs."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import OPTIONS
from ansible_collections.drkit.backup.plugins.module_utils.pg.backup_logical import dumps_natively, validate
from support.unit_helpers import PG15, PG16, PG18


@pytest.mark.parametrize("fmt, by, version, native", [
    ("custom", "auto", PG18, True),
    ("custom", "auto", PG16, True),
    ("custom", "auto", PG15, False),
    ("custom", "auto", "unknown", False),
    ("custom", "drkit", PG18, False),
    ("custom", "pg_dump", PG16, True),
    ("directory", "auto", PG18, False),
])
def test_who_compresses(fmt, by, version, native):
    assert dumps_natively(fmt, by, version) is native


def test_compression_by_pg_dump_with_an_old_pg_dump_names_the_version_and_the_way_out():
    with pytest.raises(ConfigError) as e:
        dumps_natively("custom", "pg_dump", PG15)
    assert "needs pg_dump 16 or later" in e.value.message and "15.14" in e.value.message
    assert "pg_bin_dir" in e.value.hint


@pytest.mark.parametrize("params, message", [
    ({"compression_by": "gzip"}, "compression_by must be one of auto, drkit, pg_dump"),
    ({"compression_by": "pg_dump", "format": "directory", "jobs": 2}, "compression_by: pg_dump needs format: custom"),
    ({"jobs": 2}, "jobs > 1 needs format: directory"),
    ({"database": None}, "database is required"),
    ({"schemas": ["a", ""]}, "schemas must be a list of names or patterns"),
])
def test_validate_refuses_bad_combinations(params, message):
    with pytest.raises(ConfigError) as e:
        validate(resolve(OPTIONS, dict({"database": "app"}, **params)))
    assert message in e.value.message


def test_validate_returns_the_resolved_values():
    fmt, jobs, level, filters = validate(resolve(OPTIONS, {"database": "app", "schemas": "a,b"}))
    assert (fmt, jobs, level) == ("custom", 1, 3)
    assert filters == {"schemas": ["a", "b"], "exclude_schemas": [], "tables": [], "exclude_tables": []}


def test_a_physical_backup_does_not_take_a_container(tmp_path):
    from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup

    with pytest.raises(ConfigError) as e:
        pg_backup({"mode": "physical", "container": "agentic-postgres", "storage_url": "file://%s" % tmp_path})
    assert "container is for mode: logical" in e.value.message and "replication protocol" in e.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_directory_format_backup_through_a_container_is_refused_before_anything(tmp_path):
    from ansible_collections.drkit.backup.plugins.module_utils.pg.backup import pg_backup

    class InContainer(object):
        shares_files = False

    with pytest.raises(ConfigError) as e:
        pg_backup({"database": "app", "format": "directory", "container": "agentic-postgres",
                   "storage_url": "file://%s" % tmp_path}, runner=InContainer())
    assert "directory format cannot run through a container" in e.value.message
    assert list(tmp_path.iterdir()) == []
