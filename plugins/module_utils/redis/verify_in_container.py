# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_verify with ``verify_in: container``: the test-restore inside the
production container itself, only when asked (it takes that container's
memory and CPU while the backup loads).

A second redis-server runs there through ``docker exec``, in a private
temp directory (mktemp -d, 0700) that receives the backup through the
Engine's archive API, with no TCP port at all (``port 0``): it listens only
on a Unix socket in that directory, so it needs no password and no network,
whatever the container's network mode; ``redis-cli`` in the container
reads its INFO. The server is shut down (SHUTDOWN NOSAVE) and the directory
removed on every way out.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import time

from ..container.runner import ContainerRunner
from ..container.scratch import TarBuilder, put_tar
from ..core.errors import ToolError, WaitTimeout
from .artifacts import aof_manifest_path, check_structure_with
from .client import keyspace, parse_info


class _InContainer(object):
    def __init__(self, runner, layout, path):
        self.runner = runner
        self.layout = layout
        self.path = path
        self.dir = None
        self.sock = None
        self.handle = None

    def _run(self, argv, what, timeout=120):
        rc, out, err = self.runner.run(argv, timeout=timeout)
        if rc != 0:
            raise ToolError("%s in container %s failed (exit %s): %s" % (
                what, self.runner.container, rc, (err or out.decode("utf-8", "replace")).strip()[-300:]),
                "verify_in: container needs %s in the container; or use verify_in: scratch" % argv[0])
        return out.decode("utf-8", "replace").strip()

    def place(self):
        self.dir = self._run(["mktemp", "-d", "/tmp/drkit-verify-XXXXXXXX"], "mktemp")
        self.sock = posixpath.join(self.dir, "redis.sock")
        uid = int(self._run(["id", "-u"], "id"))
        gid = int(self._run(["id", "-g"], "id"))
        tar = TarBuilder()
        if self.layout == "rdb":
            tar.add_file("dump.rdb", self.path, 0o600, uid, gid)
        else:
            tar.add_dir("appendonlydir", 0o700, uid, gid)
            for n in sorted(os.listdir(self.path)):
                tar.add_file("appendonlydir/" + n, os.path.join(self.path, n), 0o600, uid, gid)
        put_tar(self.runner.client, self.runner.container, self.dir, tar, "the backup")

    def start(self, timeout):
        argv = ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--dir", self.dir, "--dbfilename", "dump.rdb", "--save", "", "--daemonize", "no",
                "--logfile", posixpath.join(self.dir, "redis.log"),
                "--appendonly", "yes" if self.layout == "aof" else "no", "--appenddirname", "appendonlydir"]
        if self.layout == "aof":
            argv += ["--appendfilename", os.path.basename(aof_manifest_path(self.path))[:-len(".manifest")]]
        self.handle = self.runner.spawn(argv, stdout=False)
        deadline = time.time() + timeout
        while True:
            rc, out, _err = self.runner.run(["redis-cli", "-s", self.sock, "INFO", "persistence"], timeout=60)
            info = parse_info(out) if rc == 0 else {}
            if rc == 0 and "loading" in info and not info.get("loading") and not info.get("async_loading"):
                return
            if self.handle.poll() is not None:
                raise ToolError("The test redis-server in container %s exited (code %s): %s" % (
                    self.runner.container, self.handle.returncode, self._log()),
                    "The backup did not load with this container's Redis")
            if time.time() > deadline:
                raise WaitTimeout("The test redis-server in container %s did not load the backup within %.0f s"
                                  % (self.runner.container, timeout), "Raise timeout")
            time.sleep(0.1)

    def _log(self):
        rc, out, _err = self.runner.run(["tail", "-n", "5", posixpath.join(self.dir, "redis.log")], timeout=60)
        return out.decode("utf-8", "replace").strip()[-600:] if rc == 0 else ""

    def keyspace(self):
        return keyspace(parse_info(self._run(["redis-cli", "-s", self.sock, "INFO", "keyspace"], "redis-cli")))

    def close(self):
        if self.handle is not None:
            self.runner.run(["redis-cli", "-s", self.sock, "SHUTDOWN", "NOSAVE"], timeout=60)
            self.handle.close()
            self.handle = None
        if self.dir:
            self.runner.run(["rm", "-rf", "--", self.dir], timeout=600)
            self.dir = None


def load_in_container(api, docker_host, name, layout, path, level, p, v, progress):
    """Structure check with the container's tools and, for level restore,
    the load into a second redis-server inside it: (facts, keyspace)."""
    runner = ContainerRunner(api, name, docker_host)
    runner.check()
    progress("checking its structure with the tools of container %s" % name)
    facts = check_structure_with(runner, layout, path, p["redis_bin_dir"])
    if level != "restore":
        return facts, None
    progress("loading it into a second redis-server inside container %s (Unix socket only)" % name)
    srv = _InContainer(runner, layout, path)
    v.cleanup(srv.close)
    t2 = time.time()
    srv.place()
    srv.start(p["timeout"])
    v.timings["restore_seconds"] = round(time.time() - t2, 3)
    actual = srv.keyspace()
    srv.close()
    return facts, actual
