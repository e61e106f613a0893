# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""az:// storage: Azure Blob Storage on obstore's ``AzureStore`` (the Rust
``object_store`` crate); no request is signed by hand here.

Every data operation is the S3 backend's (storage.s3), through the same
obstore calls, so the two keep the storage contract the same way:

* streams (backup artifacts): obstore's buffered writer, one Put Blob below
  PART_SIZE, otherwise Put Block per PART_SIZE part (at most MAX_INFLIGHT
  in flight) and Put Block List at the end: the blob appears whole or not
  at all;
* create-only writes (WAL, manifests, records, probes): one Put Blob with
  ``If-None-Match: *`` (obstore's ``mode="create"``); Azure answers 409
  BlobAlreadyExists (or 412) when the blob exists: ObjectExists;
* reads resume with ranged GETs carrying If-Match, as on S3.

What differs: Azure has no "multipart upload" to list or abort. The blocks
of a blob that was never committed stay invisible (listing, reads and stat
never see them) and Azure discards them itself after 7 days; obstore has no
call to list or drop them (its abort is a no-op on Azure). So
list_incomplete finds nothing and abort_incomplete has nothing to do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ..core.errors import ConfigError
from .azure_client import make_store, obstore_module
from .s3 import PART_SIZE, S3Storage

# Azure allows 50,000 blocks per blob: about 390 GiB in PART_SIZE blocks.
MAX_BLOCKS = 50000


class AzureStorage(S3Storage):
    """The S3 backend's data path on an AzureStore; what is S3's only
    (boto3 administration, bucket words) is replaced."""

    scheme = "az"
    max_parts = MAX_BLOCKS
    # 409 BlobAlreadyExists, or 412 where a server answers the condition so
    exists_kinds = ("exists", "conflict", "precondition")
    service = "Azure Blob"
    container = "container"
    credentials_hint = ("Check azure_account_name with azure_account_key, azure_sas_token or "
                        "azure_connection_string (or the AZURE_STORAGE_* variables), and the SAS permissions")
    endpoint_option = "azure_endpoint"

    def __init__(self, container, prefix, account_name=None, account_key=None, sas_token=None,
                 connection_string=None, endpoint=None, ca_bundle=None, validate_certs=True, store=None):
        # pylint: disable=super-init-not-called
        # S3Storage.__init__ builds an S3 client; the state it sets is set here
        if not container:
            raise ConfigError("az:// storage_url has no container name", "Write it as az://container/optional/prefix")
        self.bucket = container
        self.prefix = prefix.strip("/")
        self._opts = dict(account_name=account_name, account_key=account_key, sas_token=sas_token,
                          connection_string=connection_string, endpoint=endpoint, ca_bundle=ca_bundle,
                          validate_certs=validate_certs)
        self._admin = None
        self._lock = threading.Lock()
        self._sleep = time.sleep
        self.obstore = obstore_module()[0]
        self.store = store if store is not None else make_store(container, **self._opts)
        self.endpoint_url = self.store.config.get("endpoint") if store is None else endpoint

    @property
    def client(self):
        raise NotImplementedError("Azure Blob storage has no boto3 client")

    def max_object(self):
        return PART_SIZE * self.max_parts

    def describe(self):
        url = "az://%s/%s" % (self.bucket, self.prefix) if self.prefix else "az://%s" % self.bucket
        if self.endpoint_url:
            url += " (endpoint %s)" % self.endpoint_url
        return url

    def versioning(self):
        """Blob versioning and immutability policies are not read (obstore
        has no call for them, Azurite implements neither)."""
        return None

    def list_incomplete(self, prefix=""):
        """Nothing to list (module doc): uncommitted blocks are invisible
        and Azure discards them after 7 days."""
        return iter(())

    def abort_incomplete(self, upload):
        """Nothing to abort (module doc)."""
        return None
