# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away redis-server in a container of the production container's
image (its own version of Redis), for a test-restore and for turning an RDB
into an AOF or back when restoring into a container: verify.Loaded's twin.

The container runs redis-server directly (the image's entrypoint bypassed),
as root (it reads the files drkit placed, whatever the image's user), on the
host network bound to 127.0.0.1 on a free port, with a random password. Its
configuration, holding that password, and the backup's files are placed
before it starts through the archive API into /drkit-scratch (0700): the
password is in no argv and no environment that docker inspect shows.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import posixpath
import secrets
import time

from ..container.scratch import ScratchContainer, TarBuilder, get_tree, put_tar
from ..core.errors import SourceError, ToolError, WaitTimeout
from ..core.scratch import LOOPBACK, free_port
from .artifacts import aof_manifest_path
from .client import RedisClient, keyspace
from .server import wait_loaded

SCRATCH_DIR = "/drkit-scratch"


def _conf(port, password, appendonly, appendfilename):
    lines = ["bind %s" % LOOPBACK, "protected-mode yes", "port %d" % port, "daemonize no",
             "dir %s" % SCRATCH_DIR, "dbfilename dump.rdb", "appendonly %s" % ("yes" if appendonly else "no"),
             "appenddirname appendonlydir", 'save ""', 'logfile ""',
             'requirepass "%s"' % password]
    if appendfilename:
        lines.append('appendfilename "%s"' % appendfilename)
    return ("\n".join(lines) + "\n").encode("utf-8")


class LoadedInContainer(object):
    """A scratch redis-server in a container of ``image`` that loaded an RDB
    (``layout`` rdb, ``path`` a local dump.rdb) or an AOF directory."""

    def __init__(self, client, docker_host, image, layout, path, timeout, appendfilename=None):
        self.layout = layout
        self.path = path
        self.timeout = timeout
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.appendfilename = appendfilename
        if layout == "aof":
            self.appendfilename = os.path.basename(aof_manifest_path(path))[:-len(".manifest")]
        self.box = ScratchContainer(client, docker_host, image, [posixpath.join(SCRATCH_DIR, "redis.conf")],
                                    entrypoint=["redis-server"], user="0:0", what="redis-scratch")
        self.client = None

    @property
    def name(self):
        return self.box.name

    def _files(self):
        tar = TarBuilder()
        tar.add_dir("drkit-scratch", 0o700)
        tar.add_bytes("drkit-scratch/redis.conf",
                      _conf(self.port, self.password, self.layout == "aof", self.appendfilename))
        if self.layout == "rdb":
            tar.add_file("drkit-scratch/dump.rdb", self.path)
        else:
            tar.add_dir("drkit-scratch/appendonlydir", 0o700)
            for n in sorted(os.listdir(self.path)):
                tar.add_file("drkit-scratch/appendonlydir/" + n, os.path.join(self.path, n))
        return tar

    def start(self):
        try:
            self.box.create()
            put_tar(self.box.client, self.box.id, "/", self._files(), "the backup")
            self.box.start()
            self.client = self._connect(time.time() + self.timeout)
            wait_loaded(self.client, time.time() + self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _connect(self, deadline):
        cp = {"host": LOOPBACK, "port": self.port, "user": None, "password": self.password, "tls": False,
              "tls_ca_cert": None, "tls_cert": None, "tls_key": None, "tls_validate_certs": True,
              "connect_timeout": 5}
        last = None
        while True:
            running, state = self.box.running()
            if not running:
                raise ToolError("The scratch redis-server in container %s (image %s) exited (code %s): %s" % (
                    self.box.name, self.box.image, state.get("ExitCode"), self.box.logs().strip()[-800:]),
                    "The backup did not load with this image's Redis: is the image older than the backup's "
                    "Redis?")
            client = RedisClient(cp)
            try:
                client.connect()
                client.call("PING")
                return client
            except SourceError as e:
                client.close()
                if "LOADING" in str(e):
                    return RedisClient(cp).connect()
                last = e
            if time.time() > deadline:
                raise WaitTimeout("The scratch redis-server in container %s did not answer on %s:%d (%s)" % (
                    self.box.name, LOOPBACK, self.port, last), "Raise timeout; read docker logs of it")
            time.sleep(0.1)

    def keyspace(self):
        return keyspace(self.client.info("keyspace"))

    def fetch(self, name, dest):
        """A file or directory of the scratch server's dir, into ``dest``."""
        get_tree(self.box.client, self.box.id, posixpath.join(SCRATCH_DIR, name), dest)
        return os.path.join(dest, name)

    def close(self):
        if self.client:
            self.client.close()
            self.client = None
        self.box.remove()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False
