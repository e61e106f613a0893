# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""osutil.py: check_traversable names the directory another user cannot enter.

osutil.py: atomic_write / atomic_writer, the one way drkit replaces a file
someone may read meanwhile; uid_of / gid_of; what a full disk means for a
local write.
"""

import errno
import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import osutil
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.core.osutil import (
    atomic_write,
    atomic_writer,
    check_traversable,
    gid_of,
    uid_of,
)


def test_check_traversable_names_the_blocking_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ConfigError) as exc:
        check_traversable(str(locked / "pg" / "data"), 65534, set())
    assert "cannot enter" in str(exc.value)
    assert "make_scratch_dir" in str(exc.value)


def test_atomic_write_gives_mode_and_owner(tmp_path):
    path = str(tmp_path / "f")
    assert atomic_write(path, "text é") == path
    assert open(path, "rb").read() == "text é".encode("utf-8")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    atomic_write(path, b"\x00bytes", mode=0o644, owner=(4242, 4343, "/home/whoever"))
    st = os.stat(path)
    assert open(path, "rb").read() == b"\x00bytes" and oct(st.st_mode & 0o777) == "0o644"
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (4242, 4343)
    assert os.listdir(str(tmp_path)) == ["f"]


def test_a_reader_sees_the_old_file_or_the_whole_new_one(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    with atomic_writer(str(path)) as fh:
        fh.write(b"new, first half ")
        fh.flush()
        assert path.read_bytes() == b"old"  # never half a file
        fh.write(b"second half")
    assert path.read_bytes() == b"new, first half second half"


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_a_failure_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def broken(*_a):
        raise OSError(28, "No space left on device")
    if where != "write":
        monkeypatch.setattr(os, where, broken)
    with pytest.raises(OSError):
        with atomic_writer(str(path)) as fh:
            fh.write(b"new")
            if where == "write":
                broken()
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(str(tmp_path)) == ["f"]


def test_sync_flags_choose_the_fsyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.path.isdir("/proc/self/fd/%d" % fd)) or real(fd))
    atomic_write(str(tmp_path / "a"), "x")
    assert synced == [False, True]  # the file, then its directory
    del synced[:]
    atomic_write(str(tmp_path / "b"), "x", sync_dir=False)
    assert synced == [False]
    del synced[:]
    atomic_write(str(tmp_path / "c"), "x", sync=False, sync_dir=False)
    assert synced == []


def test_fsync_dir_raises(tmp_path):
    with pytest.raises(OSError):
        osutil.fsync_dir(str(tmp_path / "missing"))


def test_uid_and_gid_of_names_and_numbers():
    assert uid_of("root") == 0 and uid_of(12) == 12 and uid_of("12") == 12
    assert gid_of("root") == 0 and gid_of(7) == 7
    with pytest.raises(ConfigError) as exc:
        uid_of("no-such-user-drkit")
    assert "No such user" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        gid_of("no-such-group-drkit")
    assert "No such group" in str(exc.value)


# --------------------------------------------------------------------------
# disk full (the real thing, on a small tmpfs, is in tests/integration:
# test_pg_backup, test_pg_restore, test_pg_verify)


def test_a_full_work_dir_names_the_directory_and_what_to_do():
    err = osutil.local_write_error(OSError(errno.ENOSPC, "No space left on device"), "/srv/work",
                                   "the local copy of database.pgdump", "work_dir", need=1234,
                                   alternative="run with jobs: 1")
    assert isinstance(err, StorageError) and err.exit_code == 3
    assert str(err) == ("The file system of /srv/work is full: no room for the local copy of database.pgdump. "
                        "Free space there, or point work_dir at a file system with room for it (about 1234 "
                        "bytes), or run with jobs: 1; nothing was kept from this run")
    assert "is full" in str(osutil.local_write_error(OSError(errno.EDQUOT, "quota"), "/w", "x", "work_dir"))
    assert "is full" in str(osutil.local_write_error(None, "/w", "x", "work_dir"))
    other = osutil.local_write_error(OSError(errno.EACCES, "Permission denied"), "/w", "x", "work_dir")
    assert str(other) == ("Could not write x in /w: Permission denied. Check that /w exists and is writable, "
                          "or point work_dir elsewhere")


def test_ran_out_of_room_believes_the_tool_or_the_free_space(tmp_path):
    assert osutil.ran_out_of_room(str(tmp_path), "pg_dump: error: could not write: No space left on device")
    assert osutil.ran_out_of_room(str(tmp_path), "pg_dump: error: ... Disk quota exceeded")
    # this test's directory has room, and the tool said nothing about it
    assert not osutil.ran_out_of_room(str(tmp_path), "pg_dump: error: permission denied for table t")
    assert not osutil.ran_out_of_room(str(tmp_path / "gone"), "")
    assert osutil.is_disk_full(OSError(errno.ENOSPC, "x")) and not osutil.is_disk_full(ValueError())


# --------------------------------------------------------------------------
# memory_file: a secret for a child process, on no file system


def test_memory_file_is_0600_in_memory_and_gone_when_closed(tmp_path):
    fd = osutil.memory_file(b"secret\n" * 10000, "drkit-test")
    try:
        path = osutil.memory_file_path(fd)
        assert os.readlink(path).startswith("/memfd:drkit-test")
        assert oct(os.fstat(fd).st_mode & 0o777) == "0o600"
        with open(path, "rb") as fh:
            assert fh.read() == b"secret\n" * 10000
        assert not os.get_inheritable(fd)  # children open it by its path, never inherit it
    finally:
        os.close(fd)
    assert not os.path.exists(path)


def test_memory_file_unavailable_gives_none(monkeypatch):
    monkeypatch.delattr(os, "memfd_create")
    assert osutil.memory_file(b"x") is None
