# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away PostgreSQL server in a container of the production
container's image (its own PostgreSQL version and client tools), for
pg_verify's test-restore of a backup of a database that runs in a
container: the production container bears none of the restore's load.

The container sleeps (the image's entrypoint bypassed); drkit then runs,
through ``docker exec`` as the image's ``postgres`` user, ``initdb`` into
a private directory (mktemp -d, 0700) with a random password read from
stdin (in no argv, no environment, no file), and ``postgres`` bound to
127.0.0.1 on a free port of the host network. pg_restore runs in the same
container; the row counts and checks connect from this host. The
container, its writable layer and its anonymous volumes are removed on
every way out (ScratchContainer).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import posixpath
import secrets
import time

from ..container.runner import ContainerRunner
from ..container.scratch import ScratchContainer
from ..core.errors import ToolError, WaitTimeout
from ..core.scratch import LOOPBACK, free_port
from .client import connect, locate_tool

SUPERUSER = "postgres"
# a test-restore survives no crash: durability off makes it faster
SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_wal_size=4GB")


class PostgresInContainer(object):
    """``with PostgresInContainer(...) as srv``: srv.cp (connection
    parameters from this host), srv.runner (tools inside the container),
    srv.version (the server's version text)."""

    def __init__(self, client, docker_host, image, version_num=None, bin_dir=None, timeout=600, user=SUPERUSER):
        self.image = image
        self.version_num = version_num
        self.bin_dir = bin_dir
        self.timeout = timeout
        self.user = user
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.box = ScratchContainer(client, docker_host, image, ["86400"], entrypoint=["sleep"], user="0:0",
                                    what="pg-scratch")
        self.runner = None
        self.handle = None
        self.version = None

    @property
    def name(self):
        return self.box.name

    @property
    def cp(self):
        return {"login_host": LOOPBACK, "port": self.port, "login_user": SUPERUSER, "login_password": self.password,
                "ssl_mode": "disable", "connect_timeout": 10}

    def _run(self, argv, what, input_data=None, timeout=600):
        rc, out, err = self.runner.run(argv, input_data=input_data, timeout=timeout)
        if rc != 0:
            raise ToolError("%s in scratch container %s (image %s) failed (exit %s): %s" % (
                what, self.name, self.image, rc, (err or out.decode("utf-8", "replace")).strip()[-600:]),
                "The image needs a '%s' user and PostgreSQL's server binaries (initdb, postgres); set "
                "pg_bin_dir to where they are inside it" % self.user)
        return out.decode("utf-8", "replace").strip()

    def start(self):
        try:
            self.box.create().start()
            self.runner = ContainerRunner(self.box.client, self.box.id, self.box.docker_host, user=self.user)
            initdb = locate_tool(self.runner, "initdb", self.version_num, self.bin_dir)[0]
            bin_dir = posixpath.dirname(initdb)
            self.version = locate_tool(self.runner, "postgres", self.version_num, bin_dir)[1]
            work = self._run(["mktemp", "-d", "/tmp/drkit-pg-scratch-XXXXXXXX"], "mktemp")
            data = posixpath.join(work, "data")
            self._run([initdb, "-D", data, "-U", SUPERUSER, "-A", "scram-sha-256", "--pwfile=/dev/stdin",
                       "--no-locale", "-E", "UTF8", "--no-sync"], "initdb",
                      input_data=(self.password + "\n").encode("utf-8"))
            argv = [posixpath.join(bin_dir, "postgres"), "-D", data, "-c", "listen_addresses=%s" % LOOPBACK,
                    "-c", "port=%d" % self.port, "-c", "unix_socket_directories=%s" % work]
            for setting in SETTINGS:
                argv += ["-c", setting]
            self.handle = self.runner.spawn(argv, stdout=False)
            self._wait_ready(time.time() + self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, deadline):
        last = None
        while True:
            if self.handle.poll() is not None:
                raise ToolError("The scratch PostgreSQL in container %s (image %s) exited (code %s): %s" % (
                    self.name, self.image, self.handle.returncode, self.handle.stderr_text().strip()[-800:]),
                    "Is the image's PostgreSQL older than the backup's?")
            try:
                connect(self.cp, "postgres").close()
                return
            except Exception as e:  # noqa: BLE001 - starting up: retried until the deadline  # pylint: disable=broad-except
                last = e
            if time.time() > deadline:
                raise WaitTimeout("The scratch PostgreSQL in container %s did not answer on %s:%d within the "
                                  "timeout (%s)" % (self.name, LOOPBACK, self.port, str(last)[:300]),
                                  "Raise timeout; read docker logs %s" % self.name)
            time.sleep(0.2)

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.box.remove()  # force: the server goes with its container

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False
