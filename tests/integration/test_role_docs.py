# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ``ansible-doc`` prints for the roles and modules, as a user reads
it: every list item's options, the documented defaults of dicts a user
overrides key by key, whole markup, every library a module needs."""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, ansible_environment

ANSIBLE_DOC = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(str(REPO_ROOT / "plugins" / "modules" / "*.py")))


def ansible_doc(tmp_path, *args):
    proc = subprocess.run([ANSIBLE_DOC] + list(args), env=ansible_environment(str(tmp_path)), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    return proc.stdout


def option_block(text, name):
    """The lines ansible-doc prints for option ``name`` (up to the next option
    at the same indentation)."""
    lines = text.splitlines()
    start = [i for i, line in enumerate(lines) if re.match(r"^(\s*)[-=] %s\b" % re.escape(name), line)]
    assert start, "ansible-doc does not show %s" % name
    indent = len(lines[start[0]]) - len(lines[start[0]].lstrip())
    out = [lines[start[0]]]
    for line in lines[start[0] + 1:]:
        if re.match(r"^\s{0,%d}[-=] \S" % indent, line) or line.startswith("ENTRY POINT"):
            break
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("role,option,items", [
    ("postgresql_backup", "postgresql_backup_databases",
     ["name", "schedule", "verify_schedule", "login_port", "retention", "keep_daily", "storage_options",
      "secret_key", "verify_checks", "sql"]),
    ("postgresql_backup", "postgresql_backup_retention", ["keep_last", "keep_daily", "keep_within"]),
    ("redis_backup", "redis_backup_instances",
     ["login_port", "job_name", "schedule", "retention", "keep_daily", "persistence", "appendfsync", "persist"]),
    ("redis_backup", "redis_backup_persistence_defaults", ["appendonly", "appendfsync", "save", "persist"]),
    ("postgresql_wal_archive", "postgresql_wal_archive_storage_options", ["endpoint_url", "secret_key"]),
])
def test_ansible_doc_shows_list_item_and_dict_options(tmp_path, role, option, items):
    text = ansible_doc(tmp_path, "-t", "role", "drkit.backup." + role)
    block = option_block(text, option)
    assert "options:" in block, block
    for item in items:
        assert re.search(r"^\s+[-=] %s\b" % item, block, re.M), "%s: item option %s not shown\n%s" % (
            option, item, block)


def test_ansible_doc_shows_the_defaults_a_user_merges_over(tmp_path):
    text = ansible_doc(tmp_path, "-t", "role", "drkit.backup.redis_backup")
    block = option_block(text, "redis_backup_persistence_defaults")
    assert "appendonly: true" in block and "everysec" in block and "3600 1" in block, block
    block = option_block(text, "redis_backup_persistence")
    assert "merged key by key" in block and "default: {}" in block, block
    block = option_block(text, "redis_backup_retention")
    assert "keep_daily: 7" in block, block


def test_ansible_doc_json_has_options_for_every_list_of_dicts(tmp_path):
    roles = ["backup_monitoring", "drkit_runtime", "postgresql_backup", "postgresql_wal_archive", "redis_backup"]
    data = json.loads(ansible_doc(tmp_path, "-t", "role", "--json", *["drkit.backup." + r for r in roles]))
    assert len(data) == len(roles)
    checked = 0
    for role, doc in data.items():
        for entry, spec in doc["entry_points"].items():
            for name, opt in spec.get("options", {}).items():
                if opt.get("type") == "list" and opt.get("elements") in ("dict", "raw"):
                    assert opt.get("options"), "%s %s: %s has no item options" % (role, entry, name)
                    checked += 1
    assert checked >= 4
    runtime = data["drkit.backup.drkit_runtime"]["entry_points"]
    assert all(spec["short_description"].startswith("Internal:") for spec in runtime.values())


def test_pg_backup_doc_renders_the_snapshot_function_whole(tmp_path):
    text = " ".join(ansible_doc(tmp_path, "drkit.backup.pg_backup").split())
    assert "pg_export_snapshot()" in text
    assert "pg_export_snapshot(')" not in text


def libraries_checked(module):
    """The Python libraries a module's main() checks with check_libraries."""
    tree = ast.parse((REPO_ROOT / "plugins" / "modules" / (module + ".py")).read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check_libraries":
            out.extend(pair.elts[1].value for pair in node.args[1].elts)
    return out


def test_module_requirements_name_every_library_they_need(tmp_path):
    data = json.loads(ansible_doc(tmp_path, "--json", *["drkit.backup." + m for m in MODULES]))
    needs = {}
    for module in MODULES:
        requirements = " ".join(data["drkit.backup." + module]["doc"].get("requirements") or [])
        for lib in libraries_checked(module):
            needs.setdefault(lib, []).append(module)
            assert lib in requirements, "%s needs %s; its requirements say: %s" % (module, lib, requirements)
    assert "redis_snapshot" in needs["zstandard"]
    snapshot = " ".join(data["drkit.backup.redis_snapshot"]["doc"]["requirements"])
    for what in ("zstandard", "boto3", "redis-check-rdb"):
        assert what in snapshot, snapshot
