# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""item_errors: list items checked against the item options of a role's
argument spec (postgresql_backup_databases, the real spec)."""

import os

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.drkit.backup.plugins.filter.item_errors import FilterModule, item_errors

SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "postgresql_backup", "meta",
                    "argument_specs.yml")
with open(SPEC) as fh:
    OPTIONS = yaml.safe_load(fh)["argument_specs"]["main"]["options"]["postgresql_backup_databases"]["options"]
NAME = "postgresql_backup_databases"


def test_valid_items_and_plain_names_pass():
    items = ["app", {"name": "other", "schedule": "0 3 * * *", "login_port": "5433",
                     "retention": {"keep_daily": 7, "keep_within": "2d"},
                     "verify_checks": [{"name": "n", "sql": "SELECT 1", "min": 1}],
                     "storage_options": {"endpoint_url": "https://s3", "secret_key": "k"}}]
    assert item_errors(items, OPTIONS, NAME) == []
    assert item_errors(None, OPTIONS, NAME) == []


@pytest.mark.parametrize("item,expected", [
    ({"name": "a", "shedule": "0 3 * * *"},
     "%s[0]: unknown key 'shedule' (did you mean schedule?); valid keys: " % NAME),
    ({"name": "a", "retention": {"keep_dayly": 7}},
     "%s[0].retention: unknown key 'keep_dayly' (did you mean keep_daily?); valid keys: keep_daily, " % NAME),
    ({"name": "a", "verify_checks": [{"sql": "SELECT 1", "mni": 1}]}, "unknown key 'mni' (did you mean min?)"),
    ({"name": "a", "zzz_unrelated": 1}, "%s[0]: unknown key 'zzz_unrelated'; valid keys: " % NAME),
    ({"name": "a", "login_port": "abc"}, "%s[0]: argument 'login_port' is of type str" % NAME),
    ({"name": "a", "format": "tar"}, "format"),
    ({"schedule": "0 3 * * *"}, "%s[0]: missing required arguments: name" % NAME),
])
def test_each_problem_is_named(item, expected):
    errors = item_errors([item], OPTIONS, NAME)
    assert len(errors) == 1 and expected in errors[0], errors


def test_every_item_is_checked_and_named_by_its_index():
    errors = item_errors(["ok", {"name": "a", "rotat": True}, {"name": "b", "jobs": "many"}], OPTIONS, NAME)
    assert [e.split(":", 1)[0] for e in errors] == ["%s[1]" % NAME, "%s[2]" % NAME]
    assert "did you mean rotate?" in errors[0] and "jobs" in errors[1]


def test_not_a_list_and_bad_options():
    assert item_errors("app", OPTIONS, NAME) == ["%s must be a list, not str" % NAME]
    with pytest.raises(AnsibleFilterError):
        item_errors([], None)
    assert FilterModule().filters()["item_errors"] is item_errors
