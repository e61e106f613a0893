#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_pitr
short_description: Point-in-time recovery of PostgreSQL from a physical base backup and the WAL archive
version_added: 0.1.0
description:
  - Restores a physical base backup (taken by M(drkit.backup.pg_backup) with
    O(drkit.backup.pg_backup#module:mode=physical)) into a B(new) data directory, and lets PostgreSQL
    replay WAL from the archive (filled by C(drkit wal-push)) up to a target; then starts the server
    on O(port) and waits for its promotion.
  - An existing non-empty directory is refused, and a running server's directory is refused with a
    message that says so; nothing is ever restored over a live cluster.
  - The WAL chain in the archive is checked first. WAL missing between the base backup's start and stop
    makes the backup unusable; with O(target=latest) any gap fails the task before anything is restored,
    because recovery would otherwise stop silently at the gap.
  - Writes C(recovery.signal) and, into C(postgresql.auto.conf), only what the recovered server keeps,
    C(port), C(archive_mode=off) (unless O(keep_archiving)) and O(settings). Recovery settings the base
    backup carries there (an older drkit left them in the clusters it promoted) are removed and named in
    RV(warnings).
  - The recovery settings go on the server's command line and into no file -- C(restore_command)
    (C(drkit wal-fetch), storage credentials in a 0600 file in a private directory outside the data
    directory, removed when the recovery ends), an explicit target (for O(target=latest) the LSN of the
    last complete record in the archive), the timeline as a number.
  - Replays to the target and shuts down there (PostgreSQL never promotes by itself), checks where it
    stopped (at LSN precision for C(latest) and C(lsn)), any C(wal-fetch) error and PostgreSQL's FATAL
    lines; then replays to the same point again, pauses, and promotes with C(pg_ctl promote).
  - On failure the server is stopped and the directory stays disabled (C(recovery.signal), no
    C(restore_command) in any file, the marker C(drkit-pitr.incomplete) with the error), so C(pg_ctl start)
    refuses it. The next run into that directory says what it found, stops a recovering server there,
    and starts over; a directory someone promoted by hand is refused.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.storage
  - drkit.backup.signing.verify
  - drkit.backup.encryption.decryption
attributes:
  check_mode:
    support: full
    description: Chooses the base backup, checks the data directory, the port and the WAL chain, and
      reports the plan; restores nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  backup_id:
    description:
      - The physical base backup to start from.
      - Default is the newest one that can reach the target (for O(target=time) the newest that ended
        before that time, for O(target=lsn) before that LSN, for O(target=xid) the newest whose next
        transaction id at its end is not above it).
    type: str
  target:
    description:
      - C(latest) replays all archived WAL; C(immediate) stops as soon as the backup is consistent;
        C(time), C(xid), C(lsn) and C(name) stop at O(target_value).
    type: str
    default: latest
    choices: [latest, immediate, time, xid, lsn, name]
  target_value:
    description:
      - For O(target=time) an ISO 8601 time (no zone means UTC), for C(xid) a transaction id, for C(lsn)
        an LSN such as C(0/3000060), for C(name) a restore point made with pg_create_restore_point().
    type: str
  target_inclusive:
    description:
      - Stop just after the target (C(true)) or just before it.
    type: bool
    default: true
  recovery_target_timeline:
    description:
      - The timeline to recover into. V(latest) (as PostgreSQL) is the newest timeline in the archive,
        V(current) the base backup's, or a timeline number.
      - With V(latest), a O(target) of C(time), C(xid), C(lsn) or C(name) that lies on an older timeline past
        the point where the newest one branched off it (a promoted copy archiving into the same
        repository) is refused, naming both timelines; give the number of the one you mean.
    type: str
    default: latest
  data_directory:
    description:
      - The new data directory to restore into. It must not exist or be empty, or be one that an
        interrupted or failed drkit recovery left (marker C(drkit-pitr.incomplete)).
    type: path
    required: true
  port:
    description:
      - Port (1-65535) of the recovered server (written to C(postgresql.auto.conf)). Required when O(start=true).
    type: int
  start:
    description:
      - Start the server, check the outcome and promote it. With C(false) only restore and configure; the
        recovery settings then go into C(postgresql.auto.conf) in a block of their own with
        C(recovery_target_action=pause); start it with C(pg_ctl), check it, C(pg_ctl promote), then remove
        that block. Needs O(wal_config) when the storage needs credentials.
    type: bool
    default: true
  timeout:
    description:
      - Seconds (more than 0) to wait for recovery to finish. On timeout the server is stopped and the
        directory left disabled; run again into it with a longer timeout.
    type: float
    default: 3600
  settings:
    description:
      - Extra settings for the recovered server, written to C(postgresql.auto.conf), e.g.
        C(unix_socket_directories), C(listen_addresses), C(shared_buffers). Recovery settings
        (C(restore_command), C(recovery_target*), C(primary_conninfo)...) are refused.
    type: dict
  keep_archiving:
    description:
      - Keep the original's C(archive_mode). By default the recovered copy gets C(archive_mode=off) so it
        never pushes its new timeline into the original's archive before someone decides it is the new
        primary (then apply M(drkit.backup.postgresql_wal_archive) with its own storage_url).
    type: bool
    default: false
  os_user:
    description:
      - OS user owning the restored cluster and running it. Default C(postgres) when run as root,
        otherwise the current user.
    type: str
  pg_bin_dir:
    description:
      - Directory of C(pg_ctl) for the backup's major version. Found automatically on Debian/RHEL layouts.
    type: path
  drkit_command:
    description:
      - How the server's OS user runs drkit in C(restore_command). Default C(/usr/local/bin/drkit)
        (the wrapper the drkit_runtime role installs) or, from a checkout, its C(bin/drkit) with the
        current Python.
    type: str
  prefetch:
    description:
      - C(restore_command) downloads this many following WAL segments in parallel while PostgreSQL
        replays (into C(pg_wal/.drkit-prefetch), removed after the recovery). V(0) fetches one at a time;
        negative values are refused.
    type: int
    default: 4
  fetch_async:
    description:
      - With O(prefetch) above V(0), C(restore_command) is C(drkit wal-fetch --async), and a background fetcher,
        started by the first call and kept running while replay asks, keeps the O(prefetch) segments after
        the one asked for downloaded and verified, so that each call only moves its own file into place.
        A segment the fetcher lacks is fetched by the call itself. V(false) prefetches within each call.
    type: bool
    default: true
  wal_config:
    description:
      - An existing drkit config file (0600, readable by the server's OS user) with the storage options
        for C(restore_command), such as the one the postgresql_wal_archive role installs. Without it drkit
        writes one from the storage options given here into a private directory outside the data
        directory, and removes it when the recovery ends (after a kill -9, the next run into the same
        directory does).
    type: path
notes:
  - O(data_directory) must be new (its parent must exist and be writable by the user running the module) or an
    empty directory. The plan (check mode) checks this and fails naming the directory and the fix.
  - The target database cluster's OS user (C(postgres)) must be able to enter every parent directory of
    O(data_directory) and run O(drkit_command).
  - After the recovery the server keeps running, logging to C(log/drkit-pitr.log) in the data directory.
requirements:
  - zstandard (Python library on the managed host)
  - PostgreSQL server binaries (pg_ctl, pg_waldump) of the base backup's major version on the host
seealso:
  - module: drkit.backup.pg_backup
  - name: Point-in-time recovery (docs/pitr.md)
    description: Archive layout, the archive_command contract and the runbook.
    link: https://github.com/drkit/backup/blob/main/docs/pitr.md
"""

EXAMPLES = r"""
- name: Recover to just before the accidental DELETE
  drkit.backup.pg_pitr:
    storage_url: s3://prod-backups/pg-main
    endpoint_url: https://s3.example.internal
    target: time
    target_value: "2026-11-25T14:29:00Z"
    data_directory: /var/lib/postgresql/15/pitr
    port: 5433
  register: pitr

- name: Plan only (check mode shows the chosen base backup and WAL range)
  drkit.backup.pg_pitr:
    storage_url: s3://prod-backups/pg-main
    target: latest
    data_directory: /var/lib/postgresql/15/restored
    port: 5434
  check_mode: true
"""

RETURN = r"""
backup_id:
  description: The base backup recovery started from.
  returned: always
  type: str
  sample: 20261125T020000Z-pg-physical-3fa9c1
target:
  description: The recovery target kind.
  returned: always
  type: str
target_value:
  description: The target as PostgreSQL was given it.
  returned: when a value applies
  type: str
recovered_to:
  description: Where recovery stopped, from the server log.
  returned: success and not check mode
  type: str
  sample: recovery stopping before commit of transaction 7781, time 2026-11-25 14:29:03.1+00
recovery_target_timeline:
  description: The timeline recovered into (O(recovery_target_timeline) resolved to a number).
  returned: always
  type: int
target_lsn:
  description: For O(target=latest), the LSN of the last complete WAL record in the archive, where recovery stops.
  returned: always
  type: str
new_timeline:
  description: The timeline the promoted server writes on.
  returned: success and not check mode
  type: int
restore_seconds:
  description: Seconds to download and unpack the base backup.
  returned: success and not check mode
  type: float
recovery_seconds:
  description: Seconds from server start to promotion (WAL replay).
  returned: success when started
  type: float
duration:
  description: Seconds for the whole task.
  returned: success and not check mode
  type: float
warnings:
  description: WAL gaps after the base backup that do not block this target; recovery settings the base
    backup carried (removed); an interrupted or failed drkit recovery found in O(data_directory) (removed).
  returned: always
  type: list
  elements: str
log_file:
  description: The recovered server's log.
  returned: when started
  type: str
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
from ..module_utils.pg.pitr import OPTIONS, pg_pitr


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True,
                           required_if=[("target", "time", ["target_value"]), ("target", "xid", ["target_value"]),
                                        ("target", "lsn", ["target_value"]), ("target", "name", ["target_value"]),
                                        ("start", True, ["port"])])
    check_libraries(module, [("zstandard", "zstandard")])
    run_engine(module, pg_pitr, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
