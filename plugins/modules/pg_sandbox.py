#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_sandbox
short_description: A sandbox PostgreSQL on 127.0.0.1 with the sample dataset, for demos and rehearsals
version_added: 0.1.0
description:
  - Creates (C(initdb)) and starts a PostgreSQL server of its own in O(base_dir), listening only on
    127.0.0.1 on a free port (or O(port)), with a random superuser password kept in a 0600 pgpass file
    whose path is returned as RV(passfile) (the password itself is never returned).
  - Optionally loads the sample dataset shaped like the audited platform (schemas C(l02_runtime),
    C(mcp_contexts), C(mcp_documents)) into O(sample_database).
  - Never touches the machine's own PostgreSQL service. Used by C(playbooks/dr_rehearsal.yml) on localhost.
author:
  - drkit.backup contributors (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reports what would be started or removed.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  state:
    description:
      - V(started) creates and starts the sandbox; V(absent) stops it and removes O(base_dir).
    type: str
    default: started
    choices: [started, absent]
  base_dir:
    description:
      - Absolute directory of the sandbox (data directory, socket, log, state).
    type: path
    required: true
  port:
    description:
      - Port (1-65535) for a new sandbox; a free one by default.
    type: int
  sample_database:
    description:
      - Load the sample dataset into this database if it does not exist yet.
    type: str
  sample_scale:
    description:
      - Size of the sample dataset (more than 0); 1.0 is about 1 GB.
    type: float
    default: 0.01
  sample_seed:
    description:
      - Seed of the sample dataset generator.
    type: int
    default: 42
  redis_keys:
    description:
      - Also start a sandbox Redis (AOF on, password in a 0600 file) beside it in O(base_dir)/redis and fill it
        up to this many session-shaped keys. V(0) starts no Redis.
    type: int
    default: 0
requirements:
  - PostgreSQL server binaries (Debian package postgresql)
  - psycopg >= 3
"""

EXAMPLES = r"""
- name: Sandbox with ~50 MB of sample data
  drkit.backup.pg_sandbox:
    base_dir: /tmp/drkit-rehearsal/sandbox
    sample_database: agentic_platform
    sample_scale: 0.05
  register: sandbox

- name: Back it up
  drkit.backup.pg_backup:
    login_host: "{{ sandbox.login_host }}"
    port: "{{ sandbox.port }}"
    login_user: "{{ sandbox.login_user }}"
    database: agentic_platform
    storage_url: file:///tmp/drkit-rehearsal/backups
  environment:
    PGPASSFILE: "{{ sandbox.passfile }}"

- name: Remove it
  drkit.backup.pg_sandbox:
    state: absent
    base_dir: /tmp/drkit-rehearsal/sandbox
"""

RETURN = r"""
login_host:
  description: Address the sandbox listens on.
  returned: state is started
  type: str
  sample: 127.0.0.1
port:
  description: Port the sandbox listens on.
  returned: state is started
  type: int
login_user:
  description: Superuser name.
  returned: state is started
  type: str
passfile:
  description: 0600 pgpass file with the superuser's password; point E(PGPASSFILE) at it.
  returned: state is started
  type: str
data_directory:
  description: The sandbox's data directory.
  returned: state is started
  type: str
redis:
  description: The sandbox Redis (login_host, login_port, password_file, data_directory), or null.
  returned: state is started
  type: dict
sample:
  description: What was loaded (database, size_bytes, tables) when the sample dataset was created by this run.
  returned: state is started
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.demo.sandbox import OPTIONS, pg_sandbox


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True)
    run_engine(module, pg_sandbox, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
