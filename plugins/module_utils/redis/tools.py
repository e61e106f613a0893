# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis's own tools: finding redis-check-rdb/-aof and redis-server,
their versions and verdicts, and the multi-part AOF manifest.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import posixpath
import re
import shlex
import shutil
import tarfile

from ..container.runner import NOT_STARTED
from ..core.errors import IntegrityError, ToolError
from ..core.janitor import private_dir
from ..core.options import Option
from ..core.process import BackgroundReader, ProcessFeeder, shares_files, tool_version

AOF_PREFIX = "aof/"
REDIS_BIN_DIR = Option("redis_bin_dir", "path", flags=("--redis-bin-dir",),
                       help="directory of redis-server and redis-check-rdb/-aof (default: PATH)")


# --------------------------------------------------------------------------
# tools


_TOOL_LINKS = []


def _cleanup_links():
    for d in _TOOL_LINKS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_links)


def find_redis_tool(name, bin_dir=None, search=("/usr/bin", "/usr/local/bin", "/usr/sbin"), use_path=True):
    """Path to redis-check-rdb / redis-check-aof / redis-server.

    The check tools are the redis-server binary run under another name (it
    looks at argv[0]); when only redis-server is installed, a private symlink
    with the right name is made."""
    candidates = []
    if bin_dir:
        candidates.append(os.path.join(bin_dir, name))
    found = shutil.which(name) if use_path else None
    if found:
        candidates.append(found)
    candidates += [os.path.join(d, name) for d in search]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if name in ("redis-check-rdb", "redis-check-aof"):
        server = None
        servers = [os.path.join(bin_dir, "redis-server")] if bin_dir else []
        servers += ([shutil.which("redis-server") or ""] if use_path else [])
        servers += [os.path.join(d, "redis-server") for d in search]
        for c in servers:
            if c and os.path.isfile(c) and os.access(c, os.X_OK):
                server = os.path.realpath(c)
                break
        if server:
            d = private_dir("redis-tools")
            _TOOL_LINKS.append(d)
            link = os.path.join(d, name)
            os.symlink(server, link)
            return link
    raise ToolError("%s was not found (looked in %s)" % (name, ", ".join(candidates) or "PATH"),
                    "Install the Redis tools (Debian/Ubuntu: apt-get install redis-tools) "
                    "or set redis_bin_dir")


# redis-server -v: "Redis server v=7.0.15 sha=..."; other builds: the first x.y.z
VERSION_PATTERNS = (r"v=(\S+)", r"(\d+\.\d+\.\d+)")


def parse_check_output(text):
    """Facts from redis-check-rdb / the RDB part of redis-check-aof."""
    facts = {}
    for key, pat in (("keys", r"\[info\] (\d+) keys read"), ("expires", r"\[info\] (\d+) expires"),
                     ("already_expired", r"\[info\] (\d+) already expired")):
        m = re.search(pat, text)
        if m:
            facts[key] = int(m.group(1))
    dbs = [int(x) for x in re.findall(r"Selecting DB ID (\d+)", text)]
    facts["dbs"] = sorted(set(dbs))
    m = re.search(r"AUX FIELD redis-ver = '([^']*)'", text)
    if m:
        facts["redis_ver"] = m.group(1)
    return facts


def error_lines(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "--- RDB ERROR DETECTED ---" in text:
        i = next(i for i, ln in enumerate(lines) if "RDB ERROR DETECTED" in ln)
        return " | ".join(lines[i + 1:i + 4])
    return " | ".join(lines[-3:])


def locate_redis_tool(runner, name, bin_dir=None):
    """(path, version or None) of redis-check-rdb / redis-check-aof where
    ``runner`` runs it: on this machine (find_redis_tool), or inside the
    container of a container.runner.ContainerRunner (redis_bin_dir, PATH,
    then the usual directories)."""
    if shares_files(runner):
        path = find_redis_tool(name, bin_dir)
        return path, tool_version(runner, path, VERSION_PATTERNS, strict=False)
    candidates = [posixpath.join(bin_dir, name)] if bin_dir else [name, "/usr/local/bin/" + name, "/usr/bin/" + name]
    # redis-check-aof has no --version (it says it cannot open a file of that
    # name): that it ran is all it can say
    runs = (lambda rc: rc not in NOT_STARTED) if name == "redis-check-aof" else None
    path, text = runner.locate(name, candidates, runs=runs)
    if runs is not None:
        return path, None
    for pattern in VERSION_PATTERNS:
        m = re.search(pattern, text)
        if m:
            return path, m.group(1)
    return path, None


class RdbChecker(object):
    """redis-check-rdb reading a stream on its stdin: fed chunk by chunk while
    the same bytes go to storage, so the check costs no extra read."""

    def __init__(self, runner, tool, what):
        self.what = what
        self.handle = runner.spawn([tool, "/dev/stdin"], stdin=True)
        self.reader = BackgroundReader(self.handle.stdout)
        self.reader.start()
        self.feeder = ProcessFeeder(self.handle)
        self.facts = None

    def feed(self, data):
        return self.feeder(data)

    def finish(self, timeout=600):
        self.feeder.close()
        rc = self.handle.wait(timeout)
        self.reader.join()
        text = bytes(self.reader.data).decode("utf-8", "replace")
        if rc != 0 or "RDB looks OK" not in text:
            raise IntegrityError("redis-check-rdb rejected %s (exit %s): %s" % (self.what, rc, error_lines(text)),
                                 "The RDB is damaged or was cut short; nothing was recorded as a backup")
        self.facts = parse_check_output(text)
        return self.facts

    def close(self):
        self.feeder.close()
        self.handle.close()


def check_rdb_file(runner, tool, path, what=None):
    rc, out, err = runner.run([tool, path], timeout=3600)
    text = out.decode("utf-8", "replace") + err
    if rc != 0 or "RDB looks OK" not in text:
        raise IntegrityError("redis-check-rdb rejected %s (exit %s): %s" % (what or path, rc, error_lines(text)),
                             "The RDB is damaged; use another backup")
    return parse_check_output(text)


_AOF_ANALYZED = re.compile(r"AOF analyzed: filename=(.+?), size=(\d+), ok_up_to=(\d+), ok_up_to_line=\d+, diff=(\d+)")


# A tool in a container cannot see drkit's copy of the AOF: the copy goes in
# as a tar on the exec's stdin, is unpacked into a private temp directory of
# the container (mktemp -d), checked there and removed on every exit of the
# shell (redis-check-aof needs the files of a multi-part AOF side by side;
# it does not read a stream).
_CHECK_IN_CONTAINER = """set -e
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
tar -x -C "$d" -f -
"$0" "$d/$1"
"""


def check_aof_copy(runner, tool, copy_dir, manifest_name):
    """check_aof_dir on drkit's copy of a multi-part AOF in ``copy_dir``,
    with the tool where ``runner`` runs it: on this machine, or inside the
    container (the copy streamed in as a tar, unpacked in a temp directory
    that the shell removes)."""
    if shares_files(runner):
        return check_aof_dir(runner, tool, os.path.join(copy_dir, manifest_name))
    handle = runner.spawn(["sh", "-c", _CHECK_IN_CONTAINER, tool, manifest_name], stdin=True)
    with handle:
        reader = BackgroundReader(handle.stdout)
        reader.start()
        try:
            with tarfile.open(fileobj=handle.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(copy_dir)):
                    tar.add(os.path.join(copy_dir, name), arcname=name, recursive=False)
        except OSError:
            pass  # the shell stopped reading (no tar, no space): its exit code and stderr say why
        handle.stdin.close()
        rc = handle.wait(3600)
        reader.join()
        text = bytes(reader.data).decode("utf-8", "replace") + handle.stderr_text()
    return _aof_verdict(rc, text)


def check_aof_dir(runner, tool, manifest_path, what=None):
    """redis-check-aof on a multi-part AOF manifest. Returns (ok, facts,
    text); facts has 'files' {name: (size, ok_up_to)} and the base RDB facts."""
    rc, out, err = runner.run([tool, manifest_path], timeout=3600)
    return _aof_verdict(rc, out.decode("utf-8", "replace") + err)


def _aof_verdict(rc, text):
    files = {}
    for m in _AOF_ANALYZED.finditer(text):
        files[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    facts = parse_check_output(text)
    facts["files"] = files
    ok = rc == 0 and "All AOF files and manifest are valid" in text
    return ok, facts, text


def parse_aof_manifest(text):
    """Lines 'file <name> seq <n> type <b|h|i>' -> list of dicts (in order)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
        except ValueError:
            raise IntegrityError("Cannot parse AOF manifest line %r" % line)
        entry = dict(zip(parts[0::2], parts[1::2]))
        if "file" not in entry or "type" not in entry:
            raise IntegrityError("AOF manifest line %r lacks file/type" % line)
        if "/" in entry["file"] or entry["file"] in (".", ".."):
            raise IntegrityError("AOF manifest names an unsafe file %r" % entry["file"])
        out.append(entry)
    return out
