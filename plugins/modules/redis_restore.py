#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: redis_restore
short_description: Put a Redis backup into a stopped instance's data directory, the way it will load
version_added: 0.1.0
description:
  - Fetches a Redis backup (checking size and SHA-256), checks it with C(redis-check-rdb) /
    C(redis-check-aof) and places it into the data directory of a B(stopped) instance.
  - Handles the AOF trap. With C(appendonly yes), Redis loads only the AOF at start-up and ignores a
    dropped-in C(dump.rdb); with no AOF at all it starts B(empty) and writes an empty AOF that wins from
    then on. So the files placed match the target's AOF setting. An RDB backup for an AOF instance
    is turned into a multi-part AOF directory (a scratch C(redis-server) on 127.0.0.1 loads the RDB and
    writes the AOF), and an AOF backup for an instance without AOF into a C(dump.rdb). The key counts
    of the conversion are checked against the manifest.
  - What was in the way (C(dump.rdb), the AOF directory) is moved aside to C(<name>.drkit-<time>), never
    deleted, and only with O(force=true). If anything fails, it is put back.
  - Refuses while a C(redis-server) runs in the data directory.
  - With O(start_command), starts the instance, waits until it has loaded the data and compares its
    key counts per database with the manifest (through the C(login_*) options). Otherwise the result
    says what to start.
  - With O(container), restores into a Docker container through the Docker Engine API. O(data_dir) and
    the file names are paths inside the container; unset, they come from O(redis_conf) (a path inside the
    container), else from redis-server's C(--dir), C(--appendonly) ... arguments on the container's
    command line, else Redis's defaults (C(dir) the container's working directory; O(appendonly) V(true)
    when the AOF directory exists). The data directory must be on a volume or bind mount. A running
    container is stopped first, only with O(force=true). A helper container of the same image that
    shares the target's volumes (C(volumes_from), no network, removed afterwards) moves the old files
    aside, checks the backup with the image's C(redis-check-rdb) / C(redis-check-aof) and receives the
    files (owned by the data directory's owner, or the numeric O(owner) / O(group)); conversions
    between RDB and AOF run in a scratch container of the same image on 127.0.0.1. Then the container
    is started, and drkit waits until the server answers at O(login_host) / O(login_port) and compares
    its key counts with the manifest. O(start_command) does not go with O(container).
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.redis
  - drkit.backup.container
  - drkit.backup.storage
  - drkit.backup.backup_selector
  - drkit.backup.encryption.decryption
  - drkit.backup.signing.verify
attributes:
  check_mode:
    support: full
    description:
      - Resolves the backup, checks the target (and, for an encrypted backup, that O(encryption_identity_file)
        holds one of its recipients' identities) and returns the plan; writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  source:
    description:
      - With O(backup_id=latest), only backups of this source (C(redis:<host>:<port>)).
    type: str
  data_dir:
    description:
      - The stopped instance's data directory (its C(dir)). Defaults to C(dir) in O(redis_conf).
    type: path
  redis_conf:
    description:
      - The instance's C(redis.conf); C(dir), C(dbfilename), C(appendonly), C(appenddirname) and
        C(appendfilename) are read from it (C(include) files are not followed).
    type: path
  appendonly:
    description:
      - Whether the instance runs with AOF. Default - from O(redis_conf), else V(true) when the data
        directory holds an AOF directory.
    type: bool
  dbfilename:
    description:
      - The instance's C(dbfilename). Default - from O(redis_conf), else C(dump.rdb).
    type: str
  appenddirname:
    description:
      - The instance's C(appenddirname). Default - from O(redis_conf), else C(appendonlydir).
    type: str
  appendfilename:
    description:
      - The instance's C(appendfilename). Default - from O(redis_conf), else C(appendonly.aof).
    type: str
  force:
    description:
      - Replace existing data. It is moved aside (C(<name>.drkit-<time>)), not deleted.
    type: bool
    default: false
  owner:
    description:
      - Owner of the placed files. Default - the owner of O(data_dir). With O(container), a numeric uid.
    type: str
  group:
    description:
      - Group of the placed files. Default - the group of O(data_dir). With O(container), a numeric gid.
    type: str
  start_command:
    description:
      - Command (argument list, no shell) that starts the instance afterwards, e.g.
        C([systemctl, start, redis-server]) or C([docker, start, agentic-redis]). The key counts are then
        checked through the C(login_*) options.
    type: list
    elements: str
  timeout:
    description:
      - Seconds (more than 0; fractions allowed) for conversions and for the started instance to load its data.
    type: float
    default: 600
  redis_bin_dir:
    description:
      - Directory holding C(redis-check-rdb) / C(redis-check-aof).
    type: path
requirements:
  - zstandard (Python library on the managed host)
  - redis-server and redis-tools on the host (checks, and the scratch server for conversions); with
    O(container) the image's own instead, and the Python library docker
seealso:
  - module: drkit.backup.redis_snapshot
  - module: drkit.backup.redis_verify
"""

EXAMPLES = r"""
- name: Stop Redis
  ansible.builtin.systemd_service:
    name: redis-server
    state: stopped

- name: Restore the newest Redis backup and start it again
  drkit.backup.redis_restore:
    storage_url: s3://prod-backups/redis
    redis_conf: /etc/redis/redis.conf
    force: true
    start_command: [systemctl, start, redis-server]
    login_password: "{{ vault_redis_password }}"
  become: true

- name: Restore the newest Redis backup into the agentic-redis container (stopped, restored, started)
  drkit.backup.redis_restore:
    storage_url: s3://prod-backups/redis
    container: agentic-redis
    force: true
    login_host: 127.0.0.1
    login_port: 6379
    login_password: "{{ vault_redis_password }}"
"""

RETURN = r"""
container:
  description: The container restored into (with O(container)).
  returned: with container
  type: str
stopped:
  description: Whether drkit stopped the running container before placing the files (with O(container)).
  returned: with container, not in check mode
  type: bool
backup_id:
  description: The backup restored.
  returned: always
  type: str
kind:
  description: C(redis_rdb) or C(redis_aof).
  returned: always
  type: str
appendonly:
  description: Whether the target was taken to run with AOF.
  returned: always
  type: bool
conversion:
  description: C(rdb->aof), C(aof->rdb), C(aof->rdb->aof) or null.
  returned: always
  type: str
plan:
  description: What is (or would be) done.
  returned: always
  type: list
  elements: str
placed:
  description: Files and directories placed.
  returned: success and not check mode
  type: list
  elements: str
moved_aside:
  description: Where the previous data went.
  returned: success and not check mode
  type: list
  elements: str
started:
  description: Whether the instance was started.
  returned: success and not check mode
  type: bool
keyspace:
  description: Per database, expected and loaded key counts (with O(start_command)).
  returned: when started
  type: list
  elements: dict
msg:
  description: Summary, with the next step when the instance was not started.
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
from ..module_utils.redis.restore import OPTIONS, redis_restore


def main():
    # data_dir or redis_conf is checked by the engine: with container neither is needed (the
    # container's command line names its dir)
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("zstandard", "zstandard")])
    run_engine(module, redis_restore, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
