# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""session.py: how a BackupSession records success and failure in the
Prometheus textfile (metrics.py), and that it never replaces or deletes
another backup's objects."""

import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConflictError, StorageError
from ansible_collections.drkit.backup.plugins.module_utils.repo import session as backup
from ansible_collections.drkit.backup.plugins.module_utils.storage import file as st
from support.unit_helpers import value


def test_session_records_success_then_failure(tmp_path):
    fs = st.FileStorage(str(tmp_path / "store"))
    mdir = str(tmp_path / "metrics")
    src = {"type": "postgresql", "host": "h", "port": 1, "database": "d"}
    with backup.BackupSession(fs, "pg_logical", src, compression={"algorithm": "zstd", "level": 3},
                              metrics_dir=mdir, job="app") as s:
        s.store_bytes("a.bin", b"x" * 1000, compress=True)
        s.commit()
    path = os.path.join(mdir, "drkit_app.prom")
    ok_time = value(path, "drkit_backup_last_success_timestamp_seconds")
    assert value(path, "drkit_backup_last_status") == 1
    assert value(path, "drkit_backup_raw_size_bytes") == 1000
    assert value(path, "drkit_backup_size_bytes") == s.result()["size"] < 1000

    with pytest.raises(RuntimeError):
        with backup.BackupSession(fs, "pg_logical", src, metrics_dir=mdir, job="app") as s2:
            s2.store_bytes("a.bin", b"y" * 10)
            raise RuntimeError("pg_dump died")
    assert value(path, "drkit_backup_last_status") == 0
    assert value(path, "drkit_backup_last_success_timestamp_seconds") == ok_time
    assert value(path, "drkit_backup_last_attempt_timestamp_seconds") >= ok_time
    # the failed session's artifact was removed
    assert [i.key for i in fs.list("backups/" + s2.backup_id)] == []


def test_a_session_whose_id_is_taken_replaces_and_deletes_nothing(tmp_path, monkeypatch):
    fs = st.FileStorage(str(tmp_path / "store"))
    src = {"type": "postgresql", "host": "h", "port": 1, "database": "d"}
    taken = "20261125T211500Z-pg-logical-abcdef"
    monkeypatch.setattr(backup.mf, "new_backup_id", lambda kind, when=None: taken)
    with backup.BackupSession(fs, "pg_logical", src) as first:
        first.store_bytes("a.bin", b"x" * 10)
        first.commit()
    manifest = fs.get_bytes("backups/%s/manifest.json" % taken)
    with pytest.raises(ConflictError) as e:
        with backup.BackupSession(fs, "pg_logical", src) as second:
            second.store_bytes("b.bin", b"y" * 10)
            second.commit()
    assert e.value.exit_code == 5 and "already has a manifest" in str(e.value)
    assert fs.get_bytes("backups/%s/manifest.json" % taken) == manifest  # the first one's, unchanged
    # nothing deleted under the shared prefix (the keys may be the first backup's)
    left = sorted(i.key.rsplit("/", 1)[1] for i in fs.list("backups/" + taken))
    assert left == ["a.bin", "b.bin", "manifest.json"]


def test_record_failure_before_a_session(tmp_path):
    backup.record_failure(str(tmp_path), "app", "pg_logical")
    path = str(tmp_path / "drkit_app.prom")
    assert value(path, "drkit_backup_last_status") == 0
    backup.record_failure(None, "app", "pg_logical")  # no metrics_dir: nothing, no error


# --------------------------------------------------------------------------
# BackupJob: the skeleton around every backup entry point


class Conn(object):
    def __init__(self, log, broken=False):
        self.log, self.broken = log, broken

    def close(self):
        self.log.append("closed")
        if self.broken:
            raise OSError("the server already closed it")


SRC = {"type": "postgresql", "host": "h", "port": 1, "database": "d"}


def test_job_success_closes_and_records_success(tmp_path):
    fs = st.FileStorage(str(tmp_path / "store"))
    mdir = str(tmp_path / "metrics")
    log = []
    job = backup.BackupJob(fs, "pg_logical", mdir, "app")
    with job:
        job.closing(Conn(log))
        job.cleanup(log.append, "work dir removed")
        session = job.session(SRC, compression={"algorithm": "zstd", "level": 3})
        with session:
            session.store_bytes("a.bin", b"x" * 100)
            session.commit()
    assert log == ["work dir removed", "closed"]  # the last registered first
    path = os.path.join(mdir, "drkit_app.prom")
    assert value(path, "drkit_backup_last_status") == 1
    assert session.manifest["source"] == SRC and session.kind == "pg_logical"


@pytest.mark.parametrize("where", ["before the session", "in the session", "after the session"])
def test_job_failure_anywhere_is_recorded_once_and_resources_closed(tmp_path, where):
    fs = st.FileStorage(str(tmp_path / "store"))
    mdir = str(tmp_path / "metrics")
    log = []
    job = backup.BackupJob(fs, "redis_rdb", mdir, "cache")
    with pytest.raises(RuntimeError):
        with job:
            job.closing(Conn(log, broken=True))  # a failing close is not the error that counts
            if where == "before the session":
                raise RuntimeError("authentication failed")
            with job.session(SRC) as s:
                s.store_bytes("dump.rdb", b"x")
                if where == "in the session":
                    raise RuntimeError("BGSAVE failed")
                s.commit()
            raise RuntimeError("after the manifest")
    assert log == ["closed"]
    path = os.path.join(mdir, "drkit_cache.prom")
    assert value(path, "drkit_backup_last_status") == 0
    assert 'kind="redis_rdb"' in open(path).read()


def test_job_unwritable_storage_is_a_recorded_failure(tmp_path):
    class Unwritable(st.FileStorage):
        def check_writable(self):
            raise StorageError("Cannot create directory: Permission denied")

    mdir = str(tmp_path / "metrics")
    job = backup.BackupJob(Unwritable(str(tmp_path / "store")), "pg_physical", mdir, "base")
    with pytest.raises(StorageError):
        with job:
            pytest.fail("the block must not run")
    assert value(os.path.join(mdir, "drkit_base.prom"), "drkit_backup_last_status") == 0


def test_job_check_mode_writes_nothing(tmp_path):
    fs = st.FileStorage(str(tmp_path / "store"))
    job = backup.BackupJob(fs, "pg_logical", str(tmp_path / "metrics"), "app")
    job.check_storage()
    changed, result = job.planned("Would back up d")
    assert result.pop("probe").startswith("probe/")  # proven writable, and the probe removed again
    assert changed and result == {"changed": True, "backup_id": None, "storage": fs.describe(),
                                  "msg": "Would back up d"}
    assert not (tmp_path / "store").exists() and not (tmp_path / "metrics").exists()
