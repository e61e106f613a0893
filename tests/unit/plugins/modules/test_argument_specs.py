# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' argument specs are built from the engine's option registry
(core/options.py). Here:

* every module's DOCUMENTATION (with its doc fragments) documents exactly its
  generated argument_spec: names, type, default, choices, aliases, elements,
  required; and every doc fragment exactly its spec function in _ansible.py;
* Ansible's own validation (ArgumentSpecValidator) and the engine's
  resolve() agree on every default, alias and coercion;
* the front doors accept what they accepted before the registry: every
  module's AnsibleModule(...) arguments and every drkit flag equal the
  snapshot taken before it (front_doors.before.json, tests/support/spec_capture.py),
  except for the changes listed here on purpose;
* a value out of range fails the module with a message naming the option.
"""

import importlib
import json
import os
import re

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.testing import patch_module_args
from ansible_collections.drkit.backup.plugins.module_utils import _ansible
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from support import spec_capture
from support.unit_helpers import REPO

MODULES = spec_capture.module_names()
# modules added since the snapshot of the front doors
NEW_MODULES = ("backup_copy", "container_drill", "pg_failover", "pg_standby")
BEFORE = json.loads(open(os.path.join(os.path.dirname(__file__), "front_doors.before.json")).read())

# What the option registry changed on purpose (everything else is as before).
SPEC_CHANGES = {
    # The CLI took fractions of a second for these; one option, one type: float.
    ("redis_persistence", "connect_timeout"): {"type": "float"},
    ("redis_restore", "connect_timeout"): {"type": "float"},
    ("redis_snapshot", "connect_timeout"): {"type": "float"},
    ("redis_restore", "timeout"): {"type": "float"},
    ("redis_snapshot", "timeout"): {"type": "float"},
    ("redis_verify", "timeout"): {"type": "float"},
}
# AWS_SESSION_TOKEN goes only with the environment's own keys (storage.s3_client.resolve_credentials),
# so session_token has no env fallback of its own any more (None: the key is gone).
SPEC_CHANGES.update(((m, "session_token"), {"fallback": None}) for m in MODULES
                    if m in BEFORE["modules"] and "session_token" in BEFORE["modules"][m]["argument_spec"])
# AnsibleModule keyword arguments changed on purpose since the snapshot: (module, keyword) -> the new value
# (None: removed).
KWARG_CHANGES = {
    # with container the data directory comes from the container's command line (issue 16): the engine asks
    # for data_dir or redis_conf only without container
    ("redis_restore", "required_one_of"): None,
}
FLAG_CHANGES = {
    # the module's choices, now the CLI's too
    ("list", "--kind"): {"choices": ["pg_logical", "pg_physical", "redis_rdb", "redis_aof"]},
    ("rotate", "--kind"): {"choices": ["pg_logical", "pg_physical", "redis_rdb", "redis_aof"]},
}
DOCKER_FLAGS = ("--container", "--docker-host", "--docker-tls", "--docker-tls-verify", "--docker-ca-path",
                "--docker-client-cert", "--docker-client-key")
NEW_FLAGS = {("pg-backup", "--encryption-recipient"), ("restore", "--encryption-identity-file"),
             ("verify", "--encryption-identity-file"), ("wal-push", "--encryption-recipient"),
             ("wal-stream", "--encryption-recipient"), ("wal-fetch", "--encryption-identity-file"),
             ("pg-backup", "--login-port"), ("verify", "--login-port"), ("restore", "--login-port"),
             ("redis-snapshot", "--state-dir"), ("pitr", "--recovery-target-timeline")}
# databases in containers (issue 16)
NEW_FLAGS.update((command, flag)
                 for command in ("pg-backup", "restore", "verify", "redis-snapshot", "redis-restore", "redis-verify")
                 for flag in DOCKER_FLAGS + ("--verify-in", "--image")
                 if flag in DOCKER_FLAGS or command == "redis-verify")
# the asynchronous pusher (issue 17)
NEW_FLAGS.update((("wal-push", "--async"), ("wal-push", "--async-idle"), ("wal-fetch", "--async"),
                  ("wal-fetch", "--async-idle"), ("list", "--wal"), ("list", "--no-backups")))
# options added since the snapshot, on purpose: (module, option) -> its argument_spec entry (None: not compared)
NEW_OPTIONS = {
    # the ledger of a setting changed for a moment (issue 13, hole 12)
    ("redis_snapshot", "state_dir"): {"type": "path"},
    # the recovery timeline (issue 13, hole 11)
    ("pg_pitr", "recovery_target_timeline"): None,
}
# WAL at the speed of the database (issue 17): the background pusher and fetcher, the WAL RPO
NEW_OPTIONS[("pg_wal_archive", "archive_async")] = {"type": "bool", "default": False}
# a second region (issue 18): pg_rewind's prerequisite for the old primary's rejoin
NEW_OPTIONS[("pg_wal_archive", "wal_log_hints")] = {"type": "bool"}
NEW_OPTIONS[("pg_pitr", "fetch_async")] = {"type": "bool", "default": True}
NEW_OPTIONS[("backup_info", "wal")] = {"type": "bool", "default": False}
NEW_OPTIONS[("dr_report", "wal_archive")] = {"type": "dict"}
NEW_OPTIONS[("backup_info", "backups")] = {"type": "bool", "default": True}
NEW_OPTIONS[("dr_report", "wal_error")] = {"type": "str"}
NEW_OPTIONS[("dr_report", "notes")] = {"type": "list", "elements": "str"}
# client-side encryption (issue 15): recipients where backups are written, the identity where they are read
NEW_OPTIONS[("pg_backup", "encryption_recipients")] = {"type": "list", "elements": "str"}
NEW_OPTIONS.update(((module, "encryption_identity_file"), None)
                   for module in ("pg_restore", "pg_verify", "pg_pitr"))
NEW_FLAGS.add(("pitr", "--encryption-identity-file"))  # encrypted base backups (issue 15)
# a test-restore of a database in a container runs in a scratch container of its image (issue 16)
NEW_OPTIONS[("pg_verify", "verify_in")] = {"type": "str", "default": "scratch", "choices": ["scratch", "container"]}
NEW_OPTIONS[("pg_verify", "image")] = {"type": "str"}
NEW_FLAGS.update((("verify", "--verify-in"), ("verify", "--image")))
# encrypted Redis snapshots (issue 15)
NEW_OPTIONS[("redis_snapshot", "encryption_recipients")] = {"type": "list", "elements": "str"}
NEW_OPTIONS.update(((module, "encryption_identity_file"), None) for module in ("redis_restore", "redis_verify"))
NEW_FLAGS.update((("redis-snapshot", "--encryption-recipient"), ("redis-restore", "--encryption-identity-file"),
                  ("redis-verify", "--encryption-identity-file")))
# databases in containers (issue 16): the Docker options of community.docker
NEW_OPTIONS.update(((module, name), None)
                   for module in ("pg_backup", "pg_restore", "pg_verify", "redis_snapshot", "redis_restore",
                                  "redis_verify")
                   for name in ("container", "docker_host", "docker_tls", "docker_tls_verify", "ca_path",
                                "client_cert", "client_key"))
# signed manifests (issue 15): the signing key where backups are written, the public keys where they are read
SIGNING_MODULES = ("pg_backup", "redis_snapshot")
VERIFY_MODULES = ("backup_info", "backup_copy", "s3_rotate", "pg_verify", "pg_restore", "pg_pitr",
                  "redis_verify", "redis_restore")
NEW_OPTIONS.update(((module, "signing_key_file"), None) for module in SIGNING_MODULES)
NEW_OPTIONS.update(((module, "verify_keys"), None) for module in VERIFY_MODULES)
NEW_FLAGS.update((command, "--signing-key-file") for command in ("pg-backup", "redis-snapshot"))
NEW_FLAGS.update((command, "--verify-key") for command in ("list", "copy", "rotate", "verify", "restore", "pitr",
                                                           "redis-verify", "redis-restore"))
NEW_OPTIONS[("redis_verify", "verify_in")] = None
NEW_OPTIONS[("redis_verify", "image")] = None
# Azure Blob storage (issue 15): every module and command with storage options gains the Azure ones
AZURE_OPTIONS = ("azure_account_name", "azure_account_key", "azure_sas_token", "azure_connection_string",
                 "azure_endpoint")
NEW_OPTIONS.update(((module, name), None) for module in BEFORE["modules"]
                   if "storage_url" in BEFORE["modules"][module]["argument_spec"] for name in AZURE_OPTIONS)
NEW_FLAGS.update((command, flag) for command in BEFORE["cli"] if "--storage-url" in BEFORE["cli"][command]["flags"]
                 for flag in ("--azure-account-name", "--azure-endpoint"))
# S3 server-side encryption (issue 15): every module and command with storage options
SSE_OPTIONS = ("server_side_encryption", "sse_kms_key_id")
NEW_OPTIONS.update(((module, name), None) for module in BEFORE["modules"]
                   if "storage_url" in BEFORE["modules"][module]["argument_spec"] for name in SSE_OPTIONS)
NEW_FLAGS.update((command, flag) for command in BEFORE["cli"] if "--storage-url" in BEFORE["cli"][command]["flags"]
                 for flag in ("--server-side-encryption", "--sse-kms-key-id"))

# One spec function per doc fragment.
FRAGMENTS = {
    "drkit.backup.postgres": _ansible.postgres_argument_spec,
    "drkit.backup.postgres.restore_settings": _ansible.restore_settings_argument_spec,
    "drkit.backup.storage": _ansible.storage_argument_spec,
    "drkit.backup.storage.metrics": _ansible.metrics_argument_spec,
    "drkit.backup.redis": _ansible.redis_argument_spec,
    "drkit.backup.compression": _ansible.compression_argument_spec,
    "drkit.backup.encryption": _ansible.encryption_argument_spec,
    "drkit.backup.encryption.decryption": _ansible.decryption_argument_spec,
    "drkit.backup.signing": _ansible.signing_argument_spec,
    "drkit.backup.signing.verify": _ansible.verify_argument_spec,
    "drkit.backup.backup_selector": _ansible.backup_selector_argument_spec,
    "drkit.backup.container": _ansible.container_argument_spec,
    "drkit.backup.container.engine": _ansible.container_engine_argument_spec,
}


def options_of(module):
    return spec_capture.module_options(module)


def module_doc(module):
    text = open(os.path.join(REPO, "plugins", "modules", module + ".py")).read()
    return yaml.safe_load(re.search(r'^DOCUMENTATION = r"""(.*?)"""', text, re.S | re.M).group(1))


def fragment_options(name):
    """The options of a doc fragment: drkit.backup.storage.metrics is
    plugins/doc_fragments/storage.py's METRICS."""
    parts = name.split(".")[2:]
    mod = importlib.import_module("ansible_collections.drkit.backup.plugins.doc_fragments." + parts[0])
    text = getattr(mod.ModuleDocFragment, parts[1].upper() if len(parts) > 1 else "DOCUMENTATION")
    return yaml.safe_load(text).get("options", {})


def documented_options(module):
    doc = module_doc(module)
    options = dict(doc.get("options") or {})
    for name in doc.get("extends_documentation_fragment") or []:
        for opt, value in fragment_options(name).items():
            assert opt not in options, "%s: %s documented twice (module and %s)" % (module, opt, name)
            options[opt] = value
    return options


def comparable(doc_or_spec, is_doc):
    """type, default, choices, aliases, elements, required, as a doc states them."""
    d = doc_or_spec
    out = {"type": d.get("type", "str"), "default": d.get("default"), "choices": d.get("choices"),
           "aliases": sorted(d.get("aliases") or []), "elements": d.get("elements"),
           "required": bool(d.get("required", False))}
    if out["choices"] is not None:
        out["choices"] = list(out["choices"])
    return out


def spec_of(module):
    return spec_capture.module_kwargs(module)["argument_spec"]


# --------------------------------------------------------------------------
# documentation == argument_spec


@pytest.mark.parametrize("module", MODULES)
def test_documentation_states_the_generated_argument_spec(module):
    spec, documented = spec_of(module), documented_options(module)
    assert sorted(documented) == sorted(spec), "%s: documented vs argument_spec" % module
    for name, s in spec.items():
        assert comparable(documented[name], True) == comparable(s, False), "%s: option %s" % (module, name)


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_each_doc_fragment_documents_its_spec_function(fragment):
    documented, spec = fragment_options(fragment), FRAGMENTS[fragment]()
    assert sorted(documented) == sorted(spec)
    for name, s in spec.items():
        assert comparable(documented[name], True) == comparable(s, False), "%s: option %s" % (fragment, name)


@pytest.mark.parametrize("module", MODULES)
def test_modules_build_their_spec_from_the_registry(module):
    assert spec_of(module) == _ansible.argument_spec(options_of(module))


def test_every_secret_is_no_log_and_every_fallback_is_env():
    for module in MODULES:
        for name, s in spec_of(module).items():
            opt = options_of(module)[name]
            if opt.secret:
                assert s.get("no_log") is True, (module, name)
            if "fallback" in s:
                assert s["fallback"][0].__name__ == "env_fallback" and list(s["fallback"][1]) == list(opt.env)


# --------------------------------------------------------------------------
# Ansible's validation and resolve() agree


REQUIRED_SAMPLES = {"storage_url": "file:///b", "to_storage_url": "file:///c", "target_database": "t",
                    "data_directory": "/d", "components": [{"name": "c"}], "report_dir": "/r", "base_dir": "/s",
                    "standby_port": 5433}


@pytest.fixture
def no_fallback_env(monkeypatch):
    for module in MODULES:
        for opt in options_of(module):
            for var in opt.env:
                monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("module", MODULES)
def test_ansible_validation_and_resolve_agree_on_defaults(module, no_fallback_env):
    spec = spec_of(module)
    given = dict((k, v) for k, v in REQUIRED_SAMPLES.items() if spec.get(k, {}).get("required"))
    result = ArgumentSpecValidator(spec).validate(given)
    assert not result.error_messages, result.error_messages
    validated = result.validated_parameters
    resolved = resolve(options_of(module), validated)
    for name in spec:
        assert resolved[name] == validated[name], (module, name)
        assert type(resolved[name]) is type(validated[name]), (module, name, resolved[name], validated[name])


@pytest.mark.parametrize("given, name, value", [
    ({"login_port": "5433"}, "port", 5433),
    ({"host": "db.example"}, "login_host", "db.example"),
    ({"db": "app"}, "database", "app"),
    ({"wal_wait_timeout": "12"}, "wal_wait_timeout", 12.0),
    ({"row_counts": "no"}, "row_counts", False),
    ({"schemas": "a,b"}, "schemas", ["a", "b"]),
    ({"aws_secret_key": "s"}, "secret_key", "s"),
])
def test_ansible_and_resolve_read_aliases_and_strings_alike(given, name, value, no_fallback_env):
    spec = spec_of("pg_backup")
    result = ArgumentSpecValidator(spec).validate(dict(given, storage_url="file:///b"))
    assert not result.error_messages
    assert result.validated_parameters[name] == value
    assert resolve(options_of("pg_backup"), dict(given))[name] == value


# --------------------------------------------------------------------------
# nothing else changed


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NEW_MODULES])
def test_module_arguments_are_those_from_before_the_registry(module):
    before, now = dict(BEFORE["modules"][module]), spec_capture.plain(spec_capture.module_kwargs(module))
    for (m, key), value in KWARG_CHANGES.items():
        if m == module:
            if value is None:
                before.pop(key)
            else:
                before[key] = value
    assert sorted(now) == sorted(before)
    for key in before:
        if key != "argument_spec":
            assert now[key] == before[key], (module, key)
    added = dict((n, s) for (m, n), s in NEW_OPTIONS.items() if m == module)
    assert sorted(now["argument_spec"]) == sorted(list(before["argument_spec"]) + list(added)), \
        "options added or removed"
    for name, spec in added.items():
        assert spec is None or now["argument_spec"][name] == spec, (module, name)
    for name, old in before["argument_spec"].items():
        expected = dict(old, **SPEC_CHANGES.get((module, name), {}))
        expected = dict((k, v) for k, v in expected.items() if v is not None)
        assert now["argument_spec"][name] == expected, (module, name)


def _flag(info):
    """store_true with default None is store_const True: the same flag."""
    info = dict(info)
    if info["action"] in ("_StoreTrueAction", "_StoreConstAction"):
        info["action"] = "const"
        if info["default"] is False:
            info["default"] = None
    return info


# commands added after the registry (their flags are new, nothing to keep working)
NEW_COMMANDS = ("wal-stream", "copy", "probe", "standby", "standby-check", "failover")


def test_every_drkit_flag_from_before_the_registry_still_works():
    now = spec_capture.cli_flags()
    assert sorted(set(now) - set(NEW_COMMANDS)) == sorted(BEFORE["cli"])
    for command, old in BEFORE["cli"].items():
        flags = now[command]["flags"]
        assert now[command]["defaults"] == old["defaults"], command
        for flag, info in old["flags"].items():
            assert flag in flags, (command, flag)
            expected = _flag(dict(info, **FLAG_CHANGES.get((command, flag), {})))
            assert _flag(flags[flag]) == expected, (command, flag)
        added = set(flags) - set(old["flags"])
        assert added == set(f for c, f in NEW_FLAGS if c == command), (command, added)


# --------------------------------------------------------------------------
# a bad value fails the module, naming the option


def run_module(module, args, capsys):
    mod = importlib.import_module("ansible_collections.drkit.backup.plugins.modules." + module)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            mod.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("module, args, message", [
    ("pg_backup", {"jobs": 0}, "jobs must be at least 1, got 0"),
    ("pg_backup", {"compression_level": 30}, "compression_level must be 1-19, got 30"),
    ("pg_backup", {"compression_level": 0}, "compression_level must be 1-19, got 0"),
    ("pg_backup", {"compression_threads": -2}, "compression_threads must be -1 to 256, got -2"),
    ("pg_backup", {"login_port": 0}, "port must be 1-65535, got 0"),
    ("pg_backup", {"connect_timeout": 0}, "connect_timeout must be at least 1, got 0"),
    ("pg_backup", {"wal_wait_timeout": -1, "mode": "physical"}, "wal_wait_timeout must be at least 0, got -1.0"),
    ("pg_verify", {"jobs": -1}, "jobs must be at least 1, got -1"),
    ("pg_restore", {"jobs": 0, "target_database": "t"}, "jobs must be at least 1, got 0"),
    ("redis_snapshot", {"compression_level": 20}, "compression_level must be 1-19, got 20"),
    ("redis_snapshot", {"timeout": 0}, "timeout must be more than 0, got 0.0"),
    ("redis_snapshot", {"pause_timeout": 5}, "pause_timeout must be 10-60000, got 5"),
    ("redis_snapshot", {"login_port": 70000}, "login_port must be 1-65535, got 70000"),
    ("redis_verify", {"timeout": -5}, "timeout must be more than 0, got -5.0"),
    ("pg_wal_archive", {"compression_level": 0}, "compression_level must be 1-19, got 0"),
    ("pg_wal_archive", {"read_ahead": -1}, "read_ahead must be at least 0, got -1"),
    ("s3_rotate", {"keep_daily": -5}, "keep_daily must be 0 or more, or -1 for unlimited, got -5"),
    ("backup_info", {"limit": 0}, "limit must be at least 1, got 0"),
])
def test_out_of_range_values_fail_the_module_naming_the_option(module, args, message, capsys, tmp_path):
    spec = spec_of(module)
    given = dict((k, v) for k, v in {"storage_url": "file://%s" % tmp_path, "login_password": "hunter2",
                                     "database": "db"}.items() if k in spec)
    given.update(args)
    res = run_module(module, given, capsys)
    assert res["failed"] is True and res["error"] == "ConfigError", res
    assert message in res["msg"], res["msg"]
    assert "hunter2" not in json.dumps(res)
    assert list(tmp_path.iterdir()) == []
