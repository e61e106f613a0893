# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The network between drkit and S3 breaks: a fault proxy on loopback
(tests/support/faultproxy.py) in front of the session's SeaweedFS cuts a
connection in the middle of a body, or flips one byte of it, at a chosen
offset of a chosen kind of message (never by timing). What drkit must do:
retry where that is safe, let checksums catch a flipped byte, call a failed
transfer a transfer error and not a corrupt backup, and never list anything
half-written. docs/failure-promises.md, "The network"."""

import os
import subprocess
import sys
import uuid

import pytest
from helpers import DRKIT, make_blob_database, s3_module_args
from pitr_source import write_0600
from support.faultproxy import Fault, FaultProxy

MIB = 1 << 20


@pytest.fixture
def proxy(s3):
    with FaultProxy(s3.host, s3.port) as p:
        yield p


@pytest.fixture(scope="module")
def blob_db(pg):
    name = "netfault_%s" % uuid.uuid4().hex[:8]
    make_blob_database(pg, name, 12)
    yield name
    pg.psql('DROP DATABASE IF EXISTS "%s"' % name)


def run(args, config, timeout=300):
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    p = subprocess.run([sys.executable, str(DRKIT)] + list(args) + ["--config", str(config)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                       check=False)
    return p.returncode, p.stdout, p.stderr


def through(proxy, s3):
    """S3 settings that reach SeaweedFS through the proxy."""
    args = dict(s3_module_args(s3))
    args["endpoint_url"] = proxy.endpoint_url
    return args


@pytest.fixture
def stored(pg, s3, bucket, blob_db, tmp_path):
    """A logical backup of blob_db in the bucket, stored directly (no proxy)."""
    url = "s3://%s/pg" % bucket
    cfg = write_0600(tmp_path / "direct.yml", dict(
        s3_module_args(s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
        login_password=pg.password, storage_url=url, compression_level=1, database=blob_db))
    rc, out, err = run(["pg-backup"], cfg)
    assert rc == 0, err
    return url


def restore_config(pg, proxy, s3, url, tmp_path):
    return write_0600(tmp_path / "via-proxy.yml", dict(
        through(proxy, s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
        login_password=pg.password, storage_url=url))


def restore(pg, cfg, tmp_path):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    target = "netr_%s" % uuid.uuid4().hex[:8]
    rc, out, err = run(["restore", "--target-database", target, "--jobs", "2", "--work-dir", str(work)], cfg)
    return rc, out, err, target, work


def test_a_flipped_byte_in_a_download_is_caught_and_never_restored(pg, s3, proxy, stored, tmp_path):
    proxy.add(Fault("flip", at=3 * MIB, direction="response", method="GET", min_body=4 * MIB, times=1000))
    before = set(pg.psql("SELECT datname FROM pg_database").split())
    rc, out, err, target, work = restore(pg, restore_config(pg, proxy, s3, stored, tmp_path), tmp_path)
    assert proxy.injected["flip"] >= 1
    assert rc != 0, out
    assert "Traceback" not in err and s3.secret_key not in err, err
    assert "sha256" in err or "checksum" in err.lower(), err
    assert list(work.iterdir()) == []
    assert set(pg.psql("SELECT datname FROM pg_database").split()) == before  # nothing restored from bad bytes


def test_an_upload_cut_mid_part_is_retried_and_the_backup_is_whole(pg, s3, bucket, proxy, blob_db, tmp_path):
    url = "s3://%s/pg" % bucket
    cfg = write_0600(tmp_path / "backup.yml", dict(
        through(proxy, s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
        login_password=pg.password, storage_url=url, compression_level=1, database=blob_db))
    proxy.add(Fault("cut", at=1 * MIB, direction="request", method="PUT", min_body=2 * MIB))
    rc, out, err = run(["pg-backup", "--json"], cfg)
    assert proxy.injected["cut"] == 1
    assert rc == 0, err
    rc, out, err = run(["verify", "--level", "checksum"], cfg)
    assert rc == 0, err


def test_an_upload_cut_every_time_leaves_nothing_listed(pg, s3, bucket, proxy, blob_db, tmp_path):
    url = "s3://%s/pg" % bucket
    cfg = write_0600(tmp_path / "backup.yml", dict(
        through(proxy, s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
        login_password=pg.password, storage_url=url, compression_level=1, database=blob_db))
    proxy.add(Fault("cut", at=1 * MIB, direction="request", method="PUT", min_body=2 * MIB, times=1000))
    rc, out, err = run(["pg-backup"], cfg)
    assert rc == 3, err
    assert "Traceback" not in err and s3.secret_key not in err and pg.password not in err, err
    proxy.clear()
    rc, out, err = run(["list"], cfg)
    assert rc == 0 and "no complete backups" in out, out


BLOBS_DIGEST = "SELECT count(*) || ':' || md5(string_agg(md5(payload), '' ORDER BY id)) FROM blobs"


def test_a_download_cut_once_mid_body_is_resumed_and_the_restore_succeeds(pg, s3, proxy, stored, blob_db, tmp_path):
    """One connection reset in the middle of the dump's body: the download
    goes on from the byte reached (a ranged GET), the restore succeeds with
    the very data (issue 13, hole 13: it used to exit 3 at once)."""
    proxy.add(Fault("cut", at=3 * MIB, direction="response", method="GET", min_body=4 * MIB, times=1))
    rc, out, err, target, work = restore(pg, restore_config(pg, proxy, s3, stored, tmp_path), tmp_path)
    try:
        assert proxy.injected["cut"] == 1
        assert rc == 0, err
        assert pg.psql(BLOBS_DIGEST, dbname=target) == pg.psql(BLOBS_DIGEST, dbname=blob_db)
        assert list(work.iterdir()) == []
    finally:
        pg.psql('DROP DATABASE IF EXISTS "%s"' % target)


def test_a_download_cut_every_time_is_a_transfer_error_and_nothing_is_restored(pg, s3, proxy, stored, tmp_path):
    """Every answer of more than 2 MiB is reset after 1.5 MiB, the resumed
    ones too: bounded retries, then exit 3 with a transfer error, neither
    a connection refusal ("cannot connect") nor a corrupt object."""
    proxy.add(Fault("cut", at=64 << 10, direction="response", method="GET", min_body=1 * MIB, times=1000))
    before = set(pg.psql("SELECT datname FROM pg_database").split())
    rc, out, err, target, work = restore(pg, restore_config(pg, proxy, s3, stored, tmp_path), tmp_path)
    assert proxy.injected["cut"] >= 2
    assert rc == 3, err
    assert "connection lost after" in err and "retried 5 times" in err and "database.pgdump" in err, err
    assert "cannot connect" not in err and "sha256" not in err and "corrupt or was modified" not in err, err
    assert "Traceback" not in err and s3.secret_key not in err and pg.password not in err, err
    assert list(work.iterdir()) == []
    assert set(pg.psql("SELECT datname FROM pg_database").split()) == before
