#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_failover
short_description: Promote a PostgreSQL standby, planned or after losing the primary, with measured RTO and RPO
version_added: 0.1.0
description:
  - Promotes the standby on O(standby_host) and O(standby_port) (one M(drkit.backup.pg_standby) built) and times
    it from the call (the decision) to the first write committed through the clients' endpoint, a libpq
    multi-host connection (O(endpoint)) with C(target_session_attrs=read-write), as RV(rto_seconds).
  - O(mode=planned) stops the primary (fast; O(primary_data_directory) on this host), waits until the standby
    replayed past the primary's shutdown checkpoint, fences the old primary and promotes. Nothing is lost,
    and that is checked.
  - O(mode=unplanned) takes the standby's last view of replication as the loss bound, fences the old primary
    when its data directory is on this host (stops it if it runs), and promotes. A primary that still
    answers SQL but cannot be fenced from here is refused (two primaries). With the old primary's WAL
    readable here the loss is also counted exactly (pg_waldump after the new timeline's switch point).
  - Fencing writes C(standby.signal), C(archive_mode = off) and empty C(primary_conninfo)/C(restore_command)
    into the old primary's data directory and a C(drkit-fenced) note; started again (systemd, a reboot), it
    is a read-only standby that takes no writes and archives nothing.
  - This is a manual (operator-decided) failover. Automatic failover is a cluster manager's job (Patroni).
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.postgres
attributes:
  check_mode:
    support: full
    description: Checks the standby and the primary and reports the steps it would take; changes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  mode:
    description:
      - V(planned) when the primary is healthy (switchover), V(unplanned) when it is lost or must be given up.
    type: str
    default: planned
    choices: [planned, unplanned]
  standby_host:
    description:
      - Host of the standby to promote.
    type: str
    default: 127.0.0.1
  standby_port:
    description:
      - Port of the standby to promote.
    type: int
    required: true
  primary_data_directory:
    description:
      - The old primary's data directory on this host. Required for O(mode=planned). It is stopped and fenced,
        and its WAL gives the exact loss of an unplanned failover.
    type: path
  endpoint:
    description:
      - The clients' libpq hosts as C(host:port,host:port). Default the primary (O(login_host), O(port)) then
        the standby.
    type: str
  database:
    description:
      - Database of the write check.
    type: str
    default: postgres
  fence:
    description:
      - Fence the old primary when O(primary_data_directory) is given.
    type: bool
    default: true
  timeout:
    description:
      - Seconds (more than 0) for each wait (catch-up, promotion, first write).
    type: float
    default: 300
  os_user:
    description:
      - OS user running the clusters. Default C(postgres) when run as root.
    type: str
notes:
  - O(login_host), O(port), O(login_user) and O(login_password) name the old primary and the role of the write
    check (a superuser or a role allowed to call C(pg_promote)).
  - The promoted server keeps archiving with the configuration its base backup had, on the new timeline.
requirements:
  - psycopg >= 3 (Python library on the managed host)
  - PostgreSQL server binaries (pg_ctl, pg_controldata, pg_waldump) when O(primary_data_directory) is given
seealso:
  - module: drkit.backup.pg_standby
  - name: Standby and failover (docs/failover.md)
    description: Fencing, the loss bound, measured RTO and RPO.
    link: https://github.com/drkit/backup/blob/main/docs/failover.md
"""

EXAMPLES = r"""
- name: Switch over to the standby (nothing lost)
  drkit.backup.pg_failover:
    mode: planned
    login_host: 127.0.0.1
    port: 5432
    login_password: "{{ vault_postgres_password }}"
    primary_data_directory: /var/lib/postgresql/15/main
    standby_port: 5433
  register: failover
"""

RETURN = r"""
rto_seconds:
  description: Seconds from the call to the first write committed through O(endpoint).
  returned: success and not check mode
  type: float
new_timeline:
  description: The promoted server's timeline.
  returned: success and not check mode
  type: int
switch_lsn:
  description: Where the new timeline branched off the old one.
  returned: success and not check mode
  type: str
promote_seconds:
  description: Seconds C(pg_promote) took.
  returned: success and not check mode
  type: float
rpo:
  description:
    - What was lost. For O(mode=planned) C(lost_transactions=0), checked. For O(mode=unplanned) the bound
      (C(safe_before), C(rpo_bound_seconds), C(known_unreceived_bytes)) and, with C(exact=true), the count from
      the old primary's WAL (C(lost_transactions), C(lost_bytes), C(first_lost_commit_time),
      C(last_lost_commit_time)).
  returned: success and not check mode
  type: dict
fenced:
  description: What was done to the old primary.
  returned: success and not check mode
  type: list
  elements: str
steps:
  description: The steps a real run would take.
  returned: check mode
  type: list
  elements: str
msg:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, check_libraries, run_engine
from ..module_utils.pg.failover import OPTIONS, pg_failover


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True,
                           required_if=[("mode", "planned", ["primary_data_directory"])])
    check_libraries(module, [("psycopg", "psycopg")])
    run_engine(module, pg_failover, module.params, check_mode=module.check_mode, metered=True)


if __name__ == "__main__":
    main()
