# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""base.py through the file backend: storage keys are validated by every
operation, and put_new / create_or_match store only what is absent, also
when several callers race for one key."""

import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (
    ConfigError,
    ConflictError,
    StorageError,
)
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import (
    TEMP_MARKER,
    ObjectExists,
    create_or_match,
    put_new,
)
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage
from support.unit_helpers import in_threads

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


class BarrierAtCommit(FileStorage):
    """A file backend whose writers all wait for each other just before
    their commit: every caller is between "is the key free?" and "store it"
    at the same time, which is the window of a check-then-write."""

    def __init__(self, root, parties):
        super(BarrierAtCommit, self).__init__(root)
        self.barrier = threading.Barrier(parties)

    def writer(self, key, *args, **kwargs):
        w = super(BarrierAtCommit, self).writer(key, *args, **kwargs)
        commit = w.commit

        def commit_after_barrier():
            self.barrier.wait(10)
            commit()
        w.commit = commit_after_barrier
        return w


def race_put_new(st, datas):
    outcome = {}

    def run(i):
        try:
            outcome[i] = "stored" if put_new(st, "wal/SYSTEM_IDENTIFIER", datas[i]) else "identical"
        except ConflictError as e:
            outcome[i] = "refused: %s" % e
    in_threads(run, len(datas))
    return outcome


def test_racing_put_new_of_different_content_stores_exactly_one(tmp_path):
    datas = [b"cluster %d\n" % i for i in range(6)]
    st = BarrierAtCommit(str(tmp_path / "root"), len(datas))
    outcome = race_put_new(st, datas)
    winners = [i for i, o in outcome.items() if o == "stored"]
    assert len(winners) == 1, outcome
    assert all(o.startswith("refused") and "left untouched" in o for i, o in outcome.items() if i != winners[0])
    assert st.get_bytes("wal/SYSTEM_IDENTIFIER") == datas[winners[0]]


def test_racing_put_new_of_identical_content_stores_once_and_accepts_the_rest(tmp_path):
    st = BarrierAtCommit(str(tmp_path / "root"), 6)
    outcome = race_put_new(st, [b"42\n"] * 6)
    assert sorted(outcome.values()) == ["identical"] * 5 + ["stored"], outcome


class ReportsExistsOnce(FileStorage):
    """The first create-only write answers "exists" although nothing is
    stored: S3's 409 while another conditional write of the key is in flight,
    which then failed."""

    def __init__(self, root):
        super(ReportsExistsOnce, self).__init__(root)
        self.creates = 0

    def writer(self, key, create=False):
        if create:
            self.creates += 1
            if self.creates == 1:
                raise ObjectExists("%s: conditional request conflict" % key)
        return super(ReportsExistsOnce, self).writer(key, create=create)


def test_an_existing_object_that_cannot_be_read_is_created_again(tmp_path):
    st = ReportsExistsOnce(str(tmp_path / "root"))
    assert create_or_match(st, "k", lambda w: w.write(b"data"), lambda s, k: s.get_bytes(k) == b"data") is True
    assert st.creates == 2 and st.get_bytes("k") == b"data"


def test_creating_gives_up_after_the_attempts_with_a_storage_error(tmp_path):
    class AlwaysExists(FileStorage):
        def writer(self, key, create=False):
            raise ObjectExists("%s exists" % key)

    st = AlwaysExists(str(tmp_path / "root"))
    with pytest.raises(StorageError) as e:
        create_or_match(st, "k", lambda w: w.write(b"data"), lambda s, k: s.get_bytes(k) == b"data")
    assert not isinstance(e.value, ConflictError) and "could not be read" in str(e.value)
