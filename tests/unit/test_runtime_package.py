# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runtime package drkit-backup-runtime (pyproject.toml) and the role's
wheel helper (roles/drkit_runtime/files/runtime_wheel.py), without building:

* what setuptools puts in the wheel (its own build_py module list for the
  pyproject.toml configuration) is every engine module but demo/ and
  _ansible.py, under drkit_engine; the console script, the version and the
  dependencies come from their one source each;
* galaxy.yml's version is the engine's;
* one engine loader (bin/drkit's);
* the fingerprint that decides whether a host reinstalls is the same from a
  wheel and from its installed copy, and differs when a file does.

tests/integration/test_runtime_package.py builds the real wheel and installs
it with pip --no-index."""

import csv
import hashlib
import importlib.util
import io
import re
import warnings
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "plugins" / "module_utils"
HELPER = ROOT / "roles" / "drkit_runtime" / "files" / "runtime_wheel.py"


def runtime_requirements():
    lines = (ROOT / "requirements" / "runtime.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def engine_version():
    text = (ENGINE / "core" / "version.py").read_text()
    return re.search(r'^VERSION = "([^"]+)"', text, re.M).group(1)


@pytest.fixture(scope="module")
def helper():
    spec = importlib.util.spec_from_file_location("runtime_wheel", str(HELPER))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- pyproject.toml

@pytest.fixture
def dist(monkeypatch):
    """setuptools' Distribution for pyproject.toml, as a build sees it."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)  # package-dir is relative to the project root
    d = Distribution()
    d.script_name = "setup.py"  # what build_meta sets (there is none)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "[tool.setuptools] is beta" on older setuptools
        apply_configuration(d, str(ROOT / "pyproject.toml"))
    return d


def shipped_engine_files():
    """drkit_engine/<path> for every .py of plugins/module_utils that hosts get."""
    out = set()
    for path in ENGINE.rglob("*.py"):
        rel = path.relative_to(ENGINE).as_posix()
        if "__pycache__" in rel or rel.startswith("demo/") or rel == "_ansible.py":
            continue
        out.add("drkit_engine/" + rel)
    return out


def test_the_wheel_holds_every_engine_module_but_demo_and_the_ansible_adapter(dist):
    build_py = dist.get_command_obj("build_py")
    build_py.ensure_finalized()
    modules = {"drkit_engine/" + Path(f).relative_to("plugins/module_utils").as_posix()
               for _pkg, _mod, f in build_py.find_all_modules()}
    assert modules == shipped_engine_files(), (
        "pyproject.toml [tool.setuptools] packages / py-modules must name every engine file but demo/ and _ansible.py")
    assert not any("/demo/" in m or m.endswith("/_ansible.py") for m in modules)
    assert "drkit_engine/cli.py" in modules and "drkit_engine/__init__.py" in modules
    assert not dist.package_data and not dist.include_package_data


def test_console_script_version_and_dependencies_have_one_source_each(dist):
    assert dist.metadata.name == "drkit-backup-runtime"
    assert dist.entry_points == {"console_scripts": ["drkit = drkit_engine.cli:main"]}
    assert dist.metadata.version == engine_version()
    # the pins of requirements/runtime.txt (the role and the EE use that file too)
    assert [str(r) for r in dist.install_requires] == runtime_requirements()
    assert all("==" in r for r in runtime_requirements())


def test_galaxy_version_is_the_engine_version():
    with open(str(ROOT / "galaxy.yml")) as fh:
        galaxy = yaml.safe_load(fh)
    assert galaxy["version"] == engine_version(), (
        "galaxy.yml version and plugins/module_utils/core/version.py VERSION must be the same "
        "(the runtime wheel takes its version from core/version.py)")


def test_one_engine_loader():
    """Only bin/drkit imports plugins/module_utils as drkit_engine by path;
    scripts/_engine.py (scripts, benchmarks) calls it."""
    loaders = []
    candidates = [ROOT / "bin" / "drkit"]
    for top in ("bin", "scripts", "benchmarks", "tests", "plugins", "roles"):
        candidates += (ROOT / top).rglob("*.py")
    for path in candidates:
        if "submodule_search_locations" in path.read_text() and path != Path(__file__):
            loaders.append(path.relative_to(ROOT).as_posix())
    assert loaders == ["bin/drkit"]
    assert "bin\", \"drkit\"" in (ROOT / "scripts" / "_engine.py").read_text()


# ---------------------------------------------------------------- the fingerprint

FILES = {
    "drkit_engine/__init__.py": b"",
    "drkit_engine/cli.py": b"def main():\n    return 0\n",
    "drkit_engine/core/__init__.py": b"",
    "drkit_engine/core/version.py": b'VERSION = "0.1.0"\n',
}
ENTRY_POINTS = "[console_scripts]\ndrkit = drkit_engine.cli:main\n"


def digest(data):
    return "sha256=" + urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(path, files=None, requires=("PyYAML (==6.0.4)", "boto3 (==1.44.8)"), name="drkit-backup-runtime",
               version="0.1.0"):
    """A wheel as setuptools writes it (older Requires-Dist spelling by default)."""
    files = dict(FILES if files is None else files)
    di = "%s-%s.dist-info" % (name.replace("-", "_"), version)
    meta = "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version)
    meta += "".join("Requires-Dist: %s\n" % r for r in requires)
    files[di + "/METADATA"] = meta.encode()
    files[di + "/entry_points.txt"] = ENTRY_POINTS.encode()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for n, data in files.items():
        writer.writerow([n, digest(data), len(data)])
    writer.writerow([di + "/RECORD", "", ""])
    files[di + "/RECORD"] = buf.getvalue().encode()
    with zipfile.ZipFile(str(path), "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return str(path)


def install_like_pip(wheel, venv):
    """What pip leaves in site-packages: the files, METADATA and entry points
    as they were, RECORD with the wheel's rows plus .pyc files, the console
    script and pip's own files."""
    site = Path(venv) / "lib" / "python3.11" / "site-packages"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(str(site))
        record = zf.read([n for n in zf.namelist() if n.endswith("/RECORD")][0]).decode()
        di = [n for n in zf.namelist() if n.endswith("/RECORD")][0].split("/")[0]
    (site / di / "INSTALLER").write_text("pip\n")
    record += "drkit_engine/__pycache__/cli.cpython-311.pyc,,\n../../../bin/drkit,%s,200\n%s/INSTALLER,%s,4\n" % (
        digest(b"x"), di, digest(b"pip\n"))
    (site / di / "RECORD").write_text(record)
    return site


def test_wheel_and_its_installed_copy_have_one_fingerprint(helper, tmp_path):
    wheel = make_wheel(tmp_path / "drkit_backup_runtime-0.1.0-py3-none-any.whl")
    info = helper.inspect_wheel(wheel)
    assert (info["name"], info["version"], info["filename"]) == (
        "drkit-backup-runtime", "0.1.0", "drkit_backup_runtime-0.1.0-py3-none-any.whl")
    install_like_pip(wheel, tmp_path / "venv")
    have = helper.cmd_installed(type("A", (), {"venv": str(tmp_path / "venv")}))
    assert have["version"] == "0.1.0"
    assert have["fingerprint"] == info["fingerprint"]
    assert have["deps_ok"] is False  # no venv Python here to run pip check


def test_fingerprint_ignores_the_builders_spelling_and_sees_every_change(helper, tmp_path):
    base = helper.inspect_wheel(make_wheel(tmp_path / "a.whl"))["fingerprint"]
    newer_setuptools = make_wheel(tmp_path / "b.whl", requires=("boto3==1.44.8", "PyYAML==6.0.4"))
    assert helper.inspect_wheel(newer_setuptools)["fingerprint"] == base
    changed_file = dict(FILES, **{"drkit_engine/cli.py": b"def main():\n    return 1\n"})
    assert helper.inspect_wheel(make_wheel(tmp_path / "c.whl", files=changed_file))["fingerprint"] != base
    new_file = dict(FILES, **{"drkit_engine/core/new.py": b""})
    assert helper.inspect_wheel(make_wheel(tmp_path / "d.whl", files=new_file))["fingerprint"] != base
    new_pin = ("PyYAML (==6.0.5)", "boto3 (==1.44.8)")
    assert helper.inspect_wheel(make_wheel(tmp_path / "e.whl", requires=new_pin))["fingerprint"] != base
    assert helper.inspect_wheel(make_wheel(tmp_path / "f.whl", version="0.1.1"))["fingerprint"] != base


def test_nothing_installed_is_an_empty_answer(helper, tmp_path):
    assert helper.cmd_installed(type("A", (), {"venv": str(tmp_path / "none")})) == {}
    (tmp_path / "venv" / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    assert helper.cmd_installed(type("A", (), {"venv": str(tmp_path / "venv")})) == {}


@pytest.mark.parametrize("extra,message", [
    ({"drkit_engine/demo/sample_data.py": b""}, "must not reach the hosts: drkit_engine/demo/sample_data.py"),
    ({"drkit_engine/_ansible.py": b""}, "must not reach the hosts: drkit_engine/_ansible.py"),
])
def test_a_wheel_with_demo_code_or_the_ansible_adapter_is_refused(helper, tmp_path, extra, message):
    wheel = make_wheel(tmp_path / "x.whl", files=dict(FILES, **extra))
    with pytest.raises(helper.Error, match=re.escape(message)):
        helper.inspect_wheel(wheel)


def test_another_projects_wheel_is_refused(helper, tmp_path):
    with pytest.raises(helper.Error, match="not of drkit-backup-runtime"):
        helper.inspect_wheel(make_wheel(tmp_path / "x.whl", name="something-else"))


def test_a_prebuilt_wheel_of_another_version_is_refused(helper, tmp_path, capsys):
    wheel = make_wheel(tmp_path / "drkit_backup_runtime-9.9.9-py3-none-any.whl", version="9.9.9")
    assert helper.main(["build", str(ROOT), "--wheel", wheel]) == 1
    assert "is version 9.9.9; this collection is %s" % engine_version() in capsys.readouterr().err


def test_the_sources_digest_follows_the_engine_files(helper, tmp_path):
    """The controller's wheel cache is keyed by it: any engine file counts,
    __pycache__ does not."""
    root = tmp_path / "collection"
    (root / "requirements").mkdir(parents=True)
    (root / "pyproject.toml").write_text("x")
    (root / "requirements" / "runtime.txt").write_text("y")
    (root / "plugins" / "module_utils" / "__pycache__").mkdir(parents=True)
    (root / "plugins" / "module_utils" / "cli.py").write_text("a")
    first = helper.sources_digest(str(root))
    (root / "plugins" / "module_utils" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    assert helper.sources_digest(str(root)) == first
    (root / "plugins" / "module_utils" / "demo").mkdir()
    (root / "plugins" / "module_utils" / "demo" / "x.py").write_text("b")
    assert helper.sources_digest(str(root)) != first


# ---------------------------------------------------------------- deps_ok: the runtime's own tree

def fake_dist(name, *requires):
    return type("D", (), {"metadata": type("M", (), {
        "__getitem__": lambda self, key: name,
        "get_all": lambda self, key: list(requires)})()})()


def test_dependency_tree_follows_requirements_of_installed_distributions(helper):
    installed = {
        "drkit-backup-runtime": fake_dist("drkit-backup-runtime", "boto3 (==1.44.8)", "psycopg[binary]==3.3.9"),
        "boto3": fake_dist("boto3", "botocore<1.45.0,>=1.44.8", "s3transfer<0.20.0,>=0.19.0"),
        "botocore": fake_dist("botocore", "urllib3!=2.2.0,<3,>=1.25.4; python_version >= \"3.10\"",
                              "awscrt==0.29.2; extra == \"crt\""),
        "psycopg": fake_dist("psycopg", "psycopg-binary==3.3.9; implementation_name != \"pypy\" and extra == "
                             "\"binary\""),
        "unrelated-tool": fake_dist("unrelated-tool", "no-such-dependency-drkit"),
    }
    tree = helper.dependency_tree(installed["drkit-backup-runtime"], installed)
    assert tree == {"drkit-backup-runtime", "boto3", "botocore", "s3transfer", "urllib3", "awscrt", "psycopg",
                    "psycopg-binary"}


TREE = {"drkit-backup-runtime", "boto3", "botocore", "pyyaml"}


@pytest.mark.parametrize("rc,output,problems", [
    (0, "No broken requirements found.", []),
    # a package installed by hand beside the runtime: not the runtime's business
    (1, "unrelated-tool 1.0 requires no-such-dependency-drkit, which is not installed.", []),
    (1, "drkit-backup-runtime 0.1.0 requires pyyaml, which is not installed.\n"
        "unrelated-tool 1.0 requires nothing-else, which is not installed.",
     ["drkit-backup-runtime 0.1.0 requires pyyaml, which is not installed."]),
    (1, "boto3 1.44.8 has requirement botocore<1.45.0,>=1.44.8, but you have botocore 1.40.0.",
     ["boto3 1.44.8 has requirement botocore<1.45.0,>=1.44.8, but you have botocore 1.40.0."]),
    (1, "PyYAML 6.0.4 is not supported on this platform",
     ["PyYAML 6.0.4 is not supported on this platform"]),
    # pip that did not run, or said something unreadable: not a verdict
    (1, "/opt/drkit/venv/bin/python: No module named pip", ["/opt/drkit/venv/bin/python: No module named pip"]),
    (2, "", ["pip check exited 2 without naming a problem"]),
])
def test_only_pip_checks_complaints_about_the_runtimes_tree_count(helper, rc, output, problems):
    assert helper.tree_problems(rc, output, TREE) == problems
