# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack bin/drkit and the engine (plugins/module_utils/**.py of the collection,
without the demo package and the Ansible adapter) into one tar for
ansible.builtin.unarchive (one module call instead of one per file).

Runs on the controller (a pipe lookup). Members are sorted, owned by root
with fixed modes and a fixed mtime, so the same sources give the same tar and
unarchive's comparison reports no change on a second run. The tar is named by
its content's hash in the temp directory and reused; prints its path.

usage: pack_engine.py COLLECTION_ROOT          print the tar's path
       pack_engine.py COLLECTION_ROOT --list   print the engine's files (JSON list of
                                               paths relative to lib/drkit_engine)
"""

import glob
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time

MTIME = 946684800  # 2000-01-01: fixed, so repacking identical sources gives an identical tar


# Not shipped to database hosts: demo code, and the one file that imports Ansible.
EXCLUDED = ("demo/", "_ansible.py")


def engine_files(root):
    base = os.path.join(root, "plugins", "module_utils")
    for path in sorted(glob.glob(os.path.join(base, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        if not rel.startswith(EXCLUDED):
            yield rel, path


def members(root):
    yield "bin/drkit", os.path.join(root, "bin", "drkit"), 0o755
    for rel, path in engine_files(root):
        yield "lib/drkit_engine/" + rel, path, 0o644


def main():
    root = sys.argv[1]
    if sys.argv[2:] == ["--list"]:
        sys.stdout.write(json.dumps([rel for rel, _path in engine_files(root)]))
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, path, mode in members(root):
            with open(path, "rb") as fh:
                data = fh.read()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    out = os.path.join(tempfile.gettempdir(), "drkit-engine-%s.tar" % hashlib.sha256(data).hexdigest()[:16])
    if not os.path.exists(out):
        fd, tmp = tempfile.mkstemp(prefix=".drkit-engine-", dir=os.path.dirname(out))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.rename(tmp, out)
    # tars of older versions of the sources, unused for a day
    for old in glob.glob(os.path.join(os.path.dirname(out), "drkit-engine-*.tar")):
        try:
            if old != out and os.stat(old).st_mtime < time.time() - 86400:
                os.unlink(old)
        except OSError:
            pass
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
