# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""dump.py: the pg_restore session settings (PGOPTIONS) and the argv
sections."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.process import LocalRunner
from ansible_collections.drkit.backup.plugins.module_utils.pg.dump import (
    RESTORE_SETTINGS,
    check_in_container,
    dump_format,
    restore_argv,
    session_options,
)

# --------------------------------------------------------------------------
# session settings


def test_session_options_defaults_overrides_and_removal(monkeypatch):
    monkeypatch.delenv("PGOPTIONS", raising=False)
    assert session_options() == " ".join("-c %s=%s" % kv for kv in sorted(RESTORE_SETTINGS.items()))
    assert "maintenance_work_mem=256MB" in session_options() and "synchronous_commit=off" in session_options()
    opts = session_options({"maintenance_work_mem": "1GB", "work_mem": 65536})
    assert "-c maintenance_work_mem=1GB" in opts and "-c work_mem=65536" in opts and "256MB" not in opts
    assert session_options({"maintenance_work_mem": "", "synchronous_commit": None}) == ""
    assert session_options({"jit": False}).startswith("-c jit=false ")


def test_session_options_keep_an_inherited_pgoptions_first(monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c search_path=x")
    opts = session_options({"synchronous_commit": ""})
    assert opts == "-c search_path=x -c maintenance_work_mem=256MB"


@pytest.mark.parametrize("settings", [{"a b": "1"}, {"work_mem": "1 MB"}, {"x": "1'; DROP"},
                                      {"work_mem": "-c\\ fsync=off"}, {"-c": "1"}])
def test_session_options_refuse_anything_but_plain_names_and_values(settings):
    with pytest.raises(ConfigError) as ei:
        session_options(settings)
    assert "restore_settings" in str(ei.value) and "letters, digits" in str(ei.value)


# --------------------------------------------------------------------------
# argv


def test_restore_argv_sections_come_before_the_archive():
    argv = restore_argv("pg_restore", "db", 2, {"no_owner": True}, "/x/dump", sections=("data", "post-data"))
    assert argv == ["pg_restore", "--no-password", "--dbname", "db", "--exit-on-error", "--jobs", "2",
                    "--section=data", "--section=post-data", "--no-owner", "/x/dump"]
    assert "--section=pre-data" in restore_argv("pg_restore", "db", 1, {}, sections=("pre-data",))
    assert not any(a.startswith("--section") for a in restore_argv("pg_restore", "db", 1, {}))


# --------------------------------------------------------------------------
# what a tool in a container can do (only the exec's stdin and stdout)


class InContainer(object):
    shares_files = False


def test_a_container_takes_the_custom_format_with_one_job():
    check_in_container(InContainer(), "custom", 1)
    check_in_container(InContainer(), "custom", 1, restore=True)
    check_in_container(LocalRunner(), "directory", 4, restore=True)  # local tools: anything


@pytest.mark.parametrize("fmt, jobs, restore, words", [
    ("directory", 1, False, ["A backup in the directory format cannot run through a container",
                             "Use format: custom with container"]),
    ("directory", 1, True, ["A restore of a backup in the directory format", "leave container unset"]),
    ("custom", 2, True, ["jobs > 1 cannot run through a container", "Use jobs: 1 with container"]),
])
def test_what_a_container_cannot_do_is_refused_with_what_to_do(fmt, jobs, restore, words):
    with pytest.raises(ConfigError) as err:
        check_in_container(InContainer(), fmt, jobs, restore=restore)
    for word in words:
        assert word in str(err.value) + " / " + err.value.hint


def test_dump_format_of_old_manifests_is_custom():
    assert dump_format({}) == "custom"
    assert dump_format({"options": {"format": "directory"}}) == "directory"
