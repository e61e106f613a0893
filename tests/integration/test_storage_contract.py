# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage contract (docs/storage-layout.md), one suite for every
backend: a directory (file://), S3 (SeaweedFS) and Azure Blob (Azurite),
each on a real server on loopback. Atomic commit, create-only writes (also
racing), put_new, manifests and verification records, listing (prefix
isolation, sub directories, more than one page, partial names), deletes,
read-back with odd keys, a modified object caught by the checksum, the
pre-flight probe, and (object stores) a read cut mid-body resumed with
ranged GETs. What only one backend has stays in its own module
(test_storage_s3.py, test_storage_azure.py, unit/.../storage/test_file.py)."""

import json
import os
import threading

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import stream as pl
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import (ConflictError, IntegrityError,
                                                                               NotFoundError, StorageError)
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo import wal_layout as wal
from ansible_collections.drkit.backup.plugins.module_utils.repo.verification import write_record
from ansible_collections.drkit.backup.plugins.module_utils.storage.base import ObjectExists, put_new
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from helpers import run_drkit
from support.faultproxy import Fault, FaultProxy
from support.unit_helpers import create_only_race

MiB = 1 << 20
BACKENDS = ("file", "s3", "az")
OBJECT_STORES = ("s3", "az")


class Backend(object):
    """One storage root of one backend: ``open(prefix)`` a Storage there."""

    def __init__(self, name, root, opts, server=None):
        self.name, self.root, self.opts, self.server = name, root, opts, server

    def url(self, prefix="pre/fix"):
        return "%s/%s" % (self.root, prefix)

    def open(self, prefix="pre/fix", **changes):
        opts = dict(self.opts)
        opts.update(changes)
        return open_storage(self.url(prefix), **opts)

    def through(self, proxy):
        """The options that send this backend's requests through ``proxy``."""
        if self.name == "s3":
            return dict(self.opts, endpoint_url=proxy.endpoint_url)
        return dict(self.opts, azure_endpoint="%s/%s" % (proxy.endpoint_url, self.server.account))


def make_backend(request, name, tmp_path):
    if name == "file":
        root = tmp_path / "store"
        root.mkdir(mode=0o700)
        return Backend(name, "file://%s" % root, {})
    if name == "s3":
        s3 = request.getfixturevalue("s3")
        bucket = request.getfixturevalue("bucket")
        return Backend(name, "s3://%s" % bucket, dict(endpoint_url=s3.endpoint_url, access_key=s3.access_key,
                                                      secret_key=s3.secret_key, region=s3.region), s3)
    azurite = request.getfixturevalue("azurite")
    container = request.getfixturevalue("container")
    return Backend(name, "az://%s" % container, azurite.options(), azurite)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    return make_backend(request, request.param, tmp_path)


@pytest.fixture(params=OBJECT_STORES)
def object_store(request, tmp_path):
    return make_backend(request, request.param, tmp_path)


# --------------------------------------------------------------------------
# atomic commit: an object appears whole, at commit, or not at all


def test_a_streamed_object_appears_only_at_commit(backend):
    s = backend.open()
    data = os.urandom(9 * MiB + 123)  # more than one part/block of the object stores
    w = s.writer("backups/b1/db.zst")
    for i in range(0, len(data), 2 * MiB):
        w.write(data[i:i + 2 * MiB])
    assert s.stat("backups/b1/db.zst") is None
    assert list(s.list("backups/")) == []
    w.commit()
    assert w.size == len(data)
    assert s.stat("backups/b1/db.zst").size == len(data)
    assert s.get_bytes("backups/b1/db.zst") == data


def test_a_write_that_fails_leaves_nothing(backend):
    s = backend.open()
    with pytest.raises(RuntimeError):
        with s.writer("backups/b2/db.zst") as w:
            w.write(os.urandom(9 * MiB))
            raise RuntimeError("the dump failed")
    assert s.stat("backups/b2/db.zst") is None
    assert list(s.list("")) == []
    with pytest.raises(RuntimeError):
        with s.writer("wal/000000010000000000000001", create=True) as w:
            w.write(b"half a segment")
            raise RuntimeError("pg_wal read failed")
    assert s.stat("wal/000000010000000000000001") is None


def test_a_plain_write_replaces_and_the_new_object_is_whole(backend):
    s = backend.open()
    s.put_bytes("backups/b3/x", b"first" * 1000)
    s.put_bytes("backups/b3/x", b"second")
    assert s.get_bytes("backups/b3/x") == b"second" and s.stat("backups/b3/x").size == 6


# --------------------------------------------------------------------------
# create-only


def test_create_only_refuses_a_taken_key_and_leaves_it_untouched(backend):
    s = backend.open()
    data = os.urandom(9 * MiB)  # larger than a part: still one create-only write
    with s.writer("wal/00000001/seg.zst", create=True) as w:
        for i in range(0, len(data), 3 * MiB):
            w.write(data[i:i + 3 * MiB])
    with pytest.raises(ObjectExists) as e:
        s.put_bytes("wal/00000001/seg.zst", b"other content", create=True)
    assert "already exists" in str(e.value)
    assert s.get_bytes("wal/00000001/seg.zst") == data
    assert [i.key for i in s.list("wal/")] == ["wal/00000001/seg.zst"]


def test_concurrent_create_only_writers_exactly_one_wins(backend):
    s = backend.open()
    for rnd in range(3):
        key = "wal/00000001/race-%d.zst" % rnd
        payloads = [b"writer %d " % i * 100000 for i in range(5)]
        outcome = create_only_race(s, key, payloads)
        winners = [i for i, o in outcome.items() if o == "stored"]
        assert len(winners) == 1 and len(outcome) == len(payloads), outcome
        assert s.get_bytes(key) == payloads[winners[0]]


def test_put_new_accepts_the_same_and_refuses_a_different_object(backend):
    s = backend.open()
    assert put_new(s, "wal/000000010000000000000001", b"seg") is True
    assert put_new(s, "wal/000000010000000000000001", b"seg") is False
    with pytest.raises(ConflictError):
        put_new(s, "wal/000000010000000000000001", b"other")
    assert s.get_bytes("wal/000000010000000000000001") == b"seg"


def test_manifests_and_verification_records_are_create_only(backend):
    s = backend.open()
    backup_id = mf.new_backup_id("pg_logical")
    m = mf.Manifest.new(backup_id, "pg_logical", mf.utcnow(), {"database": "app"})
    m.finish(mf.utcnow())
    mf.write_manifest(s, m)
    with pytest.raises(ObjectExists):
        mf.write_manifest(s, mf.Manifest(m, labels={"edited": "yes"}))
    assert mf.load_manifest(s, backup_id) == m
    key = write_record(s, backup_id, mf.utcnow(), {"result": "pass"})
    with pytest.raises(ObjectExists):
        s.put_bytes(key, b"{}", create=True)
    assert json.loads(s.get_bytes(key)) == {"result": "pass"}


def test_the_probe_is_a_create_only_object_under_probe(backend):
    s = backend.open()
    key = s.probe(user="tester")
    assert key.startswith("probe/")
    kept = [i.key for i in s.list("probe/")]
    # file:// removes its probe at once; object stores keep it (backup credentials may not delete)
    assert kept == ([] if backend.name == "file" else [key])
    if backend.name != "file":
        assert json.loads(s.get_bytes(key))["user"] == "tester"


# --------------------------------------------------------------------------
# listing, stat, delete


def test_list_stat_dirs_and_delete_stay_inside_the_prefix(backend):
    s = backend.open()
    other = backend.open("pre/fixture")  # a prefix that starts like ours
    keys = ["backups/a/1", "backups/a/2", "backups/b/1", "wal/0001"]
    for k in keys:
        s.put_bytes(k, k.encode())
    other.put_bytes("backups/z/1", b"z")
    assert sorted(i.key for i in s.list("")) == keys
    assert sorted(i.key for i in s.list("backups/")) == keys[:3]
    assert s.list_dirs("backups/") == ["a", "b"]
    assert s.stat("backups/a/1").size == len(b"backups/a/1") and s.stat("backups/a/1").mtime > 0
    assert s.stat("backups/a/3") is None
    with pytest.raises(NotFoundError) as e:
        s.get_bytes("backups/a/3")
    assert "backups/a/3" in str(e.value)
    assert sorted(s.delete(["backups/a/1", "backups/a/2", "backups/a/missing"]))[:2] == ["backups/a/1",
                                                                                         "backups/a/2"]
    assert sorted(i.key for i in s.list("")) == ["backups/b/1", "wal/0001"]
    assert [i.key for i in other.list("")] == ["backups/z/1"]


def test_listing_more_than_a_page_and_by_partial_name(backend):
    s = backend.open()
    keys = ["many/k%04d" % i for i in range(1005)]
    errors = []

    def put(part):
        try:
            for k in part:
                s.put_bytes(k, k.encode(), create=True)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=put, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(i.key for i in s.list("many/")) == keys
    assert sorted(i.key for i in s.list("many/k100")) == ["many/k1000", "many/k1001", "many/k1002",
                                                          "many/k1003", "many/k1004"]
    assert sorted(s.delete(keys)) == keys
    assert list(s.list("many/")) == []


# --------------------------------------------------------------------------
# read-back


def test_round_trips_with_odd_keys_and_chunked_reads(backend):
    s = backend.open()
    data = {"a/one": b"1", "a/two words \u00fc+~.zst": os.urandom(70000), "a/sub/x": b"", "b/y": b"y" * 5}
    for k, v in data.items():
        s.put_bytes(k, v)
    for k, v in data.items():
        assert s.get_bytes(k) == v
        assert b"".join(s.iter_read(k, chunk_size=4096)) == v
        assert s.stat(k).size == len(v)
    assert sorted(i.key for i in s.list("a/")) == ["a/one", "a/sub/x", "a/two words \u00fc+~.zst"]
    assert s.list_dirs("") == ["a", "b"] and s.list_dirs("a/") == ["sub"]
    assert sorted(s.delete(["a/one", "a/two words \u00fc+~.zst"])) == ["a/one", "a/two words \u00fc+~.zst"]
    assert s.stat("a/one") is None
    assert [i.key for i in s.list("a/")] == ["a/sub/x"]


def test_a_missing_key(backend):
    s = backend.open()
    assert s.stat("no/such/key") is None
    with pytest.raises(NotFoundError):
        b"".join(s.iter_read("no/such/key"))
    assert list(s.list("no/such/")) == []


def test_read_stored_catches_a_modified_object(backend):
    s = backend.open()
    data = os.urandom(3 * MiB)
    with s.writer("backups/b1/db.zst") as w:
        sink = pl.PipelineSink(w, [pl.ZstdCompress()])
        sink.write(data)
        sink.close()
    res = sink.result()
    out = bytearray()
    pl.read_stored(s, "backups/b1/db.zst", res["size"], res["sha256"], [pl.ZstdDecompress()], out.extend)
    assert bytes(out) == data
    stored = bytearray(s.get_bytes("backups/b1/db.zst"))
    stored[len(stored) // 2] ^= 0x40
    s.put_bytes("backups/b1/db.zst", bytes(stored))  # replaced behind the manifest's back
    with pytest.raises(IntegrityError) as e:
        pl.read_stored(s, "backups/b1/db.zst", res["size"], res["sha256"], [pl.ZstdDecompress()],
                       lambda d: None)
    assert "backups/b1/db.zst" in str(e.value) and "sha256" in str(e.value)


def test_a_read_cut_mid_body_resumes_with_a_ranged_get(object_store):
    s = object_store.open()
    data = os.urandom(5 * MiB)
    s.put_bytes("backups/b1/db.zst", data)
    with FaultProxy(object_store.server.host, object_store.server.port) as proxy:
        through = open_storage(object_store.url(), **object_store.through(proxy))
        through._sleep = lambda seconds: None  # no backoff needed on loopback
        proxy.add(Fault("cut", at=3 * MiB, direction="response", method="GET", min_body=4 * MiB, times=1))
        got = b"".join(through.iter_read("backups/b1/db.zst"))
        assert proxy.injected["cut"] == 1
    assert got == data


def test_a_read_cut_every_time_is_a_transfer_error_not_a_corrupt_object(object_store):
    s = object_store.open()
    s.put_bytes("backups/b1/db.zst", os.urandom(2 * MiB))
    with FaultProxy(object_store.server.host, object_store.server.port) as proxy:
        through = open_storage(object_store.url(), **object_store.through(proxy))
        through._sleep = lambda seconds: None
        proxy.add(Fault("cut", at=64 << 10, direction="response", method="GET", min_body=1 * MiB, times=1000))
        with pytest.raises(StorageError) as e:
            b"".join(through.iter_read("backups/b1/db.zst"))
    assert "connection lost after" in str(e.value) and "of %d bytes" % (2 * MiB) in str(e.value), str(e.value)


# --------------------------------------------------------------------------
# the commands, through `drkit` with the storage options in a 0600 config
# file (secrets never on the command line): the same results everywhere


def test_logical_backup_verify_and_restore_give_the_same_results(backend, pg, pg_database, tmp_path):
    pg.psql("CREATE TABLE agents (id int PRIMARY KEY, name text); "
            "INSERT INTO agents SELECT g, 'agent ' || g FROM generate_series(1, 1234) g; "
            "CREATE SCHEMA mcp; CREATE TABLE mcp.documents AS SELECT g AS id, repeat('x', g % 50) AS body "
            "FROM generate_series(1, 321) g", dbname=pg_database)
    config = dict(backend.opts, storage_url=backend.url("pg"), login_host=pg.host, port=pg.port,
                  login_user=pg.superuser, login_password=pg.password)
    target = "restored_%s" % pg_database

    def drkit(*args):
        proc = run_drkit(list(args) + ["--json"], config=config, tmp_dir=tmp_path)
        for secret in (config.get("azure_account_key"), config.get("secret_key"), pg.password):
            assert not secret or secret not in proc.stdout + proc.stderr
        return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr)

    rc, out = drkit("pg-backup", "-d", pg_database)
    assert rc == 0, out
    backup_id = out["manifest"]["backup_id"]
    rows = dict(("%s.%s" % (r["schema"], r["table"]), r["rows"]) for r in out["manifest"]["data"]["table_rows"])
    assert rows == {"public.agents": 1234, "mcp.documents": 321}
    rc, out = drkit("list")
    assert rc == 0 and [b["backup_id"] for b in out["backups"]] == [backup_id], out
    rc, out = drkit("verify", "--level", "restore", "--backup-id", backup_id)
    assert rc == 0, out
    assert sorted((t["name"], t["actual"]) for t in out["tables"]) == [("mcp.documents", 321),
                                                                       ("public.agents", 1234)]
    try:
        rc, out = drkit("restore", "--backup-id", backup_id, "--target-database", target)
        assert rc == 0, out
        assert out["verified"] and all(t["ok"] for t in out["tables"])
        assert pg.psql("SELECT count(*), sum(id) FROM agents", dbname=target) == "1234|761995"
    finally:
        pg.psql('DROP DATABASE IF EXISTS "%s"' % target)
    # a modified artifact: verify says so (exit 8) on every backend
    s = backend.open("pg")
    (artifact,) = [i.key for i in s.list("backups/%s/" % backup_id) if i.key.endswith(".zst")]
    stored = bytearray(s.get_bytes(artifact))
    stored[len(stored) // 2] ^= 0x01
    s.put_bytes(artifact, bytes(stored))
    rc, out = drkit("verify", "--level", "checksum", "--backup-id", backup_id)
    assert rc == 8 and "sha256" in out, out


def test_wal_push_and_fetch_keep_the_archive_contract(backend, pg, tmp_path):
    pg.psql("SELECT pg_logical_emit_message(false, 'drkit-test', repeat('x', 200000))")
    name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    segment = tmp_path / "pg_wal" / name
    segment.parent.mkdir()
    segment.write_bytes(open(os.path.join(pg.data_dir, "pg_wal", name), "rb").read())
    config = dict(backend.opts)
    url = backend.url("cluster")

    def drkit(*args):
        return run_drkit(list(args), config=config, tmp_dir=tmp_path)

    r = drkit("wal-push", "--storage-url", url, str(segment), name)
    assert r.returncode == 0, r.stderr[-3000:]
    r = drkit("wal-push", "--storage-url", url, str(segment), name)
    assert r.returncode == 0, r.stderr[-3000:]  # an identical re-push is success
    out = tmp_path / "restored"
    out.mkdir()
    r = drkit("wal-fetch", "--storage-url", url, name, str(out / "RECOVERYXLOG"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "RECOVERYXLOG").read_bytes() == segment.read_bytes()
    other = tmp_path / "other" / name
    other.parent.mkdir()
    other.write_bytes(b"\x01" + segment.read_bytes()[1:])
    r = drkit("wal-push", "--storage-url", url, str(other), name)
    assert r.returncode == 5, r.stderr[-3000:]  # a different file under the same name is refused...
    r = drkit("wal-fetch", "--storage-url", url, name, str(out / "AGAIN"))
    assert r.returncode == 0 and (out / "AGAIN").read_bytes() == segment.read_bytes()  # ...and left untouched
    missing = wal.segment_name(int(name[:8], 16), wal.segment_number(name) + 50)
    r = drkit("wal-fetch", "--storage-url", url, missing, str(out / "RECOVERYXLOG2"))
    assert r.returncode == 1 and "not in the archive" in r.stderr
