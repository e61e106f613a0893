# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal_pusher.py: the background pusher's loop (bounded parallel uploads of
the .ready files, oldest first; markers; failures noted and retried later;
a spool that cannot take a marker ends it; idle ends it) and what an
archive_command call concludes while it waits. The real daemon under a
real PostgreSQL: tests/integration/test_wal_push_async.py."""

import os
import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.core.options import resolve
from ansible_collections.drkit.backup.plugins.module_utils.pg import wal_pusher
from ansible_collections.drkit.backup.plugins.module_utils.pg.wal_archive import (
    WAL_PUSH_OPTIONS,
    _read_marker,
    _write_marker,
    ready_files,
    wal_push,
)
from ansible_collections.drkit.backup.plugins.module_utils.repo.wal_layout import segment_name

NAMES = [segment_name(1, n) for n in range(1, 8)]


@pytest.fixture
def wal_dir(tmp_path):
    d = tmp_path / "pg_wal"
    (d / "archive_status").mkdir(parents=True)
    for n in NAMES:
        (d / n).write_bytes(b"x")
        (d / "archive_status" / (n + ".ready")).write_text("")
    return d


@pytest.fixture
def spool(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    return d


def params(tmp_path, **kw):
    kw.setdefault("read_ahead", 3)
    kw.setdefault("async_idle", 1.0)
    return resolve(WAL_PUSH_OPTIONS, dict(kw, storage_url="file://%s" % tmp_path, archive_async=True))


def ready(d):
    return ready_files(str(d), None, 1000)


class Pushes(object):
    """push() for run_pusher: records order and concurrency; ``fail`` names
    fail once."""

    def __init__(self, fail=()):
        self.order, self.fail = [], set(fail)
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, storage, path, name, recipients):
        with self.lock:
            self.order.append(name)
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            threading.Event().wait(0.02)
            if name in self.fail:
                self.fail.discard(name)
                raise StorageError("storage down")
            return "sha-" + name
        finally:
            with self.lock:
                self.now -= 1


def test_the_pusher_pushes_every_ready_file_oldest_first_a_few_at_a_time(tmp_path, wal_dir, spool):
    pushes = Pushes()
    stored = wal_pusher.run_pusher(params(tmp_path, async_idle=1.0), str(wal_dir), str(spool), pushes, ready,
                                   _write_marker, _read_marker)
    assert stored == len(NAMES)
    assert pushes.order[:3] == NAMES[:3] and sorted(pushes.order) == NAMES  # each once
    assert 1 < pushes.most <= 3
    assert {n: _read_marker(str(spool), n) for n in NAMES} == {n: "sha-" + n for n in NAMES}
    assert (spool / "pusher.pid").read_text().strip() == str(os.getpid())


def test_a_failure_is_noted_for_its_call_and_retried(tmp_path, wal_dir, spool):
    pushes = Pushes(fail=[NAMES[1]])
    noted = []
    real = wal_pusher._note_failure

    def note(spool_dir, name, err):
        noted.append(os.path.exists(wal_pusher.failed_path(spool_dir, name)))
        real(spool_dir, name, err)
        # what the call finds: the error's kind only, never its text
        with open(wal_pusher.failed_path(spool_dir, name)) as fh:
            noted.append(fh.read().strip())
    wal_pusher._note_failure, saved = note, real
    try:
        stored = wal_pusher.run_pusher(params(tmp_path, async_idle=2.5), str(wal_dir), str(spool), pushes, ready,
                                       _write_marker, _read_marker)
    finally:
        wal_pusher._note_failure = saved
    assert noted == [False, "StorageError"]
    assert stored == len(NAMES)
    assert pushes.order.count(NAMES[1]) == 2  # retried after its back-off
    assert not os.path.exists(wal_pusher.failed_path(str(spool), NAMES[1])), "a success clears the failure"


def test_a_spool_that_cannot_take_a_marker_ends_the_pusher(tmp_path, wal_dir, spool):
    def no_room(spool_dir, name, sha):
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        wal_pusher.run_pusher(params(tmp_path), str(wal_dir), str(spool), Pushes(), ready, no_room, _read_marker)


def test_files_marked_already_are_not_pushed_again(tmp_path, wal_dir, spool):
    for n in NAMES[:5]:
        _write_marker(str(spool), n, "sha-" + n)
    pushes = Pushes()
    assert wal_pusher.run_pusher(params(tmp_path), str(wal_dir), str(spool), pushes, ready, _write_marker,
                                 _read_marker) == 2
    assert pushes.order == NAMES[5:]


def test_the_pusher_leaves_with_its_pg_wal(tmp_path, wal_dir, spool):
    pushes = Pushes()

    def gone(d):
        names = ready(d)
        if len(pushes.order) >= 2:
            (wal_dir / "archive_status").rename(wal_dir / "gone")
        return names
    wal_pusher.run_pusher(params(tmp_path, async_idle=3600.0), str(wal_dir), str(spool), pushes, gone,
                          _write_marker, _read_marker)
    assert len(pushes.order) < len(NAMES)


# -- what a call concludes while it waits


def test_a_call_sees_its_marker_its_failure_or_no_pusher(spool):
    marker = os.path.join(str(spool), NAMES[0] + ".pushed")
    with open(marker, "w") as fh:
        fh.write("x\n")
    assert wal_pusher.wait_for(str(spool), NAMES[0], marker) == "ready"
    os.unlink(marker)
    with open(wal_pusher.failed_path(str(spool), NAMES[0]), "w") as fh:
        fh.write("StorageError\n")
    assert wal_pusher.wait_for(str(spool), NAMES[0], marker) == "failed"
    assert not os.path.exists(wal_pusher.failed_path(str(spool), NAMES[0])), "consumed by the call"
    assert wal_pusher.wait_for(str(spool), NAMES[0], marker) == "gone"


def test_a_call_waits_while_a_pusher_holds_the_lock_then_gives_up(spool):
    import fcntl

    fd = os.open(os.path.join(str(spool), wal_pusher.LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert wal_pusher.worker(str(spool)).running()
        ticks = iter(range(1000))
        verdict = wal_pusher.wait_for(str(spool), NAMES[0], os.path.join(str(spool), "none"), timeout=50,
                                      clock=lambda: next(ticks), sleep=lambda s: None)
        assert verdict == "timeout"
        assert not wal_pusher.worker(str(spool)).start("/nonexistent", run=None), "one pusher at a time"
    finally:
        os.close(fd)
    assert not wal_pusher.worker(str(spool)).running()


# -- wal-push --async refuses what cannot work, before anything


@pytest.mark.parametrize("extra,wanted", [
    ({}, "needs --spool-dir"),
    ({"spool_dir": "/nonexistent/spool", "read_ahead": 2}, "is not a directory"),
    ({"read_ahead": 0}, "needs --read-ahead"),
])
def test_async_without_what_it_needs_is_a_config_error(tmp_path, spool, extra, wanted):
    p = {"storage_url": "file://%s" % tmp_path, "archive_async": True}
    if "spool_dir" not in extra and extra:
        p["spool_dir"] = str(spool)
    p.update(extra)
    with pytest.raises(ConfigError, match=wanted):
        wal_push(p, str(tmp_path / NAMES[0]), NAMES[0])


def test_a_spool_serving_another_pg_wal_is_told_apart(spool):
    import fcntl

    path = os.path.join(str(spool), wal_pusher.LOCK_NAME)
    assert wal_pusher.worker(str(spool)).serving() is None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"/srv/other-cluster/pg_wal\n")
        # wal-push then pushes its own file rather than wait for markers that never come
        assert wal_pusher.worker(str(spool)).serving() == "/srv/other-cluster/pg_wal"
    finally:
        os.close(fd)
    assert wal_pusher.worker(str(spool)).serving() is None


def test_pg_wal_archive_writes_async_into_the_command_only_with_a_spool():
    from ansible_collections.drkit.backup.plugins.module_utils.pg.archiving import archive_command_for

    base = {"storage_url": "s3://b/p", "wal_config": "/etc/drkit/w.yml"}
    cmd = archive_command_for(dict(base, spool_dir="/var/spool/drkit", archive_async=True, read_ahead=2))
    assert cmd.endswith("--spool-dir /var/spool/drkit --read-ahead 2 --async %p %f"), cmd
    assert "--async" not in archive_command_for(dict(base, spool_dir="/var/spool/drkit"))
    with pytest.raises(ConfigError, match="archive_async needs spool_dir"):
        archive_command_for(dict(base, archive_async=True))


def test_a_lock_file_that_cannot_be_written_leaves_the_call_alone(spool, monkeypatch):
    """A full spool: the empty lock file is created (an inode, no block) but
    cannot name what it serves. No pusher, no traceback: the call pushes its
    file itself (it once failed with an OSError, and PostgreSQL retried forever)."""
    from ansible_collections.drkit.backup.plugins.module_utils.core import background

    def no_room(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(background.os, "write", no_room)
    assert wal_pusher.worker(str(spool)).start("/srv/pg/pg_wal", run=None) is False
    assert not wal_pusher.worker(str(spool)).running(), "the lock is released"
