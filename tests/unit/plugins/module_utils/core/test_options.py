# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""options.py: Option, Options and resolve() -- defaults, environment
fallbacks, aliases, coercion, choices and ranges, and messages that name the
option and what is allowed without ever showing a secret; plus rules every
command's OPTIONS keeps."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import (
    Option,
    Options,
    fold_aliases,
    from_environment,
    resolve,
)
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import COMPRESSION
from support.spec_capture import engine_options
from support.unit_helpers import REPO

OPTS = Options(
    Option("name", "str", default="x"),
    Option("port", "int", default=5432, min=1, max=65535, aliases=("login_port",)),
    Option("timeout", "float", default=600, above=0),
    Option("jobs", "int", default=1, min=1),
    Option("keep", "int", default=0, min=-1, allowed="0 or more, or -1 for unlimited"),
    Option("flag", "bool", default=True),
    Option("mode", "str", default="a", choices=("a", "b")),
    Option("tags", "list", elements="str"),
    Option("group_by", "list", elements="str", default=["kind"], choices=("kind", "source")),
    Option("labels", "dict"),
    Option("where", "path"),
    Option("password", "str", env=("T_PW", "T_PW2"), secret=True, aliases=("pw",)),
    Option("region", "str", env=("T_REGION",)),
)


def message(params, environ=None):
    with pytest.raises(ConfigError) as e:
        resolve(OPTS, params, environ=environ or {})
    assert e.value.exit_code == 2
    return str(e.value)


# --------------------------------------------------------------------------
# defaults, environment, aliases


def test_defaults_fill_what_is_unset():
    p = resolve(OPTS, {}, environ={})
    assert p == {"name": "x", "port": 5432, "timeout": 600.0, "jobs": 1, "keep": 0, "flag": True, "mode": "a",
                 "tags": None, "group_by": ["kind"], "labels": None, "where": None, "password": None,
                 "region": None}
    assert isinstance(p["timeout"], float)  # a float option's default is a float
    p["group_by"].append("source")
    assert resolve(OPTS, {}, environ={})["group_by"] == ["kind"]  # a list default is never shared


def test_given_beats_environment_beats_default():
    env = {"T_REGION": "from-env", "T_PW2": "second", "T_PW": ""}
    assert resolve(OPTS, {}, environ=env)["region"] == "from-env"
    assert resolve(OPTS, {"region": "given"}, environ=env)["region"] == "given"
    assert resolve(OPTS, {"region": None}, environ=env)["region"] == "from-env"  # None is unset
    assert resolve(OPTS, {}, environ=env)["password"] == "second"  # the first non-empty variable
    assert from_environment(OPTS["password"], {"T_PW": "first", "T_PW2": "second"}) == "first"


def test_the_process_environment_is_the_default_environment(monkeypatch):
    monkeypatch.setenv("T_REGION", "from-process")
    assert resolve(OPTS, {})["region"] == "from-process"


def test_aliases_fold_into_the_name():
    p = resolve(OPTS, {"login_port": "5433"})
    assert p["port"] == 5433 and "login_port" not in p
    assert resolve(OPTS, {"port": 5433, "login_port": "5433"})["port"] == 5433  # the same value twice is fine
    assert "port and login_port are the same option and both set, to different values (5432 and 5433)" in \
        message({"port": 5432, "login_port": 5433})


def test_fold_aliases_renames_without_coercing():
    assert fold_aliases(OPTS, {"login_port": "abc", "other": 1}) == {"port": "abc", "other": 1}
    assert fold_aliases(OPTS, {"port": 1, "login_port": None}) == {"port": 1}
    with pytest.raises(ConfigError) as e:
        fold_aliases(OPTS, {"password": "a", "pw": "b"})
    assert "password and pw are the same option" in str(e.value)
    assert "'a'" not in str(e.value) and "'b'" not in str(e.value)


def test_keys_that_are_not_options_pass_through():
    assert resolve(OPTS, {"check": True, "kind": "pg_logical"})["check"] is True


def test_resolve_is_idempotent():
    once = resolve(OPTS, {"login_port": "5433", "tags": "a, b", "flag": "no", "where": "~/x"}, environ={})
    assert resolve(OPTS, once, environ={}) == once


# --------------------------------------------------------------------------
# coercion


@pytest.mark.parametrize("name, given, value", [
    ("port", "5433", 5433), ("port", 5433.0, 5433), ("port", " 22 ", 22),
    ("timeout", "1.5", 1.5), ("timeout", 2, 2.0),
    ("flag", "no", False), ("flag", "yes", True), ("flag", "True", True), ("flag", 0, False), ("flag", "off", False),
    ("tags", "a,b , c", ["a", "b", "c"]), ("tags", ("x",), ["x"]), ("tags", [1, 2], ["1", "2"]), ("tags", "x", ["x"]),
    ("name", 123, "123"),
    ("labels", {"a": 1}, {"a": 1}),
    ("where", "~/x", os.path.expanduser("~/x")),
    ("group_by", "source", ["source"]),
])
def test_values_are_coerced_to_the_option_type(name, given, value):
    assert resolve(OPTS, {name: given})[name] == value


def test_an_empty_string_does_not_set_a_number_or_a_flag():
    p = resolve(OPTS, {"port": "", "flag": "", "name": ""}, environ={})
    assert (p["port"], p["flag"], p["name"]) == (5432, True, "")


@pytest.mark.parametrize("params, text", [
    ({"port": "abc"}, "port must be a whole number, got 'abc'"),
    ({"port": 1.5}, "port must be a whole number, got 1.5"),
    ({"port": True}, "port must be a whole number, got True"),
    ({"timeout": "soon"}, "timeout must be a number, got 'soon'"),
    ({"timeout": float("nan")}, "timeout must be a number"),
    ({"flag": "maybe"}, "flag must be true or false, got 'maybe'"),
    ({"labels": ["a"]}, "labels must be a mapping, got ['a']"),
    ({"tags": {"a": 1}}, "tags must be a list"),
    ({"name": ["a"]}, "name must be a string, got ['a']"),
])
def test_wrong_types_are_refused_naming_the_option(params, text):
    assert text in message(params)


# --------------------------------------------------------------------------
# choices and ranges


@pytest.mark.parametrize("params, text, hint", [
    ({"port": 0}, "port must be 1-65535, got 0", "Use 1-65535, or leave port unset for the default 5432"),
    ({"port": 70000}, "port must be 1-65535, got 70000", None),
    ({"jobs": 0}, "jobs must be at least 1, got 0", "Use at least 1, or leave jobs unset for the default 1"),
    ({"jobs": -1}, "jobs must be at least 1, got -1", None),
    ({"timeout": 0}, "timeout must be more than 0, got 0.0", None),
    ({"timeout": -2.5}, "timeout must be more than 0, got -2.5", None),
    ({"keep": -5}, "keep must be 0 or more, or -1 for unlimited, got -5", None),
    ({"mode": "c"}, "mode must be one of a, b, got 'c'", "Use one of a, b, or leave mode unset for the default a"),
    ({"group_by": ["kind", "x"]}, "group_by must be one of kind, source, got 'x'", None),
])
def test_out_of_range_values_are_refused_naming_the_option_and_the_range(params, text, hint):
    got = message(params)
    assert got.startswith(text)
    if hint:
        assert got.endswith(hint)


def test_bounds_are_inclusive_and_above_is_exclusive():
    p = resolve(OPTS, {"port": 1, "jobs": 1, "keep": -1, "timeout": 0.001})
    assert (p["port"], p["jobs"], p["keep"], p["timeout"]) == (1, 1, -1, 0.001)
    assert resolve(OPTS, {"port": 65535})["port"] == 65535


def test_compression_level_0_is_refused_saying_1_to_19_default_3():
    level, threads = COMPRESSION
    for bad in (0, 20, 30, -1):
        with pytest.raises(ConfigError) as e:
            resolve(COMPRESSION, {"compression_level": bad})
        assert str(e.value).startswith("compression_level must be 1-19, got %d" % bad)
        assert "default 3" in str(e.value) and "level 0" in str(e.value)
    assert resolve(COMPRESSION, {}) == {"compression_level": 3, "compression_threads": 0}
    assert resolve(COMPRESSION, {"compression_level": 19, "compression_threads": -1})["compression_threads"] == -1
    with pytest.raises(ConfigError) as e:
        threads.check(-2)
    assert "compression_threads must be -1 to 256, got -2" in str(e.value)
    assert level.check("7") == 7


@pytest.mark.parametrize("params", [{"password": ["hunter2"]}, {"pw": ["hunter2"]}, {"password": "a", "pw": "hunter2"}])
def test_a_secret_is_never_shown(params):
    text = message(params)
    assert "password" in text and "hunter2" not in text


# --------------------------------------------------------------------------
# the records


def test_option_records_refuse_what_cannot_work():
    with pytest.raises(ValueError):
        Option("x", "number")
    with pytest.raises(ValueError):
        Option("login_password", secret=True, flags=("--password",))
    with pytest.raises(ValueError):
        Option("x", "int", off_flags=("--no-x",))
    with pytest.raises(ValueError):
        Options(Option("port"), Option("login_port", aliases=("port",)))


def test_but_changes_only_what_it_is_told():
    jobs = OPTS["jobs"]
    other = jobs.but(default=2, flags=("--j",))
    assert (other.name, other.type, other.min, other.default, other.flags) == ("jobs", "int", 1, 2, ("--j",))
    assert (jobs.default, jobs.flags) == (1, ())
    secret = OPTS["password"].but(env=())
    assert secret.secret and secret.no_log is True and secret.aliases == ("pw",)


def test_options_look_up_names_and_aliases():
    assert OPTS["login_port"] is OPTS["port"] and "pw" in OPTS and "nope" not in OPTS
    assert OPTS.names()[:3] == ["name", "port", "timeout"] and len(OPTS) == 13


# --------------------------------------------------------------------------
# every command's options


@pytest.mark.parametrize("command", sorted(engine_options()))
def test_every_default_passes_its_own_check_and_resolves_again_to_itself(command):
    options = engine_options()[command]
    for opt in options:
        assert opt.check(opt.default_value()) == opt.default_value(), (command, opt.name)
        if opt.type in ("int", "float") and (opt.min is not None or opt.max is not None or opt.above is not None):
            assert opt.allowed() and opt.allowed() != "a whole number", (command, opt.name)
    once = resolve(options, {}, environ={})
    assert resolve(options, once, environ={}) == once


def test_secrets_have_no_flags_and_every_port_is_checked():
    for command, options in engine_options().items():
        for opt in options:
            if opt.secret:
                assert not opt.flags and not opt.off_flags and opt.no_log is True
            if opt.name in ("port", "login_port"):
                assert (opt.min, opt.max) == (1, 65535), command
            if opt.name in ("jobs",):
                assert opt.min == 1, command
            if opt.name == "compression_level":
                assert (opt.min, opt.max) == (1, 19), command
            if "timeout" in opt.name and opt.name not in ("archive_timeout", "wal_wait_timeout"):
                assert opt.above == 0 or (opt.min or 0) >= 1, (command, opt.name)


def test_docs_options_md_states_every_range():
    with open(os.path.join(REPO, "docs", "options.md")) as fh:
        rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in fh if line.startswith("| `")]
    for command, options in engine_options().items():
        for opt in options:
            if opt.type in ("int", "float") and (opt.min, opt.max, opt.above, opt.choices) != (None,) * 4:
                assert any("`%s`" % opt.name in row[0] and row[1] == opt.allowed() for row in rows), \
                    "docs/options.md: no row | `%s` | %s | (%s)" % (opt.name, opt.allowed(), command)
