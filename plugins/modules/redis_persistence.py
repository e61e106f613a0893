#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: redis_persistence
short_description: Redis persistence settings (RDB save rules, AOF, fsync policy), live and persisted
version_added: 0.1.0
description:
  - Sets RDB save rules, C(appendonly) and C(appendfsync) (and any other parameter in O(settings))
    live with C(CONFIG SET) and persists them with C(CONFIG REWRITE). None needs a restart.
  - Reports C(changed) only when a live value differed, or when the server's config file (C(INFO server)
    C(config_file), when readable on this host) holds a different value for a managed setting,
    which a restart would bring back.
  - Turning AOF on makes Redis write the whole AOF in the background; with O(wait=true) the task
    returns only once it is written.
  - With C(--diff), shows the managed settings before and after.
  - See C(docs/redis.md) for the RPO trade-off. RDB only loses up to the save interval, AOF with
    C(appendfsync everysec) about one second.
author:
  - drkit.backup contributors (!UNKNOWN)
extends_documentation_fragment:
  - drkit.backup.redis
attributes:
  check_mode:
    support: full
    description: Reads the settings and reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Managed settings before and after, in redis.conf syntax.
options:
  save:
    description:
      - RDB save rules as C(SECONDS CHANGES) strings, e.g. C(["3600 1", "300 100", "60 10000"]).
      - An empty list turns RDB snapshots on a timer off (C(BGSAVE) still works).
    type: list
    elements: str
  appendonly:
    description:
      - Turn the append-only file on or off.
    type: bool
  appendfsync:
    description:
      - When the AOF is fsynced. V(everysec) loses at most about one second of writes on a crash.
    type: str
    choices: [always, everysec, "no"]
  settings:
    description:
      - Other parameters, as C(CONFIG GET) names and values in the form C(CONFIG GET) returns them
        (e.g. C(aof-use-rdb-preamble) C(yes), C(auto-aof-rewrite-min-size) C(67108864)).
      - Paths and secrets (C(dir), C(dbfilename), C(requirepass)...) are refused.
    type: dict
  persist:
    description:
      - Write the settings to the config file with C(CONFIG REWRITE). A server started without a
        config file cannot persist; the task then fails before changing anything.
    type: bool
    default: true
  wait:
    description:
      - When AOF is turned on, wait until Redis has written it.
    type: bool
    default: true
  timeout:
    description:
      - Seconds (V(1) or more) to wait for the AOF to be written.
    type: int
    default: 600
"""

EXAMPLES = r"""
- name: AOF with fsync every second, and hourly/5-minute/1-minute RDB snapshots
  drkit.backup.redis_persistence:
    login_password: "{{ vault_redis_password }}"
    appendonly: true
    appendfsync: everysec
    save: ["3600 1", "300 100", "60 10000"]
"""

RETURN = r"""
before:
  description: The managed settings before (live values).
  returned: always
  type: dict
  sample: {"appendonly": "no", "appendfsync": "everysec", "save": "3600 1 300 100 60 10000"}
after:
  description: The managed settings after (or as they would be in check mode).
  returned: always
  type: dict
changes:
  description: Settings whose live value changed (or would change).
  returned: always
  type: dict
config_file:
  description: The server's config file, if it has one.
  returned: always
  type: str
config_file_stale:
  description: Managed settings whose value in the config file differed from the wanted one.
  returned: always
  type: list
  elements: str
restart_required:
  description: Always false; these settings apply live.
  returned: always
  type: bool
msg:
  description: Summary.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ..module_utils._ansible import argument_spec, run_engine
from ..module_utils.redis.settings import OPTIONS, redis_persistence


def main():
    module = AnsibleModule(argument_spec=argument_spec(OPTIONS), supports_check_mode=True,
                           required_one_of=[("save", "appendonly", "appendfsync", "settings")])
    run_engine(module, redis_persistence, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
