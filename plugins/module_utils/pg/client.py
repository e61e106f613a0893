# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connections, client tools and credentials, and the database
administration the restores and verifiers need (create, drop; the names of
drkit's own databases are pg/janitor.py's).

Passwords never appear in argv and never in a file on disk: the Python
driver gets them as a keyword, client tools (pg_dump, pg_restore,
pg_basebackup, psql) through a pgpass file that exists only in memory
(ToolEnv), which nothing outlives.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import posixpath
import re
import shutil

from ..core.errors import ConfigError, SourceError, ToolError
from ..core.options import Option, resolve
from ..core.osutil import memory_file, memory_file_path
from ..core.process import shares_files, tool_version

# The connection options (doc fragment drkit.backup.postgres). The port is
# ``port`` with the alias ``login_port``, the name community.postgresql uses.
PG_BIN_DIR = Option("pg_bin_dir", "path", flags=("--pg-bin-dir",),
                    help="directory of the PostgreSQL client tools (default: those of the server's major version)")
CONNECTION = (
    Option("login_host", "str", default="localhost", aliases=("host",), flags=("--host",),
           help="PostgreSQL host, or the directory of its Unix socket"),
    Option("port", "int", default=5432, min=1, max=65535, aliases=("login_port",), flags=("--port", "--login-port"),
           help="PostgreSQL port (default 5432)"),
    Option("login_user", "str", default="postgres", flags=("--user",), help="role to connect as (default postgres)"),
    Option("login_password", "str", env=("PGPASSWORD",), secret=True),
    Option("ssl_mode", "str", default="prefer",
           choices=("allow", "disable", "prefer", "require", "verify-ca", "verify-full")),
    # libpq's 0 (wait forever) is refused: a backup job must not hang on a dead host.
    Option("connect_timeout", "int", default=10, min=1, help="seconds to wait for a connection"),
    PG_BIN_DIR,
)
CONN_KEYS = ("login_host", "port", "login_user", "login_password", "ssl_mode", "connect_timeout")
MAINTENANCE_DB = Option("maintenance_db", "str", default="postgres",
                        help="database to connect to for CREATE/DROP DATABASE and server settings")
APP_NAME = "drkit"
STREAM_APP_NAME = "drkit_wal_stream"  # the streaming archiver's pg_receivewal (pg/wal_stream.py)


def _psycopg():
    try:
        import psycopg  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("PostgreSQL support needs the Python library psycopg (version 3)",
                          "Install it (pip install 'psycopg[binary]') in the Python that runs drkit")
    return psycopg


def conn_params(params):
    """The connection options out of module/CLI parameters, resolved
    (defaults filled in, the port checked)."""
    p = resolve(CONNECTION, params)
    return dict((k, p[k]) for k in CONN_KEYS)


def describe(cp, dbname=None):
    where = "%s@%s:%s" % (cp["login_user"], cp["login_host"], cp["port"])
    return "%s/%s" % (where, dbname) if dbname else where


def connect(cp, dbname, autocommit=False):
    psycopg = _psycopg()
    kwargs = dict(host=cp["login_host"], port=cp["port"], user=cp["login_user"], dbname=dbname,
                  connect_timeout=cp["connect_timeout"], sslmode=cp["ssl_mode"],
                  application_name=APP_NAME, autocommit=autocommit)
    if cp.get("login_password"):
        kwargs["password"] = cp["login_password"]
    try:
        return psycopg.connect(**kwargs)
    except psycopg.OperationalError as e:
        raise connection_error(cp, dbname, e)


def connection_error(cp, dbname, exc):
    # libpq's first line holds the cause ("... failed: Connection refused");
    # the last one is often only a hint ("Is the server running ...?").
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else repr(exc)
    full = str(exc)
    where = describe(cp, dbname)
    if "password authentication failed" in full or "no password supplied" in full:
        return SourceError("Cannot log in to PostgreSQL as %s: %s" % (where, text),
                           "Check login_user and login_password (and pg_hba.conf)")
    if "does not exist" in full and "database" in full:
        return SourceError("Database %r does not exist on %s" % (dbname, describe(cp)),
                           "Check the database option")
    if "Connection refused" in full or "could not connect" in full or "timeout" in full.lower():
        return SourceError("Cannot connect to PostgreSQL at %s:%s: %s" % (cp["login_host"], cp["port"], text),
                           "Check login_host and port, and that the server is running and accepts connections")
    return SourceError("PostgreSQL connection to %s failed: %s" % (where, text))


def server_facts(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                    "current_database(), pg_is_in_recovery()")
        version, num, db, in_recovery = cur.fetchone()
    return {"server_version": version, "server_version_num": num, "database": db,
            "in_recovery": in_recovery}


# What a progress meter can expect a dump or base backup to write when the
# tool says nothing: the database's size on disk (a logical dump of it is
# usually smaller: no indexes, no dead rows), or the size of the default
# tablespace, which the preflight of a physical backup ensures holds the
# whole cluster but pg_global and pg_wal (neither pg_basebackup
# --wal-method=none sends WAL). Both are allowed for every role.
SIZE_SQL = {"database": "SELECT pg_database_size(current_database())",
            "cluster": "SELECT pg_tablespace_size('pg_default') + coalesce(("
                       "SELECT pg_tablespace_size('pg_global')"
                       " WHERE has_tablespace_privilege('pg_global', 'CREATE')), 0)"}


def size_estimate(conn, what):
    """Bytes on disk of the ``what`` ("database" or "cluster") for a
    progress estimate, or None if the server will not say (the
    transaction is rolled back either way)."""
    try:
        with conn.cursor() as cur:
            cur.execute(SIZE_SQL[what])
            value = cur.fetchone()[0]
    except Exception:  # pylint: disable=broad-except
        value = None  # only an estimate: without it the meter shows no total
    try:
        conn.rollback()
    except Exception:  # pylint: disable=broad-except
        pass
    return int(value) if value else None


# Where distributions install each major version: Debian/Ubuntu, PGDG RPMs.
BIN_LAYOUTS = ("/usr/lib/postgresql/%s/bin", "/usr/pgsql-%s/bin")


def version_key(bindir):
    """[15] for /usr/lib/postgresql/15/bin, [9, 6] for .../9.6/bin."""
    name = os.path.basename(os.path.dirname(bindir.rstrip("/")))
    return [int(p) if p.isdigit() else 0 for p in re.split(r"[._-]", name)]


def has_programs(bindir, programs):
    return all(os.access(os.path.join(bindir, p), os.X_OK) for p in programs)


def pg_bindirs(programs, major=None):
    """The PostgreSQL bin directories on this machine that hold all of
    ``programs``: those of one ``major`` version (in BIN_LAYOUTS order), or
    every /usr/lib/postgresql/*/bin, newest first. The one search behind
    find_tool (client tools) and cluster.find_pg_bindir (server programs)."""
    if major is not None:
        candidates = [layout % major for layout in BIN_LAYOUTS]
    else:
        candidates = sorted(glob.glob(BIN_LAYOUTS[0] % "*"), key=version_key, reverse=True)
    return [d for d in candidates if has_programs(d, programs)]


def find_tool(name, server_version_num=None, bin_dir=None):
    """Path of a client tool. pg_dump must be at least the server's major
    version, so prefer the Debian layout's directory for that major."""
    if bin_dir:
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            raise ConfigError("%s not found in pg_bin_dir %s" % (name, bin_dir),
                              "Point pg_bin_dir at the directory holding %s" % name)
        return path
    major = server_version_num // 10000 if server_version_num else None
    if major:
        exact = pg_bindirs([name], major)
        if exact:
            return os.path.join(exact[0], name)
    newest = pg_bindirs([name])
    found = shutil.which(name)
    if newest and (not found or major):
        if major and version_key(newest[0])[0] < major:
            raise ConfigError("%s for PostgreSQL %s or newer is needed, found only %s" % (
                name, major, os.path.join(newest[0], name)),
                "Install the PostgreSQL %s client package" % major)
        return os.path.join(newest[0], name)
    if found:
        return found
    raise ConfigError("%s is not installed" % name,
                      "Install the PostgreSQL client package (e.g. postgresql-client) or set pg_bin_dir")


def locate_tool(runner, name, server_version_num=None, bin_dir=None):
    """(path, version text) of a client tool where ``runner`` runs it: on
    this machine (find_tool), or inside the container of a
    container.runner.ContainerRunner, tried in find_tool's order (pg_bin_dir,
    the server's major version in each BIN_LAYOUTS, then PATH)."""
    if shares_files(runner):
        path = find_tool(name, server_version_num, bin_dir)
        return path, tool_version(runner, path, default="unknown")
    if bin_dir:
        candidates = [posixpath.join(bin_dir, name)]
    else:
        major = server_version_num // 10000 if server_version_num else None
        candidates = [posixpath.join(layout % major, name) for layout in BIN_LAYOUTS] if major else []
        candidates.append(name)
    return runner.locate(name, candidates)


PG_DUMP_ZSTD_MAJOR = 16  # first pg_dump/pg_restore with zstd in the custom format


def tool_major(version_text):
    """18 from "pg_dump (PostgreSQL) 18.6" (0 when unknown)."""
    m = re.search(r"\)\s+(\d+)", version_text or "")
    return int(m.group(1)) if m else 0


def pgpass_escape(value):
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


class ToolEnv(object):
    """Environment for PostgreSQL client tools, with the password in a
    pgpass file that exists only in memory (core/osutil.memory_file: 0600,
    PGPASSFILE=/proc/<drkit's pid>/fd/N, which the tool opens, and a wrapper
    script's child too, as long as drkit lives).
    No file on any file system, so a SIGKILL leaves the password nowhere;
    not in the tool's environment either. Where memory files are not
    available, or the tool cannot open drkit's (``local=False``: it runs in
    a container), the password goes in the tool's environment (PGPASSWORD),
    never in a file. Use as a context manager; the descriptor is closed."""

    def __init__(self, cp, dbname, local=True):
        self.cp = cp
        self.dbname = dbname
        self.local = local
        self._fd = None
        self.env = {}

    def __enter__(self):
        cp = self.cp
        # An inherited PGPASSWORD would win over the file; an empty one is
        # "not set" to libpq. Without a password, the user's ~/.pgpass applies.
        self.env = {"PGHOST": str(cp["login_host"]), "PGPORT": str(cp["port"]),
                    "PGUSER": str(cp["login_user"]), "PGDATABASE": str(self.dbname),
                    "PGCONNECT_TIMEOUT": str(cp["connect_timeout"]), "PGSSLMODE": cp["ssl_mode"],
                    "PGAPPNAME": APP_NAME, "PGPASSWORD": ""}
        password = cp.get("login_password")
        if password and not self.local:
            self.env["PGPASSWORD"] = str(password)
        elif password:
            self._fd = memory_file(("*:*:*:*:%s\n" % pgpass_escape(password)).encode("utf-8"), "drkit-pgpass")
            if self._fd is None:
                self.env["PGPASSWORD"] = str(password)
            else:
                self.env["PGPASSFILE"] = memory_file_path(self._fd)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return False


_ERROR_LINE = re.compile(r"(^|\s)(error|fatal|panic):", re.IGNORECASE)


def stderr_errors(text):
    """Lines of a pg tool's stderr that report an error (pg_dump sometimes
    exits 0 after printing one)."""
    return [line for line in text.splitlines() if _ERROR_LINE.search(line)]


def check_tool_result(handle_name, returncode, stderr_text, what):
    errors = stderr_errors(stderr_text)
    if returncode != 0 or errors:
        detail = "; ".join(errors[:5]) or stderr_text.strip()[-2000:] or "no message"
        if returncode is not None and returncode < 0:
            detail = "killed by signal %d. %s" % (-returncode, detail)
        raise ToolError("%s failed while %s (exit code %s): %s" % (handle_name, what, returncode, detail),
                        "Nothing was recorded as a backup; fix the cause above and run again")


MAX_IDENT = 63  # bytes: PostgreSQL silently cuts longer names


def ident(name):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    return sql.Identifier(name)


def database_exists(conn, name):
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def create_database(conn, name, owner=None, template="template0"):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident(name), ident(template))
    if owner:
        stmt = stmt + sql.SQL(" OWNER {}").format(ident(owner))
    with conn.cursor() as cur:
        cur.execute(stmt)


def drop_database(conn, name):
    from psycopg import sql  # pylint: disable=import-outside-toplevel
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident(name)))


def user_object_count(cp, dbname):
    """Relations, functions and types outside the system schemas: what makes
    a database 'non-empty'."""
    conn = connect(cp, dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("""
                SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%')
                     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
                     + (SELECT count(*) FROM pg_namespace
                        WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
                          AND nspname NOT LIKE 'pg\\_%%')""")
            return cur.fetchone()[0]
    finally:
        conn.close()
