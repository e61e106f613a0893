# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away redis-server on 127.0.0.1 for the verifiers and the demo."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import signal
import socket
import subprocess
import time

from ..core.errors import ConfigError, ToolError, WaitTimeout
from ..core.scratch import LOOPBACK, free_port, kill_group, register_live, tail_file, unregister_live, wait_proc

# --------------------------------------------------------------------------
# Redis


def _find_redis(name, package):
    path = shutil.which(name) or ("/usr/bin/%s" % name if os.access("/usr/bin/%s" % name, os.X_OK) else None)
    if not path:
        raise ConfigError("%s was not found on PATH" % name,
                          "Install the package %s (Debian/Ubuntu: apt-get install %s)" % (package, package))
    return path


class ScratchRedis(object):
    """A throw-away redis-server on 127.0.0.1 (no daemonize, own directory).

    The configuration (with ``requirepass``) is written to ``dir/redis.conf``
    (0600) so the password never shows in ``ps``. ``save=""`` (default)
    disables RDB snapshots on a timer; BGSAVE/SAVE still work.
    """

    def __init__(self, base_dir, port=None, password=None, appendonly=False, extra_args=None, save="",
                 server_bin=None, cli_bin=None):
        self.base_dir = os.path.abspath(base_dir)
        self.dir = self.base_dir
        self.host = LOOPBACK
        self._port_given = port is not None
        self.port = port
        self.password = password
        self.appendonly = appendonly
        self.save = save
        self.extra_args = list(extra_args or [])
        self.server_bin = server_bin or _find_redis("redis-server", "redis-server")
        self.cli_bin = cli_bin or _find_redis("redis-cli", "redis-tools")
        self.conf_file = os.path.join(self.dir, "redis.conf")
        self.log_file = os.path.join(self.dir, "redis.log")
        self.dbfilename = "dump.rdb"
        self._proc = None

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

    def start(self, timeout=30):
        if self.is_running():
            return self
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, 0o700)
        attempts = 1 if self._port_given else 3
        for attempt in range(attempts):
            if not self._port_given:
                self.port = free_port()
            try:
                self._launch(timeout)
                return self
            except ToolError:
                if attempt + 1 < attempts and "Address already in use" in tail_file(self.log_file, 1000):
                    continue
                raise
        return self  # pragma: no cover

    def _launch(self, timeout):
        self._write_conf()
        argv = [self.server_bin, self.conf_file] + self.extra_args
        try:
            with open(self.log_file + ".stdout", "ab") as out:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.dir,
                                              start_new_session=True, close_fds=True)
        except OSError as exc:
            raise ToolError("Could not start %s: %s" % (self.server_bin, exc))
        register_live(self)
        deadline = time.time() + timeout
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                unregister_live(self)
                raise ToolError("redis-server in %s exited during start-up (exit %s). Log:\n%s%s"
                                % (self.dir, rc, tail_file(self.log_file), tail_file(self.log_file + ".stdout")))
            if self._ping():
                return
            if time.time() > deadline:
                self.stop()
                raise ToolError("redis-server in %s did not answer PING within %ss. Log:\n%s"
                                % (self.dir, timeout, tail_file(self.log_file)))
            time.sleep(0.05)

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

    def is_running(self):
        return self._proc is not None and self._proc.poll() is None

    def detach(self):
        """Let the server outlive this object (no stop at interpreter exit)."""
        self._proc = None
        unregister_live(self)
        return self

    def stop(self, mode="fast", timeout=30):
        """SIGTERM (redis saves first if save points or AOF are configured);
        mode="immediate" kills at once."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                kill_group(proc, signal.SIGKILL if mode == "immediate" else signal.SIGTERM)
                if not wait_proc(proc, timeout):
                    kill_group(proc, signal.SIGKILL)
                    proc.wait()
            self._proc = None
        unregister_live(self)

    def destroy(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()
        return False

    def __repr__(self):
        return "<ScratchRedis %s:%s %s>" % (self.host, self.port, self.dir)

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
