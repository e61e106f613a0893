# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack bin/drkit and plugins/module_utils/*.py of the collection into one
tar for ansible.builtin.unarchive (one module call instead of one per file).

Runs on the controller (a pipe lookup). Members are sorted, owned by root
with fixed modes and a fixed mtime, so the same sources give the same tar and
unarchive's comparison reports no change on a second run. The tar is named by
its content's hash in the temp directory and reused; prints its path.

usage: pack_engine.py COLLECTION_ROOT
"""

import glob
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time

MTIME = 946684800  # 2000-01-01: fixed, so repacking identical sources gives an identical tar


def members(root):
    yield "bin/drkit", os.path.join(root, "bin", "drkit"), 0o755
    for path in sorted(glob.glob(os.path.join(root, "plugins", "module_utils", "*.py"))):
        yield "lib/drkit_engine/" + os.path.basename(path), path, 0o644


def main():
    root = sys.argv[1]
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
