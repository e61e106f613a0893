#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: redis_snapshot
short_description: Verified Redis backups (RDB or AOF) to a directory or S3
version_added: 0.1.0
description:
  - Backs up a Redis server through the drkit pipeline (zstd, SHA-256, C(file://) or C(s3://)
    storage, read back and checked, manifest written last). Any failure fails the task and
    leaves no backup behind.
  - O(mode=rdb) (default) runs C(BGSAVE) with C(INFO) pipelined in front of it, so the key counts
    per database recorded in the manifest are those of the very fork that writes the RDB. It copes
    with a save or AOF rewrite already running (waits for it, then saves), polls until
    C(rdb_bgsave_in_progress:0), requires C(rdb_last_bgsave_status:ok), then reads
    C(dir)/C(dbfilename) through a descriptor opened at once (a later save renames a new file
    over the name and cannot change ours) and streams it to storage through C(redis-check-rdb).
    Needs read access to the server's data directory on the host the module runs on.
  - O(mode=remote) fetches a fresh RDB over the replication protocol (C(SYNC), as
    C(redis-cli --rdb) does) and streams it without a local copy. For servers whose data directory
    is out of reach (another host, a container). The server writes its RDB file as for any
    disk-based replica sync.
  - O(mode=aof) backs up the Redis 7 multi-part AOF directory by the documented procedure -
    C(auto-aof-rewrite-percentage 0), wait until no rewrite runs, pin the files listed in the AOF
    manifest, put the setting back whatever happens, copy, check with C(redis-check-aof), store as one tar.
  - With O(container), O(mode=rdb) and O(mode=aof) read the server's files out of its Docker container
    through the Engine's archive API and check them with the container's own tools (see
    C(docs/containers.md)).
  - O(mode=remote) and O(mode=aof) pause client writes for a few milliseconds
    (C(CLIENT PAUSE WRITE), never longer than O(pause_timeout)) while the fork starts or the AOF file
    sizes are taken, so the manifest's key counts are exact. Without it they are marked approximate.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.redis
  - drkit.backup.container
  - drkit.backup.storage
  - drkit.backup.storage.metrics
  - drkit.backup.compression
  - drkit.backup.encryption
  - drkit.backup.signing
attributes:
  check_mode:
    support: full
    description:
      - Connects, checks what the mode needs (data directory, AOF files) read-only, proves that the storage
        can be written (the storage contract's probe object C(probe/<host>-<time>), created and removed again
        on C(file://), left for a lifecycle rule on S3) and reports what would be done. No BGSAVE, no CONFIG
        SET, no backup written.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  mode:
    description:
      - V(rdb), V(remote) or V(aof), see the description.
    type: str
    default: rdb
    choices: [rdb, remote, aof]
  timeout:
    description:
      - Seconds (more than 0; fractions allowed) to wait for the server's background work (a running save or
        rewrite, our C(BGSAVE), the start of the transfer). The task fails with a clear message after that;
        nothing is stored.
    type: float
    default: 600
  pause_writes:
    description:
      - For O(mode=remote) and O(mode=aof), pause client writes (C(CLIENT PAUSE ... WRITE)) while the
        fork starts / the AOF files are pinned, so the key counts are exact. Needs the C(client)
        permission for the user.
    type: bool
    default: true
  pause_timeout:
    description:
      - Longest write pause in milliseconds, V(10) to V(60000); Redis lifts the pause by itself after this time
        even if the task dies.
    type: int
    default: 2000
  work_dir:
    description:
      - Where O(mode=aof) copies the AOF files before checking and storing them (needs their size in
        free space). Defaults to the system temp directory.
    type: path
  state_dir:
    description:
      - Where drkit records the original of a Redis setting it changes for a moment (O(mode=aof) turns automatic
        AOF rewrites off while it pins the files), before changing it. A run killed with SIGKILL leaves that
        record, and the next snapshot of the same server, in any mode, puts the original back (when the live value
        is still the temporary one) and says so in its notes.
      - Defaults to C($XDG_STATE_HOME/drkit), else C(~/.local/state/drkit) of the user running the task (not the
        temp directory, which systemd's C(PrivateTmp) removes with a killed job).
    type: path
  redis_bin_dir:
    description:
      - Directory holding C(redis-check-rdb) / C(redis-check-aof). By default they are looked up on
        E(PATH) and in C(/usr/bin); when only C(redis-server) exists it is used under the right name.
    type: path
  labels:
    description:
      - Free-form labels recorded in the manifest.
    type: dict
notes:
  - ACL permissions the user needs - rdb mode C(+info +bgsave +config|get); remote mode
    C(+info +sync +replconf +client|pause +client|unpause); aof mode C(+info +config|get +config|set
    +client|pause +client|unpause).
  - Key counts per database come from C(INFO keyspace). Keys with a TTL may expire before a restore
    loads them, so verification accepts between C(keys - expires) and C(keys).
requirements:
  - C(redis-check-rdb) and, for O(mode=aof), C(redis-check-aof) on the host the module runs on (Debian package
    redis-tools; a C(redis-server) binary is used under those names when only it exists)
seealso:
  - module: drkit.backup.redis_verify
  - module: drkit.backup.redis_restore
  - module: drkit.backup.redis_persistence
"""

EXAMPLES = r"""
- name: RDB snapshot of the local Redis to S3-compatible storage
  drkit.backup.redis_snapshot:
    login_port: 6379
    login_password: "{{ vault_redis_password }}"
    storage_url: s3://prod-backups/redis
    endpoint_url: https://s3.example.internal
    metrics_dir: /var/lib/prometheus/node-exporter
  become: true
  become_user: redis

- name: Redis in a container (data directory out of reach) over the replication protocol
  drkit.backup.redis_snapshot:
    mode: remote
    login_host: 127.0.0.1
    login_port: 6380
    storage_url: file:///var/backups/drkit

- name: AOF backup of a Redis 7 server with TLS and an ACL user
  drkit.backup.redis_snapshot:
    mode: aof
    login_user: backup
    login_password: "{{ vault_redis_backup_password }}"
    tls: true
    tls_ca_cert: /etc/redis/tls/ca.crt
    storage_url: file:///var/backups/drkit
"""

RETURN = r"""
backup_id:
  description: Id of the new backup.
  returned: success and not check mode
  type: str
  sample: 20261125T211500Z-redis-rdb-3fa9c1
mode:
  description: The mode used.
  returned: always
  type: str
manifest:
  description: The manifest written to storage; C(data) holds the key counts, RDB or AOF facts.
  returned: success and not check mode
  type: dict
manifest_key:
  description: Key of the manifest under the storage root.
  returned: success and not check mode
  type: str
key_counts:
  description: Keys and keys with a TTL per database at the snapshot (C(INFO keyspace)).
  returned: success and not check mode
  type: dict
  sample: {"db0": {"keys": 1000000, "expires": 120}}
key_counts_exact:
  description: Whether the key counts are those of the snapshot itself (see O(pause_writes)).
  returned: success and not check mode
  type: bool
notes:
  description: Things worth knowing about this run (waited for another save, counts approximate...).
  returned: success and not check mode
  type: list
  elements: str
size:
  description: Stored (compressed) size in bytes.
  returned: success and not check mode
  type: int
sha256:
  description: SHA-256 of the stored artifact.
  returned: success and not check mode
  type: str
duration:
  description: Seconds from start to manifest written.
  returned: success and not check mode
  type: float
signed_by:
  description: Key id (SHA-256 of the raw Ed25519 public key) of O(signing_key_file) that signed the manifest,
    null when it is not signed.
  returned: success and not check mode
  type: str
storage:
  description: The storage, as a URL without secrets.
  returned: always
  type: str
probe:
  description:
    - Check mode only. Key of the probe object that proved the storage writable (removed again on C(file://);
      on S3 it stays for the lifecycle rule on C(probe/), see docs/storage-layout.md).
  returned: check mode
  type: str
  sample: probe/db1-20261125T211500.123456Z
msg:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
steps:
  description:
    - The byte streams of the run, in order, one per artifact and step (C(dump), C(upload), C(re-read),
      C(download), C(restore) or C(verify)), with their throughput. Empty in check mode.
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: What the bytes went through.
      type: str
      sample: upload
    what:
      description: The artifact.
      type: str
      sample: database.pgdump
    bytes:
      description: Bytes that went through (what the tool wrote for an upload, what was stored otherwise).
      type: int
      sample: 1288490189
    seconds:
      description: How long it took.
      type: float
      sample: 61.2
    bytes_per_second:
      description: bytes / seconds (null when it took no measurable time).
      type: int
      sample: 21053761
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, check_libraries, run_engine
from ..module_utils.redis.snapshot import OPTIONS, redis_snapshot


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("zstandard", "zstandard")])
    run_engine(module, redis_snapshot, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
