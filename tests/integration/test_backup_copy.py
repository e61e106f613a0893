# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit copy / drkit.backup.backup_copy between two SeaweedFS buckets (two
"regions") and a directory, with a real PostgreSQL backup: the copy lists,
verifies and restores at the destination; a second run copies nothing; a
destination that returns other bytes than it was sent (a byte flipped by the
fault proxy on the way back) gets no manifest; a copy killed with SIGKILL
halfway is finished by the next run."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from helpers import DRKIT, list_keys, make_blob_database, run_playbook, s3_module_args
from pitr_source import write_0600
from support.faultproxy import Fault, FaultProxy

MIB = 1 << 20


@pytest.fixture(scope="module")
def copy_db(pg):
    name = "copy_%s" % uuid.uuid4().hex[:8]
    make_blob_database(pg, name, 8)
    yield name
    pg.psql('DROP DATABASE IF EXISTS "%s"' % name)


@pytest.fixture
def second_bucket(s3):
    name = "drkit-region2-%s" % uuid.uuid4().hex[:10]
    s3.create_bucket(name)
    yield name


def run(args, config, timeout=300):
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    p = subprocess.run([sys.executable, str(DRKIT)] + list(args) + ["--config", str(config)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                       check=False)
    return p.returncode, p.stdout, p.stderr


def copy_module(args, tmp_path, check=False):
    """drkit.backup.backup_copy through ansible-playbook; its result."""
    run = run_playbook([{"name": "copy", "drkit.backup.backup_copy": args}], check=check, tmp_dir=tmp_path)
    assert run.rc == 0, run.describe()
    return run.result("copy")


def to_args(s3, endpoint=None):
    return dict(("to_" + k, v) for k, v in dict(s3_module_args(s3), **(
        {"endpoint_url": endpoint} if endpoint else {})).items())


@pytest.fixture
def source(pg, s3, bucket, copy_db, tmp_path):
    """Two logical backups of copy_db in the first bucket."""
    url = "s3://%s/pg" % bucket
    cfg = write_0600(tmp_path / "source.yml", dict(
        s3_module_args(s3), login_host=pg.host, port=pg.port, login_user=pg.superuser,
        login_password=pg.password, storage_url=url, compression_level=1, database=copy_db))
    for _backup in range(2):
        rc, out, err = run(["pg-backup"], cfg)
        assert rc == 0, err
    return url, cfg


def listed(storage_url, s3, cfg_path, tmp_path):
    cfg = write_0600(tmp_path / ("list-%s.yml" % uuid.uuid4().hex[:6]), dict(s3_module_args(s3),
                                                                             storage_url=storage_url))
    rc, out, err = run(["list", "--json"], cfg)
    assert rc == 0, err
    import json
    return [b["backup_id"] for b in json.loads(out)["backups"]]


def test_copy_into_a_second_bucket_verifies_restores_and_is_idempotent(pg, s3, source, second_bucket, tmp_path):
    url, _cfg = source
    dest = "s3://%s/pg" % second_bucket
    args = dict(s3_module_args(s3), storage_url=url, to_storage_url=dest, **to_args(s3))
    planned = copy_module(args, tmp_path, check=True)
    assert planned["changed"] is True and len(planned["to_copy"]) == 2 and planned["copied"] == [], planned
    assert listed(dest, s3, None, tmp_path) == []
    res = copy_module(args, tmp_path)
    assert res["changed"] is True, res
    assert len(res["copied"]) == 2 and res["bytes"] > 4 * MIB, res
    assert listed(dest, s3, None, tmp_path) == listed(url, s3, None, tmp_path)
    # the destination stands on its own: a test-restore from it alone
    vcfg = write_0600(tmp_path / "dest.yml", dict(s3_module_args(s3), storage_url=dest, login_host=pg.host,
                                                  port=pg.port, login_user=pg.superuser,
                                                  login_password=pg.password))
    rc, out, err = run(["verify", "--level", "restore"], vcfg)
    assert rc == 0, err
    # idempotent, and check mode says there is nothing to do
    again = copy_module(args, tmp_path)
    assert again["changed"] is False and again["copied"] == [] and again["to_copy"] == [], again
    # the destination's manifests are the source's, byte for byte (their seal holds)
    src_keys = [k for k in list_keys(url, s3) if k.endswith("manifest.json")]
    client = s3.client()
    for key in src_keys:
        a = client.get_object(Bucket=url[5:].split("/")[0], Key="pg/" + key)["Body"].read()
        b = client.get_object(Bucket=second_bucket, Key="pg/" + key)["Body"].read()
        assert a == b


def test_a_destination_returning_other_bytes_gets_no_manifest(s3, source, second_bucket, tmp_path):
    url, _cfg = source
    dest = "s3://%s/pg" % second_bucket
    with FaultProxy(s3.host, s3.port) as proxy:
        proxy.add(Fault("flip", at=1 * MIB, direction="response", method="GET", min_body=2 * MIB, times=1000))
        cfg = write_0600(tmp_path / "copy.yml", dict(s3_module_args(s3), storage_url=url, to_storage_url=dest,
                                                     **to_args(s3, proxy.endpoint_url)))
        rc, out, err = run(["copy"], cfg)
        assert proxy.injected["flip"] >= 1
    assert rc != 0, out
    assert "Traceback" not in err and s3.secret_key not in err, err
    assert "sha256" in err and "destination" in err.lower(), err
    assert not [k for k in list_keys(dest, s3) if k.endswith("manifest.json")]
    assert listed(dest, s3, None, tmp_path) == []


def test_a_copy_killed_halfway_is_finished_by_the_next_run(s3, source, second_bucket, tmp_path):
    url, _cfg = source
    dest = "s3://%s/pg" % second_bucket
    with FaultProxy(s3.host, s3.port) as proxy:
        # the second artifact upload stalls: kill -9 while it hangs
        proxy.add(Fault("stall", at=1 * MIB, direction="request", method="PUT", min_body=2 * MIB, seconds=60))
        cfg = write_0600(tmp_path / "copy.yml", dict(s3_module_args(s3), storage_url=url, to_storage_url=dest,
                                                     **to_args(s3, proxy.endpoint_url)))
        env = dict(os.environ)
        proc = subprocess.Popen([sys.executable, str(DRKIT), "copy", "--config", str(cfg)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        deadline = time.time() + 120
        while not proxy.injected.get("stall"):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the upload never reached the stall"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert listed(dest, s3, None, tmp_path) == []  # nothing half-copied is listed
    cfg = write_0600(tmp_path / "copy2.yml", dict(s3_module_args(s3), storage_url=url, to_storage_url=dest,
                                                  **to_args(s3)))
    rc, out, err = run(["copy", "--json"], cfg)
    assert rc == 0, err
    assert sorted(listed(dest, s3, None, tmp_path)) == sorted(listed(url, s3, None, tmp_path))
    rc, out, err = run(["verify", "--level", "checksum"], write_0600(
        tmp_path / "v.yml", dict(s3_module_args(s3), storage_url=dest)))
    assert rc == 0, err


def test_bad_destinations_are_refused_clearly(s3, source, tmp_path):
    url, _cfg = source
    cfg = write_0600(tmp_path / "same.yml", dict(s3_module_args(s3), storage_url=url, to_storage_url=url,
                                                 **dict((k, v) for k, v in to_args(s3).items()
                                                        if k != "to_storage_url")))
    rc, out, err = run(["copy"], cfg)
    assert rc == 2 and "same repository" in err, err
    rc, out, err = run(["copy"], write_0600(tmp_path / "none.yml", dict(s3_module_args(s3), storage_url=url)))
    assert rc == 2 and "to_storage_url" in err, err
