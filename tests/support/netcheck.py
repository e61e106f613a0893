# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which addresses do our scratch servers listen on? Read straight from
/proc (no dependency on ss/netstat), for a process and its descendants."""

import ipaddress
import os
import shutil
import subprocess

TCP_LISTEN = "0A"


def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses
        ppid = int(data.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(pid):
    """pid and all its descendants."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _socket_inodes(pids):
    inodes = set()
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _decode(hexaddr, v6):
    addr, port = hexaddr.split(":")
    raw = bytes.fromhex(addr)
    if v6:
        # four 32-bit words, each in host (little-endian) order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = ipaddress.IPv6Address(raw)
    else:
        ip = ipaddress.IPv4Address(raw[::-1])
    return ip, int(port, 16)


def listening_sockets(pid):
    """[(proto, ip, port)] for TCP listeners and bound UDP sockets owned by
    pid or its descendants."""
    inodes = _socket_inodes(process_tree(pid))
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open("/proc/net/%s" % proto) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != TCP_LISTEN:
                continue
            ip, port = _decode(local, proto.endswith("6"))
            found.append((proto, ip, port))
    return found


def is_loopback(ip):
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def non_loopback(pid):
    """The listeners of pid's tree that are NOT on a loopback address."""
    return [s for s in listening_sockets(pid) if not is_loopback(s[1])]


def ss_listeners(pid):
    """Lines of ``ss -ltnup`` that belong to pid (cross-check; [] without ss)."""
    ss = shutil.which("ss")
    if not ss:
        return []
    out = subprocess.run([ss, "-H", "-ltnup"], stdout=subprocess.PIPE, universal_newlines=True,
                         check=False).stdout
    tree = set(process_tree(pid))
    return [line for line in out.splitlines()
            if any("pid=%d," % p in line for p in tree)]
