# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""base.py through the file backend: storage keys are validated by every
operation, and put_new stores only what is absent."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, ConflictError
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import TEMP_MARKER, put_new

# --------------------------------------------------------------------------
# keys


@pytest.mark.parametrize("key", ["", "/abs/key", "a//b", "a/./b", "a/../b", "..", ".", "a/", "a\\b",
                                 "backups/%sx/f" % TEMP_MARKER, TEMP_MARKER + "1"])
def test_invalid_keys_are_refused_by_every_operation(fs, key):
    for op in (lambda: fs.writer(key), lambda: fs.stat(key), lambda: fs.iter_read(key),
               lambda: fs.delete([key])):
        with pytest.raises(ConfigError) as e:
            op()
        assert "Invalid storage key" in str(e.value)


@pytest.mark.parametrize("key", ["a", "backups/x/manifest.json", "a.b/c-d_e/f.g"])
def test_valid_keys(fs, key):
    fs.put_bytes(key, b"x")
    assert fs.get_bytes(key) == b"x"


# --------------------------------------------------------------------------
# put_new


def test_put_new_store_if_absent(fs):
    assert put_new(fs, "wal/000000010000000000000001", b"segment") is True
    assert put_new(fs, "wal/000000010000000000000001", b"segment") is False  # identical: ok
    with pytest.raises(ConflictError) as e:
        put_new(fs, "wal/000000010000000000000001", b"different")
    assert "left untouched" in str(e.value)
    assert fs.get_bytes("wal/000000010000000000000001") == b"segment"
