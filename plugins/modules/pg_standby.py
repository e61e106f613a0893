#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_standby
short_description: Build a PostgreSQL hot standby from the backup repository and wait until it streams
version_added: 0.1.0
description:
  - Restores the newest physical base backup of the repository (or O(backup_id)) into a B(new) data directory,
    makes it a hot standby of the primary given by O(login_host) and O(port), starts it on O(standby_port) and
    waits until it has replayed the archive and streams from the primary (C(pg_stat_wal_receiver) status
    C(streaming)) with its replay caught up.
  - Writes C(standby.signal) and, in a drkit block of C(postgresql.auto.conf), C(restore_command)
    (C(drkit wal-fetch) from the repository, for the WAL between the backup and what the primary still holds),
    C(primary_conninfo) (with C(passfile=), never the password), C(primary_slot_name) and
    C(recovery_target_timeline=latest).
  - The replication password goes into O(passfile) (0600, owned by the server's OS user, beside the data
    directory so no base backup of the standby carries it).
  - Creates the physical replication slot O(slot_name) on the primary when it is missing (O(create_slot)).
  - Run again against a running standby drkit built, it changes nothing and reports the replication lag; a
    stopped one is started.
  - With O(rewind), O(data_directory) is the old primary after a failover (stopped; the fence of
    M(drkit.backup.pg_failover) is removed). drkit runs C(CHECKPOINT) on the new primary, then C(pg_rewind
    --restore-target-wal), which copies only what changed since the timelines diverged, and the directory becomes
    a standby as above. Commits only the old primary had are discarded. Needs C(wal_log_hints=on) or data
    checksums on the old primary, and a superuser (or a role granted C(pg_checkpoint) and the C(pg_rewind)
    functions) as O(login_user). A rejoin that fails before the directory is a standby of the new primary (in
    C(pg_rewind)) puts the fence back; one that fails later leaves a stopped standby of the new primary.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage
  - drkit.backup.postgres
  - drkit.backup.encryption.decryption
attributes:
  check_mode:
    support: full
    description: Chooses the base backup and checks the data directory; reports the plan; changes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  backup_id:
    description:
      - The physical base backup to start from. Default is the newest complete one.
    type: str
  data_directory:
    description:
      - The new data directory of the standby. It must not exist or be empty, or be a standby drkit built
        (then nothing is restored).
    type: path
    required: true
  standby_port:
    description:
      - Port (1-65535) of the standby server.
    type: int
    required: true
  slot_name:
    description:
      - Physical replication slot on the primary for this standby.
      - Bound its WAL on the primary with C(max_slot_wal_keep_size).
    type: str
    default: drkit_standby
  create_slot:
    description:
      - Create O(slot_name) on the primary when it is missing (O(login_user) needs the REPLICATION attribute).
    type: bool
    default: true
  application_name:
    description:
      - The standby's name in the primary's C(pg_stat_replication).
    type: str
    default: drkit_standby
  passfile:
    description:
      - Where the replication password (O(login_password)) is written, as a pgpass line. Default
        C(<data_directory>.pgpass). A path inside the data directory is refused.
    type: path
  timeout:
    description:
      - Seconds (more than 0) to wait until the standby streams and has caught up.
    type: float
    default: 900
  rewind:
    description:
      - O(data_directory) holds the old primary (stopped, fenced by M(drkit.backup.pg_failover)); rejoin it as a
        standby with C(pg_rewind) instead of restoring a base backup.
      - Refused when the old primary runs, when it ran with neither C(wal_log_hints) nor data checksums, or when
        an interrupted drkit run left the directory; build the standby from the repository then.
    type: bool
    default: false
  settings:
    description:
      - Extra settings for the standby, written to C(postgresql.auto.conf), e.g. C(listen_addresses),
        C(unix_socket_directories), C(archive_command). Recovery settings are refused.
    type: dict
  os_user:
    description:
      - OS user owning and running the standby. Default C(postgres) when run as root.
    type: str
  drkit_command:
    description:
      - How the server's OS user runs drkit in C(restore_command). Default C(/usr/local/bin/drkit).
    type: str
  prefetch:
    description:
      - WAL segments C(restore_command) downloads ahead.
    type: int
    default: 4
  fetch_async:
    description:
      - C(restore_command) is C(drkit wal-fetch --async) (a background fetcher keeps the O(prefetch) next
        segments ready; see M(drkit.backup.pg_pitr)).
    type: bool
    default: true
  wal_config:
    description:
      - A drkit config file (0600, readable by the server's OS user) with the storage options for
        C(restore_command), such as the postgresql_wal_archive role's. Required for S3 and Azure
        repositories (the standby needs it as long as it runs).
    type: path
notes:
  - O(login_host), O(port), O(login_user) and O(login_password) name the B(primary) and the replication role;
    drkit also connects to the standby on 127.0.0.1 and O(standby_port) with them (it is a copy of the primary).
  - After a promotion the standby keeps the primary's C(archive_mode) and C(archive_command) from the base
    backup, so archiving continues on the new timeline; override them with O(settings) when it should archive
    elsewhere.
requirements:
  - psycopg >= 3 and zstandard (Python libraries on the managed host)
  - PostgreSQL server binaries of the base backup's major version on the host
seealso:
  - module: drkit.backup.pg_failover
  - module: drkit.backup.pg_pitr
  - name: Standby and failover (docs/failover.md)
    description: How the standby is built, fencing, RTO and RPO.
    link: https://github.com/drkit/backup/blob/main/docs/failover.md
"""

EXAMPLES = r"""
- name: A standby in the second region from the secondary repository
  drkit.backup.pg_standby:
    storage_url: s3://dr-backups/pg-main
    wal_config: /etc/drkit/wal-archive.yml
    login_host: db1.example.internal
    login_user: replicator
    login_password: "{{ vault_replicator_password }}"
    data_directory: /var/lib/postgresql/15/standby
    standby_port: 5432
  register: standby

- name: After a failover, the old primary (fenced) rejoins as a standby of the new one
  drkit.backup.pg_standby:
    rewind: true
    storage_url: s3://dr-backups/pg-main
    wal_config: /etc/drkit/wal-archive.yml
    login_host: db2.example.internal
    login_user: postgres
    login_password: "{{ vault_postgres_password }}"
    data_directory: /var/lib/postgresql/15/main
    standby_port: 5432
"""

RETURN = r"""
backup_id:
  description: The base backup the standby was restored from.
  returned: when restored
  type: str
status:
  description: The WAL receiver's status at the end (C(streaming)).
  returned: success and not check mode
  type: str
archive_segments_replayed:
  description: WAL files restored from the repository before streaming began.
  returned: when restored
  type: int
lag:
  description: Replication lag when the task ended.
  returned: success and not check mode
  type: dict
  contains:
    replay_lag_bytes:
      description: The primary's flush LSN minus the standby's replay LSN.
      type: int
    replay_lag_seconds:
      description: C(replay_lag) of the primary's C(pg_stat_replication) (0 when idle).
      type: float
    last_replayed_xact_time:
      description: Commit time of the last replayed transaction.
      type: str
passfile:
  description: Where the replication password is.
  returned: always
  type: str
slot_created:
  description: Whether the slot was created on the primary.
  returned: when restored
  type: bool
restore_seconds:
  description: Seconds to download and unpack the base backup.
  returned: when restored
  type: float
catch_up_seconds:
  description: Seconds from server start until it streamed and caught up.
  returned: when restored
  type: float
log_file:
  description: The standby's log.
  returned: when restored
  type: str
rewound:
  description: With O(rewind), whether C(pg_rewind) had to rewind (false when the old primary stopped before the
    timelines diverged, as after a planned failover).
  returned: when O(rewind) rejoined the old primary
  type: bool
diverged_at:
  description: The LSN where the old primary's timeline and the new primary's diverged (C(pg_rewind)).
  returned: when O(rewind) rewound
  type: str
  sample: 0/4002B18
rewind_seconds:
  description: Seconds C(CHECKPOINT) on the new primary and C(pg_rewind) took.
  returned: when O(rewind) rejoined the old primary
  type: float
msg:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, check_libraries, run_engine
from ..module_utils.pg.standby import OPTIONS, pg_standby


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("zstandard", "zstandard"), ("psycopg", "psycopg")])
    run_engine(module, pg_standby, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
