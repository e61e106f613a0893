#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_wal_archive
short_description: Configure PostgreSQL WAL archiving to drkit's archive and prove that it works
version_added: 0.1.0
description:
  - Sets C(wal_level), C(archive_mode), C(archive_command) (C(drkit wal-push) to O(storage_url)) and
    C(archive_timeout) with C(ALTER SYSTEM), reloads the configuration and reports whether a restart is
    needed (C(wal_level) and C(archive_mode) only take effect after one).
  - With O(test_archive=true), proves that archiving works end to end. It emits a little WAL, switches to a
    new segment with pg_switch_wal(), and waits until C(pg_stat_archiver) reports it archived and the
    segment is in the archive; otherwise it fails with the archiver's view and what to check.
  - The engine behind the role M(drkit.backup.postgresql_wal_archive). It uses C(ALTER SYSTEM) through
    the drkit engine rather than community.postgresql's C(postgresql_set), so that the collection needs no
    other collection (see docs/pitr.md).
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.postgres
  - drkit.backup.storage
attributes:
  check_mode:
    support: full
    description: Reads the current settings and reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Returns the four settings before and after.
options:
  wal_level:
    description: C(replica) or C(logical).
    type: str
    default: replica
    choices: [replica, logical]
  archive_mode:
    description: C(on), or C(always) to archive on a standby too.
    type: str
    default: "on"
    choices: ["on", "always"]
  archive_timeout:
    description:
      - Seconds after which a partly filled segment is archived anyway, so the RPO stays bounded on an
        idle server. Each switch archives a whole segment (16 MiB, compressed to little when idle).
      - V(0) to V(1073741823) (PostgreSQL's range); V(0) turns the forced switch off, as in PostgreSQL (the RPO
        of an idle server is then unbounded).
    type: int
    default: 60
  wal_log_hints:
    description:
      - Set C(wal_log_hints) (a restart). C(pg_rewind) needs it to make an old primary a standby after a
        failover (O(drkit.backup.pg_standby#module:rewind)), unless the cluster has data checksums.
      - Unset, it is left as it is.
    type: bool
  archive_command:
    description:
      - The full archive_command. Default is built from O(drkit_command), O(wal_config), O(storage_url),
        O(spool_dir), O(read_ahead), O(archive_async), O(metrics_dir) and O(compression_level).
    type: str
  drkit_command:
    description: How the server's OS user runs drkit (the wrapper the drkit_runtime role installs).
    type: str
    default: /usr/local/bin/drkit
  wal_config:
    description:
      - drkit config file (YAML, 0600, owned by the server's OS user) holding the storage credentials for
        C(drkit wal-push); the role writes it. Secrets never go into archive_command itself.
    type: path
  spool_dir:
    description:
      - Enables read-ahead in C(wal-push) (parallel pushes of segments that are ready; see docs/pitr.md).
        Must be writable by the server's OS user.
    type: path
  read_ahead:
    description:
      - How many further ready segments one C(wal-push) may push in parallel (with O(spool_dir)); V(0) or more.
      - With O(archive_async), the background pusher's parallel uploads (V(1) or more).
    type: int
    default: 4
  archive_async:
    description:
      - C(wal-push --async) (needs O(spool_dir)) a background pusher, started by the first call and kept
        running while there is work, uploads the ready segments O(read_ahead) at a time; each archive_command
        call waits for its own segment only and still exits 0 only once that exact content is in the archive.
      - For servers that write WAL faster than one C(wal-push) per segment stores it (see docs/pitr.md).
    type: bool
    default: false
  metrics_dir:
    description: node_exporter textfile directory for the wal-push metrics.
    type: path
  compression_level:
    description:
      - zstd level of the archived WAL (C(drkit wal-push --compression-level)), V(1) (fastest) to V(19)
        (smallest).
      - Unset, the archive_command leaves it out and C(wal-push) uses its default V(3). zstd's own level V(0)
        (its default) is refused rather than silently read as V(3).
    type: int
  test_archive:
    description:
      - Prove archiving works (see description). Fails if a restart is still pending.
    type: bool
    default: false
  test_timeout:
    description: Seconds (more than 0) to wait for the test segment to be archived.
    type: float
    default: 60
  maintenance_db:
    description: Database to connect to.
    type: str
    default: postgres
notes:
  - O(login_user) must be a superuser (or hold the privilege to C(ALTER SYSTEM) these settings).
seealso:
  - module: drkit.backup.pg_backup
  - module: drkit.backup.pg_pitr
"""

EXAMPLES = r"""
- name: Archive WAL to S3 with drkit
  drkit.backup.pg_wal_archive:
    login_user: postgres
    storage_url: s3://prod-backups/pg-main
    wal_config: /etc/drkit/wal-archive.yml
  register: archiving
  notify: Restart PostgreSQL

- name: Prove that archiving works (after the restart)
  drkit.backup.pg_wal_archive:
    storage_url: s3://prod-backups/pg-main
    wal_config: /etc/drkit/wal-archive.yml
    test_archive: true
"""

RETURN = r"""
changes:
  description: Settings that were (or would be) changed.
  returned: always
  type: list
  elements: str
restart_required:
  description: Whether PostgreSQL must be restarted for the settings to take effect.
  returned: always
  type: bool
archive_command:
  description: The archive_command (holds no secret).
  returned: always
  type: str
diff:
  description: The four settings before and after.
  returned: always
  type: dict
test:
  description: The archived test segment.
  returned: when test_archive
  type: dict
msg:
  description: What was done.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, check_libraries, run_engine
from ..module_utils.pg.archiving import OPTIONS, configure_archiving


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("psycopg", "psycopg")])
    run_engine(module, configure_archiving, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
