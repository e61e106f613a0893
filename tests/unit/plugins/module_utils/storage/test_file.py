# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""file.py: the file backend on a real file system: nothing visible before
commit, modes and ownership, aborts, fsync order, error messages, listing,
deleting and reading in chunks; create-only writes (link, renameat2
RENAME_NOREPLACE, concurrent writers)."""

import errno
import os
import stat

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import NotFoundError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.storage import file as file_module
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import TEMP_MARKER, ObjectExists
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage, rename_noreplace
from support.unit_helpers import create_only_race


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


# --------------------------------------------------------------------------
# file:// writes


def test_nothing_visible_before_commit(fs):
    w = fs.writer("backups/b1/data")
    w.write(b"hello ")
    w.write(b"world")
    final = os.path.join(fs.root, "backups", "b1", "data")
    assert not os.path.exists(final)
    assert fs.stat("backups/b1/data") is None
    assert list(fs.list("")) == []
    # The bytes are in a hidden temp file in the target directory, which
    # list_incomplete reports (so rotation can clean a crashed run's leftovers).
    temps = os.listdir(os.path.dirname(final))
    assert len(temps) == 1 and temps[0].startswith(TEMP_MARKER)
    assert [u.key for u in fs.list_incomplete("")] == ["backups/b1/" + temps[0]]
    w.commit()
    assert os.listdir(os.path.dirname(final)) == ["data"]
    assert fs.get_bytes("backups/b1/data") == b"hello world"
    assert w.size == 11


def test_modes_are_0600_and_0700(fs, tmp_path):
    old = os.umask(0o022)
    try:
        fs.put_bytes("backups/b1/deep/data", b"x")
    finally:
        os.umask(old)
    assert mode(os.path.join(fs.root, "backups", "b1", "deep", "data")) == 0o600
    for d in ("", "backups", "backups/b1", "backups/b1/deep"):
        assert mode(os.path.join(fs.root, d)) == 0o700, d


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files for another user")
def test_root_writing_into_another_users_root_hands_new_files_to_that_user(tmp_path):
    # A base backup run by root into the archive that postgres's archive_command
    # writes: what root creates must stay readable and writable for postgres.
    root = tmp_path / "archive"
    root.mkdir()
    os.chown(str(root), 12345, 23456)
    fs = FileStorage(str(root))
    fs.put_bytes("wal/SYSTEM_IDENTIFIER", b"7311")
    with fs.writer("backups/b1/manifest.json") as w:
        w.write(b"{}")
    for rel in ("wal", "wal/SYSTEM_IDENTIFIER", "backups", "backups/b1", "backups/b1/manifest.json"):
        info = os.stat(str(root / rel))
        assert (info.st_uid, info.st_gid) == (12345, 23456), rel
    assert mode(root / "wal" / "SYSTEM_IDENTIFIER") == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_in_its_own_root_keeps_root_ownership(fs):
    fs.put_bytes("a/b", b"x")
    assert os.stat(os.path.join(fs.root, "a", "b")).st_uid == 0
    assert os.stat(os.path.join(fs.root, "a")).st_uid == 0


def test_exception_in_block_removes_temp_and_stores_nothing(fs):
    with pytest.raises(RuntimeError):
        with fs.writer("backups/b1/data") as w:
            w.write(b"partial")
            raise RuntimeError("producer died")
    assert list(fs.list("")) == []
    assert list(fs.list_incomplete("")) == []
    # not even an empty backups/b1/ that looks like a backup to a human
    assert os.listdir(fs.root) == []


def test_abort_keeps_directories_that_hold_other_objects(fs):
    fs.put_bytes("backups/b1/other", b"x")
    w = fs.writer("backups/b1/data")
    w.abort()
    assert os.listdir(os.path.join(fs.root, "backups", "b1")) == ["other"]


def test_explicit_abort_removes_temp(fs):
    w = fs.writer("k")
    w.write(b"data")
    w.abort()
    w.abort()  # idempotent
    assert os.listdir(fs.root) == []
    w.commit()  # after abort: a no-op, never resurrects the object
    assert fs.stat("k") is None


def test_write_error_aborts_and_says_disk_full(fs, monkeypatch):
    w = fs.writer("backups/b1/data")

    class Full(object):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    real = w._fh
    w._fh = Full()
    with pytest.raises(StorageError) as e:
        w.write(b"x" * 10)
    real.close()
    assert "file system is full" in str(e.value)
    assert "backups" in str(e.value)
    assert list(fs.list_incomplete("")) == [] and list(fs.list("")) == []


def test_fsync_file_before_rename_then_directory(fs, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        target = os.readlink("/proc/self/fd/%d" % fd)
        events.append(("fsync", target))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", b))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    fs.put_bytes("backups/b1/data", b"x")
    final = os.path.join(fs.root, "backups", "b1", "data")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "rename", "fsync"], events
    assert os.path.basename(events[0][1]).startswith(TEMP_MARKER)  # the data file itself
    assert events[1][1] == final
    assert events[2][1] == os.path.dirname(final)  # the directory entry made durable


def test_failed_rename_aborts(fs, monkeypatch):
    def rename(a, b):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(StorageError) as e:
        fs.put_bytes("k", b"x")
    assert "Permission denied" in str(e.value)
    assert os.listdir(fs.root) == []


# --------------------------------------------------------------------------
# create-only writes


def listing(fs, directory):
    return sorted(os.listdir(os.path.join(fs.root, *directory.split("/"))))


def test_create_only_stores_once_and_never_replaces(fs):
    fs.put_bytes("wal/00000001/seg.zst", b"first", create=True)
    with pytest.raises(ObjectExists) as e:
        fs.put_bytes("wal/00000001/seg.zst", b"second", create=True)
    assert e.value.exit_code == 5 and "wal/00000001/seg.zst already exists" in str(e.value)
    assert fs.get_bytes("wal/00000001/seg.zst") == b"first"
    assert listing(fs, "wal/00000001") == ["seg.zst"]  # no temp file left
    assert mode(os.path.join(fs.root, "wal", "00000001", "seg.zst")) == 0o600
    assert os.stat(os.path.join(fs.root, "wal", "00000001", "seg.zst")).st_nlink == 1


def test_create_only_fsyncs_the_file_before_the_link_then_the_directory(fs, monkeypatch):
    events = []
    real_fsync, real_link, real_rename = os.fsync, os.link, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        return real_fsync(fd)

    def link(a, b):
        events.append(("link", b))
        return real_link(a, b)

    def rename(a, b):
        events.append(("rename", b))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)
    fs.put_bytes("backups/b1/manifest.json", b"{}", create=True)
    final = os.path.join(fs.root, "backups", "b1", "manifest.json")
    assert [e[0] for e in events] == ["fsync", "link", "fsync"], events
    assert os.path.basename(events[0][1]).startswith(TEMP_MARKER)
    assert events[1][1] == final and events[2][1] == os.path.dirname(final)
    assert listing(fs, "backups/b1") == ["manifest.json"]


def no_hard_links(monkeypatch):
    def link(a, b):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", link)


def test_without_hard_links_renameat2_noreplace_does_it(fs, monkeypatch):
    no_hard_links(monkeypatch)
    fs.put_bytes("wal/history/00000002.history.zst", b"first", create=True)
    with pytest.raises(ObjectExists):
        fs.put_bytes("wal/history/00000002.history.zst", b"second", create=True)
    assert fs.get_bytes("wal/history/00000002.history.zst") == b"first"
    assert listing(fs, "wal/history") == ["00000002.history.zst"]


def test_with_neither_a_create_only_write_fails_and_stores_nothing(fs, monkeypatch):
    no_hard_links(monkeypatch)

    def unsupported(src, dst):
        raise OSError(errno.EINVAL, "Invalid argument", dst)
    monkeypatch.setattr(file_module, "rename_noreplace", unsupported)
    with pytest.raises(StorageError) as e:
        fs.put_bytes("wal/00000001/seg.zst", b"x", create=True)
    assert "neither hard links" in str(e.value) and not isinstance(e.value, ObjectExists)
    assert list(fs.list("")) == [] and list(fs.list_incomplete("")) == []


def test_rename_noreplace_never_replaces(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(OSError) as e:
        rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert e.value.errno == errno.EEXIST and (tmp_path / "b").read_bytes() == b"b"
    rename_noreplace(str(tmp_path / "a"), str(tmp_path / "c"))
    assert sorted(os.listdir(str(tmp_path))) == ["b", "c"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_concurrent_create_only_writers_exactly_one_wins(fs, monkeypatch, hard_links):
    if not hard_links:
        no_hard_links(monkeypatch)
    payloads = [b"content of writer %d" % i for i in range(8)]
    outcome = create_only_race(fs, "wal/00000001/seg.zst", payloads)
    winners = [i for i, o in outcome.items() if o == "stored"]
    assert len(winners) == 1 and len(outcome) == len(payloads), outcome
    assert fs.get_bytes("wal/00000001/seg.zst") == payloads[winners[0]]
    assert listing(fs, "wal/00000001") == ["seg.zst"]


# --------------------------------------------------------------------------
# reading, listing, deleting


def test_read_missing_is_not_found(fs):
    with pytest.raises(NotFoundError) as e:
        fs.get_bytes("backups/x/manifest.json")
    assert "backups/x/manifest.json" in str(e.value)
    assert fs.stat("backups/x/manifest.json") is None
    assert fs.exists("backups/x/manifest.json") is False


def test_list_list_dirs_and_prefix(fs):
    for k in ("backups/a/1", "backups/a/2", "backups/b/1", "backupsX/z", "other"):
        fs.put_bytes(k, k.encode())
    assert sorted(i.key for i in fs.list("backups/")) == ["backups/a/1", "backups/a/2", "backups/b/1"]
    assert sorted(i.key for i in fs.list("backups/a")) == ["backups/a/1", "backups/a/2"]
    assert sorted(i.key for i in fs.list("")) == ["backups/a/1", "backups/a/2", "backups/b/1",
                                                  "backupsX/z", "other"]
    assert fs.list_dirs("backups/") == ["a", "b"]
    assert fs.list_dirs("nothing/") == []
    info = fs.stat("backups/a/1")
    assert info.size == len(b"backups/a/1") and info.mtime > 0


def test_list_on_missing_root_is_empty(tmp_path):
    fs = FileStorage(str(tmp_path / "does-not-exist"))
    assert list(fs.list("")) == [] and list(fs.list_incomplete("")) == []


def test_delete_prunes_empty_dirs_and_ignores_missing(fs):
    fs.put_bytes("backups/a/1", b"1")
    fs.put_bytes("backups/a/2", b"2")
    fs.put_bytes("backups/b/1", b"3")
    assert fs.delete(["backups/a/1", "backups/a/2", "backups/a/missing"]) == ["backups/a/1", "backups/a/2"]
    assert not os.path.exists(os.path.join(fs.root, "backups", "a"))
    assert os.path.isdir(os.path.join(fs.root, "backups", "b"))
    assert os.path.isdir(fs.root)  # the root itself is never removed
    fs.delete(["backups/b/1"])
    assert os.path.isdir(fs.root)


def test_a_directory_emptied_and_removed_by_a_concurrent_delete_is_fine(fs, monkeypatch):
    """Two rotations at once: right after this one unlinks the manifest, the
    other one deletes the last artifact, finds the directory empty and
    removes it, before this one fsyncs that directory."""
    fs.put_bytes("backups/b1/manifest.json", b"{}")
    fs.put_bytes("backups/b1/dump", b"x")
    other = FileStorage(fs.root)
    real_unlink = os.unlink

    def unlink_then_the_other_rotation(path):
        real_unlink(path)
        if path.endswith("manifest.json"):
            assert other.delete(["backups/b1/dump"]) == ["backups/b1/dump"]
    monkeypatch.setattr(os, "unlink", unlink_then_the_other_rotation)
    assert fs.delete(["backups/b1/manifest.json"]) == ["backups/b1/manifest.json"]
    assert not os.path.exists(os.path.join(fs.root, "backups"))


def test_a_directory_removed_while_listing_is_skipped(fs, monkeypatch):
    """A rotation lists while another one deletes a backup and prunes its
    directory: the listing goes on without it."""
    for b in ("b1", "b2", "b3"):
        fs.put_bytes("backups/%s/manifest.json" % b, b"{}")
    gone = os.path.join(fs.root, "backups", "b2")
    real_scandir = os.scandir

    def scandir(path):
        if path == gone:
            assert FileStorage(fs.root).delete(["backups/b2/manifest.json"])  # and its directory
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    assert [i.key for i in fs.list("backups/")] == ["backups/b1/manifest.json", "backups/b3/manifest.json"]


def test_abort_incomplete_removes_leftover(fs):
    w = fs.writer("backups/a/1")
    w.write(b"x")
    (up,) = list(fs.list_incomplete("backups/"))
    fs.abort_incomplete(up)
    fs.abort_incomplete(up)  # already gone: fine
    assert list(fs.list_incomplete("")) == []


def test_iter_read_chunks(fs):
    data = os.urandom(300000)
    fs.put_bytes("k", data)
    chunks = list(fs.iter_read("k", chunk_size=100000))
    assert [len(c) for c in chunks] == [100000, 100000, 100000]
    assert b"".join(chunks) == data
