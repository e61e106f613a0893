# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A standby built from the repository, and failovers measured, for real:
a PostgreSQL 15 primary archiving with ``drkit wal-push`` into a file://
repository, a physical base backup taken as postgres, ``drkit standby``
restoring it into a new data directory on another loopback port (archive
first, then streaming from a slot), and ``drkit failover`` planned and
unplanned with a writer whose own log of committed ids is the oracle.
"""

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from pitr_source import DRKIT_CMD, ArchivingSource

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port, make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg.standby import pg_standby

ROWS_BEFORE_BACKUP = 1000
ROWS_AFTER_BACKUP = 500


class Pair(object):
    """A primary with rows before and after its base backup, and a standby
    built by drkit from the repository."""

    def __init__(self, root, settings=None):
        self.root = Path(root)
        self.password = uuid.uuid4().hex
        (self.root / "primary").mkdir(mode=0o755)
        self.source = ArchivingSource(self.root / "primary", self.password)
        self.source.pg.settings.update(settings or {})
        self.pg = self.source.pg
        self.standby_parent = self.root / "standby"
        self.standby_parent.mkdir(mode=0o755)
        self.standby_dir = self.standby_parent / "data"
        self.standby_port = free_port()

    def start(self):
        self.pg.start()
        self.pg.psql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")
        self.insert(1, ROWS_BEFORE_BACKUP)
        self.source.base_backup()
        self.insert(ROWS_BEFORE_BACKUP + 1, ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP)
        self.source.switch_wal_and_wait()
        return self

    def insert(self, first, last):
        self.pg.psql("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(%d, %d) g" % (first, last))

    def params(self, **extra):
        out = {"storage_url": self.source.wal_url, "login_host": "127.0.0.1", "port": self.pg.port,
               "login_user": "postgres", "login_password": self.password,
               "data_directory": str(self.standby_dir), "standby_port": self.standby_port,
               "drkit_command": DRKIT_CMD, "timeout": 120}
        out.update(extra)
        return out

    def standby_psql(self, sql):
        env = dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="10")
        res = subprocess.run([os.path.join(self.pg.bin_dir, "psql"), "-X", "-qAt", "-h", "127.0.0.1", "-p",
                              str(self.standby_port), "-U", "postgres", "-d", "postgres", "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout.decode().strip()

    def stop_standby(self):
        pid_file = self.standby_dir / "postmaster.pid"
        if pid_file.exists():
            subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.pg.bin_dir, "pg_ctl"), "stop",
                            "-D", str(self.standby_dir), "-m", "immediate", "-w"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def destroy(self):
        self.stop_standby()
        self.pg.destroy()


@pytest.fixture
def pair():
    root = make_scratch_dir(prefix="drkit-failover-")
    os.chmod(root, 0o755)
    p = Pair(root, settings={"autovacuum": "off"})
    try:
        yield p.start()
    finally:
        p.destroy()
        shutil.rmtree(root, ignore_errors=True)


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % what)


def test_standby_from_repository_catches_up_and_streams(pair):
    changed, plan = pg_standby(pair.params(), check_mode=True)
    assert changed and "Would restore" in plan["msg"]
    assert not pair.standby_dir.exists()

    changed, result = pg_standby(pair.params())
    assert changed and result["status"] == "streaming", result
    assert result["archive_segments_replayed"] >= 1, result
    assert pair.standby_psql("SELECT pg_is_in_recovery()") == "t"
    assert pair.standby_psql("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert pair.standby_psql("SELECT count(*) FROM t") == str(ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP)
    # the password is in the passfile only: 0600, the server's user, outside the data directory
    passfile = Path(result["passfile"])
    st = passfile.stat()
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_uid == pwd_uid("postgres")
    assert pair.password in passfile.read_text()
    auto = (pair.standby_dir / "postgresql.auto.conf").read_text()
    assert pair.password not in auto and "passfile=" in auto and "primary_slot_name = 'drkit_standby'" in auto
    # the slot on the primary is the standby's, active
    assert pair.pg.psql("SELECT active FROM pg_replication_slots WHERE slot_name = 'drkit_standby'") == "t"

    # streaming: new rows show up without any archiving
    pair.insert(5001, 5010)
    wait_for(lambda: pair.standby_psql("SELECT count(*) FROM t WHERE id > 5000") == "10", what="streamed rows")

    # a rerun changes nothing and reports the lag
    changed, again = pg_standby(pair.params())
    assert not changed and again["existing"] and again["lag"]["replay_lag_bytes"] is not None, again

    # an occupied directory that is not drkit's standby is refused
    other = pair.root / "other"
    other.mkdir()
    (other / "PG_VERSION").write_text("15\n")
    with pytest.raises(Exception) as exc:
        pg_standby(pair.params(data_directory=str(other), standby_port=free_port()))
    assert "refusing" in str(exc.value)
    with pytest.raises(ConfigError):
        pg_standby(pair.params(passfile=str(pair.standby_dir / "pw")))


def pwd_uid(name):
    import pwd
    return pwd.getpwnam(name).pw_uid
