# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``drkit wal-push --async`` as PostgreSQL 15 runs it (archive_command of
a real cluster, as its OS user): the background pusher stores the .ready
segments ahead, every call exits 0 only for content that is in the archive;
with the storage refusing every upload PostgreSQL retries and nothing is
lost once it is back; a full spool falls back to pushing in the call; the
pusher leaves when idle."""

import hashlib
import os
import pwd
import shlex
import shutil
import time
import uuid

import pytest
import zstandard
from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import make_scratch_dir
from ansible_collections.drkit.backup.plugins.module_utils.pg import wal_pusher
from ansible_collections.drkit.backup.plugins.module_utils.pg.scratch import ScratchPostgres
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from ansible_collections.drkit.backup.plugins.module_utils.storage import factory as storage
from helpers import SmallTmpfs
from pitr_source import DRKIT_CMD, write_0600
from support.faultproxy import Fault, FaultProxy


def sha(data):
    return hashlib.sha256(data).hexdigest()


def stored_raw(st, name):
    return zstandard.ZstdDecompressor().decompressobj().decompress(st.get_bytes(wal.wal_key(name)))


class AsyncCluster(object):
    """A cluster archiving with ``wal-push --async`` through a fault proxy."""

    def __init__(self, base, s3, bucket, endpoint, spool):
        self.base = base
        self.spool = spool
        self.url = "s3://%s/async-%s" % (bucket, uuid.uuid4().hex[:8])
        self.cfg = {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
                    "region": s3.region}
        config = write_0600(os.path.join(base, "wal.yml"), dict(
            self.cfg, endpoint_url=endpoint, storage_url=self.url, spool_dir=spool, read_ahead=3,
            archive_async=True, async_idle=8), owner="postgres")
        # --verbose: each call says in the server log how its file got stored
        command = "%s wal-push --verbose --config %s %%p %%f" % (DRKIT_CMD, shlex.quote(config))
        self.pg = ScratchPostgres(os.path.join(base, "pg"), password="async-%s" % uuid.uuid4().hex[:6], settings={
            "wal_level": "replica", "archive_mode": "on", "archive_command": command, "archive_timeout": 0})

    def segments(self, count):
        """``count`` completed segments: (name, sha256 of the file PostgreSQL wrote)."""
        out = []
        for _i in range(count):
            self.pg.psql("SELECT pg_logical_emit_message(false, 'drkit-test', repeat(md5(random()::text), 20000))")
            name = self.pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
            with open(os.path.join(self.pg.data_dir, "pg_wal", name), "rb") as fh:
                out.append((name, sha(fh.read())))
        return out

    def archiver(self):
        row = self.pg.psql("SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        archived, failed, last = row.split("|")
        return int(archived), int(failed), last

    def wait(self, what, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if what():
                return
            time.sleep(0.1)
        raise AssertionError("not reached in %d s: %s" % (timeout, self.archiver()))

    def assert_stored(self, segments):
        st = storage.open_storage(self.url, **self.cfg)
        for name, digest in segments:
            assert sha(stored_raw(st, name)) == digest, name


@pytest.fixture(scope="module")
def cluster(scratch_root, s3):
    """One cluster for the module (the tests run in order: the second needs
    the pusher of the first gone)."""
    bucket = "drkit-async-%s" % uuid.uuid4().hex[:12]
    s3.create_bucket(bucket)
    base = make_scratch_dir(prefix="walasync-", parent=str(scratch_root))
    os.chmod(base, 0o755)
    spool = os.path.join(base, "spool")
    os.mkdir(spool, 0o700)
    shutil.chown(spool, "postgres", "postgres")
    with FaultProxy(s3.host, s3.port) as proxy:
        c = AsyncCluster(base, s3, bucket, proxy.endpoint_url, spool)
        c.proxy = proxy
        c.pg.start()
        try:
            yield c
        finally:
            c.pg.destroy()
            deadline = time.time() + 30  # the pusher leaves with its pg_wal
            while wal_pusher.worker(spool).running() and time.time() < deadline:
                time.sleep(0.1)
            shutil.rmtree(base, ignore_errors=True)
            s3.delete_bucket(bucket)


def test_async_push_stores_ahead_and_survives_an_outage(cluster):
    first = cluster.segments(6)
    cluster.wait(lambda: cluster.archiver()[2] >= first[-1][0])
    cluster.assert_stored(first)
    assert wal_pusher.worker(cluster.spool).running(), "the pusher is kept warm between calls"
    with open(cluster.pg.log_file) as fh:
        log = fh.read()
    ahead = [n for n, _d in first if "%s was archived ahead by the background pusher" % n in log]
    assert len(ahead) >= 3, log[-3000:]
    # The calls were answered by the pusher's markers, each consumed by its call.
    pushed = [n for n in os.listdir(cluster.spool) if n.endswith(".pushed")]
    assert pushed == [], pushed

    # Storage down: every upload is reset. PostgreSQL keeps retrying, nothing
    # is acknowledged, nothing is lost.
    _archived, failed_before, last_before = cluster.archiver()
    cluster.proxy.add(Fault("cut", 0, direction="request", method="PUT", times=10 ** 6))
    second = cluster.segments(4)
    cluster.wait(lambda: cluster.archiver()[1] >= failed_before + 2)
    assert cluster.archiver()[2] == last_before, "nothing may be acknowledged while uploads fail"
    assert cluster.proxy.injected["cut"] > 0
    st = storage.open_storage(cluster.url, **cluster.cfg)
    assert [n for n, _d in second if st.stat(wal.wal_key(n)) is not None] == []

    # Storage back: everything arrives, content checked against what PostgreSQL wrote.
    cluster.proxy.clear()
    cluster.wait(lambda: cluster.archiver()[2] >= second[-1][0])
    cluster.assert_stored(first + second)
    assert not [n for n in os.listdir(cluster.spool) if n.endswith(".failed")]

    # Idle: the pusher leaves (async_idle = 8 s here).
    cluster.wait(lambda: not wal_pusher.worker(cluster.spool).running(), timeout=60)


def test_a_full_spool_falls_back_to_pushing_in_the_call(cluster):
    assert not wal_pusher.worker(cluster.spool).running()
    failed_before = cluster.archiver()[1]
    for n in os.listdir(cluster.spool):
        os.unlink(os.path.join(cluster.spool, n))
    # A spool with no room: no marker, no pid file, no .failed can be written.
    with SmallTmpfs(cluster.spool, 64 << 10) as fs:
        pw = pwd.getpwnam("postgres")
        os.chown(cluster.spool, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(cluster.spool, "filler"), "wb", buffering=0) as fh:
            with pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        segs = cluster.segments(3)
        cluster.wait(lambda: cluster.archiver()[2] >= segs[-1][0])
        cluster.assert_stored(segs)
        assert cluster.archiver()[1] == failed_before, "a full spool is no failure"
        with open(cluster.pg.log_file) as fh:
            log = fh.read()
        for name, _d in segs:  # each call pushed its own file
            assert "%s stored in" % name in log, log[-3000:]
        # an empty lock file needs no room; nothing else was left
        assert set(fs.contents()) <= {"filler", wal_pusher.LOCK_NAME}
