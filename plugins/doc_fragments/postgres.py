# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server, or the directory of its Unix socket.
    type: str
    default: localhost
    aliases: [host]
  port:
    description:
      - Port of the PostgreSQL server, V(1) to V(65535).
      - O(login_port) is the name community.postgresql uses; a drkit config file takes either key, the
        command line C(--port) or C(--login-port).
    type: int
    default: 5432
    aliases: [login_port]
  login_user:
    description:
      - Role to connect as.
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). If not given, the E(PGPASSWORD) environment variable is used,
        then libpq's own C(~/.pgpass).
      - Passed to client tools through a 0600 pgpass file that exists only in memory (never on disk, so not even
        C(kill -9) leaves it behind), never on their command line or in their environment. Tools run inside a
        container (option C(container)) cannot open drkit's memory file, so they get it in the exec's environment
        (E(PGPASSWORD)), still never on a command line or disk.
    type: str
  ssl_mode:
    description:
      - libpq C(sslmode) for the connection.
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  connect_timeout:
    description:
      - Seconds to wait for a connection, V(1) or more (libpq's V(0), wait forever, is refused).
    type: int
    default: 10
  pg_bin_dir:
    description:
      - Directory of the PostgreSQL client tools (C(pg_dump), C(pg_restore)).
      - By default the tools matching the server's major version are used
        (C(/usr/lib/postgresql/<major>/bin) on Debian), else those on E(PATH).
    type: path
requirements:
  - psycopg >= 3 (Python library on the managed host)
  - PostgreSQL client tools of the server's major version or newer
"""

    # pg_restore's session settings: drkit.backup.postgres.restore_settings
    RESTORE_SETTINGS = r"""
options:
  restore_settings:
    description:
      - Server settings for C(pg_restore)'s own sessions (passed in C(PGOPTIONS), never in argv), merged over
        the defaults C(maintenance_work_mem=256MB) (index builds sort in memory; up to that much per job) and
        C(synchronous_commit=off) (restore commits do not wait for the WAL flush; M(drkit.backup.pg_restore)
        renames the database into place by a synchronous commit that follows them in the WAL, so it is durable
        before it is visible).
      - Set a setting to an empty string to keep the server's value (for example O(restore_settings) with
        C(maintenance_work_mem) set to C("")).
    type: dict
"""
