# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""snapshot_sync.py: PayloadReader stops at the payload's length or at its
EOF mark."""

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import SourceError
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot_sync import PayloadReader


class FakeClient(object):
    def __init__(self, data):
        self.data = data

    def read_some(self, n):
        chunk, self.data = self.data[:min(n, 7)], self.data[min(n, 7):]
        if not chunk:
            raise SourceError("closed")
        return chunk


def _drain(reader):
    out = b""
    while True:
        d = reader.read(1 << 20)
        if not d:
            return out
        out += d


def test_payload_reader_length_and_eof_mark():
    assert _drain(PayloadReader(FakeClient(b"REDIS0011abcdefTRAILING"), length=15)) == b"REDIS0011abcdef"
    mark = b"m" * 40
    payload = b"REDIS0011" + b"x" * 100
    got = _drain(PayloadReader(FakeClient(payload + mark + b"*1\r\n$4\r\nPING\r\n"), eof_mark=mark))
    assert got == payload
