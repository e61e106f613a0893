# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Docker Engine of the tests' own, and the images its containers run.

The daemon (Debian's docker.io) is started ONLY as::

    dockerd --bridge=none --iptables=false --ip6tables=false \\
            --data-root D --exec-root E --pidfile P --config-file C -H unix://S

with every path below one temp directory (the config file is an empty one of
ours, so a daemon.json on the machine cannot change what runs), and stopped
by its PID. No bridge, no network is ever created and no packet filter
touched: containers run with ``network_mode: host`` and their servers bind
127.0.0.1 on free ports. dockerd runs its own containerd below the exec root.

Images cannot be pulled here: they are built from Debian packages with
mmdebstrap (``--variant=apt``) and imported (``docker import``). The rootfs
tarball is cached in IMAGE_CACHE (outside the checkout, kept between runs and
by CI's machine), named after a hash of its recipe, so a run only builds when
the recipe changed and otherwise only imports. docs/containers.md gives the
equivalent Dockerfile and the measured build and import times.
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

try:
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import ScratchServer, kill_group, tail_file
except ImportError:  # the benchmarks load the engine as drkit_engine (scripts/_engine.py) first
    from drkit_engine.core.scratch import ScratchServer, kill_group, tail_file

IMAGE_CACHE = os.environ.get("DRKIT_TEST_IMAGE_CACHE", "/var/cache/drkit-test-images")
SOURCES = "/etc/apt/sources.list.d/debian.sources"  # the machine's Debian mirror, when it has one

# The test image: PostgreSQL 15 and Redis from Debian 12. The hooks run in the
# new root before packages are configured (essential) or at the end (customize):
# no "main" cluster from postgresql-common, a data directory owned by postgres
# (a volume mounted there starts with that owner), no docs.
PG_REDIS_RECIPE = {
    "repository": "drkit-test/pg-redis",
    "suite": "bookworm",
    "variant": "apt",
    "include": ["postgresql-15", "redis-server", "procps"],
    "dpkgopt": ["path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*",
                "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias"],
    "essential_hook": ['mkdir -p "$1/etc/postgresql-common/createcluster.d"',
                       'echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/drkit.conf"'],
    "customize_hook": ['chroot "$1" install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data',
                       'chroot "$1" install -d -o redis -g redis -m 0750 /data',
                       'rm -rf "$1/var/cache/apt/archives"/*.deb "$1/var/lib/apt/lists"/*'],
}


class DockerEngineError(RuntimeError):
    pass


def find_dockerd():
    for path in (shutil.which("dockerd"), "/usr/sbin/dockerd", "/usr/bin/dockerd"):
        if path and os.access(path, os.X_OK):
            return path
    raise DockerEngineError("dockerd is not installed: run scripts/bootstrap.sh as root (Debian package docker.io)")


class DockerEngine(ScratchServer):
    """dockerd on a unix socket below ``base_dir`` (keep the path short: unix
    socket paths have a 108-byte limit). ``client()``: a docker.APIClient."""

    what = "dockerd"
    ready_what = "answer on its socket"
    start_timeout = 90
    stop_timeout = 60

    def __init__(self, base_dir):
        super(DockerEngine, self).__init__(base_dir, port=0)  # no TCP port: a unix socket only
        self.socket = os.path.join(self.base_dir, "docker.sock")
        self.url = "unix://" + self.socket
        self.log = os.path.join(self.base_dir, "dockerd.log")
        self.pidfile = os.path.join(self.base_dir, "dockerd.pid")
        self._client = None

    def _prepare(self):
        for sub in ("data", "exec"):
            os.makedirs(os.path.join(self.base_dir, sub), mode=0o700, exist_ok=True)
        with open(os.path.join(self.base_dir, "daemon.json"), "w") as fh:
            fh.write("{}\n")

    def _command(self):
        argv = [find_dockerd(), "--bridge=none", "--iptables=false", "--ip6tables=false",
                "--data-root", os.path.join(self.base_dir, "data"),
                "--exec-root", os.path.join(self.base_dir, "exec"),
                "--pidfile", self.pidfile,
                "--config-file", os.path.join(self.base_dir, "daemon.json"),
                "-H", self.url]
        return argv, {"cwd": self.base_dir}

    def _output_file(self):
        return self.log

    def _log_tail(self):
        return tail_file(self.log)

    def _where(self):
        return self.socket

    def _ready(self):
        if not os.path.exists(self.socket):
            return False
        try:
            return self.client().ping()
        except Exception:  # noqa: BLE001 - not up yet
            self._client = None
            return False

    def _signal(self, proc, sig):
        # dockerd by its PID: it stops its containerd and containers itself;
        # the whole group only when it will not go (_escalate)
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _escalate(self, proc):
        kill_group(proc, signal.SIGKILL)
        proc.wait()

    def client(self):
        if self._client is None:
            import docker

            self._client = docker.APIClient(base_url=self.url, version="auto", timeout=120)
        return self._client

    def stop(self, mode="fast", timeout=None):
        if self.is_running():
            try:
                self.remove_all_containers()
            except Exception:  # noqa: BLE001 - dockerd stops them anyway
                pass
        if self._client is not None:
            self._client.close()
            self._client = None
        super(DockerEngine, self).stop(mode=mode, timeout=timeout)

    def destroy(self):
        """Stop, then unmount what dockerd leaves mounted below base_dir (the
        bind mount of its network namespace, exec/netns/default; rmtree
        would stop at it), then remove base_dir."""
        try:
            self.stop(mode="fast")
        finally:
            for path in mounts_below(self.base_dir):
                subprocess.run(["umount", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=False)
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def remove_all_containers(self):
        api = self.client()
        for c in api.containers(all=True):
            api.remove_container(c["Id"], force=True, v=True)

    # -- images ------------------------------------------------------------

    def ensure_image(self, recipe=None):
        """The image of ``recipe`` (default PG_REDIS_RECIPE) in this engine,
        imported from the cached rootfs tarball, which is built first when
        missing. Returns (image reference, {"built_seconds", "import_seconds"})."""
        recipe = recipe or PG_REDIS_RECIPE
        tarball, built = cached_rootfs(recipe)
        ref = "%s:%s" % (recipe["repository"], recipe_key(recipe))
        t0 = time.time()
        api = self.client()
        if not api.images(name=ref):
            api.import_image_from_file(tarball, repository=recipe["repository"], tag=recipe_key(recipe))
        if not api.images(name=ref):
            raise DockerEngineError("docker import of %s did not create %s" % (tarball, ref))
        return ref, {"built_seconds": built, "import_seconds": round(time.time() - t0, 1)}


def mounts_below(directory):
    """Mount points below ``directory``, deepest first."""
    prefix = os.path.abspath(directory).rstrip("/") + "/"
    found = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def recipe_key(recipe):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def mmdebstrap_argv(recipe, target):
    argv = ["mmdebstrap", "--quiet", "--mode=root", "--format=tar", "--variant=%s" % recipe["variant"],
            "--include=%s" % ",".join(recipe["include"])]
    argv += ["--dpkgopt=%s" % o for o in recipe["dpkgopt"]]
    argv += ["--essential-hook=%s" % h for h in recipe["essential_hook"]]
    argv += ["--customize-hook=%s" % h for h in recipe["customize_hook"]]
    argv += [recipe["suite"], target]
    if os.path.exists(SOURCES):
        argv.append(SOURCES)
    return argv


def cached_rootfs(recipe):
    """Path of the recipe's rootfs tarball in IMAGE_CACHE, built with
    mmdebstrap when missing (one builder at a time: a lock file), and the
    seconds the build took (None when it was cached)."""
    os.makedirs(IMAGE_CACHE, mode=0o755, exist_ok=True)
    name = "%s-%s.tar" % (recipe["repository"].replace("/", "_"), recipe_key(recipe))
    path = os.path.join(IMAGE_CACHE, name)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path, None
        if not shutil.which("mmdebstrap"):
            raise DockerEngineError("mmdebstrap is not installed: run scripts/bootstrap.sh as root "
                                    "(Debian package mmdebstrap) to build the test image")
        tmp = path + ".tmp"
        t0 = time.time()
        with open(path + ".log", "w") as log:
            res = subprocess.run(mmdebstrap_argv(recipe, tmp), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, check=False, timeout=900)
        if res.returncode != 0:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise DockerEngineError("mmdebstrap failed (exit %s) building %s: %s" % (
                res.returncode, name, tail_file(path + ".log")))
        os.rename(tmp, path)
        return path, round(time.time() - t0, 1)
