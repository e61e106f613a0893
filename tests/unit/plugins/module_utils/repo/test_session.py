# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""session.py: how a BackupSession records success and failure in the
Prometheus textfile (metrics.py)."""

import os

import pytest
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


def test_record_failure_before_a_session(tmp_path):
    backup.record_failure(str(tmp_path), "app", "pg_logical")
    path = str(tmp_path / "drkit_app.prom")
    assert value(path, "drkit_backup_last_status") == 0
    backup.record_failure(None, "app", "pg_logical")  # no metrics_dir: nothing, no error
