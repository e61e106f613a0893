# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runtime wheel for real, the way roles/drkit_runtime gets it to a host
without internet:

* built on the "controller" by the role's helper (files/runtime_wheel.py)
  both ways: without build isolation by a Python that has setuptools and
  wheel (Debian's /usr/bin/python3 with python3-setuptools and python3-wheel),
  and with build isolation fed only by a wheelhouse (--no-index), as on a
  controller without them and without internet; both give one fingerprint;
* installed into a fresh venv of /usr/bin/python3 with
  ``pip install --no-index --find-links WHEELHOUSE`` (no pip configuration,
  no index): the ``drkit`` console script runs, every engine module and
  dependency imports, demo code and the Ansible adapter are not there, and
  the helper reads the wheel's fingerprint back from the installed package.

The wheelhouse is ``pip download -r requirements/runtime.txt`` (plus
setuptools and wheel for the isolated build), made once from PyPI and kept
in build/wheelhouse-<hash of what it holds>.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile

import pytest
from helpers import REPO_ROOT

SYSTEM_PYTHON = "/usr/bin/python3"
HELPER = REPO_ROOT / "roles" / "drkit_runtime" / "files" / "runtime_wheel.py"
RUNTIME_TXT = REPO_ROOT / "requirements" / "runtime.txt"
BUILD_REQUIREMENTS = ["setuptools>=62.6", "wheel"]

pytestmark = pytest.mark.slow


def hermetic_pip_env(**extra):
    """No pip configuration file, no PIP_* variable: only what the command says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def run(argv, env=None, timeout=600):
    proc = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, timeout=timeout, check=False)
    return proc


@pytest.fixture(scope="module")
def wheelhouse():
    key = hashlib.sha256((RUNTIME_TXT.read_text() + "\n".join(BUILD_REQUIREMENTS)).encode()).hexdigest()[:12]
    path = REPO_ROOT / "build" / ("wheelhouse-%s" % key)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".wheelhouse-", dir=str(path.parent))
        # the hosts' Python, so the binary wheels fit it (the machine's pip configuration applies: PyPI)
        proc = run([SYSTEM_PYTHON, "-m", "pip", "download", "--disable-pip-version-check", "-d", tmp,
                    "-r", RUNTIME_TXT] + BUILD_REQUIREMENTS)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail("pip download for the wheelhouse failed (needs PyPI once):\n" + proc.stdout[-4000:])
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, str(path))
        except OSError:  # made meanwhile by another run
            shutil.rmtree(tmp, ignore_errors=True)
    return path


@pytest.fixture(scope="module")
def helper():
    spec = importlib.util.spec_from_file_location("runtime_wheel_it", str(HELPER))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def system_python_has_the_backend():
    proc = run([SYSTEM_PYTHON, "-c", "import sys; sys.path.insert(0, %r); import runtime_wheel as r; "
                "sys.exit(0 if r.backend_available() else 1)" % str(HELPER.parent)])
    return proc.returncode == 0


@pytest.fixture(scope="module")
def wheel_no_isolation(tmp_path_factory):
    """Built by /usr/bin/python3 with its own setuptools and wheel: nothing downloaded."""
    if not system_python_has_the_backend():
        pytest.skip("%s has no setuptools>=62.6 with wheel (Debian: python3-setuptools python3-wheel)"
                    % SYSTEM_PYTHON)
    cache = tmp_path_factory.mktemp("cache-no-isolation")
    proc = run([SYSTEM_PYTHON, HELPER, "build", REPO_ROOT], env=hermetic_pip_env(XDG_CACHE_HOME=str(cache)))
    assert proc.returncode == 0, proc.stdout
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def wheel_isolated(helper, wheelhouse, tmp_path_factory):
    """Built with build isolation, setuptools from the wheelhouse only (what the
    role does on a controller without the backend when drkit_runtime_wheelhouse is set)."""
    cache = tmp_path_factory.mktemp("cache-isolated")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(hermetic_pip_env(XDG_CACHE_HOME=str(cache)))
    available, helper.backend_available = helper.backend_available, lambda: False
    try:
        return helper.inspect_wheel(helper.build(str(REPO_ROOT), str(wheelhouse)))
    finally:
        helper.backend_available = available
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def installed(wheel_isolated, wheelhouse, tmp_path_factory):
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    proc = run([SYSTEM_PYTHON, "-m", "venv", venv])
    assert proc.returncode == 0, proc.stdout
    proc = run([venv / "bin" / "python", "-m", "pip", "install", "--no-index", "--find-links", wheelhouse,
                wheel_isolated["path"]], env=hermetic_pip_env())
    assert proc.returncode == 0, proc.stdout
    return venv


def test_both_builds_are_the_same_package(wheel_no_isolation, wheel_isolated):
    assert wheel_isolated["name"] == wheel_no_isolation["name"] == "drkit-backup-runtime"
    assert wheel_isolated["version"] == wheel_no_isolation["version"]
    assert wheel_isolated["fingerprint"] == wheel_no_isolation["fingerprint"]


def test_the_console_script_runs(installed):
    proc = run([installed / "bin" / "drkit", "--help"], env=hermetic_pip_env())
    assert proc.returncode == 0, proc.stdout
    assert "pg-backup" in proc.stdout and "redis-snapshot" in proc.stdout and "wal-push" in proc.stdout
    with open(str(installed / "bin" / "drkit")) as fh:
        assert fh.readline().strip() == "#!%s" % (installed / "bin" / "python")


def test_every_engine_module_and_dependency_imports_and_demo_code_is_absent(installed):
    code = r"""
import importlib, json, pkgutil
import drkit_engine
mods = sorted(m.name for m in pkgutil.walk_packages(drkit_engine.__path__, "drkit_engine."))
for name in mods:
    importlib.import_module(name)
import boto3, obstore, psycopg, pyrage, tqdm, yaml, zstandard
from cryptography.hazmat.primitives.asymmetric import ed25519
psycopg.pq.version()  # the binary implementation loads
missing = []
for name in ("drkit_engine.demo", "drkit_engine.demo.sample_data", "drkit_engine._ansible", "ansible"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        missing.append(name)
print(json.dumps({"modules": mods, "missing": missing, "file": drkit_engine.__file__}))
"""
    proc = run([installed / "bin" / "python", "-I", "-c", code], env=hermetic_pip_env())
    assert proc.returncode == 0, proc.stdout
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["missing"] == ["drkit_engine.demo", "drkit_engine.demo.sample_data", "drkit_engine._ansible",
                              "ansible"]
    assert out["file"].startswith(str(installed))
    assert "drkit_engine.cli" in out["modules"] and "drkit_engine.pg.wal_archive" in out["modules"]
    assert not [m for m in out["modules"] if ".demo" in m or m.endswith("._ansible")]


def test_the_helper_reads_the_wheels_fingerprint_back(installed, wheel_isolated):
    proc = run([SYSTEM_PYTHON, HELPER, "installed", installed.parent / "venv"], env=hermetic_pip_env())
    assert proc.returncode == 0, proc.stdout
    have = json.loads(proc.stdout)
    assert have["version"] == wheel_isolated["version"]
    assert have["fingerprint"] == wheel_isolated["fingerprint"]
    assert have["deps_ok"] is True, have


def test_without_the_wheelhouse_nothing_installs(installed, wheel_isolated):
    """--no-index really is offline: the dependencies come from the wheelhouse or nowhere."""
    proc = run([installed / "bin" / "python", "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--no-index", wheel_isolated["path"]], env=hermetic_pip_env())
    assert proc.returncode != 0
    assert "No matching distribution found" in proc.stdout, proc.stdout
