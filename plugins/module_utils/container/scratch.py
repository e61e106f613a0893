# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throw-away containers: a test-restore's server started from the
production container's image, or a helper that shares a stopped container's
volumes to move files in them. Each is labelled (``io.drkit.scratch``: who
made it) and removed, forced, on every way out of its block; the callers
hold signals_raise() around it, so a SIGTERM unwinds through the removal.

Files go in and out through the Engine's archive API (put_archive of a tar
built here, get_archive read with tarfile): the container needs no tool for
that, and nothing goes through a shell.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import os
import tarfile
import tempfile
import uuid

from ..core import janitor
from ..core.errors import SourceError, ToolError
from ..core.signals import signals_deferred
from .runner import ContainerRunner, _ChunkReader

LABEL = "io.drkit.scratch"


class TarBuilder(object):
    """A tar for put_archive, spooled to a local temp file (a backup can be
    big): directories, files from this machine and bytes, each with the
    owner and mode it must have inside the container."""

    def __init__(self):
        self.fh = tempfile.TemporaryFile(prefix="drkit-put-")
        self.tar = tarfile.open(fileobj=self.fh, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, mode, uid, gid, kind=tarfile.REGTYPE, size=0):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.size = kind, mode, uid, gid, size
        return info

    def add_dir(self, name, mode=0o700, uid=0, gid=0):
        self.tar.addfile(self._info(name, mode, uid, gid, tarfile.DIRTYPE))

    def add_bytes(self, name, data, mode=0o600, uid=0, gid=0):
        self.tar.addfile(self._info(name, mode, uid, gid, size=len(data)), io.BytesIO(data))

    def add_file(self, name, path, mode=0o600, uid=0, gid=0):
        with open(path, "rb") as f:
            self.tar.addfile(self._info(name, mode, uid, gid, size=os.fstat(f.fileno()).st_size), f)

    def finish(self):
        """The tar, rewound, for put_archive (closed by the caller)."""
        self.tar.close()
        self.fh.seek(0)
        return self.fh

    def close(self):
        self.fh.close()


def put_tar(client, container, path, builder, what):
    from docker.errors import DockerException  # pylint: disable=import-outside-toplevel
    data = builder.finish()
    try:
        ok = client.put_archive(container, path, data)
    except DockerException as e:
        raise SourceError("Cannot place %s into %s of container %s: %s" % (what, path, container, str(e)[:300]),
                          "Check that %s exists in the container and the Docker Engine has space" % path)
    finally:
        builder.close()
    if not ok:
        raise SourceError("The Docker Engine refused to place %s into %s of container %s" % (what, path, container))


def get_tree(client, container, path, dest):
    """get_archive of ``path`` (a directory or file of the container)
    unpacked into the local directory ``dest`` (regular files and
    directories only, no path outside it). Returns the names unpacked."""
    from docker.errors import DockerException  # pylint: disable=import-outside-toplevel
    try:
        chunks, _stat = client.get_archive(container, path)
    except DockerException as e:
        raise SourceError("Cannot read %s from container %s: %s" % (path, container, str(e)[:300]))
    names = []
    with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts:
                raise SourceError("Unsafe name %r in the archive of %s" % (member.name, path))
            target = os.path.join(dest, member.name)
            if member.isdir():
                os.makedirs(target, 0o700, exist_ok=True)
            elif member.isfile():
                os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
                src = tar.extractfile(member)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while True:
                        data = src.read(1 << 20)
                        if not data:
                            break
                        out.write(data)
            names.append(member.name)
    return names


class ScratchContainer(object):
    """A container from ``image`` for the length of a block: created, started,
    removed (force) on the way out, its own anonymous volumes with it unless
    it shares another container's (``volumes_from``: those stay)."""

    def __init__(self, client, docker_host, image, command, entrypoint=None, network_mode="host",
                 volumes_from=None, user=None, what="scratch"):
        self.client = client
        self.docker_host = docker_host
        self.image = image
        self.command = list(command)
        self.entrypoint = entrypoint
        self.network_mode = network_mode
        self.volumes_from = list(volumes_from or [])
        self.user = user
        self.name = "drkit-%s-%s" % (what, uuid.uuid4().hex[:12])
        self.id = None
        self._asked = False

    def create(self):
        from docker.errors import DockerException  # pylint: disable=import-outside-toplevel
        host_config = self.client.create_host_config(network_mode=self.network_mode,
                                                     volumes_from=self.volumes_from or None)
        self._asked = True  # from here a failed call may leave it created without our knowing its id
        try:
            # A signal during the call waits for its answer: cut short, the Engine still creates the
            # container after our removal by name found nothing (seen in CI).
            with signals_deferred():
                self.id = self.client.create_container(
                    self.image, command=self.command, entrypoint=self.entrypoint, name=self.name,
                    host_config=host_config, user=self.user, labels={LABEL: janitor.owner_tag()},
                    network_disabled=self.network_mode == "none")["Id"]
        except DockerException as e:
            raise ToolError("Cannot create a scratch container from image %s: %s" % (self.image, str(e)[:300]),
                            "Check that the image is on the Docker Engine at %s (docker images)" % self.docker_host)
        return self

    def start(self):
        from docker.errors import DockerException  # pylint: disable=import-outside-toplevel
        try:
            self.client.start(self.id)
        except DockerException as e:
            raise ToolError("Cannot start scratch container %s (image %s): %s" % (
                self.name, self.image, str(e)[:300]), "Read docker logs %s" % self.name)
        return self

    def runner(self):
        return ContainerRunner(self.client, self.id, self.docker_host)

    def running(self):
        state = self.client.inspect_container(self.id).get("State") or {}
        return bool(state.get("Running")), state

    def logs(self, limit=2000):
        try:
            return self.client.logs(self.id, tail=30).decode("utf-8", "replace")[-limit:]
        except Exception:  # noqa: BLE001 - only for an error message  # pylint: disable=broad-except
            return ""

    def remove(self):
        if self.id is None and not self._asked:
            return
        from docker.errors import DockerException, NotFound  # pylint: disable=import-outside-toplevel
        try:
            # by its name when the create call was cut short (a signal) before it answered with the id
            self.client.remove_container(self.id or self.name, force=True, v=not self.volumes_from)
        except NotFound:
            pass
        except DockerException:
            # still there: say so, with its name, rather than hide a leftover
            raise ToolError("Could not remove scratch container %s" % self.name,
                            "Remove it by hand: docker rm -f %s" % self.name)
        self.id = None
        self._asked = False

    def __enter__(self):
        try:
            return self.create()
        except BaseException:
            self.remove()  # __exit__ does not run when __enter__ fails
            raise

    def __exit__(self, *exc):
        self.remove()
        return False
