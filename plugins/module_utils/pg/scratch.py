# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away PostgreSQL on loopback (ScratchPostgres; its Redis twin is
redis.scratch, what they share core.scratch).

Used by the verifiers (test-restore of a logical dump, physical replay), by
the demo and by the test-suite. Every instance:

* binds 127.0.0.1 only, on a free port (or the one given), with its own
  directory: it never touches the machine's own services;
* keeps secrets out of argv (PGPASSWORD in the environment);
* is a context manager, and is also stopped by an ``atexit`` safety net if the
  owner forgets, so a crashed verifier does not leave servers behind.

When running as root, PostgreSQL's programs run as the ``postgres`` OS user
(PostgreSQL refuses to run as root). That user must be able to reach the base
directory, so the base directory must not sit below a directory that only
root can enter (pytest's ``tmp_path`` lives below such a directory:
``/tmp/pytest-of-root`` is 0700). ``make_scratch_dir()`` makes a suitable one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import secrets
import shutil
import signal
import stat
import subprocess

from ..core.errors import ConfigError, ToolError, WaitTimeout
from ..core.osutil import check_traversable, user_ids
from ..core.scratch import LOOPBACK, ScratchServer, clean_env, tail_file, wait_proc
from .cluster import (
    as_user,
    cmdline_value,
    conf_quote,
    find_pg_bindir,
    pidfile_live,
    read_pidfile,
    server_env,
    stop_server,
)

# --------------------------------------------------------------------------
# PostgreSQL


class ScratchPostgres(ScratchServer):
    """A throw-away PostgreSQL server.

    ``ScratchPostgres(base_dir)`` lays out ``base_dir/data`` (the cluster),
    ``base_dir/run`` (unix socket), ``base_dir/postgresql.log``.

    ``initdb=True`` (default) creates a new cluster with scram-sha-256 for
    local and host connections; the superuser's password is ``password`` or,
    when None, a random one (see the ``password`` attribute).

    ``initdb=False`` starts an existing data directory (``data_dir=``, default
    ``base_dir/data``), e.g. a restored base backup. Its configuration files
    are left as they are except that a missing postgresql.conf is created
    empty; the port, addresses, socket directory, hba file and logging are
    forced on the command line, and so are ``archive_mode=off``, ``ssl=off``
    (a scratch copy must never push WAL into the real archive, nor look for
    the original's certificates), ``shared_buffers=128MB`` (not production's
    size) and then the ``settings`` (which may override those). When root,
    the data directory is chowned to the server's OS user and made 0700. Authentication
    uses a sandbox hba file: ``trust`` on the unix socket (its directory is
    0700, so only the server's OS user and root reach it) and scram-sha-256 on
    127.0.0.1. With ``password=None``, ``conninfo()``/``env()``/``psql()`` use
    the socket.

    ``settings`` (dict) are appended to postgresql.conf for a new cluster, so
    ALTER SYSTEM still overrides them; for ``initdb=False`` they go on the
    command line.

    With ``initdb=True`` and a data directory that already holds a cluster,
    initdb is skipped (pass the password it was created with). ``detach()``
    lets a server outlive the object and the process; a later object on the
    same base_dir then finds it through postmaster.pid (``is_running()``,
    ``start()`` adopts its port, ``stop()``/``destroy()`` use pg_ctl).

    When running as root, programs run as ``os_user`` (default ``postgres``)
    and every ancestor of base_dir must be enterable by it (ConfigError
    otherwise); the server log (``log_file``) stays root-owned.
    """

    def __init__(self, base_dir, port=None, superuser="postgres", password=None, bin_dir=None, settings=None,
                 initdb=True, data_dir=None, os_user=None, version=None):
        super(ScratchPostgres, self).__init__(base_dir, port)
        self.superuser = superuser
        self.initdb = initdb
        if password is None and initdb:
            password = secrets.token_urlsafe(18)
        self.password = password
        # absolute: the tools run from another working directory
        self.bin_dir = os.path.abspath(bin_dir) if bin_dir else find_pg_bindir(version)
        self.settings = dict(settings or {})
        self.data_dir = os.path.abspath(data_dir) if data_dir else os.path.join(self.base_dir, "data")
        self.socket_dir = os.path.join(self.base_dir, "run")
        self.log_file = os.path.join(self.base_dir, "postgresql.log")
        self.hba_file = os.path.join(self.base_dir, "sandbox_hba.conf")
        self.ident_file = os.path.join(self.base_dir, "sandbox_ident.conf")
        if os_user is None and os.geteuid() == 0:
            os_user = "postgres"
        self.os_user = os_user
        self._initialized = not initdb

    # -- helpers ---------------------------------------------------------

    def _bin(self, name):
        return os.path.join(self.bin_dir, name)

    def _ids(self):
        if self.os_user is None:
            return None
        return user_ids(self.os_user)

    def _as_server_user(self):
        """kwargs for subprocess so the program runs as the server's OS user."""
        return as_user(self._ids())

    def _server_env(self):
        ids = self._ids()
        return server_env(ids[3], self.os_user) if ids is not None else server_env()

    def _chown(self, path):
        ids = self._ids()
        if ids is not None and ids[0] != os.geteuid():
            os.chown(path, ids[0], ids[1])

    def _run_tool(self, argv, what, timeout=300, as_server=True):
        kwargs = self._as_server_user() if as_server else {}
        try:
            res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.base_dir,
                                 env=self._server_env(), timeout=timeout, check=False, **kwargs)
        except subprocess.TimeoutExpired:
            raise WaitTimeout("%s did not finish within %ss" % (what, timeout))
        except OSError as exc:
            raise ToolError("Could not run %s: %s" % (argv[0], exc))
        if res.returncode != 0:
            raise ToolError("%s failed (exit %d): %s" % (what, res.returncode,
                                                         (res.stderr or res.stdout).decode("utf-8", "replace").strip()),
                            details={"argv": argv, "returncode": res.returncode})
        return res.stdout.decode("utf-8", "replace")

    def _prepare_dirs(self):
        if not os.path.isdir(self.base_dir):
            os.makedirs(self.base_dir, 0o711)
        ids = self._ids()
        if ids is not None and ids[0] != os.geteuid():
            st = os.stat(self.base_dir)
            # the server user must traverse base_dir (not list it)
            if not (st.st_uid == ids[0] or st.st_mode & stat.S_IXOTH
                    or (st.st_gid in ids[2] and st.st_mode & stat.S_IXGRP)):
                os.chmod(self.base_dir, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            check_traversable(self.base_dir, ids[0], ids[2])
            if not self.data_dir.startswith(self.base_dir + os.sep):
                check_traversable(self.data_dir, ids[0], ids[2])
        for d in (self.socket_dir,):
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
            os.chmod(d, 0o700)
            self._chown(d)

    def _write_auth_files(self):
        # used for initdb=False only: our own hba, whatever the restored cluster had
        lines = [
            "# drkit sandbox: written by ScratchPostgres, do not edit",
            "local   all   all                   trust",
            "host    all   all   127.0.0.1/32    scram-sha-256",
        ]
        for path, text in ((self.hba_file, "\n".join(lines) + "\n"), (self.ident_file, "")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
            self._chown(path)

    def _initdb(self):
        if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            self._initialized = True
            return
        if not os.path.isdir(self.data_dir):
            os.makedirs(self.data_dir, 0o700)
        os.chmod(self.data_dir, 0o700)
        self._chown(self.data_dir)
        pwfile = os.path.join(self.base_dir, ".initdb-pw-%s" % secrets.token_hex(4))
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.password + "\n")
            self._chown(pwfile)
            last_error = None
            for locale in ("C.UTF-8", "C"):
                argv = [self._bin("initdb"), "-D", self.data_dir, "-U", self.superuser, "-E", "UTF8",
                        "--locale=%s" % locale, "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                        "--pwfile=%s" % pwfile, "--no-instructions"]
                try:
                    self._run_tool(argv, "initdb", timeout=300)
                    last_error = None
                    break
                except ToolError as exc:
                    last_error = exc
                    if "locale" not in str(exc).lower():
                        raise
                    # start over with the next locale
                    for name in os.listdir(self.data_dir):
                        p = os.path.join(self.data_dir, name)
                        shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            if last_error is not None:
                raise last_error
        finally:
            try:
                os.unlink(pwfile)
            except OSError:
                pass
        conf = ["", "# --- drkit sandbox (ScratchPostgres) ---",
                "shared_buffers = 128MB", "max_wal_size = 2GB"]
        conf += ["%s = %s" % (k, conf_quote(v)) for k, v in self.settings.items()]
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")
        self._initialized = True

    def _adopt_existing(self):
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            raise ConfigError("%s is not a PostgreSQL data directory (no PG_VERSION)" % self.data_dir,
                              "Restore a base backup there first, or use initdb=True")
        ids = self._ids()
        if ids is not None and ids[0] != os.geteuid():
            for root, dirs, files in os.walk(self.data_dir):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), ids[0], ids[1])
            os.chown(self.data_dir, ids[0], ids[1])
        os.chmod(self.data_dir, 0o700)
        conf = os.path.join(self.data_dir, "postgresql.conf")
        if not os.path.exists(conf):
            # Debian keeps postgresql.conf in /etc: a base backup has none
            with open(conf, "w") as f:
                f.write("# created by drkit ScratchPostgres: the restored data directory had none\n")
            self._chown(conf)
        stale = os.path.join(self.data_dir, "postmaster.pid")
        if os.path.exists(stale) and not pidfile_live(self.data_dir):
            os.unlink(stale)
        self._write_auth_files()

    def _pidfile_status(self):
        """Line 8 of postmaster.pid (starting / stopping / ready / standby),
        for the process we started."""
        pid, _port, status = read_pidfile(self.data_dir)
        return status if self._proc is not None and pid == self._proc.pid else None

    def _argv(self):
        argv = [self._bin("postgres"), "-D", self.data_dir,
                "-c", "port=%d" % self.port,
                "-c", "listen_addresses=%s" % LOOPBACK,
                "-c", "unix_socket_directories=%s" % self.socket_dir,
                "-c", "logging_collector=off",
                "-c", "log_destination=stderr"]
        if not self.initdb:
            forced = {"archive_mode": "off", "ssl": "off", "hba_file": self.hba_file,
                      "ident_file": self.ident_file, "shared_buffers": "128MB"}
            forced.update(self.settings)
            for k, v in forced.items():
                argv += ["-c", "%s=%s" % (k, cmdline_value(v))]
        return argv

    # -- the lifecycle (core.scratch.ScratchServer) ----------------------

    what = "PostgreSQL"
    ready_what = "accept connections"
    stop_timeout = 60
    stop_signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

    def _prepare(self):
        self._prepare_dirs()
        if self.initdb:
            if not self._initialized:
                self._initdb()
        else:
            self._adopt_existing()

    def _adopt(self):
        if self._proc is None:  # started by someone else: its port is in postmaster.pid
            self.port = read_pidfile(self.data_dir)[1] or self.port

    def _command(self):
        return self._argv(), dict(cwd=self.base_dir, env=self._server_env(), **self._as_server_user())

    def _output_file(self):
        return self.log_file

    def _ready(self):
        # Like pg_ctl -w: wait for postmaster.pid to say "ready" (so a stranger
        # squatting on our TCP port cannot fool us), then confirm with
        # pg_isready through our own unix socket.
        isready = [self._bin("pg_isready"), "-q", "-h", self.socket_dir, "-p", str(self.port), "-t", "5"]
        return self._pidfile_status() == "ready" and subprocess.call(
            isready, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env()) == 0

    def _port_taken(self):
        return "could not bind" in tail_file(self.log_file).split("--- start ")[-1]

    def _log_tail(self):
        return "Server log:\n%s" % tail_file(self.log_file)

    def _where(self):
        return self.data_dir

    def _signal(self, proc, sig):
        # the postmaster only: it shuts its backends down the way the mode says
        try:
            proc.send_signal(sig)
        except (OSError, ProcessLookupError):
            pass

    def _escalate(self, proc):
        proc.send_signal(signal.SIGQUIT)
        if not wait_proc(proc, 10):
            super(ScratchPostgres, self)._escalate(proc)

    def _stop_other(self, mode, timeout):
        if pidfile_live(self.data_dir) and os.path.exists(self._bin("pg_ctl")):
            # a server left by an earlier object on the same data directory
            try:
                stop_server(self.bin_dir, self.data_dir, self._ids(), mode, timeout)
            except ToolError:
                pass

    def is_running(self):
        """True if our server process runs, or (for an object that did not
        start it, e.g. after detach() in another process) if postmaster.pid
        names a live process."""
        if self._proc is not None:
            return self._proc.poll() is None
        return pidfile_live(self.data_dir) is not None

    # -- clients ---------------------------------------------------------

    def _client_host(self):
        return self.host if self.password is not None else self.socket_dir

    def conninfo(self, dbname="postgres"):
        return {"host": self._client_host(), "port": self.port, "user": self.superuser,
                "password": self.password, "dbname": dbname}

    def env(self, dbname="postgres"):
        env = {"PGHOST": self._client_host(), "PGPORT": str(self.port), "PGUSER": self.superuser,
               "PGDATABASE": dbname}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def dsn(self, dbname="postgres"):
        """A libpq keyword/value string WITHOUT the password (pass it as
        PGPASSWORD or psycopg's password= argument)."""
        return "host=%s port=%s user=%s dbname=%s" % (self._client_host(), self.port, self.superuser, dbname)

    def psql(self, sql, dbname="postgres", timeout=300):
        """Run SQL through psql -X -v ON_ERROR_STOP=1 -qAt; returns stdout
        (without the final newline). Raises ToolError with psql's stderr."""
        argv = [self._bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-qAt", "-f", "-"]
        try:
            res = subprocess.run(argv, input=sql.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=clean_env(dict(self.env(dbname), PGCONNECT_TIMEOUT="10")),
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise WaitTimeout("psql did not finish within %ss" % timeout)
        if res.returncode != 0:
            raise ToolError("psql on %s:%s/%s failed (exit %d): %s"
                            % (self.host, self.port, dbname, res.returncode,
                               res.stderr.decode("utf-8", "replace").strip()),
                            details={"returncode": res.returncode})
        out = res.stdout.decode("utf-8", "replace")
        return out[:-1] if out.endswith("\n") else out
