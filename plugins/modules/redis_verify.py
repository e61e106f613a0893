#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: redis_verify
short_description: Prove a Redis backup loads, by checksum, structure or a real load into a scratch server
version_added: 0.1.0
description:
  - The Redis twin of M(drkit.backup.pg_verify). Verifies one Redis backup (by id, C(latest), or the
    newest before a time) at a chosen O(level).
  - V(checksum) re-reads every artifact from storage and compares size and SHA-256 with the manifest.
  - V(structure) also runs C(redis-check-rdb) on the decompressed stream (RDB backups) or
    C(redis-check-aof) on the unpacked AOF directory (AOF backups).
  - V(restore) also loads the backup into a scratch C(redis-server) on a free 127.0.0.1 port with its own
    directory and a random password (stopped and removed afterwards, also on failure or SIGTERM), and
    compares the key counts per database with the manifest. A database must hold between
    C(keys - expires) and C(keys) keys (keys with a TTL may expire before loading).
  - With O(container) (or O(image)), the checks and the load use the Redis of the container's image,
    never the production container itself. By default (O(verify_in=scratch)) a scratch container is
    started from that image (host network, C(redis-server) bound to 127.0.0.1 on a free port, a random
    password in a configuration placed through the Engine's archive API, the backup likewise), and removed
    afterwards, also on failure or SIGTERM; the container may be stopped, only its image is used. With
    O(verify_in=container), asked for, a second C(redis-server) runs inside the running container itself
    (through C(docker exec), in a private temp directory, listening only on a Unix socket there, read with
    the container's C(redis-cli)); it is shut down and its directory removed afterwards.
  - Each run writes a verification record next to the manifest (C(backups/<id>/verify-<time>.json))
    and, with O(metrics_dir), updates the job's metrics. A failed verification fails the task.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.container
  - drkit.backup.container.scratch_verify
  - drkit.backup.storage
  - drkit.backup.storage.metrics
  - drkit.backup.backup_selector
  - drkit.backup.encryption.decryption
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description:
      - Resolves the backup (and, for an encrypted backup at level V(structure) or V(restore), checks that
        O(encryption_identity_file) holds one of its recipients' identities) and reports what would be verified;
        reads no data, writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  source:
    description:
      - With O(backup_id=latest), only backups of this source, as C(redis:<host>:<port>) (see C(backup_info)).
    type: str
  level:
    description:
      - V(checksum), V(structure) or V(restore), see the description.
    type: str
    default: structure
    choices: [checksum, structure, restore]
  timeout:
    description:
      - Seconds (more than 0; fractions allowed) the scratch server may take to start and load the data.
    type: float
    default: 600
  work_dir:
    description:
      - Where the backup is unpacked for V(restore) (and for AOF backups at V(structure)). Needs the
        uncompressed size in free space. Defaults to the system temp directory.
    type: path
  redis_bin_dir:
    description:
      - Directory holding C(redis-check-rdb) / C(redis-check-aof). See M(drkit.backup.redis_snapshot).
        With O(container), a directory inside the image.
    type: path
requirements:
  - zstandard (Python library on the managed host)
  - redis-server and redis-tools (C(redis-cli), C(redis-check-rdb), C(redis-check-aof)) on the host for V(restore);
    with O(container) the image's own instead, and the Python library docker
seealso:
  - module: drkit.backup.redis_snapshot
  - module: drkit.backup.redis_restore
"""

EXAMPLES = r"""
- name: Weekly proof that the newest Redis backup loads
  drkit.backup.redis_verify:
    storage_url: s3://prod-backups/redis
    level: restore
    metrics_dir: /var/lib/prometheus/node-exporter
  register: redis_check

- name: Structure check of one backup
  drkit.backup.redis_verify:
    storage_url: file:///var/backups/drkit
    backup_id: 20261125T211500Z-redis-rdb-3fa9c1
"""

RETURN = r"""
backup_id:
  description: The backup verified.
  returned: always
  type: str
level:
  description: The level verified at.
  returned: always
  type: str
passed:
  description: Whether the backup passed (null in check mode).
  returned: always
  type: bool
findings:
  description: What was wrong (empty when passed).
  returned: success
  type: list
  elements: str
keyspace:
  description: Per database, expected and restored key counts (level restore).
  returned: success
  type: list
  elements: dict
  sample: [{"db": "db0", "expected": 1000, "expires": 0, "actual": 1000, "ok": true}]
verified_in:
  description: With O(container) or O(image), where the checks ran (C(scratch container of image <id>) or
    C(container <name>)).
  returned: with container or image, level structure or restore
  type: str
key_counts_compared:
  description: How counts were compared (C(exact per database), C(total from redis-check-rdb), or not).
  returned: success
  type: str
record_key:
  description: Key of the verification record written next to the manifest.
  returned: success and not check mode
  type: str
timings:
  description: Seconds spent downloading, loading (C(restore_seconds), the measured RTO of this load).
  returned: success and not check mode
  type: dict
msg:
  description: Summary.
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
from ..module_utils.redis.verify import OPTIONS, redis_verify


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("zstandard", "zstandard")])
    run_engine(module, redis_verify, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
