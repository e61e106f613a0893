# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real Azure Blob Storage server for the tests: Azurite (npm ``azurite``,
installed by scripts/bootstrap.sh into /var/cache/drkit-test-npm, or
$DRKIT_TEST_NPM_DIR), blob service only.

* ``azurite-blob`` listens on ``--blobHost 127.0.0.1 --blobPort P`` only
  (the queue and table services are other binaries, not started).
* ``--disableTelemetry``: Azurite 3.37 collects telemetry by default; nothing
  of the tests may leave loopback.
* ``--skipApiVersionCheck``: obstore (object_store) and azure-storage-blob
  may send a newer x-ms-version than this Azurite knows.
* ``--loose``: headers Azurite does not implement are ignored instead of
  refused (none we rely on: the create-only test checks If-None-Match is
  honoured).
* ``--disableProductStyleUrl``: the account is always the first path
  segment (http://127.0.0.1:P/ACCOUNT/container/blob), never taken from the
  host name.
* Its own account with a random key (AZURITE_ACCOUNTS), not the well-known
  devstoreaccount1 key, so a client that falls back to the emulator's
  defaults fails.
* ``--location``: its database and blobs in the fixture's directory.
"""

import base64
import os
import secrets
import shutil
import socket
import uuid

try:
    from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import ScratchServer, tail_file
except ImportError:  # the benchmarks load the engine as drkit_engine (scripts/_engine.py) first
    from drkit_engine.core.scratch import ScratchServer, tail_file

NPM_DIR = os.environ.get("DRKIT_TEST_NPM_DIR", "/var/cache/drkit-test-npm")
ACCOUNT = "drkitacct"


class AzuriteError(RuntimeError):
    pass


def find_azurite():
    cand = os.path.join(NPM_DIR, "node_modules", ".bin", "azurite-blob")
    if os.access(cand, os.X_OK):
        return cand
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise AzuriteError("Azurite's azurite-blob was not found in %s nor on PATH; install it with "
                       "scripts/bootstrap.sh (npm install --prefix %s azurite)" % (NPM_DIR, NPM_DIR))


class Azurite(ScratchServer):
    """``azurite-blob`` on a free loopback port. Attributes: account,
    account_key, endpoint (path-style, the account in the path),
    connection_string, base_dir, log_file."""

    what = "Azurite"
    stop_timeout = 15

    def __init__(self, base_dir, binary=None):
        super(Azurite, self).__init__(base_dir)
        self.binary = binary or find_azurite()
        self.data_dir = os.path.join(self.base_dir, "data")
        self.log_file = os.path.join(self.base_dir, "azurite.log")
        self.account = ACCOUNT
        self.account_key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        self.endpoint = None

    def _prepare(self):
        for d in (self.base_dir, self.data_dir):
            os.makedirs(d, 0o700, exist_ok=True)

    def _pick_port(self):
        super(Azurite, self)._pick_port()
        self.endpoint = "http://127.0.0.1:%d/%s" % (self.port, self.account)

    def _command(self):
        argv = [self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", self.data_dir,
                "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--disableProductStyleUrl"]
        env = dict(os.environ, AZURITE_ACCOUNTS="%s:%s" % (self.account, self.account_key))
        return argv, {"cwd": self.base_dir, "env": env}

    def _output_file(self):
        return self.log_file

    def _ready(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /%s?comp=list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                          % self.account.encode())
                return s.recv(16).startswith(b"HTTP/1.1")
        except OSError:
            return False

    def _port_taken(self):
        return "eaddrinuse" in self.log_tail().lower()

    def _log_tail(self):
        return "Log:\n%s" % self.log_tail()

    def log_tail(self, limit=4000):
        return tail_file(self.log_file, limit)

    @property
    def connection_string(self):
        return "DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;" % (
            self.account, self.account_key, self.endpoint)

    # -- administration (azure-storage-blob; the engine uses obstore only)

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name=None):
        name = name or "drkit-%s" % uuid.uuid4().hex[:12]
        self.service().create_container(name)
        return name

    def delete_container(self, name):
        self.service().delete_container(name)

    def sas_token(self, container, permission="racwl", hours=1):
        """A container SAS token signed with the account key; ``permission``
        in Azure's letters (r read, a add, c create, w write, l list, d delete)."""
        import datetime

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        perms = ContainerSasPermissions.from_string(permission)
        return generate_container_sas(self.account, container, account_key=self.account_key, permission=perms,
                                      expiry=datetime.datetime.now(datetime.timezone.utc)
                                      + datetime.timedelta(hours=hours))

    def options(self):
        """drkit's storage options for this server (account key)."""
        return {"azure_account_name": self.account, "azure_account_key": self.account_key,
                "azure_endpoint": self.endpoint}

    def env(self):
        return {"AZURE_STORAGE_ACCOUNT_NAME": self.account, "AZURE_STORAGE_KEY": self.account_key,
                "AZURE_STORAGE_ENDPOINT": self.endpoint}

    def __repr__(self):
        return "<Azurite %s %s>" % (self.endpoint, self.base_dir)
