# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Transport and server-side protection of s3:// storage, against a real
SeaweedFS on loopback (docs/storage-security.md):

* TLS: the S3 gateway serving HTTPS with a certificate for 127.0.0.1 made by
  a CA of the test (support/tls.py). With ``ca_bundle`` a backup and restore
  round trip works; with no or the wrong CA every path (obstore, and boto3
  for rotation's stale uploads) fails with a StorageError that names the
  endpoint and says what to do; ``validate_certs: false`` works.
* Server-side encryption: the SSE-S3 and SSE-KMS headers obstore sends reach
  SeaweedFS (its local KMS), on one PUT and on a multipart upload, and it
  stores those chunks encrypted.
* Least privilege: a backup host's credentials (put, get, list, no delete)
  back up and archive WAL; rotation with them fails naming what to do, with
  the rotation job's credentials it works.
"""

import datetime as dt
import hashlib
import io
import json
import os
import shutil

import pytest
from botocore.exceptions import ClientError
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import StorageError
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo import rotate as rot
from ansible_collections.drkit.backup.plugins.module_utils.repo.session import BackupSession
from ansible_collections.drkit.backup.plugins.module_utils.storage.factory import open_storage
from helpers import run_drkit
from support.seaweedfs import KMS_KEY_ALIAS
from support.tls import TestCA

MiB = 1 << 20


@pytest.fixture
def secure_bucket(s3_secure):
    name = s3_secure.create_bucket("drkit-sec-%s" % os.urandom(6).hex())
    yield name
    if s3_secure.is_running():
        s3_secure.delete_bucket(name)


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory):
    return TestCA(str(tmp_path_factory.mktemp("wrong-ca")), name="not the endpoint's CA")


def https_config(s3_secure, **extra):
    cfg = {"endpoint_url": s3_secure.https_endpoint_url, "access_key": s3_secure.access_key,
           "secret_key": s3_secure.secret_key, "region": s3_secure.region}
    cfg.update(extra)
    return cfg


def small_database(pg, pg_database):
    pg.psql("CREATE TABLE agents (id int PRIMARY KEY, name text);"
            "INSERT INTO agents SELECT g, 'agent ' || g FROM generate_series(1, 500) g", dbname=pg_database)
    return pg_database


def wal_segment(pg, tmp_path):
    """A real WAL segment of the test server, copied to tmp_path."""
    pg.psql("SELECT pg_logical_emit_message(false, 'drkit-test', repeat('x', 1000))")
    name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    path = tmp_path / name
    shutil.copyfile(os.path.join(pg.data_dir, "pg_wal", name), str(path))
    return path


def conn_flags(pg):
    return ["--host", pg.host, "--port", str(pg.port), "--user", pg.superuser]


def assert_clear_tls_failure(r, endpoint):
    assert r.returncode == StorageError.exit_code, (r.returncode, r.stderr[-3000:])
    assert "certificate verification failed for" in r.stderr and endpoint in r.stderr, r.stderr[-3000:]
    assert "signed by a CA that is not trusted" in r.stderr, r.stderr[-3000:]
    assert "ca_bundle" in r.stderr and "validate_certs: false" in r.stderr, r.stderr[-3000:]
    for noise in ("Traceback", "panicked", "Debug source"):
        assert noise not in r.stderr, r.stderr[-3000:]


# --------------------------------------------------------------------------
# TLS


def test_backup_and_restore_over_https_with_the_ca_bundle(pg, pg_database, restored, s3_secure, secure_bucket):
    db = small_database(pg, pg_database)
    url = "s3://%s/tls" % secure_bucket
    cfg = https_config(s3_secure, ca_bundle=s3_secure.tls.ca_file)
    env = {"PGPASSWORD": pg.password}
    r = run_drkit(["pg-backup", "--json", "-q", "-d", db, "--storage-url", url] + conn_flags(pg), config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    backup_id = json.loads(r.stdout)["backup_id"]
    target = "%s_restored" % db
    restored.append(target)
    r = run_drkit(["restore", "--json", "-q", "--storage-url", url, "--backup-id", backup_id,
                   "--target-database", target] + conn_flags(pg), config=cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pg.psql("SELECT count(*), sum(id) FROM agents", dbname=target) == "500|125250"
    # it went over HTTPS: the plain-HTTP listener has the objects, the TLS one served them
    keys = [o["Key"] for o in s3_secure.client().list_objects_v2(Bucket=secure_bucket)["Contents"]]
    assert "tls/%s" % mf.manifest_key(backup_id) in keys


@pytest.mark.parametrize("ca", ["none", "wrong"])
def test_no_or_the_wrong_ca_fails_clearly_on_every_path(pg, s3_secure, secure_bucket, wrong_ca, ca, tmp_path):
    """obstore (list, wal-push, backup) and boto3 (rotation's stale
    uploads) alike: a StorageError naming the endpoint and the fix."""
    cfg = https_config(s3_secure, **({"ca_bundle": wrong_ca.ca_file} if ca == "wrong" else {}))
    # no system CA may vouch for our endpoint: the default bundle is the system's
    url = "s3://%s/tls" % secure_bucket
    r = run_drkit(["list", "--storage-url", url], config=cfg)
    assert_clear_tls_failure(r, s3_secure.https_endpoint_url)
    segment = wal_segment(pg, tmp_path)
    r = run_drkit(["wal-push", "--storage-url", url, str(segment), segment.name], config=cfg)
    assert_clear_tls_failure(r, s3_secure.https_endpoint_url)

    storage = open_storage(url, **cfg)
    with pytest.raises(StorageError) as e:
        list(storage.list_incomplete())  # boto3
    assert "certificate verification failed for" in str(e.value) and s3_secure.https_endpoint_url in str(e.value)
    assert "unable to get local issuer certificate" in str(e.value) and "ca_bundle" in e.value.hint


def test_boto3_honours_the_ca_bundle_and_validate_certs_false_works(s3_secure, secure_bucket, recwarn):
    url = "s3://%s/tls" % secure_bucket
    for extra in ({"ca_bundle": s3_secure.tls.ca_file}, {"validate_certs": False}):
        storage = open_storage(url, **https_config(s3_secure, **extra))
        up = storage.client.create_multipart_upload(Bucket=secure_bucket, Key="tls/backups/x/stale")
        assert [u.upload_id for u in storage.list_incomplete("backups/")] == [up["UploadId"]]
        storage.abort_incomplete(next(iter(storage.list_incomplete("backups/"))))
        assert list(storage.list_incomplete("backups/")) == []
        storage.put_bytes("k-%s" % sorted(extra)[0], b"over https", create=True)  # obstore
        assert storage.get_bytes("k-%s" % sorted(extra)[0]) == b"over https"
    # urllib3's warning for every unverified request stays out of the output
    assert not [w for w in recwarn if "Unverified HTTPS" in str(w.message)]


def test_validate_certs_false_from_the_command_line(pg, s3_secure, secure_bucket, tmp_path):
    url = "s3://%s/novalidate" % secure_bucket
    segment = wal_segment(pg, tmp_path)
    r = run_drkit(["wal-push", "--no-validate-certs", "--storage-url", url, str(segment), segment.name],
                  config=https_config(s3_secure))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_drkit(["wal-fetch", "--no-validate-certs", "--storage-url", url, segment.name, str(tmp_path / "back")],
                  config=https_config(s3_secure))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "back").read_bytes() == segment.read_bytes()


def test_plain_http_to_the_https_port_says_to_use_https(s3_secure, secure_bucket):
    r = run_drkit(["list", "--storage-url", "s3://%s/x" % secure_bucket],
                  config=https_config(s3_secure, endpoint_url=s3_secure.https_endpoint_url.replace("https:", "http:")))
    assert r.returncode == StorageError.exit_code, r.stderr[-3000:]
    assert "answers HTTPS, not plain HTTP" in r.stderr and "https://" in r.stderr, r.stderr[-3000:]


# --------------------------------------------------------------------------
# server-side encryption


def open_s3(s3, bucket, prefix="sse", **kw):
    opts = dict(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region)
    opts.update(kw)
    return open_storage("s3://%s/%s" % (bucket, prefix), **opts)


def stored_at_rest(server, needle):
    """Whether ``needle`` is in any file of the server's data directory (the
    volumes hold object chunks as sent, unless encrypted)."""
    for root, _dirs, files in os.walk(server.data_dir):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    if needle in f.read():
                        return True
            except OSError:
                pass  # a file that went away
    return False


@pytest.mark.parametrize("opts,algorithm", [
    ({"server_side_encryption": "AES256"}, "AES256"),
    ({"sse_kms_key_id": KMS_KEY_ALIAS}, "aws:kms"),
])
def test_sse_reaches_the_server_on_single_puts_and_multipart_uploads(s3_secure, secure_bucket, opts, algorithm):
    """The headers arrive on one PUT (manifests, WAL) and on a multipart
    upload (artifacts), SeaweedFS encrypts the chunks it stores (the
    plaintext is in its volumes without SSE, not with it), and reads
    decrypt."""
    plain = open_s3(s3_secure, secure_bucket, "plain")
    s = open_s3(s3_secure, secure_bucket, **opts)
    big = os.urandom(9 * MiB)  # two parts
    other = os.urandom(9 * MiB)
    for storage, data in ((plain, other), (s, big)):
        storage.put_bytes("small", b"manifest-sized", create=True)
        with storage.writer("big") as w:
            w.write(data)
    c = s3_secure.client()
    assert "ServerSideEncryption" not in c.head_object(Bucket=secure_bucket, Key="plain/big")
    for key in ("sse/small", "sse/big"):
        head = c.head_object(Bucket=secure_bucket, Key=key)
        assert head["ServerSideEncryption"] == algorithm, (key, head)
        if algorithm == "aws:kms":
            assert head.get("SSEKMSKeyId"), head  # the key SeaweedFS's KMS resolved the alias to
    assert s.get_bytes("big") == big and s.get_bytes("small") == b"manifest-sized"
    assert stored_at_rest(s3_secure, other[5 * MiB:5 * MiB + 64])  # the oracle sees plaintext...
    assert not stored_at_rest(s3_secure, big[5 * MiB:5 * MiB + 64])  # ...and none of the encrypted object


def test_an_unknown_kms_key_fails_the_write_and_stores_nothing(s3_secure, secure_bucket):
    s = open_s3(s3_secure, secure_bucket, sse_kms_key_id="drkit-no-such-key")
    with pytest.raises(StorageError) as e:
        s.put_bytes("small", b"kms", create=True)
    assert "Could not upload small" in str(e.value)
    assert not s.exists("small")
    assert "handleSSEKMSEncryption" in s3_secure.log_tail(200000)  # the header arrived; the KMS said no


# --------------------------------------------------------------------------
# least privilege: the backup host's credentials cannot delete


def backup_config(s3):
    return {"endpoint_url": s3.endpoint_url, "access_key": s3.backup_access_key,
            "secret_key": s3.backup_secret_key, "region": s3.region}


def admin_config(s3):
    return {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key,
            "region": s3.region}


def test_the_backup_identity_really_cannot_delete(s3, bucket):
    """The fixture's policy does what the tests below rely on."""
    s = open_storage("s3://%s/lp" % bucket, **backup_config(s3))
    s.put_bytes("k", b"v", create=True)
    with pytest.raises(StorageError) as e:
        s.delete(["k"])
    assert "access denied" in str(e.value) and "run rotation with credentials that may delete" in str(e.value)
    assert s.get_bytes("k") == b"v"


def test_backup_host_credentials_back_up_and_push_wal_but_rotation_needs_its_own(pg, pg_database, s3, bucket,
                                                                                 tmp_path):
    db = small_database(pg, pg_database)
    url = "s3://%s/lp" % bucket
    env = {"PGPASSWORD": pg.password}
    ids = []
    for _round in range(2):
        r = run_drkit(["pg-backup", "--json", "-q", "-d", db, "--storage-url", url] + conn_flags(pg),
                      config=backup_config(s3), env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        ids.append(json.loads(r.stdout)["backup_id"])
    segment = wal_segment(pg, tmp_path)
    r = run_drkit(["wal-push", "--storage-url", url, str(segment), segment.name], config=backup_config(s3))
    assert r.returncode == 0, r.stderr[-3000:]

    r = run_drkit(["rotate", "--storage-url", url, "--keep-last", "1", "--no-prune-wal"], config=backup_config(s3))
    assert r.returncode == StorageError.exit_code, r.stderr[-3000:]
    assert "access denied" in r.stderr and "run rotation with credentials that may delete" in r.stderr, r.stderr
    assert ids[0] in r.stderr or mf.manifest_key(ids[0]) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    listed = run_drkit(["list", "--json", "--storage-url", url], config=backup_config(s3))
    assert sorted(b["backup_id"] for b in json.loads(listed.stdout)["backups"]) == sorted(ids)  # nothing lost

    r = run_drkit(["rotate", "--json", "--storage-url", url, "--keep-last", "1", "--no-prune-wal"],
                  config=admin_config(s3))
    assert r.returncode == 0, r.stderr[-3000:]
    listed = run_drkit(["list", "--json", "--storage-url", url], config=backup_config(s3))
    assert [b["backup_id"] for b in json.loads(listed.stdout)["backups"]] == [ids[1]]


def test_a_failed_backup_whose_clean_up_may_not_delete_keeps_its_own_error(s3, bucket):
    storage = open_storage("s3://%s/lp" % bucket, **backup_config(s3))
    said = []
    session = BackupSession(storage, "pg_logical", {"database": "app"}, progress=said.append)
    with pytest.raises(StorageError) as e:
        with session:
            session.store_stream("database.pgdump", io.BytesIO(os.urandom(4096)), compress=False)
            raise StorageError("pg_dump failed half-way")
    assert str(e.value) == "pg_dump failed half-way"  # the backup's own error, not the clean-up's
    assert "could not remove the 1 objects this failed backup wrote" in e.value.details["cleanup"]
    assert "access denied" in e.value.details["cleanup"] and "rotation removes them" in e.value.details["cleanup"]
    assert any("could not remove" in m for m in said)
    # left for rotation: an artifact without a manifest
    assert storage.exists(session.key("database.pgdump")) and not storage.exists(mf.manifest_key(session.backup_id))


# --------------------------------------------------------------------------
# versioning and Object Lock: what rotation reclaims


def fabricated_backup(storage, finished):
    """A complete (tiny) logical backup finished at ``finished``; returns
    (backup id, artifact size)."""
    bid = mf.new_backup_id("pg_logical", finished)
    m = mf.Manifest.new(bid, "pg_logical", finished - dt.timedelta(minutes=3),
                        {"type": "postgresql", "host": "db1", "port": 5432, "database": "app"})
    body = os.urandom(4096)
    storage.put_bytes(mf.artifact_key(bid, "dump"), body)
    m.add_artifact("dump", len(body), hashlib.sha256(body).hexdigest())
    m.finish(finished)
    mf.write_manifest(storage, m)
    return bid, len(body)


@pytest.fixture
def locked_bucket(s3):
    """A bucket with Object Lock (so versioning) and a default GOVERNANCE
    retention of one day; emptied with the governance bypass afterwards."""
    name = "drkit-lock-%s" % os.urandom(6).hex()
    c = s3.client()
    c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    c.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    yield name
    if s3.is_running():
        versions = c.list_object_versions(Bucket=name)
        objs = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]
        if objs:
            c.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True}, BypassGovernanceRetention=True)
        try:
            c.delete_bucket(Bucket=name)
        except Exception:  # noqa: BLE001 - a version the bypass did not free: the bucket dies with the session
            pass


def rotate_keep_last(s3, bucket, n):
    return rot.rotate(dict(admin_config(s3), storage_url="s3://%s/pg" % bucket, keep_last=n))[1]


def test_rotation_on_a_locked_versioned_bucket_reclaims_nothing_and_says_so(s3, locked_bucket):
    storage = open_storage("s3://%s/pg" % locked_bucket, **admin_config(s3))
    now = mf.utcnow()
    old, size = fabricated_backup(storage, now - dt.timedelta(days=3))
    fabricated_backup(storage, now - dt.timedelta(days=2))
    result = rotate_keep_last(s3, locked_bucket, 1)
    assert [d["backup_id"] for d in result["deleted"]] == [old]
    assert result["bytes_deleted"] == size and result["bytes_reclaimed"] == 0
    assert result["versioning"] == {"status": "Enabled", "noncurrent_expiration_days": None,
                                    "object_lock": {"mode": "GOVERNANCE", "days": 1, "years": None}}
    (warning,) = [w for w in result["warnings"] if "versioning" in w]
    assert "no lifecycle rule expires noncurrent versions" in warning and "GOVERNANCE, 1 days" in warning
    # gone for drkit (a delete marker), kept by the server: even the admin may not delete the version
    assert not storage.exists(mf.manifest_key(old))
    c = s3.client()
    versions = c.list_object_versions(Bucket=locked_bucket, Prefix="pg/" + mf.backup_prefix(old))["Versions"]
    prefix = "pg/" + mf.backup_prefix(old)
    assert sorted(v["Key"] for v in versions) == [prefix + "dump", prefix + "manifest.json"]
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket=locked_bucket, Key=versions[0]["Key"], VersionId=versions[0]["VersionId"])
    assert "AccessDenied" in str(e.value)

    c.put_bucket_lifecycle_configuration(Bucket=locked_bucket, LifecycleConfiguration={"Rules": [{
        "ID": "expire-old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 2}}]})
    fabricated_backup(storage, now - dt.timedelta(days=1))
    result = rotate_keep_last(s3, locked_bucket, 1)
    assert result["versioning"]["noncurrent_expiration_days"] == 2 and result["bytes_reclaimed"] == 0
    (warning,) = [w for w in result["warnings"] if "versioning" in w]
    assert "until the lifecycle rule expires them after 2 days" in warning


def test_rotation_on_an_unversioned_bucket_reclaims_what_it_deletes(s3, bucket):
    storage = open_storage("s3://%s/pg" % bucket, **admin_config(s3))
    now = mf.utcnow()
    fabricated_backup(storage, now - dt.timedelta(days=2))
    fabricated_backup(storage, now - dt.timedelta(days=1))
    result = rotate_keep_last(s3, bucket, 1)
    assert result["bytes_deleted"] == result["bytes_reclaimed"] == 4096
    assert result["versioning"]["status"] == "Off" and not [w for w in result["warnings"] if "versioning" in w]
