# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A long-lived sandbox PostgreSQL for demos and rehearsals on a machine
without a production database: ScratchPostgres started detached (it outlives
the process that started it), its settings kept in base_dir/sandbox.json and
the superuser's password in a 0600 pgpass file (never returned)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil

from . import sandbox
from .errors import ConfigError

STATE = "sandbox.json"
PASSFILE = "pgpass"


def _load_state(base_dir):
    try:
        with open(os.path.join(base_dir, STATE)) as fh:
            return json.load(fh)
    except (IOError, OSError, ValueError):
        return None


def _save_state(base_dir, state):
    path = os.path.join(base_dir, STATE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.rename(path + ".tmp", path)


def _write_passfile(base_dir, server):
    path = os.path.join(base_dir, PASSFILE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("%s:%d:*:%s:%s\n" % (server.host, server.port, server.superuser,
                                      server.password.replace("\\", "\\\\").replace(":", "\\:")))
    os.rename(path + ".tmp", path)
    return path


def _server(base_dir, state):
    if os.path.exists(os.path.join(base_dir, "data", "PG_VERSION")) and not state:
        raise ConfigError("%s holds a data directory but no %s" % (base_dir, STATE),
                          "Remove the directory (state: absent) and start again")
    # initdb=True with the saved password adopts the existing cluster.
    return sandbox.ScratchPostgres(base_dir, port=(state or {}).get("port"),
                                   password=(state or {}).get("password"), initdb=True)


def _running(server):
    return server.is_running()


def pg_sandbox(params, check_mode=False, progress=None):
    progress = progress or (lambda msg: None)
    base_dir = params.get("base_dir")
    if not base_dir or not os.path.isabs(base_dir):
        raise ConfigError("base_dir must be an absolute path, got %r" % (base_dir,))
    state = params.get("state") or "started"
    saved = _load_state(base_dir)
    if state == "absent":
        if not os.path.exists(base_dir):
            return False, {"msg": "No sandbox in %s" % base_dir}
        if check_mode:
            return True, {"msg": "Would stop and remove the sandbox in %s" % base_dir}
        if saved and os.path.exists(os.path.join(base_dir, "data", "PG_VERSION")):
            _server(base_dir, saved).destroy()
        shutil.rmtree(base_dir, ignore_errors=True)
        return True, {"msg": "Removed the sandbox in %s" % base_dir}
    if state != "started":
        raise ConfigError("state must be started or absent, got %r" % state)

    changed = False
    if saved and os.path.exists(os.path.join(base_dir, "data", "PG_VERSION")):
        server = _server(base_dir, saved)
        if not _running(server):
            if check_mode:
                return True, {"msg": "Would start the sandbox in %s" % base_dir}
            server.start()
            changed = True
    else:
        if check_mode:
            return True, {"msg": "Would create and start a sandbox in %s" % base_dir}
        if not os.path.isdir(base_dir):
            os.makedirs(base_dir, 0o755)
        progress("initdb and start of a sandbox PostgreSQL in %s" % base_dir)
        server = sandbox.ScratchPostgres(base_dir, port=params.get("port"))
        server.start()
        _save_state(base_dir, {"port": server.port, "password": server.password})
        changed = True
    # Detach: the server must outlive this process (the next task uses it).
    server.detach()
    passfile = _write_passfile(base_dir, server)

    sample = None
    if params.get("sample_database"):
        from . import postgres  # pylint: disable=import-outside-toplevel
        cp = postgres.conn_params({"login_host": server.host, "port": server.port,
                                   "login_user": server.superuser, "login_password": server.password})
        conn = postgres.connect(cp, "postgres", autocommit=True)
        try:
            from .pg_restore import database_exists  # pylint: disable=import-outside-toplevel
            exists = database_exists(conn, params["sample_database"])
        finally:
            conn.close()
        if not exists and not check_mode:
            from . import sample_data  # pylint: disable=import-outside-toplevel
            progress("loading the sample dataset (scale %s)" % params.get("sample_scale", 0.01))
            sample = sample_data.generate(server.conninfo("postgres"), scale=float(params.get("sample_scale") or 0.01),
                                          seed=int(params.get("sample_seed") or 42),
                                          database=params["sample_database"], progress=progress)
            changed = True
    return changed, {"login_host": server.host, "port": server.port, "login_user": server.superuser,
                     "passfile": passfile, "data_directory": server.data_dir, "base_dir": base_dir,
                     "sample": {"database": sample["database"], "size_bytes": sample.get("size_bytes"),
                                "tables": len(sample.get("tables", {}))} if sample else None,
                     "msg": "Sandbox PostgreSQL on %s:%s" % (server.host, server.port)}
