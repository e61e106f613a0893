# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  storage_url:
    description:
      - Where backups live. C(file:///absolute/path) for a directory (atomic writes, files 0600,
        directories 0700), C(s3://bucket/prefix) for Amazon S3 and S3-compatible stores, or
        C(az://container/prefix) for Azure Blob Storage (C(azure://) is read the same).
      - The layout under it is documented in C(docs/storage-layout.md).
      - Read strictly (C(docs/storage-layout.md), "Storage URLs"); refused are a query or fragment, an empty,
        C(.) or C(..) path segment, a port or credentials in an C(s3://) or C(az://) URL, and a bucket or
        container name AWS or Azure would refuse.
      - Modules and commands that only read refuse a C(file://) root that does not exist; those that write create it.
    type: str
    required: true
  endpoint_url:
    description:
      - Endpoint of an S3-compatible store, for example C(https://s3.example.internal).
      - Written as C(http://host[:port]) or C(https://host[:port]) with nothing after the port; anything else is
        refused.
      - Falls back to E(AWS_ENDPOINT_URL_S3), then E(AWS_ENDPOINT_URL).
    type: str
  region:
    description:
      - S3 region. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
    type: str
  access_key:
    description:
      - S3 access key id. Falls back to E(AWS_ACCESS_KEY_ID), then the AWS profile/instance chain.
    type: str
    aliases: [aws_access_key]
  secret_key:
    description:
      - S3 secret access key. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
    aliases: [aws_secret_key]
  session_token:
    description:
      - S3 session token for temporary credentials.
      - E(AWS_SESSION_TOKEN) is used only together with E(AWS_ACCESS_KEY_ID) and E(AWS_SECRET_ACCESS_KEY),
        never with keys given as options (a leftover token would make every request fail).
    type: str
  profile:
    description:
      - Named AWS profile to take credentials from. Falls back to E(AWS_PROFILE).
    type: str
  ca_bundle:
    description:
      - CA bundle to validate the S3 or Azure endpoint's certificate (added to the system's CAs). Falls back
        to E(AWS_CA_BUNDLE).
    type: path
  validate_certs:
    description:
      - Whether to validate the S3 or Azure endpoint's TLS certificate. Only turn this off for tests.
    type: bool
    default: true
  server_side_encryption:
    description:
      - S3 server-side encryption of every object drkit writes (the C(x-amz-server-side-encryption) header on each
        PUT and multipart upload) - V(AES256) for SSE-S3, V(aws:kms) or V(aws:kms:dsse) for SSE-KMS.
      - Unset, the bucket's default encryption applies. Not for C(az://) (set an encryption scope on the
        container). See C(docs/storage-security.md).
    type: str
    choices: [AES256, "aws:kms", "aws:kms:dsse"]
  sse_kms_key_id:
    description:
      - The KMS key (id, ARN or alias) for O(server_side_encryption=aws:kms); given alone it implies V(aws:kms).
        Unset with V(aws:kms), S3 uses the account's AWS managed key.
    type: str
  azure_account_name:
    description:
      - Azure storage account of an C(az://) O(storage_url). Falls back to E(AZURE_STORAGE_ACCOUNT_NAME), then
        E(AZURE_STORAGE_ACCOUNT).
      - The Azure options are read for C(az://) only, the S3 ones for C(s3://) only.
    type: str
  azure_account_key:
    description:
      - Azure storage account key. Falls back to E(AZURE_STORAGE_ACCOUNT_KEY), then E(AZURE_STORAGE_KEY).
      - Give one of O(azure_account_key), O(azure_sas_token) or O(azure_connection_string); there is no fallback
        to Entra ID, managed identity or the Azure CLI.
    type: str
  azure_sas_token:
    description:
      - Shared access signature for the container (with or without its leading C(?)). Falls back to
        E(AZURE_STORAGE_SAS_TOKEN).
      - Backups and WAL archiving need read, add, create, write and list (C(racwl)); rotation also delete.
    type: str
  azure_connection_string:
    description:
      - Azure Storage connection string (C(AccountName), C(AccountKey) or C(SharedAccessSignature), and
        C(BlobEndpoint) or C(EndpointSuffix)). Falls back to E(AZURE_STORAGE_CONNECTION_STRING).
      - When set it stands for the account name, key or SAS token and endpoint, whatever those options say.
    type: str
  azure_endpoint:
    description:
      - Azure Blob endpoint, for Azurite or a sovereign cloud, e.g. C(https://ACCOUNT.blob.core.chinacloudapi.cn)
        or, path-style, C(http://127.0.0.1:10000/devstoreaccount1). Default
        C(https://ACCOUNT.blob.core.windows.net). Falls back to E(AZURE_STORAGE_ENDPOINT).
    type: str
requirements:
  - obstore (Python library, Python 3.11 or later, on the managed host) for C(s3://) and C(az://) storage
  - boto3 for C(s3://) credentials from a profile, SSO or a role, and for aborting stale multipart uploads
"""

    METRICS = r"""
options:
  metrics_dir:
    description:
      - Directory of node_exporter's textfile collector. When set, the job's metrics are written
        atomically to C(drkit_<job_name>.prom) there. Metric names are in C(docs/metrics.md).
    type: path
  job_name:
    description:
      - Name of the job in metrics (label C(drkit_job)) and the metrics file name.
    type: str
"""
