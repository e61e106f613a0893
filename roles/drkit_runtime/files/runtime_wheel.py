# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drkit runtime wheel (pyproject.toml of the collection): built on the
controller, compared with what a host has installed.

usage: runtime_wheel.py build COLLECTION_ROOT [--wheel FILE] [--wheelhouse DIR]
           On the controller. Builds the wheel of drkit-backup-runtime from the
           collection (or takes the prebuilt FILE) and prints JSON: path,
           filename, name, version, fingerprint.
       runtime_wheel.py installed VENV
           On a host, with any Python 3. Prints JSON about the package installed
           in VENV: version, fingerprint, deps_ok (pip check, as far as the
           package's own dependency tree goes); {} when it is not installed.

Building. The sources (pyproject.toml, requirements/runtime.txt,
plugins/module_utils) are copied to a private directory first: the collection
may be installed read-only, and setuptools writes build/ and *.egg-info next
to its input. Then ``pip wheel --no-deps``:

* without build isolation when this Python has the backend (setuptools 62.6
  or later, and the ``wheel`` package below setuptools 70.1): nothing is
  downloaded, an offline controller can build;
* otherwise with build isolation: pip fetches setuptools from the index, or
  from DIR of --wheelhouse (``--no-index --find-links DIR``) when given.

The wheel is kept in ~/.cache/drkit-backup/runtime-wheels/<hash of the
sources>/ (private to the user: it is installed as root on every host), so a
play with the same sources builds nothing; entries unused for a week go.

The fingerprint says whether a host has this very package: a hash of the
version, the Requires-Dist lines (spelling normalised), entry_points.txt
and the RECORD rows (path and sha256) of the drkit_engine files. pip copies
those rows from the wheel's RECORD into the installed one, so the same value
comes out of the wheel here and out of the installed distribution on the
host, whichever setuptools built it (other metadata files differ).
The role replaces the package when the fingerprints differ, also for the
same version (a build between two releases).

deps_ok: ``pip check`` of the venv, but only its complaints about the
package's own dependency tree (its Requires-Dist, and theirs, whatever the
markers) count. A package installed by hand beside it with a broken
requirement made the role "reinstall" on every run: pip changed nothing, so
a real run reported no change while check mode always reported one.
"""

import argparse
import csv
import email.parser
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

NAME = "drkit-backup-runtime"
PACKAGE = "drkit_engine"
# Never shipped to hosts (docs/engine.md); a wheel holding them is refused.
EXCLUDED = (PACKAGE + "/demo/", PACKAGE + "/_ansible.py")
SOURCES = ("pyproject.toml", "requirements/runtime.txt")
ENGINE = "plugins/module_utils"
# setuptools reads SOURCE_DATE_EPOCH (through wheel) for the zip timestamps:
# the same sources give the same wheel bytes from the same builder.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest zip date
CACHE_DAYS = 7


class Error(Exception):
    pass


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# ----------------------------------------------------------------- fingerprint

def requirement_key(text):
    """``PyYAML (==6.0.4)`` (older setuptools) and ``PyYAML==6.0.4`` (newer) alike."""
    text = re.sub(r"^([A-Za-z0-9._\-]+(?:\[[^\]]*\])?)\s*\(([^)]*)\)", r"\1\2", text.strip())
    return re.sub(r"\s+", "", text).lower()


def fingerprint(version, requires, entry_points, record):
    """``record``: the RECORD file's text. Only the drkit_engine rows with a
    hash count (the installed RECORD adds .pyc files, the console script and
    pip's own files)."""
    rows = sorted((row[0], row[1]) for row in csv.reader(io.StringIO(record))
                  if len(row) >= 2 and row[0].startswith(PACKAGE + "/") and row[1])
    requires = sorted(requirement_key(r) for r in requires or [])
    data = json.dumps([version, requires, (entry_points or "").strip(), rows], sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _metadata(text):
    return email.parser.Parser().parsestr(text)


def inspect_wheel(path):
    """Name, version and fingerprint of a wheel; refuses one that holds demo
    code or the Ansible adapter, or that is not the drkit runtime."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        infos = [n for n in names if re.match(r"[^/]+\.dist-info/METADATA$", n)]
        if len(infos) != 1:
            raise Error("%s is not a wheel (no single *.dist-info/METADATA)" % path)
        dist_info = infos[0].split("/")[0]
        meta = _metadata(zf.read(infos[0]).decode("utf-8"))
        record = zf.read(dist_info + "/RECORD").decode("utf-8")
        entry_points = ""
        if dist_info + "/entry_points.txt" in names:
            entry_points = zf.read(dist_info + "/entry_points.txt").decode("utf-8")
    if canonical(meta["Name"] or "") != NAME:
        raise Error("%s is the wheel of %s, not of %s" % (path, meta["Name"], NAME))
    bad = sorted(n for n in names if n.startswith(EXCLUDED))
    if bad:
        raise Error("%s holds files that must not reach the hosts: %s" % (path, ", ".join(bad)))
    if PACKAGE + "/cli.py" not in names:
        raise Error("%s has no %s/cli.py" % (path, PACKAGE))
    version = meta["Version"]
    return {
        "path": os.path.abspath(path),
        "filename": os.path.basename(path),
        "name": NAME,
        "version": version,
        "fingerprint": fingerprint(version, meta.get_all("Requires-Dist"), entry_points, record),
    }


# ----------------------------------------------------------------- building

def source_files(root):
    """(relative path, absolute path) of everything the build reads."""
    for rel in SOURCES:
        yield rel, os.path.join(root, rel)
    base = os.path.join(root, ENGINE)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, root).replace(os.sep, "/"), path


def sources_digest(root):
    h = hashlib.sha256()
    for rel, path in source_files(root):
        with open(path, "rb") as fh:
            data = fh.read()
        h.update(("%s\0%d\0" % (rel, len(data))).encode("utf-8"))
        h.update(data)
    return h.hexdigest()


def engine_version(root):
    path = os.path.join(root, ENGINE, "core", "version.py")
    with open(path) as fh:
        m = re.search(r'^VERSION = "([^"]+)"', fh.read(), re.M)
    if not m:
        raise Error("no VERSION = \"...\" line in %s" % path)
    return m.group(1)


def backend_available():
    """True when this Python can build the wheel without build isolation."""
    try:
        from importlib import metadata
        setuptools_version = version_tuple(metadata.version("setuptools"))
    except Exception:  # not installed, or no importlib.metadata
        return False
    if setuptools_version < (62, 6):
        return False
    if setuptools_version >= (70, 1):  # bdist_wheel moved into setuptools
        return True
    try:
        metadata.version("wheel")
    except Exception:
        return False
    return True


def cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "drkit-backup", "runtime-wheels")
    os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.stat(root)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise Error("%s must belong to you and not be group- or world-writable (the wheel in it "
                    "is installed as root on the hosts)" % root)
    return root


def prune(root, keep):
    """Drop cache entries unused for CACHE_DAYS."""
    for path in glob.glob(os.path.join(root, "*")):
        try:
            if path != keep and os.stat(path).st_mtime < time.time() - CACHE_DAYS * 86400:
                shutil.rmtree(path)
        except OSError:
            pass


def run_pip_wheel(src, out, wheelhouse):
    isolated = not backend_available()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
           "--wheel-dir", out]
    if not isolated:
        cmd += ["--no-build-isolation", "--no-index"]
    elif wheelhouse:
        cmd += ["--no-index", "--find-links", wheelhouse]
    cmd.append(src)
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          universal_newlines=True, check=False)
    if proc.returncode != 0:
        how = ("without build isolation (setuptools and wheel of %s)" % sys.executable if not isolated else
               "with build isolation, setuptools from %s" % (wheelhouse or "the package index"))
        raise Error(
            "could not build the drkit runtime wheel %s:\n%s\n%s\nOn a controller without internet: install "
            "setuptools>=62.6 and wheel into %s, or put their wheels into drkit_runtime_wheelhouse "
            "(pip download -d DIR 'setuptools>=62.6' wheel), or set drkit_runtime_wheel to a wheel built "
            "elsewhere (pip wheel --no-deps COLLECTION_DIR)."
            % (how, " ".join(cmd), proc.stdout[-4000:], sys.executable))
    wheels = glob.glob(os.path.join(out, "*.whl"))
    if len(wheels) != 1:
        raise Error("pip wheel left %d wheels in %s" % (len(wheels), out))
    return wheels[0]


def build(root, wheelhouse=None):
    root = os.path.abspath(root)
    for rel in SOURCES + (ENGINE + "/cli.py",):
        if not os.path.isfile(os.path.join(root, rel)):
            raise Error("%s is not the drkit.backup collection (no %s)" % (root, rel))
    cache = cache_root()
    entry = os.path.join(cache, sources_digest(root)[:24])
    found = glob.glob(os.path.join(entry, "*.whl"))
    if len(found) == 1:
        os.utime(entry)
        return found[0]
    work = tempfile.mkdtemp(prefix=".build-", dir=cache)
    try:
        src = os.path.join(work, "src")
        for rel, path in source_files(root):
            dest = os.path.join(src, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(path, dest)
        out = os.path.join(work, "out")
        os.mkdir(out)
        os.chmod(out, 0o755)
        wheel = run_pip_wheel(src, out, wheelhouse)
        os.chmod(wheel, 0o644)
        try:
            os.rename(out, entry)
        except OSError:
            # a concurrent play built the same sources first: use its wheel
            if len(glob.glob(os.path.join(entry, "*.whl"))) != 1:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(cache, entry)
    return glob.glob(os.path.join(entry, "*.whl"))[0]


def cmd_build(args):
    root = os.path.abspath(args.root)
    if args.wheel:
        info = inspect_wheel(args.wheel)
        want = engine_version(root)
        if info["version"] != want:
            raise Error("drkit_runtime_wheel %s is version %s; this collection is %s (build the wheel "
                        "from the same collection)" % (args.wheel, info["version"], want))
    else:
        info = inspect_wheel(build(root, args.wheelhouse))
    return info


# ----------------------------------------------------------------- installed

# a line of pip check about one distribution: "NAME VERSION requires ...",
# "NAME VERSION has requirement ...", "NAME VERSION is not supported on this platform"
PIP_CHECK_LINE = re.compile(r"^(\S+) \S+ (requires|has requirement|is not supported)")


def requirement_name(text):
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text or "")
    return canonical(m.group(1)) if m else None


def dependency_tree(dist, installed):
    """Canonical names of ``dist`` and of everything it requires, directly
    or not (markers and extras not evaluated: a superset), among the
    ``installed`` distributions ({canonical name: distribution})."""
    names = set([canonical(dist.metadata["Name"] or "")])
    todo = [dist]
    while todo:
        for req in todo.pop().metadata.get_all("Requires-Dist") or []:
            name = requirement_name(req)
            if name and name not in names:
                names.add(name)
                if name in installed:
                    todo.append(installed[name])
    return names


def tree_problems(returncode, output, tree):
    """The lines of pip check's answer that concern ``tree``; any line it
    cannot read counts too (a pip that failed to run proves nothing)."""
    if returncode == 0:
        return []
    problems = []
    named = False
    for line in (output or "").splitlines():
        line = line.strip()
        if not line:
            continue
        m = PIP_CHECK_LINE.match(line)
        named = named or m is not None
        if not m or canonical(m.group(1)) in tree:
            problems.append(line)
    if not named and not problems:
        problems.append("pip check exited %d without naming a problem" % returncode)
    return problems


def cmd_installed(args):
    venv = os.path.abspath(args.venv)
    paths = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    if not paths:
        return {}
    from importlib import metadata
    installed = {}
    for d in metadata.distributions(path=paths):
        installed.setdefault(canonical(d.metadata["Name"] or ""), d)
    dist = installed.get(NAME)
    if dist is None:
        return {}
    version = dist.metadata["Version"]
    info = {
        "version": version,
        "fingerprint": fingerprint(version, dist.metadata.get_all("Requires-Dist"),
                                   dist.read_text("entry_points.txt"), dist.read_text("RECORD") or ""),
        "deps_ok": False,
    }
    python = os.path.join(venv, "bin", "python")
    if os.access(python, os.X_OK):
        proc = subprocess.run([python, "-I", "-m", "pip", "check", "--disable-pip-version-check"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              check=False)
        problems = tree_problems(proc.returncode, proc.stdout, dependency_tree(dist, installed))
        info["deps_ok"] = not problems
        info["pip_check"] = "\n".join(problems)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(prog="runtime_wheel.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = ap.add_subparsers(dest="command")
    b = sub.add_parser("build")
    b.add_argument("root")
    b.add_argument("--wheel", default="")
    b.add_argument("--wheelhouse", default="")
    i = sub.add_parser("installed")
    i.add_argument("venv")
    args = ap.parse_args(argv)
    try:
        if args.command == "build":
            result = cmd_build(args)
        elif args.command == "installed":
            result = cmd_installed(args)
        else:
            ap.error("build or installed")
    except (Error, OSError, zipfile.BadZipFile, KeyError) as e:
        sys.stderr.write("runtime_wheel.py: %s\n" % e)
        return 1
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
