# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small TCP proxy on loopback between drkit and an HTTP object store (the
SeaweedFS of the tests) that breaks things on purpose: the network fault tests
(tests/integration/test_network_faults.py) point ``endpoint_url`` at it.

It understands just enough HTTP/1.1 to count the bytes of each message body
(``Content-Length`` framing; chunked bodies pass untouched and are never
faulted), so a fault lands at a chosen offset of a chosen kind of message,
not at whatever byte a TCP read happened to end on:

* ``cut``: reset both connections (SO_LINGER 0) once ``at`` body bytes have
  passed;
* ``stall``: stop forwarding for ``seconds`` at ``at``, then go on;
* ``flip``: invert one byte at body offset ``at``.

A fault applies to responses (``direction="response"``, i.e. downloads) or
requests (``"request"``, uploads) whose body holds at least ``min_body``
bytes and whose request line matches ``method``; ``times`` says how many
messages get it (then the proxy is clean again, so a retry can succeed).
``proxy.injected`` counts what was done. Nothing is timed by the tests: they
assert on the outcome and on ``injected``.
"""

import re
import select
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"
HEADER_END = b"\r\n\r\n"
MAX_HEADER = 64 << 10


class Fault(object):
    def __init__(self, kind, at, direction="response", min_body=1, method=None, times=1, seconds=0.0):
        if kind not in ("cut", "stall", "flip"):
            raise ValueError("unknown fault %r" % kind)
        self.kind, self.at, self.direction = kind, at, direction
        self.min_body, self.method, self.times, self.seconds = min_body, method, times, seconds


class _Message(object):
    """Body accounting for one direction of one connection."""

    def __init__(self):
        self.header = bytearray()
        self.body_left = None  # None: reading a header
        self.body_done = 0
        self.fault = None

    def reset(self):
        self.header = bytearray()
        self.body_left = None
        self.body_done = 0
        self.fault = None


class FaultProxy(object):
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.faults = []
        self.injected = {"cut": 0, "stall": 0, "flip": 0}
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._threads = []
        self._socks = set()

    @property
    def endpoint_url(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    def add(self, fault):
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self):
        with self._lock:
            self.faults = []

    def start(self):
        t = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._closing = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            _close(s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- plumbing

    def _accept(self):
        while not self._closing:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._socks.update((client, server))
            t = threading.Thread(target=self._pump, args=(client, server), name="faultproxy-conn", daemon=True)
            t.start()

    def _pump(self, client, server):
        states = {client: ("request", server, _Message(), []), server: ("response", client, _Message(), [])}
        try:
            while True:
                readable, _w, _x = select.select([client, server], [], [], 1.0)
                if self._closing:
                    return
                for sock in readable:
                    direction, peer, msg, methods = states[sock]
                    data = sock.recv(65536)
                    if not data:
                        return
                    out, cut = self._process(direction, msg, data, states[client][3])
                    if out:
                        peer.sendall(out)
                    if cut:
                        _reset(client)
                        _reset(server)
                        return
        except OSError:
            return
        finally:
            _close(client)
            _close(server)
            with self._lock:
                self._socks.discard(client)
                self._socks.discard(server)

    def _claim(self, direction, method, length):
        with self._lock:
            for f in self.faults:
                if (f.times > 0 and f.direction == direction and length >= f.min_body
                        and f.at < length and (f.method is None or f.method == method)):
                    f.times -= 1
                    return f
        return None

    def _process(self, direction, msg, data, methods):
        """(bytes to forward, faulted as asked; True to cut the connection after them)."""
        out = bytearray()
        while data:
            if msg.body_left is None:  # in a header
                msg.header += data
                end = msg.header.find(HEADER_END)
                if end < 0:
                    if len(msg.header) > MAX_HEADER:  # not HTTP as we know it: pass through
                        out += msg.header
                        msg.reset()
                        msg.body_left = float("inf")
                    return bytes(out), False
                head = bytes(msg.header[:end + 4])
                data = bytes(msg.header[end + 4:])
                out += head
                first = head.split(b"\r\n", 1)[0].decode("latin-1")
                if direction == "request":
                    methods.append(first.split(" ", 1)[0])
                    method = methods[-1]
                else:
                    method = methods.pop(0) if methods else None
                m = re.search(br"(?im)^content-length:\s*(\d+)\s*$", head)
                length = int(m.group(1)) if m else 0
                if method == "HEAD" and direction == "response":
                    length = 0
                msg.header = bytearray()
                msg.body_left = length
                msg.body_done = 0
                msg.fault = self._claim(direction, method, length) if length else None
                if not length:
                    msg.body_left = None
                continue
            take = data[:int(min(len(data), msg.body_left))]
            data = data[len(take):]
            f = msg.fault
            if f is not None and msg.body_done <= f.at < msg.body_done + len(take):
                i = f.at - msg.body_done
                if f.kind == "cut":
                    self._count("cut")
                    return bytes(out + take[:i]), True
                if f.kind == "flip":
                    take = take[:i] + bytes([take[i] ^ 0xFF]) + take[i + 1:]
                    self._count("flip")
                elif f.kind == "stall":
                    self._count("stall")
                    time.sleep(f.seconds)
                msg.fault = None
            out += take
            msg.body_done += len(take)
            msg.body_left -= len(take)
            if msg.body_left == 0:
                msg.reset()
        return bytes(out), False

    def _count(self, kind):
        with self._lock:
            self.injected[kind] += 1


def _reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock):
    try:
        sock.close()
    except OSError:
        pass
