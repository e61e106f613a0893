# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small Redis client speaking RESP2 over a socket (TLS optional).

Why our own: backups need things a general client hides -- pipelining a few
commands into one write so Redis runs them back to back (INFO + BGSAVE at the
same instant), and reading a raw RDB payload after SYNC.  It also keeps the
managed host free of extra libraries.  The password travels only inside the
AUTH command on the socket: never in argv, never in an error message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl

from ..core.errors import ConfigError, SourceError
from ..core.options import Option, resolve

CRLF = b"\r\n"
RECV = 1 << 20

# The connection options (doc fragment drkit.backup.redis).
CONNECTION = (
    Option("login_host", "str", default="localhost", flags=("--host",), help="Redis host"),
    Option("login_port", "int", default=6379, min=1, max=65535, flags=("--port",), help="Redis port (default 6379)"),
    Option("login_user", "str", flags=("--user",), help="ACL user (password: REDISCLI_AUTH or the config file)"),
    Option("login_password", "str", env=("REDISCLI_AUTH",), secret=True),
    Option("tls", "bool", default=False, flags=("--tls",), help="connect with TLS"),
    Option("tls_ca_cert", "path", flags=("--tls-ca-cert",)),
    Option("tls_cert", "path", flags=("--tls-cert",)),
    Option("tls_key", "path", no_log=False, flags=("--tls-key",)),
    Option("tls_validate_certs", "bool", default=True, off_flags=("--no-tls-validate-certs",)),
    Option("connect_timeout", "float", default=10, above=0, flags=("--connect-timeout",),
           help="seconds to wait for the connection and each reply (default 10)"),
)


class ReplyError(Exception):
    """An error reply (-ERR ..., -NOPERM ...). Returned in pipelines,
    raised by execute()."""

    def __init__(self, text):
        Exception.__init__(self, text)
        self.text = text

    @property
    def code(self):
        return self.text.split(" ", 1)[0]


def conn_params(params):
    """The connection options out of module/CLI parameters, resolved
    (defaults filled in, REDISCLI_AUTH for an unset password). An empty
    string is no user, password or file."""
    p = resolve(CONNECTION, params)
    cp = {
        "host": p["login_host"],
        "port": p["login_port"],
        "user": p["login_user"] or None,
        "password": p["login_password"] or None,
        "tls": p["tls"],
        "tls_ca_cert": p["tls_ca_cert"] or None,
        "tls_cert": p["tls_cert"] or None,
        "tls_key": p["tls_key"] or None,
        "tls_validate_certs": p["tls_validate_certs"],
        "connect_timeout": p["connect_timeout"],
    }
    if cp["user"] and cp["password"] is None:
        raise ConfigError("login_user %r is set but no password" % cp["user"],
                          "Set login_password (or the REDISCLI_AUTH environment variable)")
    if (cp["tls_cert"] is None) != (cp["tls_key"] is None):
        raise ConfigError("tls_cert and tls_key go together", "Give both (client certificate and its key) or neither")
    if not cp["tls"] and (cp["tls_ca_cert"] or cp["tls_cert"]):
        raise ConfigError("TLS files are set but tls is off", "Set tls: true")
    return cp


def describe(cp):
    return "%s:%s%s" % (cp["host"], cp["port"], " (TLS)" if cp["tls"] else "")


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode("utf-8")
        else:
            b = str(a).encode("ascii")
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(CRLF)
    return b"".join(out)


def parse_info(text):
    """INFO output -> {field: value}; numbers become int/float, keyspace lines
    (db0:keys=1,expires=0,...) become dicts."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        if "=" in v and ("," in v or k.startswith("db")):
            d = {}
            for part in v.split(","):
                if "=" in part:
                    pk, pv = part.split("=", 1)
                    d[pk] = _num(pv)
            out[k] = d
        else:
            out[k] = _num(v)
    return out


def _num(v):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def keyspace(info):
    """{'db0': {'keys': n, 'expires': m}} from parsed INFO keyspace."""
    out = {}
    for k, v in info.items():
        if k.startswith("db") and k[2:].isdigit() and isinstance(v, dict):
            out[k] = {"keys": int(v.get("keys", 0)), "expires": int(v.get("expires", 0))}
    return out


class RedisClient(object):
    def __init__(self, cp):
        self.cp = cp
        self.sock = None
        self._buf = bytearray()
        self.where = describe(cp)

    # -- connection

    def connect(self):
        cp = self.cp
        try:
            sock = socket.create_connection((cp["host"], cp["port"]), timeout=cp["connect_timeout"])
        except (socket.timeout, OSError) as e:
            raise SourceError("Cannot connect to Redis at %s: %s" % (self.where, getattr(e, "strerror", None) or e),
                              "Check login_host/login_port, that redis-server runs and listens there, "
                              "and any firewall in between", details={"retryable": True})
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if cp["tls"]:
            try:
                ctx = ssl.create_default_context(cafile=cp["tls_ca_cert"])
                if cp["tls_cert"]:
                    ctx.load_cert_chain(cp["tls_cert"], cp["tls_key"])
                if not cp["tls_validate_certs"]:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock, server_hostname=cp["host"])
            except (ssl.SSLError, OSError) as e:
                sock.close()
                raise SourceError("TLS handshake with Redis at %s failed: %s" % (self.where, e),
                                  "Check tls_ca_cert (the CA that signed the server certificate), "
                                  "tls_cert/tls_key, and that the server's certificate names login_host")
        self.sock = sock
        if cp["password"] is not None:
            args = ["AUTH", cp["user"], cp["password"]] if cp["user"] else ["AUTH", cp["password"]]
            try:
                self.execute(*args)
            except ReplyError as e:
                self.close()
                # Never echo the reply verbatim: old servers quote arguments.
                who = "user %r" % cp["user"] if cp["user"] else "the default user"
                raise SourceError("Redis at %s refused the credentials of %s (%s)" % (self.where, who, e.code),
                                  "Check login_user/login_password (or REDISCLI_AUTH); for a server without a "
                                  "password, give none")
        return self

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        if self.sock is None:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def settimeout(self, seconds):
        if self.sock is not None:
            self.sock.settimeout(seconds)

    # -- low level reading

    def _fill(self):
        try:
            data = self.sock.recv(RECV)
        except socket.timeout:
            raise SourceError("Redis at %s did not answer within %ss" % (self.where, self.sock.gettimeout()),
                              "The server is overloaded or blocked; try again or raise connect_timeout")
        except (ConnectionResetError, ConnectionAbortedError):
            # a reset instead of an orderly close: the same lost server (a restart under load)
            raise self._closed()
        except OSError as e:
            raise SourceError("Connection to Redis at %s failed: %s" % (self.where, e))
        if not data:
            raise self._closed()
        self._buf += data

    def _closed(self):
        return SourceError("Redis at %s closed the connection" % self.where,
                           "Look at the Redis log; the server may have dropped this client (output buffer "
                           "limits, timeout) or restarted", details={"retryable": True})

    def read_line(self):
        while True:
            i = self._buf.find(CRLF)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return line
            self._fill()

    def read_exact(self, n):
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_some(self, limit=RECV):
        """Up to ``limit`` bytes (buffered first); for raw payloads."""
        if not self._buf:
            self._fill()
        data = bytes(self._buf[:limit])
        del self._buf[:limit]
        return data

    def read_reply(self):
        line = self.read_line()
        if not line:
            raise SourceError("Unexpected empty line from Redis at %s" % self.where)
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode("utf-8", "replace")
        if t == b"-":
            return ReplyError(rest.decode("utf-8", "replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.read_exact(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read_reply() for _i in range(n)]
        raise SourceError("Unexpected reply from %s: %r" % (self.where, line[:40]),
                          "Is this a Redis server (and does it expect TLS)?")

    # -- commands

    def send(self, *commands):
        data = b"".join(encode(c) for c in commands)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise SourceError("Sending to Redis at %s timed out" % self.where)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise self._closed()
        except OSError as e:
            raise SourceError("Connection to Redis at %s failed: %s" % (self.where, e))

    def pipeline(self, commands):
        """Send all commands in one write (Redis runs them back to back, with
        no other client in between); returns the replies, errors as
        ReplyError objects."""
        self.send(*commands)
        return [self.read_reply() for _c in commands]

    def execute(self, *args):
        self.send(args)
        reply = self.read_reply()
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def call(self, *args):
        """execute(), with error replies turned into SourceError naming the
        command (never its arguments, which may hold secrets)."""
        try:
            return self.execute(*args)
        except ReplyError as e:
            raise command_error(self, args, e)

    def info(self, *sections):
        return parse_info(self.call("INFO", *sections))

    def config_get(self, name):
        reply = self.call("CONFIG", "GET", name)
        if isinstance(reply, list):
            pairs = dict(zip(reply[0::2], reply[1::2]))
            val = pairs.get(name.encode("utf-8"))
            if val is not None:
                return val.decode("utf-8", "replace")
        return None


def command_error(client, args, err):
    name = " ".join(str(a if not isinstance(a, bytes) else a.decode("ascii", "replace")).upper()
                    for a in args[:2 if str(args[0]).upper() in ("CONFIG", "CLIENT") else 1])
    if err.code == "NOAUTH":
        return SourceError("Redis at %s requires authentication (%s)" % (client.where, name),
                           "Set login_password (or REDISCLI_AUTH), and login_user for an ACL user")
    if err.code == "NOPERM":
        return SourceError("The Redis user lacks permission to run %s on %s: %s" % (name, client.where, err.text),
                           "Grant it in the ACL (see docs/redis.md for the commands each mode needs)")
    return SourceError("%s on Redis at %s failed: %s" % (name, client.where, err.text))


def connect(cp):
    return RedisClient(cp).connect()
