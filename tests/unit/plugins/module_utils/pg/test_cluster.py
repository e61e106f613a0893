# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cluster.py: finding PostgreSQL's server programs, and quoting of
postgresql.conf values."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.pg.cluster import conf_quote, find_pg_bindir


def test_find_pg_bindir_has_the_server_programs():
    bindir = find_pg_bindir()
    for prog in ("postgres", "initdb", "pg_ctl", "psql", "pg_isready"):
        assert os.access(os.path.join(bindir, prog), os.X_OK), prog


def test_find_pg_bindir_names_the_package_when_missing():
    with pytest.raises(ConfigError) as exc:
        find_pg_bindir("99")
    assert "postgresql-99" in str(exc.value)


def test_conf_value_quoting():
    assert conf_quote(True) == "on"
    assert conf_quote(False) == "off"
    assert conf_quote(5) == "5"
    assert conf_quote("64MB") == "'64MB'"
    assert conf_quote("it's") == "'it''s'"
    assert conf_quote("cp %p /x/%f") == "'cp %p /x/%f'"
