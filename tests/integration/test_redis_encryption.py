# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side age encryption of Redis snapshots (docs/encryption.md),
against real redis-servers on loopback.

Every mode stores ciphertext only (no RDB magic, no AOF tar) and records the
recipients' fingerprints; redis-check-rdb/-aof still check the plaintext at
backup time; a checksum verify needs no key; structure and restore
verifications and a restore with the identity give exactly the source's keys
and values; a missing or wrong identity fails before anything is read or
placed, naming the fingerprints it needs; a damaged ciphertext fails age's
authentication and leaves the data directory as it was."""

import hashlib
import json
import os

import pyrage
import pytest
import zstandard
from helpers import file_root, list_keys, run_drkit
from redis_support import dump_values, fill, keyspace, new_password, sample_keys, start_redis

from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.redis.restore import redis_restore
from ansible_collections.drkit.backup.plugins.module_utils.redis.snapshot import redis_snapshot
from ansible_collections.drkit.backup.plugins.module_utils.redis.verify import redis_verify
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf

N = 20000
AGE_MAGIC = b"age-encryption.org/v1\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def keypair(tmp_path, name):
    ident = pyrage.x25519.Identity.generate()
    path = tmp_path / ("%s.key" % name)
    path.write_text("# age identity for tests\n%s\n" % ident)
    os.chmod(str(path), 0o600)
    return str(path), str(ident.to_public()), str(ident)


def fp(recipient):
    return hashlib.sha256(recipient.encode()).hexdigest()


@pytest.fixture
def server(tmp_path):
    srv = start_redis(tmp_path / "src", password=new_password(), appendonly=True)
    try:
        fill(srv, N, ttl_every=50)
        fill(srv, 300, db=2, prefix="d2")
        c = srv.client()
        # incompressible: the stored object spans several 64 KiB age chunks
        c.set("blob", os.urandom(300000))
        c.close()
        yield srv
    finally:
        srv.destroy()


@pytest.fixture
def keys(tmp_path):
    ops_key, ops_pub, ops_secret = keypair(tmp_path, "ops")
    escrow_key, escrow_pub, _escrow_secret = keypair(tmp_path, "escrow")
    wrong_key, wrong_pub, _wrong_secret = keypair(tmp_path, "wrong")
    recipients_file = tmp_path / "recipients.txt"
    recipients_file.write_text("# escrow, offline\n%s\n" % escrow_pub)
    return {"ops": ops_key, "ops_pub": ops_pub, "ops_secret": ops_secret, "escrow": escrow_key,
            "escrow_pub": escrow_pub, "wrong": wrong_key, "wrong_pub": wrong_pub,
            "recipients": [ops_pub, str(recipients_file)]}


def snap(srv, url, mode, recipients):
    return redis_snapshot({"login_host": srv.host, "login_port": srv.port, "login_password": srv.password,
                           "storage_url": url, "mode": mode, "encryption_recipients": recipients})[1]


def stored(url, bak):
    art = bak["manifest"]["artifacts"][0]
    return file_root(url) / "backups" / bak["backup_id"] / art["name"]


def decrypt_by_hand(data, identity_file):
    """pyrage and zstandard directly, not the engine's pipeline."""
    with open(identity_file) as fh:
        ident = pyrage.x25519.Identity.from_str(fh.read().splitlines()[1])
    return zstandard.ZstdDecompressor().decompressobj().decompress(pyrage.decrypt(data, [ident]))


def listing(d):
    """{name: bytes or 'dir'} of a directory: what a failed restore must leave alone."""
    out = {}
    for name in sorted(os.listdir(str(d))):
        p = os.path.join(str(d), name)
        out[name] = "dir:%s" % sorted(os.listdir(p)) if os.path.isdir(p) else open(p, "rb").read()
    return out


def old_data_dir(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    (d / "dump.rdb").write_bytes(b"old data")
    return d


@pytest.mark.parametrize("mode", ["rdb", "remote", "aof"])
def test_encrypted_snapshot_verify_restore_round_trip(server, tmp_storage_url, tmp_path, keys, mode):
    url = tmp_storage_url
    bak = snap(server, url, mode, keys["recipients"])
    man = bak["manifest"]
    fps = [fp(keys["ops_pub"]), fp(keys["escrow_pub"])]
    assert man["encryption"] == {"format": "age", "recipients": fps}
    assert keys["ops_pub"] not in json.dumps(bak) and keys["escrow_pub"] not in json.dumps(bak)
    art = man["artifacts"][0]
    assert art["encrypted"] is True
    data = stored(url, bak).read_bytes()
    # ciphertext only: age's header, no RDB magic, no zstd frame, no tar, no value of the source
    assert data.startswith(AGE_MAGIC)
    assert b"REDIS" not in data and not data.startswith(ZSTD_MAGIC) and b"aof/" not in data
    assert len(data) == art["size"] and hashlib.sha256(data).hexdigest() == art["sha256"]
    plain = decrypt_by_hand(data, keys["ops"])
    expected = keyspace(server)
    total = sum(v["keys"] for v in expected.values())
    if mode == "aof":
        assert plain[257:262] == b"ustar" and b"aof/" in plain  # the AOF directory as a tar
        # redis-check-aof ran on the plaintext copy before it was encrypted
        assert man["data"]["aof"]["base_check"], man["data"]["aof"]
    else:
        assert plain[:5] == b"REDIS"
        # redis-check-rdb was fed the plaintext while it streamed into the pipeline
        assert man["data"]["rdb"]["check"]["keys"] == total
    assert man["data"]["key_counts_exact"] is True

    # the stored bytes check without a key
    _c, res = redis_verify({"storage_url": url, "backup_id": bak["backup_id"], "level": "checksum"})
    assert res["passed"] is True, res["findings"]
    _c, res = redis_verify({"storage_url": url, "backup_id": bak["backup_id"], "level": "structure",
                            "encryption_identity_file": keys["escrow"]})
    assert res["passed"] is True, res["findings"]
    if mode != "aof":
        assert res["structure"]["keys"] == total
    _c, res = redis_verify({"storage_url": url, "backup_id": bak["backup_id"], "level": "restore",
                            "encryption_identity_file": keys["ops"]})
    assert res["passed"] is True, res["findings"]
    assert res["key_counts_compared"] == "exact per database"
    actual = dict((r["db"], r["actual"]) for r in res["keyspace"])
    assert actual == dict((db, v["keys"]) for db, v in expected.items())

    # a restore with the identity: the same keys and values as the source
    appendonly = mode == "aof"
    d = tmp_path / "target"
    d.mkdir()
    _c, res = redis_restore({"storage_url": url, "backup_id": bak["backup_id"], "data_dir": str(d),
                             "appendonly": appendonly, "encryption_identity_file": keys["ops"]})
    assert res["placed"] == [str(d / ("appendonlydir" if appendonly else "dump.rdb"))]
    assert keys["ops_secret"] not in json.dumps(res)
    restored = start_redis(d, appendonly=appendonly)
    try:
        assert keyspace(restored) == expected
        sample = sample_keys(N) + ["blob"]
        assert dump_values(restored, sample) == dump_values(server, sample)
        assert dump_values(restored, sample_keys(300, prefix="d2"), db=2) == \
            dump_values(server, sample_keys(300, prefix="d2"), db=2)
    finally:
        restored.destroy()


def test_bad_recipient_fails_check_mode_and_writes_nothing(server, tmp_storage_url):
    with pytest.raises(ConfigError) as e:
        redis_snapshot({"login_host": server.host, "login_port": server.port, "login_password": server.password,
                        "storage_url": tmp_storage_url, "encryption_recipients": ["age1notakey"]}, check_mode=True)
    assert "encryption_recipients" in e.value.message
    assert list_keys(tmp_storage_url) == []


def test_missing_or_wrong_identity_fails_before_anything_changes(server, tmp_storage_url, tmp_path, keys):
    url = tmp_storage_url
    bak = snap(server, url, "rdb", keys["recipients"])
    bid = bak["backup_id"]
    needed = fp(keys["ops_pub"])
    d = old_data_dir(tmp_path, "target")
    before = listing(d)
    params = {"storage_url": url, "backup_id": bid, "data_dir": str(d), "appendonly": False, "force": True}
    for check_mode in (True, False):
        with pytest.raises(ConfigError) as e:
            redis_restore(params, check_mode=check_mode)
        assert needed in e.value.message and fp(keys["escrow_pub"]) in e.value.message
        assert "no encryption_identity_file was given" in e.value.message
        with pytest.raises(ConfigError) as e:
            redis_restore(dict(params, encryption_identity_file=keys["wrong"]), check_mode=check_mode)
        assert needed in e.value.message and fp(keys["wrong_pub"]) in e.value.message
        assert keys["wrong"] in e.value.message  # the path, never the content
    assert listing(d) == before
    # a container target is refused for the same reason before the Docker Engine is asked anything
    with pytest.raises(ConfigError) as e:
        redis_restore(dict(params, data_dir=None, container="drkit-no-such-container"))
    assert needed in e.value.message

    # verification: structure and restore need the key (no record written), a checksum does not
    for level in ("structure", "restore"):
        with pytest.raises(ConfigError) as e:
            redis_verify({"storage_url": url, "backup_id": bid, "level": level})
        assert needed in e.value.message
        with pytest.raises(ConfigError) as e:
            redis_verify({"storage_url": url, "backup_id": bid, "level": level,
                          "encryption_identity_file": keys["wrong"]})
        assert needed in e.value.message
    assert not [k for k in list_keys(url) if "/verify-" in k]
    _c, res = redis_verify({"storage_url": url, "backup_id": bid, "level": "checksum"})
    assert res["passed"] is True

    # the CLI: the identity by path, its content in no output
    r = run_drkit(["redis-restore", "--storage-url", url, "--backup-id", bid, "--data-dir", str(d),
                   "--no-appendonly", "--force", "--encryption-identity-file", keys["wrong"]])
    assert r.returncode not in (0, 1) and needed in r.stderr, r.stderr
    r2 = run_drkit(["redis-verify", "--storage-url", url, "--backup-id", bid, "--level", "structure"],
                   env={"DRKIT_AGE_IDENTITY_FILE": keys["wrong"]})
    assert r2.returncode not in (0, 1) and needed in r2.stderr, r2.stderr
    for out in (r.stdout, r.stderr, r2.stdout, r2.stderr):
        assert "AGE-SECRET-KEY" not in out
    assert listing(d) == before
    r = run_drkit(["redis-verify", "--storage-url", url, "--backup-id", bid, "--level", "structure", "--json",
                   "--encryption-identity-file", keys["ops"]])
    assert r.returncode == 0 and json.loads(r.stdout)["passed"] is True, r.stderr
    assert "AGE-SECRET-KEY" not in r.stdout + r.stderr


def test_cli_snapshot_encrypts_for_its_recipients(server, tmp_storage_url, keys):
    r = run_drkit(["redis-snapshot", "--host", server.host, "--port", str(server.port), "--storage-url",
                   tmp_storage_url, "--encryption-recipient", keys["ops_pub"], "--json"],
                  env={"REDISCLI_AUTH": server.password})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["manifest"]["encryption"]["recipients"] == [fp(keys["ops_pub"])]
    assert stored(tmp_storage_url, res).read_bytes().startswith(AGE_MAGIC)


def _damage(url, bak, how):
    """Rewrite the stored object and re-seal its manifest with the new size
    and sha256 (someone who can write the bucket): only age's authentication
    stands between it and the data directory."""
    path = stored(url, bak)
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 65536  # several age chunks: the earlier ones decrypt before the damage is met
    if how == "flip":
        data[len(data) - 100] ^= 0x01
    else:
        data = data[:len(data) - 20]
    path.write_bytes(bytes(data))
    mpath = file_root(url) / "backups" / bak["backup_id"] / "manifest.json"
    m = json.loads(mpath.read_text())
    m["artifacts"][0].update(size=len(data), sha256=hashlib.sha256(bytes(data)).hexdigest())
    mpath.write_bytes(mf.Manifest(m).to_json())


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize("mode", ["rdb", "aof"])
def test_damaged_ciphertext_places_nothing(server, tmp_storage_url, tmp_path, keys, how, mode):
    url = tmp_storage_url
    bak = snap(server, url, mode, keys["recipients"])
    bid = bak["backup_id"]
    _damage(url, bak, how)
    for name, appendonly in (("rdb-target", False), ("aof-target", True)):
        d = old_data_dir(tmp_path, name)
        (d / "appendonlydir").mkdir()
        (d / "appendonlydir" / "appendonly.aof.manifest").write_bytes(b"old aof")
        before = listing(d)
        with pytest.raises(IntegrityError) as e:
            redis_restore({"storage_url": url, "backup_id": bid, "data_dir": str(d), "appendonly": appendonly,
                           "force": True, "encryption_identity_file": keys["ops"]})
        assert "failed age authentication" in str(e.value), str(e.value)
        # the old files where they were, no staging directory, nothing placed or moved aside
        assert listing(d) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IntegrityError):
        redis_restore({"storage_url": url, "backup_id": bid, "data_dir": str(empty), "appendonly": False,
                       "encryption_identity_file": keys["ops"]})
    assert os.listdir(str(empty)) == []
    for level in ("structure", "restore"):
        with pytest.raises(IntegrityError) as e:
            redis_verify({"storage_url": url, "backup_id": bid, "level": level,
                          "encryption_identity_file": keys["ops"]})
        assert "failed age authentication" in str(e.value) and e.value.details["passed"] is False
    # the stored bytes match the re-sealed manifest: a checksum cannot tell, age can
    _c, res = redis_verify({"storage_url": url, "backup_id": bid, "level": "checksum"})
    assert res["passed"] is True
