# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading redis.conf the way Redis does: one parser for redis_restore (where
the data lives) and redis_persistence (what the file already holds).

Lines are split like Redis's sdssplitargs: words, "double quotes" with the
escapes CONFIG REWRITE writes (\\n \\r \\t \\b \\a \\xHH and any other character
after a backslash), 'single quotes' with \\'. ``include`` is not followed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}
_HEX = b"0123456789abcdefABCDEF"
_LOWERCASE = ("appendonly", "appendfsync")  # yes/no and policy words: Redis takes any case


def split_args(line):
    """The arguments of one redis.conf line (bytes), or None for unbalanced
    quotes or a closing quote not followed by a space (Redis refuses those)."""
    args = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i:i + 1].isspace():
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        quote = None
        while True:
            c = line[i:i + 1]
            if quote is None:
                if c in (b"", b" ", b"\n", b"\r", b"\t"):
                    break
                if c in (b'"', b"'"):
                    quote = c
                else:
                    cur += c
                i += 1
                continue
            if not c:
                return None
            if c == quote:
                if line[i + 1:i + 2] and not line[i + 1:i + 2].isspace():
                    return None
                i += 1
                break
            if quote == b'"' and c == b"\\" and line[i + 1:i + 2] == b"x" and len(line[i + 2:i + 4]) == 2 \
                    and all(h in _HEX for h in bytearray(line[i + 2:i + 4])):
                cur.append(int(line[i + 2:i + 4], 16))
                i += 4
            elif quote == b'"' and c == b"\\" and i + 1 < n:
                e = line[i + 1:i + 2]
                cur += _ESCAPES.get(e, e)
                i += 2
            elif quote == b"'" and c == b"\\" and line[i + 1:i + 2] == b"'":
                cur += b"'"
                i += 2
            else:
                cur += c
                i += 1
        args.append(bytes(cur))


def _loose(line):
    # A line Redis itself would refuse: the old reading (the rest of the
    # line, one pair of enclosing quotes removed), so it still shows.
    parts = line.split(None, 1)
    val = parts[1].strip() if len(parts) > 1 else b""
    if len(val) >= 2 and val[:1] == val[-1:] and val[:1] in (b'"', b"'"):
        val = val[1:-1]
    return [parts[0], val]


def read_conf(path, names):
    """{directive: value} for the directives ``names`` (lower case) in a
    redis.conf: the last line wins, except ``save``, whose lines add up (a
    ``save ""`` line resets it); a directive's arguments are joined by one
    space; appendonly/appendfsync values in lower case. Names the file does
    not set are absent. Raises OSError when the file cannot be read."""
    out = {}
    with open(path, "rb") as fh:
        data = fh.read()
    for line in data.splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        args = split_args(line)
        if args is None:
            args = _loose(line)
        key = args[0].decode("utf-8", "replace").lower()
        if key not in names:
            continue
        values = [a.decode("utf-8", "surrogateescape") for a in args[1:]]
        if key == "save":
            rules = " ".join(values).split()
            out["save"] = " ".join(out.get("save", "").split() + rules) if rules else ""
            continue
        value = " ".join(values)
        out[key] = value.lower() if key in _LOWERCASE else value
    return out
