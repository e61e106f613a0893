# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""signing.py: Ed25519 manifest signatures through the real ``cryptography``
package: round trips through Manifest.to_json/from_json, the key files drkit
reads (PEM, OpenSSH, raw), and forged manifests (an edited field, a signature
by another key, a removed signature) refused with the key ids named."""

import base64
import datetime
import json
import os

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import signing
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 25, 21, 15, 0, tzinfo=UTC)
BID = "20261125T211500Z-pg-logical-aaaaaa"


def new_key():
    return ed25519.Ed25519PrivateKey.generate()


def pem_private(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def write(tmp_path, name, data, mode=0o600):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.chmod(str(path), mode)
    return str(path)


def manifest():
    m = mf.Manifest.new(BID, "pg_logical", T0 - datetime.timedelta(seconds=5),
                        {"type": "postgresql", "host": "db1", "port": 5432, "database": "app"},
                        compression={"algorithm": "zstd", "level": 3})
    m.add_artifact("database.pgdump.zst", 10, "ab" * 32, raw_size=30)
    m.finish(T0)
    return m


def signed_bytes(key):
    return manifest().to_json(signing.Signer(key))


def reseal(obj):
    """What an attacker with write access does after editing: the digest
    is no secret, so it is recomputed and from_json's check passes."""
    obj[mf.DIGEST] = mf.Manifest.digest(obj)
    return json.dumps(obj).encode()


def trust_of(*keys):
    return signing.Trust(dict((signing.key_id(k.public_key()), k.public_key()) for k in keys))


# --------------------------------------------------------------------------
# round trip


def test_signed_manifest_verifies_and_names_its_key():
    key = new_key()
    data = signed_bytes(key)
    m = mf.Manifest.from_json(data)
    kid = signing.key_id(key.public_key())
    assert m.signed_by == kid
    assert m["signature"]["algorithm"] == "ed25519"
    assert len(base64.b64decode(m["signature"]["value"])) == 64
    assert m.check_signature(trust_of(key)) == kid
    # the digest covers the signature too: an old reader still sees a sealed manifest
    assert m[mf.DIGEST] == mf.Manifest.digest(json.loads(data))
    # no trust configured: nothing checked
    assert m.check_signature(None) is None


def test_key_id_is_sha256_of_the_raw_public_key():
    key = new_key()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import hashlib
    assert signing.key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()


def test_unsigned_manifest_has_no_signature_field():
    m = mf.Manifest.from_json(manifest().to_json())
    assert "signature" not in m and m.signed_by is None


def test_two_trusted_keys_rotation():
    old, new = new_key(), new_key()
    trust = trust_of(old, new)
    for key in (old, new):
        assert mf.Manifest.from_json(signed_bytes(key)).check_signature(trust) == signing.key_id(key.public_key())
    # the old key retired: its manifests no longer verify, with the fix named
    with pytest.raises(IntegrityError) as e:
        mf.Manifest.from_json(signed_bytes(old)).check_signature(trust_of(new))
    assert signing.key_id(old.public_key()) in str(e.value)
    assert "add its public key to verify_keys" in e.value.hint


# --------------------------------------------------------------------------
# forgeries


def test_edited_field_is_refused():
    key = new_key()
    obj = json.loads(signed_bytes(key))
    obj["finished_at"] = "2030-01-01T00:00:00.000000Z"
    m = mf.Manifest.from_json(reseal(obj))  # the digest alone cannot tell
    with pytest.raises(IntegrityError) as e:
        m.check_signature(trust_of(key), "backups/x/manifest.json")
    assert "does not match its content" in str(e.value)
    assert signing.key_id(key.public_key()) in str(e.value)
    assert "backups/x/manifest.json" in str(e.value)


def test_edited_artifact_checksum_is_refused():
    key = new_key()
    obj = json.loads(signed_bytes(key))
    obj["artifacts"][0]["sha256"] = "cd" * 32
    with pytest.raises(IntegrityError, match="does not match"):
        mf.Manifest.from_json(reseal(obj)).check_signature(trust_of(key))


def test_signature_from_another_key_is_refused():
    genuine, attacker = new_key(), new_key()
    forged = mf.Manifest.from_json(signed_bytes(attacker))
    with pytest.raises(IntegrityError) as e:
        forged.check_signature(trust_of(genuine))
    assert "not one of the trusted keys" in str(e.value)
    assert signing.key_id(attacker.public_key()) in str(e.value)
    assert signing.key_id(genuine.public_key()) in str(e.value)
    # the attacker's signature under the genuine key's id
    obj = json.loads(signed_bytes(attacker))
    obj["signature"]["key_id"] = signing.key_id(genuine.public_key())
    with pytest.raises(IntegrityError, match="does not match its content"):
        mf.Manifest.from_json(reseal(obj)).check_signature(trust_of(genuine))


def test_removed_signature_is_refused():
    key = new_key()
    obj = json.loads(signed_bytes(key))
    del obj["signature"]
    m = mf.Manifest.from_json(reseal(obj))
    with pytest.raises(IntegrityError) as e:
        m.check_signature(trust_of(key))
    assert "is not signed" in str(e.value)
    assert signing.key_id(key.public_key()) in str(e.value)
    assert "signing_key_file" in e.value.hint


@pytest.mark.parametrize("sig", [
    "not a dict",
    {"algorithm": "rsa", "key_id": "x", "value": "AA=="},
    {"algorithm": "ed25519", "key_id": 5, "value": "AA=="},
])
def test_malformed_signature_field_is_refused(sig):
    key = new_key()
    obj = json.loads(signed_bytes(key))
    obj["signature"] = sig
    with pytest.raises(IntegrityError, match="malformed signature"):
        mf.Manifest.from_json(reseal(obj)).check_signature(trust_of(key))


def test_garbage_signature_value_is_refused():
    key = new_key()
    obj = json.loads(signed_bytes(key))
    obj["signature"]["value"] = "!!not base64!!"
    with pytest.raises(IntegrityError, match="does not match"):
        mf.Manifest.from_json(reseal(obj)).check_signature(trust_of(key))


def test_signature_is_bound_to_the_manifest_context():
    """A signature over the same bytes without drkit's context line is no manifest signature."""
    key = new_key()
    m = manifest()
    body = json.loads(json.dumps(m))
    m["signature"] = {"algorithm": "ed25519", "key_id": signing.key_id(key.public_key()),
                      "value": base64.b64encode(key.sign(mf.Manifest.canonical(body))).decode()}
    with pytest.raises(IntegrityError, match="does not match"):
        mf.Manifest.from_json(m.to_json()).check_signature(trust_of(key))


# --------------------------------------------------------------------------
# key files


def test_signing_key_formats(tmp_path):
    key = new_key()
    kid = signing.key_id(key.public_key())
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    ssh = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    for name, data in (("pem", pem_private(key)), ("raw", raw), ("ssh", ssh)):
        signer = signing.Signer.from_file(write(tmp_path, name, data))
        assert signer.key_id == kid
    assert signing.signer_for(None) is None


def test_bad_signing_keys_never_show_their_content(tmp_path):
    secret = pem_private(new_key())
    mangled = secret.replace(b"MC4C", b"MC4X")
    enc = new_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pw"))
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cases = ((mangled, "not a PEM"), (enc, "passphrase"), (rsa_pem, "not Ed25519"), (b"x" * 31, "not a PEM"))
    for n, (data, why) in enumerate(cases):
        path = write(tmp_path, "k%d" % n, data)
        with pytest.raises(ConfigError) as e:
            signing.Signer.from_file(path)
        text = str(e.value) + str(e.value.hint)
        assert why in text and path in text and "signing_key_file" in text
        assert "MC4" not in text and "BEGIN" not in text
    with pytest.raises(ConfigError, match="cannot read"):
        signing.Signer.from_file(str(tmp_path / "missing"))


def test_a_signing_key_readable_by_others_is_refused(tmp_path):
    path = write(tmp_path, "loose.key", pem_private(new_key()), 0o640)
    with pytest.raises(ConfigError) as e:
        signing.Signer.from_file(path)
    assert "readable by others (mode 640)" in str(e.value) and e.value.hint == "chmod 600 %s" % path
    os.chmod(path, 0o400)
    assert signing.Signer.from_file(path).key_id


def test_verify_keys_from_inline_values_and_files(tmp_path):
    a, b, c = new_key(), new_key(), new_key()
    ssh_b = signing.public_line(b.public_key())
    path = write(tmp_path, "keys.pub", "# ops\n%s\n# escrow\n%s\n" % (pem_public(a), ssh_b), 0o644)
    keys = signing.load_verify_keys([path, pem_public(c), ssh_b])
    assert sorted(keys) == sorted(signing.key_id(k.public_key()) for k in (a, b, c))
    assert signing.load_verify_keys(None) == {}
    assert signing.Trust.from_params({"verify_keys": []}) is None
    assert signing.Trust.from_params({"verify_keys": [path]}).ids() == sorted(
        signing.key_id(k.public_key()) for k in (a, b))


def test_bad_verify_keys(tmp_path):
    with pytest.raises(ConfigError, match="PRIVATE key"):
        signing.load_verify_keys([write(tmp_path, "priv", pem_private(new_key()))])
    with pytest.raises(ConfigError, match="neither a public key"):
        signing.load_verify_keys([str(tmp_path / "nope.pub")])
    with pytest.raises(ConfigError, match="holds no public key"):
        signing.load_verify_keys([write(tmp_path, "empty", "# nothing\n")])
    with pytest.raises(ConfigError, match="line 1 is not an ssh-ed25519"):
        signing.load_verify_keys([write(tmp_path, "junk", "hello\n")])
    rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ConfigError, match="not Ed25519"):
        signing.load_verify_keys([rsa_pub])
    with pytest.raises(ConfigError, match="no END line"):
        signing.load_verify_keys([write(tmp_path, "cut", pem_public(new_key()).splitlines()[0] + "\n")])
