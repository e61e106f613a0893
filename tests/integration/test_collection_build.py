# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection artifact: ``ansible-galaxy collection build`` holds the
collection content plus LICENSE and CHANGELOG.md and nothing of the
development tree (galaxy.yml ``build_ignore``), and the installed tarball
works (``ansible-doc``, ``ansible-galaxy collection verify``).

The build runs on a copy of the checkout (what git would commit, as
scripts/sanity.sh copies it) into which the leftovers of a development
machine are planted first: venvs, tool caches, build/ and reports/ output,
byte code, an unreleased fragment, an earlier tarball. Each must stay out.
"""

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
VERSION = str(GALAXY["version"])
TARBALL = "drkit-backup-%s.tar.gz" % VERSION

# What a development checkout accumulates (see .gitignore, scripts/, Makefile).
PLANTED = [
    ".venv/bin/python",
    ".venv-lint/pyvenv.cfg",
    ".ruff_cache/0.17.6/123",
    ".pytest_cache/v/cache/nodeids",
    ".hypothesis/examples/abc",
    ".ansible/collections/ansible_collections/.keep",
    "build/venv-lint/bin/ansible-lint",
    "build/dist/drkit-backup-0.0.9.tar.gz",
    "reports/dr-rehearsal-localhost/report.json",
    "tests/output/junit/python3.11-modules.xml",
    "plugins/modules/__pycache__/pg_backup.cpython-311.pyc",
    "plugins/module_utils/stray.pyc",
    "changelogs/fragments/zz-planted-unreleased.yml",
    "changelogs/.plugin-cache.yaml",
    "drkit-backup-0.0.9.tar.gz",
    "drkit_backup.egg-info/PKG-INFO",
]

# The top level of the tarball, all of it.
TOP_LEVEL = {
    "MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.md", "bindep.txt", "pyproject.toml",
    "bin", "changelogs", "docs", "meta", "playbooks", "plugins", "requirements", "roles", "tests",
}

# Directories that ship as they are in the checkout, every file.
SHIPPED_WHOLE = ("bin/", "meta/", "playbooks/", "plugins/", "roles/")

REQUIRED = [
    "MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.md",
    "meta/runtime.yml", "meta/execution-environment.yml", "bindep.txt",
    "requirements/runtime.txt", "pyproject.toml", "bin/drkit",
    "plugins/modules/pg_backup.py", "roles/drkit_runtime/tasks/main.yml", "playbooks/dr_rehearsal.yml",
    "changelogs/changelog.yaml", "tests/sanity/ignore-2.19.txt",
]

FORBIDDEN_PREFIXES = (
    ".ci/", "benchmarks/", "build/", ".venv", "scripts/", "molecule/", "reports/", "changelogs/fragments/",
    "tests/output/", "tests/unit/", "tests/integration/", "tests/support/", "tests/promtool/", ".git",
    ".ruff_cache/", ".pytest_cache/", ".hypothesis/", ".ansible/",
)


def _checkout_files():
    out = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    files = []
    for name in out.decode().split("\0"):
        path = REPO_ROOT / name
        # .venv may be a symlink to a shared venv: never follow it into the copy
        if name and path.is_file() and not path.is_symlink():
            files.append(name)
    return sorted(files)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("collection-build")
    src = base / "src"
    files = _checkout_files()
    for name in files:
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(str(REPO_ROOT / name), str(dest))
    for name in PLANTED:
        dest = src / name
        assert not dest.exists(), "planted %s would overwrite a file of the checkout" % name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("planted by test_collection_build\n")
        assert src in dest.resolve().parents
    dist = base / "dist"
    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(src)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarball = dist / TARBALL
    assert tarball.is_file(), sorted(os.listdir(str(dist)))
    with tarfile.open(str(tarball)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        files_in_tar = {name for name, m in members.items() if m.isfile()}
        texts = {name: tar.extractfile(members[name]).read().decode("utf-8")
                 for name in files_in_tar if name.endswith((".json", ".md", ".yml", ".txt")) or name == "LICENSE"}
    return {"base": base, "tarball": tarball, "members": members, "files": files_in_tar, "texts": texts,
            "checkout_files": set(files)}


def test_required_files_present(built):
    missing = [name for name in REQUIRED if name not in built["files"]]
    assert not missing, missing


def test_only_collection_content_at_the_top(built):
    top = {name.split("/", 1)[0] for name in built["members"]}
    assert top <= TOP_LEVEL, sorted(top - TOP_LEVEL)
    # tests/ carries only what ansible-test sanity of the installed collection reads
    assert {n for n in built["files"] if n.startswith("tests/")} == {
        n for n in built["checkout_files"] if n.startswith("tests/sanity/")}
    assert {n for n in built["files"] if n.startswith("requirements/")} == {"requirements/runtime.txt"}


def test_development_files_left_out(built):
    names = set(built["members"])
    assert not [n for n in names if n.startswith(FORBIDDEN_PREFIXES)], sorted(
        n for n in names if n.startswith(FORBIDDEN_PREFIXES))
    assert not [n for n in names if "__pycache__" in n.split("/") or n.endswith((".pyc", ".tar.gz"))]
    assert not [n for n in PLANTED if n in names]
    assert not [n for n in names if n in ("Makefile", ".ansible-lint", ".gitignore", "docs/code-quality.md")
                or n.startswith("docs/tests-")]


def test_collection_content_ships_whole(built):
    """build_ignore takes nothing from plugins/, roles/, playbooks/, meta/, bin/."""
    wanted = {n for n in built["checkout_files"] if n.startswith(SHIPPED_WHOLE)}
    shipped = {n for n in built["files"] if n.startswith(SHIPPED_WHOLE)}
    assert wanted == shipped, {"missing": sorted(wanted - shipped), "extra": sorted(shipped - wanted)}
    user_docs = {n for n in built["checkout_files"] if n.startswith("docs/")
                 and n != "docs/code-quality.md" and not n.startswith("docs/tests-")}
    assert user_docs and user_docs == {n for n in built["files"] if n.startswith("docs/")}


def test_manifest_has_no_placeholder_urls(built):
    manifest = json.loads(built["texts"]["MANIFEST.json"])
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("drkit", "backup", VERSION)
    assert info["license"] == ["GPL-3.0-or-later"]
    for key in ("repository", "documentation", "homepage", "issues"):
        assert info.get(key) in (None, ""), (key, info.get(key))
    assert "example.invalid" not in built["texts"]["MANIFEST.json"]


def test_license_and_changelog(built):
    lic = built["texts"]["LICENSE"]
    assert "GNU GENERAL PUBLIC LICENSE" in lic and "Version 3, 29 June 2007" in lic
    assert "END OF TERMS AND CONDITIONS" in lic and len(lic) > 30000  # the full text, not a notice
    changelog = built["texts"]["CHANGELOG.md"]
    assert changelog.startswith("# drkit\\.backup Release Notes")
    # the version being built has its section (rendered by scripts/changelog.sh)
    assert "## v%s" % VERSION.replace(".", "\\.") in changelog


def test_execution_environment_files_ship(built):
    ee = yaml.safe_load(built["texts"]["meta/execution-environment.yml"])
    deps = ee["dependencies"]
    assert deps["python"] == "requirements/runtime.txt" and deps["system"] == "bindep.txt"
    assert {deps["python"], deps["system"]} <= built["files"]


def test_sanity_ignores_name_shipped_files(built):
    """ansible-test sanity of the installed collection fails on an ignore entry
    whose file is not there."""
    entries = [line.split(" ", 1)[0] for line in built["texts"]["tests/sanity/ignore-2.19.txt"].splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    assert entries
    assert [e for e in entries if e not in built["files"]] == []


def test_markdown_links_resolve_in_the_tarball(built):
    """Relative links in the shipped README and docs point at shipped files
    (a doc left out by build_ignore would leave them dangling)."""
    dangling = []
    for name, text in built["texts"].items():
        if not name.endswith(".md") or name == "CHANGELOG.md":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            target = target.split("#", 1)[0]
            if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue
            path = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if path not in built["files"] and not any(f.startswith(path + "/") for f in built["files"]):
                dangling.append((name, target))
    assert not dangling


def test_installed_tarball_works(built, ansible_env):
    root = built["base"] / "installed"
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(root))
    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(root),
                           str(built["tarball"])], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = root / "ansible_collections" / "drkit" / "backup"
    assert (installed / "plugins" / "modules" / "pg_backup.py").is_file()
    assert not (installed / "scripts").exists() and not (installed / "changelogs" / "fragments").exists()

    proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "verify", "--offline", "-p", str(root),
                           "drkit.backup"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # the module's documentation comes from the installed copy, not the checkout
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", "drkit.backup.pg_backup"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)["drkit.backup.pg_backup"]["doc"]
    assert Path(doc["filename"]).resolve() == (installed / "plugins" / "modules" / "pg_backup.py").resolve()
    assert doc["module"] == "pg_backup" and doc["options"]["storage_url"]
