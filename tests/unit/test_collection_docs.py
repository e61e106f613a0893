# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a user reads before running anything: module and filter docs, role
argument specs, READMEs and handlers. Read from the files (no Ansible run);
tests/integration/test_role_docs.py checks what ansible-doc prints."""

import glob
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "roles", "*", "tasks")))
MODULES = sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py")))


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as fh:
        return fh.read()


def module_doc(path, name="DOCUMENTATION"):
    text = open(path).read()
    m = re.search(r'^%s = r"""\n(.*?)\n"""' % name, text, re.S | re.M)
    assert m, "%s has no %s" % (path, name)
    return m.group(1)


def doc_texts():
    """(where, text) of everything ansible-doc renders with markup."""
    for path in MODULES:
        for name in ("DOCUMENTATION", "RETURN"):
            yield os.path.basename(path) + ":" + name, module_doc(path, name)
    for path in glob.glob(os.path.join(ROOT, "plugins", "doc_fragments", "*.py")):
        yield os.path.basename(path), open(path).read()
    for path in glob.glob(os.path.join(ROOT, "plugins", "filter", "*.yml")):
        yield os.path.basename(path), open(path).read()
    for role in ROLES:
        yield role, read("roles", role, "meta", "argument_specs.yml")


# ansible-doc's own patterns (ansible/cli/doc.py): classic markup ends at the
# first ')', so C(f()) renders as `f(' followed by ')'; the semantic markup
# (O, V, E, RV) takes backslash escapes.
CLASSIC = re.compile(r"\b([CIBMU])\(([^)]+)\)")
SEMANTIC = re.compile(r"\b(RV|[OVE])\(((?:[^\\)]+|\\.)+)\)")


@pytest.mark.parametrize("where,text", list(doc_texts()), ids=lambda v: v if len(v) < 60 else "")
def test_markup_renders_whole(where, text):
    broken = [m.group(0) for m in CLASSIC.finditer(text) if m.group(2).count("(") != m.group(2).count(")")]
    for m in SEMANTIC.finditer(text):
        inner = re.sub(r"\\(.)", r"\1", m.group(2))
        if inner.count("(") != inner.count(")"):
            broken.append(m.group(0))
    assert not broken, "%s: markup cut at its first ')' by ansible-doc: %s" % (where, broken)


# validate-modules' author pattern (ansible_test .../validate_modules/schema.py)
AUTHOR_LINE = re.compile(r"^\w.*(\(@([\w-]+)\)|!UNKNOWN)(?![\w.])")
# The project has no GitHub handle yet (galaxy.yml names no repository), so its
# plugins name the project in the form validate-modules accepts without one.
PROJECT_AUTHOR = "drkit.backup contributors (!UNKNOWN)"


def test_every_plugin_names_the_project_in_the_accepted_author_form():
    docs = dict((os.path.basename(p), yaml.safe_load(module_doc(p))) for p in MODULES)
    docs.update((os.path.basename(p), yaml.safe_load(open(p))["DOCUMENTATION"])
                for p in glob.glob(os.path.join(ROOT, "plugins", "filter", "*.yml")))
    for name, doc in docs.items():
        authors = doc["author"] if isinstance(doc["author"], list) else [doc["author"]]
        assert authors == [PROJECT_AUTHOR], name
        assert all(AUTHOR_LINE.search(a) for a in authors), name


def role_default(name):
    return yaml.safe_load(read("roles", "postgresql_backup", "defaults", "main.yml"))[name]


def test_examples_use_the_roles_metrics_directory():
    default = role_default("postgresql_backup_metrics_dir")
    for role, var in (("redis_backup", "redis_backup_metrics_dir"), ("drkit_runtime", "drkit_runtime_metrics_dir")):
        assert yaml.safe_load(read("roles", role, "defaults", "main.yml"))[var] == default
    texts = [(os.path.basename(p), module_doc(p, "EXAMPLES")) for p in MODULES if "metrics_dir" in open(p).read()]
    for path in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        texts.append((path, open(path).read()))
    seen = 0
    for where, text in texts:
        for value in re.findall(r"^\s*-?\s*metrics_dir: (\S+)\s*$", text, re.M):
            seen += 1
            assert value == default, "%s: metrics_dir %s, the roles write %s" % (where, value, default)
    assert seen >= 6


def test_readme_lists_every_runtime_library():
    lines = read("requirements", "runtime.txt").splitlines()
    names = [re.split(r"[=<>\[ ]", line.strip(), maxsplit=1)[0] for line in lines
             if line.strip() and not line.startswith("#")]
    assert "pyrage" in names and "zstandard" in names
    readme = read("README.md")
    m = re.search(r"the runtime libraries\s*\((.*?)\); point", readme, re.S)
    assert m, "README: the sentence naming the runtime libraries is gone"
    for name in names:
        assert name in m.group(1), "README's runtime library list lacks %s" % name


@pytest.mark.parametrize("role", ROLES)
def test_each_role_has_a_readme_pointing_at_its_argument_spec(role):
    text = re.sub(r"\s+", " ", read("roles", role, "README.md"))
    assert text.startswith("# drkit.backup.%s" % role)
    assert "ansible-doc -t role drkit.backup.%s" % role in text


def test_the_runtime_role_says_it_is_internal():
    specs = yaml.safe_load(read("roles", "drkit_runtime", "meta", "argument_specs.yml"))["argument_specs"]
    assert set(specs) == {"main", "metrics_dir", "job_users", "jobs"}
    for entry, spec in specs.items():
        assert spec["short_description"].startswith("Internal:"), entry
    meta = yaml.safe_load(read("roles", "drkit_runtime", "meta", "main.yml"))
    assert meta["galaxy_info"]["description"].startswith("Internal:")


def test_monitoring_handlers_are_prefixed_and_notified_by_their_topics():
    handlers = yaml.safe_load(read("roles", "backup_monitoring", "handlers", "main.yml"))
    topics = set()
    for h in handlers:
        assert h["name"].startswith("Drkit backup | "), h["name"]
        assert h["listen"].startswith("drkit_backup_"), h["listen"]
        topics.add(h["listen"])
    assert "drkit_backup_restart_node_exporter" in topics
    assert not any(h["name"] == "Restart node_exporter" for h in handlers)  # prometheus.prometheus's name
    notified = set()
    for path in glob.glob(os.path.join(ROOT, "roles", "backup_monitoring", "tasks", "*.yml")):
        for task in yaml.safe_load(open(path)) or []:
            if "notify" in task:
                notified.update([task["notify"]] if isinstance(task["notify"], str) else task["notify"])
    assert notified == topics


# Dicts whose keys are free-form on purpose (engine options passed through,
# CONFIG GET names, alert labels, the job config the calling role built).
FREE_FORM = {"options", "settings", "config", "persistence", "postgresql_backup_options", "redis_backup_options",
             "backup_monitoring_alert_labels", "postgresql_standby_settings"}


def spec_options(role):
    specs = yaml.safe_load(read("roles", role, "meta", "argument_specs.yml"))["argument_specs"]
    for entry, spec in specs.items():
        stack = [(entry + ":" + k, k, v) for k, v in spec.get("options", {}).items()]
        while stack:
            path, name, opt = stack.pop()
            yield path, name, opt
            stack.extend((path + "." + k, k, v) for k, v in opt.get("options", {}).items())


@pytest.mark.parametrize("role", ROLES)
def test_list_items_and_dicts_have_their_options_described(role):
    for path, name, opt in spec_options(role):
        assert opt.get("description"), path
        if opt.get("type") == "list" and opt.get("elements") in ("dict", "raw"):
            assert opt.get("options"), "%s: a list of dicts without item options" % path
        if opt.get("type") == "dict" and name not in FREE_FORM:
            assert opt.get("options"), "%s: a dict without options" % path
        for sub in opt.get("options", {}).values():
            assert sub.get("type"), "%s: an item option without a type" % path


def test_dict_defaults_in_the_specs_are_the_role_defaults():
    """ansible-doc shows the argument spec's default: it must be the real one."""
    for role in ROLES:
        defaults = yaml.safe_load(read("roles", role, "defaults", "main.yml")) or {}
        for path, name, opt in spec_options(role):
            if path.startswith("main:") and "." not in path and "default" in opt and name in defaults:
                assert opt["default"] == defaults[name], path


@pytest.mark.parametrize("role", ["postgresql_backup", "redis_backup", "postgresql_wal_archive",
                                  "postgresql_wal_stream", "postgresql_standby"])
def test_every_storage_option_a_role_documents_reaches_drkit(role):
    """Each key of the role's storage_options (the drkit storage options, no
    more) gets to the engine: listed in the keys copied into job configs, or
    passed to the module the role runs, or the whole dict templated."""
    from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import AZURE, STORAGE_OPTION_NAMES

    documented = set(name for path, name, _opt in spec_options(role)
                     if path.startswith("main:%s_storage_options." % role))
    assert documented, role
    assert documented <= set(STORAGE_OPTION_NAMES), documented
    assert set(o.name for o in AZURE) <= documented, "%s: az:// storage without the Azure options" % role
    var = "%s_storage_options" % role
    tasks = "".join(read(p) for p in glob.glob(os.path.join(ROOT, "roles", role, "tasks", "*.yml")))
    templated = any("(%s | dictsort)" % var in read(p)
                    for p in glob.glob(os.path.join(ROOT, "roles", role, "templates", "*")))
    keys_file = os.path.join(ROOT, "roles", role, "vars", "main.yml")
    keys = (yaml.safe_load(read(keys_file)) or {}).get("_%s_storage_keys" % role, []) if os.path.exists(
        keys_file) else []
    for name in documented:
        passed = "%s.%s | default(omit)" % (var, name) in tasks
        assert templated or name in keys or passed, "%s: %s is documented but never reaches drkit" % (role, name)
        if "%s_test_result" % role in tasks or "drkit.backup.pg_wal_archive:" in tasks:
            # the module call that proves archiving works gets every one of them
            assert passed, "%s: the module call does not pass %s" % (role, name)
