# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away redis-server on 127.0.0.1 for the verifiers and the demo."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import socket
import subprocess

from ..core.errors import ConfigError, ToolError, WaitTimeout
from ..core.scratch import LOOPBACK, ScratchServer, tail_file

# --------------------------------------------------------------------------
# Redis


def _find_redis(name, package):
    path = shutil.which(name) or ("/usr/bin/%s" % name if os.access("/usr/bin/%s" % name, os.X_OK) else None)
    if not path:
        raise ConfigError("%s was not found on PATH" % name,
                          "Install the package %s (Debian/Ubuntu: apt-get install %s)" % (package, package))
    return path


class ScratchRedis(ScratchServer):
    """A throw-away redis-server on 127.0.0.1 (no daemonize, own directory).

    The configuration (with ``requirepass``) is written to ``dir/redis.conf``
    (0600) so the password never shows in ``ps``. ``save=""`` (default)
    disables RDB snapshots on a timer; BGSAVE/SAVE still work. ``stop()``
    sends SIGTERM (Redis saves first if save points or AOF are configured);
    ``mode="immediate"`` kills at once.
    """

    def __init__(self, base_dir, port=None, password=None, appendonly=False, extra_args=None, save="",
                 server_bin=None, cli_bin=None):
        super(ScratchRedis, self).__init__(base_dir, port)
        self.dir = self.base_dir
        self.password = password
        self.appendonly = appendonly
        self.save = save
        self.extra_args = list(extra_args or [])
        self.server_bin = server_bin or _find_redis("redis-server", "redis-server")
        self.cli_bin = cli_bin or _find_redis("redis-cli", "redis-tools")
        self.conf_file = os.path.join(self.dir, "redis.conf")
        self.log_file = os.path.join(self.dir, "redis.log")
        self.dbfilename = "dump.rdb"

    @property
    def rdb_path(self):
        return os.path.join(self.dir, self.dbfilename)

    def _write_conf(self):
        lines = [
            "# drkit sandbox: written by ScratchRedis",
            "bind %s" % LOOPBACK,
            "protected-mode yes",
            "port %d" % self.port,
            "daemonize no",
            "dir \"%s\"" % self.dir,
            "dbfilename %s" % self.dbfilename,
            "logfile \"%s\"" % self.log_file,
            "appendonly %s" % ("yes" if self.appendonly else "no"),
            "save \"%s\"" % self.save,
        ]
        if self.password is not None:
            lines.append("requirepass \"%s\"" % self.password.replace("\\", "\\\\").replace('"', '\\"'))
        fd = os.open(self.conf_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf_file, 0o600)

    def _cli_env(self):
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password
        return env

    # -- the lifecycle (core.scratch.ScratchServer) ----------------------

    what = "redis-server"
    ready_what = "answer PING"
    start_timeout = 30
    poll_interval = 0.05

    def _prepare(self):
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, 0o700)

    def _command(self):
        self._write_conf()
        return [self.server_bin, self.conf_file] + self.extra_args, {"cwd": self.dir}

    def _output_file(self):
        return self.log_file + ".stdout"

    def _ready(self):
        return self._ping()

    def _port_taken(self):
        return "Address already in use" in tail_file(self.log_file, 1000)

    def _log_tail(self):
        return "Log:\n%s%s" % (tail_file(self.log_file), tail_file(self.log_file + ".stdout"))

    def _where(self):
        return self.dir

    def _ping(self):
        """AUTH + PING over RESP with a short timeout (a stranger squatting
        on the port does not answer +PONG)."""
        def bulk(*words):
            out = b"*%d\r\n" % len(words)
            for w in words:
                w = w.encode("utf-8")
                out += b"$%d\r\n%s\r\n" % (len(w), w)
            return out

        request, expect = bulk("PING"), b"+PONG\r\n"
        if self.password is not None:
            request, expect = bulk("AUTH", self.password) + request, b"+OK\r\n" + expect
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
                s.sendall(request)
                got = b""
                while len(got) < len(expect):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    got += chunk
            return got == expect
        except (OSError, socket.timeout):
            return False

    def cli(self, *args, **kwargs):
        """Run redis-cli with ``args``; the password goes in REDISCLI_AUTH.
        Returns stdout (final newline stripped); ToolError on failure
        (redis-cli -e: an error reply is a failure)."""
        timeout = kwargs.pop("timeout", 300)
        argv = [self.cli_bin, "-h", self.host, "-p", str(self.port), "-e"] + [str(a) for a in args]
        try:
            res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._cli_env(),
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise WaitTimeout("redis-cli %s did not finish within %ss" % (" ".join(argv[5:6]), timeout))
        out = res.stdout.decode("utf-8", "replace")
        if res.returncode != 0:
            raise ToolError("redis-cli %s on %s:%s failed (exit %d): %s"
                            % (" ".join(str(a) for a in args[:1]), self.host, self.port, res.returncode,
                               (res.stderr.decode("utf-8", "replace") + out).strip()))
        return out[:-1] if out.endswith("\n") else out
