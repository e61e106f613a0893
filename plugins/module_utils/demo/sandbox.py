# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A long-lived sandbox PostgreSQL for demos and rehearsals on a machine
without a production database: ScratchPostgres started detached (it outlives
the process that started it), its settings kept in base_dir/sandbox.json and
the superuser's password in a 0600 pgpass file (never returned).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import secrets
import shutil
import time

from ..core.errors import ConfigError
from ..core.options import Option, Options, resolve
from ..core.osutil import atomic_write
from ..core.scratch import LOOPBACK
from ..pg import client as pg_client
from ..pg.client import database_exists
from ..pg.scratch import ScratchPostgres
from ..redis import client as redis_client
from ..redis.scratch import ScratchRedis
from . import sample_data

STATE = "sandbox.json"
PASSFILE = "pgpass"
REDIS_STATE = "redis.json"
REDIS_PASSFILE = "redis-password"

# drkit.backup.pg_sandbox
OPTIONS = Options(
    Option("state", "str", default="started", choices=("started", "absent")),
    Option("base_dir", "path", required=True),
    Option("port", "int", min=1, max=65535),
    Option("sample_database", "str"),
    Option("sample_scale", "float", default=0.01, above=0),
    Option("sample_seed", "int", default=42),
    Option("redis_keys", "int", default=0, min=0, no_log=False),
)


def _load_state(base_dir):
    try:
        with open(os.path.join(base_dir, STATE)) as fh:
            return json.load(fh)
    except (IOError, OSError, ValueError):
        return None


def _save_state(base_dir, state):
    _save_json(os.path.join(base_dir, STATE), state)


def _write_passfile(base_dir, server):
    return atomic_write(os.path.join(base_dir, PASSFILE), "%s:%d:*:%s:%s\n" % (
        server.host, server.port, server.superuser, server.password.replace("\\", "\\\\").replace(":", "\\:")))


def _server(base_dir, state):
    if os.path.exists(os.path.join(base_dir, "data", "PG_VERSION")) and not state:
        raise ConfigError("%s holds a data directory but no %s" % (base_dir, STATE),
                          "Remove the directory (state: absent) and start again")
    # initdb=True with the saved password adopts the existing cluster.
    return ScratchPostgres(base_dir, port=(state or {}).get("port"),
                           password=(state or {}).get("password"), initdb=True)


def _running(server):
    return server.is_running()


def pg_sandbox(params, check_mode=False, progress=None):
    progress = progress or (lambda msg: None)
    params = resolve(OPTIONS, params)
    base_dir = params["base_dir"]
    if not base_dir or not os.path.isabs(base_dir):
        raise ConfigError("base_dir must be an absolute path, got %r" % (base_dir,))
    state = params["state"]
    saved = _load_state(base_dir)
    if state == "absent":
        if not os.path.exists(base_dir):
            return False, {"msg": "No sandbox in %s" % base_dir}
        if check_mode:
            return True, {"msg": "Would stop and remove the sandbox in %s" % base_dir}
        _redis_stop(base_dir)
        if saved and os.path.exists(os.path.join(base_dir, "data", "PG_VERSION")):
            _server(base_dir, saved).destroy()
        shutil.rmtree(base_dir, ignore_errors=True)
        return True, {"msg": "Removed the sandbox in %s" % base_dir}

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
        server = ScratchPostgres(base_dir, port=params["port"])
        server.start()
        _save_state(base_dir, {"port": server.port, "password": server.password})
        changed = True
    # Detach: the server must outlive this process (the next task uses it).
    server.detach()
    passfile = _write_passfile(base_dir, server)

    sample = None
    if params["sample_database"]:
        cp = pg_client.conn_params({"login_host": server.host, "port": server.port,
                                   "login_user": server.superuser, "login_password": server.password})
        conn = pg_client.connect(cp, "postgres", autocommit=True)
        try:
            exists = database_exists(conn, params["sample_database"])
        finally:
            conn.close()
        if not exists and not check_mode:
            progress("loading the sample dataset (scale %s)" % params["sample_scale"])
            sample = sample_data.generate(server.conninfo("postgres"), scale=params["sample_scale"],
                                          seed=params["sample_seed"], database=params["sample_database"],
                                          progress=progress)
            changed = True
    redis = None
    if params["redis_keys"]:
        redis_changed, redis = _redis_started(base_dir, params["redis_keys"], check_mode, progress)
        changed = changed or redis_changed
    return changed, {"login_host": server.host, "port": server.port, "login_user": server.superuser, "redis": redis,
                     "passfile": passfile, "data_directory": server.data_dir, "base_dir": base_dir,
                     "sample": {"database": sample["database"], "size_bytes": sample.get("size_bytes"),
                                "tables": len(sample.get("tables", {}))} if sample else None,
                     "msg": "Sandbox PostgreSQL on %s:%s" % (server.host, server.port)}


# --------------------------------------------------------------------------
# Redis beside it (the platform runs both)


def _redis_cp(state):
    return {"login_host": LOOPBACK, "login_port": state["port"], "login_password": state["password"]}


def _redis_alive(state):
    try:
        with redis_client.connect(redis_client.conn_params(_redis_cp(state))) as client:
            return client.call("PING") in ("PONG", b"PONG")
    except Exception:  # pylint: disable=broad-except
        return False


def _redis_started(base_dir, keys, check_mode, progress):
    rdir = os.path.join(base_dir, "redis")
    state = None
    try:
        with open(os.path.join(base_dir, REDIS_STATE)) as fh:
            state = json.load(fh)
    except (IOError, OSError, ValueError):
        state = None
    if state and _redis_alive(state):
        changed = False
    else:
        if check_mode:
            return True, None
        if not os.path.isdir(rdir):
            os.makedirs(rdir, 0o700)
        password = (state or {}).get("password") or secrets.token_urlsafe(18)
        progress("starting a sandbox Redis (AOF on) in %s" % rdir)
        server = ScratchRedis(rdir, port=(state or {}).get("port"), password=password, appendonly=True)
        server.start()
        server.detach()
        state = {"port": server.port, "password": password}
        _save_json(os.path.join(base_dir, REDIS_STATE), state)
        changed = True
    with redis_client.connect(redis_client.conn_params(_redis_cp(state))) as client:
        have = int(client.call("DBSIZE"))
        if have < keys and not check_mode:
            progress("loading %d sample keys into Redis" % (keys - have))
            batch = []
            for i in range(have, keys):
                # Session-cache shaped values, a third with a TTL like real sessions.
                value = '{"agent": %d, "ctx": "x%05d"}' % (i % 977, i % 99991)
                cmd = ("SET", "session:%08d" % i, value)
                batch.append(cmd + ("EX", "86400") if i % 3 == 0 else cmd)
                if len(batch) >= 1000:
                    client.pipeline(batch)
                    batch = []
            if batch:
                client.pipeline(batch)
            changed = True
    passfile = atomic_write(os.path.join(base_dir, REDIS_PASSFILE), state["password"])
    return changed, {"login_host": LOOPBACK, "login_port": state["port"], "password_file": passfile,
                     "data_directory": rdir}


def _redis_stop(base_dir):
    try:
        with open(os.path.join(base_dir, REDIS_STATE)) as fh:
            state = json.load(fh)
    except (IOError, OSError, ValueError):
        return
    if not _redis_alive(state):
        return
    try:
        with redis_client.connect(redis_client.conn_params(_redis_cp(state))) as client:
            client.send(("SHUTDOWN", "NOSAVE"))
    except Exception:  # pylint: disable=broad-except
        pass  # the connection drops when the server exits
    deadline = time.time() + 10
    while _redis_alive(state) and time.time() < deadline:
        time.sleep(0.1)


def _save_json(path, data):
    atomic_write(path, json.dumps(data))
