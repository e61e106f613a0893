#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: container_drill
short_description: Inspect database containers for recovery gaps, then cause failures and measure the recovery
version_added: 0.2.0
description:
  - Inspects PostgreSQL and Redis containers, named in O(containers) or found by the label
    C(com.docker.compose.project) of O(compose_project), and reports each gap as a finding. It checks the restart
    policy, the healthcheck, and whether the data directory is on a named volume. That directory is PGDATA (else
    C(/var/lib/postgresql/data)) for PostgreSQL, and C(--dir) (else C(/data)) for Redis. With O(compose_file) it
    also checks the compose file's C(depends_on) conditions (whether they wait with C(condition=service_healthy)).
  - Then, only with O(confirm=true), it runs each scenario of O(scenarios) on each container, one at a time.
    C(restart) is C(docker restart). C(crash) sends SIGKILL to the container's main process (C(State.Pid)) from
    the Docker host. It does not use C(docker kill), because the Engine records that as a stop by hand and
    C(unless-stopped) then leaves the container down. C(stop_start) is C(docker stop), then C(docker start).
    C(cascade) runs once, after the others, on all the containers together. It sends SIGKILL to every
    container's main process at the same moment and times each recovery from that moment.
    C(cold_start) runs last. It stops every container, then starts the dependents first and the databases last,
    as a reboot of the Docker host may do. The Engine never reads C(depends_on).
  - Dependent services (the API gateway, the data layer) are given in O(containers) with C(kind=other). They
    get the scenarios too, which is their own failure. After each failure of a database, the drill also waits until
    every dependent's healthcheck passes in a check that started after the database answered again, which
    shows that it reconnected. A dependent that does not do so within O(recovery_timeout) fails that scenario.
    A dependent without a healthcheck cannot show that it reconnected, and is listed as such.
  - Before each failure it writes a marker, a row in PostgreSQL (committed with C(synchronous_commit=on)) or a
    key in Redis. It then measures the seconds until the container is healthy again (its healthcheck) and the
    server answers a query from this host, and checks that the marker is still there. For Redis, a lost key
    fails the scenario only when its persistence promises the key (AOF with C(appendfsync always), or
    C(everysec) with the key written over a second before). With RDB only or no persistence, a loss is
    reported but allowed.
  - A container that does not come back within O(recovery_timeout) fails its scenario ("did not come back").
    The drill does not start it again.
  - The audit's other scenarios are reported under RV(not_shown), each with the reason. These are a network
    partition (host-networked containers cannot be disconnected, and a bridge network cannot be created on the
    test machines). The failure of dependent services is also listed when none is given. A cascading failure
    and the startup order are listed when fewer than two containers are given, or when C(cascade) or
    C(cold_start) is not asked for.
  - Markers are removed afterwards. The PostgreSQL marker table C(public.drkit_drill_marker) is dropped if the
    drill created it.
  - Run it on the Docker host, as a user allowed to use the Docker socket (root). The crash needs the host's
    process table.
  - See C(docs/containers.md) and the runbook, C(docs/DISASTER-RECOVERY-RUNBOOK.md).
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.container.engine
attributes:
  check_mode:
    support: full
    description: Inspects only. Runs no scenario and writes no report.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  containers:
    description:
      - The containers to drill. Each item is a container name or id, or a mapping with C(name) and how to reach
        its server from this host. C(kind) is C(postgres), C(redis) or C(other), and is guessed from the
        command and image when unset. C(login_host) defaults to C(127.0.0.1). C(port) defaults to the published
        host port of 5432 or 6379, else that port itself. C(login_user) defaults to C(postgres) for PostgreSQL.
        C(database) defaults to C(postgres).
      - With O(compose_project), an item whose C(name) is a compose service applies to that service's
        container.
      - Passwords do not go here. Put them in O(login_passwords).
    type: list
    elements: raw
    default: []
  compose_project:
    description:
      - Drill every container labelled C(com.docker.compose.project=<this>).
    type: str
  compose_file:
    description:
      - The project's compose file. Its services are checked for C(restart), C(healthcheck) and, for every
        service that depends on a drilled one, C(condition=service_healthy).
    type: path
  login_passwords:
    description:
      - Passwords of the servers, by container name (or compose service name), for the markers and probes.
    type: dict
  confirm:
    description:
      - Run the scenarios. They restart, kill and stop the containers, which is an outage of each.
      - Without it, the module fails before touching anything, unless O(scenarios) is empty or in check mode.
        Both of those only inspect.
    type: bool
    default: false
  scenarios:
    description:
      - The failures to cause on each container, in this order.
    type: list
    elements: str
    choices: [restart, crash, stop_start, cascade, cold_start]
    default: [restart, crash, stop_start, cascade, cold_start]
  recovery_timeout:
    description:
      - Seconds to wait for a container to be healthy and answering after each failure.
    type: float
    default: 120
  report_dir:
    description:
      - Directory for C(report.json), C(report.md) and C(report.html). Without it, the report is only returned.
    type: path
  title:
    description:
      - Title of the report.
    type: str
    default: Container drill
requirements:
  - psycopg (PostgreSQL markers)
seealso:
  - module: drkit.backup.dr_report
"""

EXAMPLES = r"""
- name: Inspect only
  drkit.backup.container_drill:
    containers: [agentic-postgres, agentic-redis]
    scenarios: []
    report_dir: /var/lib/drkit/reports/container-drill

- name: Drill the compose project's databases (an outage of each, one at a time)
  drkit.backup.container_drill:
    compose_project: agentic
    compose_file: /srv/agentic/docker-compose.yml
    containers:
      - name: agentic-postgres
        kind: postgres
        port: 5432
        database: app
      - name: agentic-redis
        kind: redis
        port: 6379
    login_passwords:
      agentic-postgres: "{{ vault_pg_password }}"
      agentic-redis: "{{ vault_redis_password }}"
    confirm: true
    report_dir: /var/lib/drkit/reports/container-drill
"""

RETURN = r"""
containers:
  description: What each container declares, with its findings.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Container name.
      type: str
    kind:
      description: C(postgres), C(redis) or C(other).
      type: str
    restart_policy:
      description: The Engine's restart policy (C(no) when unset).
      type: str
    healthcheck:
      description: Whether it has a healthcheck.
      type: bool
    data_dir:
      description: The data directory inside the container.
      type: str
    data_volume:
      description: The mount that holds it (type, name, source, destination, anonymous), or null.
      type: dict
    findings:
      description: The gaps, one sentence each.
      type: list
      elements: str
findings:
  description: Every gap and every failed scenario, one sentence each.
  returned: always
  type: list
  elements: str
compose:
  description: The compose file's findings and its C(depends_on) edges (service, depends_on, condition).
  returned: always
  type: dict
scenarios:
  description: One result per container and scenario, in the order they ran.
  returned: always
  type: list
  elements: dict
  contains:
    container:
      description: Container name.
      type: str
    scenario:
      description: C(restart), C(crash), C(stop_start), C(cascade) or C(cold_start).
      type: str
    status:
      description: C(passed), C(failed), C(not_run) (it was not healthy before) or C(not_shown) (it cannot run
        from here, with the reason).
      type: str
    rto_seconds:
      description: Seconds from the failure until the container was healthy and its server answered, or null.
      type: float
    healthy_seconds:
      description: Seconds until its healthcheck said healthy (null without a healthcheck).
      type: float
    answers_seconds:
      description: Seconds until its server answered a query from this host.
      type: float
    marker:
      description: The marker written before the failure (token, promise, must_keep) and whether it was kept.
      type: dict
    dependents:
      description:
        - For a database, the seconds from the failure until each dependent (C(kind=other)) passed a healthcheck
          again after the database answered. The value is null when the dependent did not reconnect in time, and
          C(no healthcheck) when it cannot show it. Null when no dependent was given.
      type: dict
    killed_pid:
      description: The host PID that the C(crash) and C(cascade) scenarios sent SIGKILL to.
      type: int
    reason:
      description: Why it failed, was not run, or lost its marker.
      type: str
not_shown:
  description: The audit's scenarios this drill does not run, each with the reason.
  returned: always
  type: list
  elements: dict
passed:
  description: No scenario failed.
  returned: always
  type: bool
inspect_only:
  description: No scenario ran (check mode or empty O(scenarios)).
  returned: always
  type: bool
worst_rto_seconds:
  description: The longest measured RTO, or null.
  returned: always
  type: float
paths:
  description: The report files written.
  returned: always
  type: dict
msg:
  description: One-line summary.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, check_libraries, run_engine
from ..module_utils.drill.container import OPTIONS, container_drill


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    check_libraries(module, [("docker", "docker")])
    run_engine(module, container_drill, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
