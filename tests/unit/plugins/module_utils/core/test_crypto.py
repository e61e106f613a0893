# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""crypto.py: age encryption in the pipeline through the real pyrage (no
service involved): round trips through PipelineSink and read_stored, the
files the stored bytes are compatible with (pyrage's own one-shot decrypt),
a wrong or missing identity, a flipped byte and a truncation failing with an
authentication error, recipients and identity files, and the memory bound.
"""

import hashlib
import io
import os
import threading
import tracemalloc

import pyrage
import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import crypto
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, IntegrityError
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import (
    PipelineSink,
    ZstdCompress,
    ZstdDecompress,
    pump,
    read_stored,
)


def keypair():
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def identity_file(tmp_path, secret, name="id.txt"):
    path = tmp_path / name
    path.write_text("# created: test\n# public key: ...\n%s\n" % secret)
    os.chmod(str(path), 0o600)
    return str(path)


def store(fs, key, data, recipients, compress=True):
    with fs.writer(key) as w:
        sink = PipelineSink(w, [ZstdCompress() if compress else None, crypto.Encrypt(recipients)])
        pump(io.BytesIO(data), sink)
        sink.close()
    return sink.result()


def sample():
    """About 3 MiB, half random, half repetitive (a dump compresses, a bit)."""
    return b"".join(os.urandom(1 << 16) + b"row,data,42\n" * 5000 for _i in range(24))


def restore(fs, key, res, identities, compress=True):
    out = io.BytesIO()
    read_stored(fs, key, res["size"], res["sha256"],
                transforms=[crypto.Decrypt(identities, "test object"), ZstdDecompress() if compress else None],
                consumer=out.write)
    return out.getvalue()


def test_round_trip_through_the_pipeline_and_readable_by_age(fs, tmp_path):
    secret, recipient = keypair()
    data = sample()
    res = store(fs, "k", data, [recipient], compress=False)
    stored = open(os.path.join(fs.root, "k"), "rb").read()
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert res["sha256"] == hashlib.sha256(stored).hexdigest() and res["size"] == len(stored)
    assert data not in stored and data[:4096] not in stored
    # any age implementation reads it: pyrage's one-shot decrypt does
    assert pyrage.decrypt(stored, [pyrage.x25519.Identity.from_str(secret)]) == data
    ids = crypto.load_identities(identity_file(tmp_path, secret))
    assert restore(fs, "k", res, ids, compress=False) == data


def test_compressed_then_encrypted_round_trip_two_recipients(fs, tmp_path):
    ops, ops_pub = keypair()
    escrow, escrow_pub = keypair()
    data = sample()
    res = store(fs, "k", data, [ops_pub, escrow_pub])
    assert res["size"] < len(data)  # compressed before it was encrypted
    for secret in (ops, escrow):
        ids = crypto.load_identities(identity_file(tmp_path, secret))
        assert restore(fs, "k", res, ids) == data


def test_empty_input_round_trip(fs):
    secret, recipient = keypair()
    res = store(fs, "k", b"", [recipient], compress=False)
    assert res["size"] > 0
    assert restore(fs, "k", res, [pyrage.x25519.Identity.from_str(secret)], compress=False) == b""


def test_wrong_identity_is_an_integrity_error(fs):
    _secret, recipient = keypair()
    other, _pub = keypair()
    res = store(fs, "k", b"x" * 100000, [recipient])
    with pytest.raises(IntegrityError) as e:
        restore(fs, "k", res, [pyrage.x25519.Identity.from_str(other)])
    assert "none of the identities" in e.value.message


@pytest.mark.parametrize("where", ["header", "middle", "last"])
def test_a_flipped_byte_fails_authentication(fs, where):
    secret, recipient = keypair()
    data = os.urandom(400000)  # several 64 KiB chunks
    store(fs, "k", data, [recipient], compress=False)
    path = os.path.join(fs.root, "k")
    raw = bytearray(open(path, "rb").read())
    pos = {"header": 30, "middle": len(raw) // 2, "last": len(raw) - 5}[where]
    raw[pos] ^= 0x01
    open(path, "wb").write(bytes(raw))
    got = io.BytesIO()
    with pytest.raises(IntegrityError) as e:
        read_stored(fs, "k", transforms=[crypto.Decrypt([pyrage.x25519.Identity.from_str(secret)], "obj")],
                    consumer=got.write)
    assert "cannot be decoded" in e.value.message
    # what was handed on before the failure is a prefix of the plaintext (authenticated chunks only)
    assert data.startswith(got.getvalue()) and len(got.getvalue()) < len(data)
    if where != "header":
        assert "authentication" in e.value.message


def test_a_truncated_ciphertext_fails_authentication(fs):
    secret, recipient = keypair()
    data = os.urandom(3 * 65536)  # cut exactly at a chunk boundary: only the missing last-chunk flag tells
    store(fs, "k", data, [recipient], compress=False)
    path = os.path.join(fs.root, "k")
    raw = open(path, "rb").read()
    header = raw.index(b"\n---") + len(b"\n---") + 44 + 1 + 16  # header line, its MAC, the nonce
    open(path, "wb").write(raw[:header + 2 * (65536 + 16)])
    with pytest.raises(IntegrityError) as e:
        read_stored(fs, "k", transforms=[crypto.Decrypt([pyrage.x25519.Identity.from_str(secret)], "obj")],
                    consumer=lambda b: None)
    assert "authentication" in e.value.message


def test_a_stored_digest_mismatch_is_reported_with_the_decoding_error(fs):
    secret, recipient = keypair()
    res = store(fs, "k", os.urandom(200000), [recipient], compress=False)
    path = os.path.join(fs.root, "k")
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 1
    open(path, "wb").write(bytes(raw))
    with pytest.raises(IntegrityError) as e:
        read_stored(fs, "k", res["size"], res["sha256"],
                    transforms=[crypto.Decrypt([pyrage.x25519.Identity.from_str(secret)], "obj")],
                    consumer=lambda b: None)
    assert "does not match its manifest" in e.value.message


def test_load_recipients_keys_and_files(tmp_path):
    _s1, r1 = keypair()
    _s2, r2 = keypair()
    f = tmp_path / "recipients.txt"
    f.write_text("# ops\n%s\n\n# escrow\n%s\n" % (r1, r2))
    assert crypto.load_recipients([r1, str(f)]) == [r1, r2]
    assert crypto.load_recipients(None) == []


def test_bad_recipients_name_the_option(tmp_path):
    with pytest.raises(ConfigError) as e:
        crypto.load_recipients(["age1notakey"])
    assert "encryption_recipients" in e.value.message
    with pytest.raises(ConfigError) as e:
        crypto.load_recipients([str(tmp_path / "missing")])
    assert "encryption_recipients" in e.value.message and "missing" in e.value.message
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError) as e:
        crypto.load_recipients([str(empty)])
    assert "holds no recipient" in e.value.message


def test_a_bad_identity_file_never_shows_its_content(tmp_path):
    secret, _pub = keypair()
    mangled = secret[:-3] + "qqq"
    path = identity_file(tmp_path, mangled)
    with pytest.raises(ConfigError) as e:
        crypto.load_identities(path)
    text = e.value.message + (e.value.hint or "")
    assert "encryption_identity_file" in text and "line 3" in text
    assert mangled not in text and mangled[:20] not in text
    with pytest.raises(ConfigError):
        crypto.load_identities(str(tmp_path / "missing"))


def test_keyring_names_the_fingerprints_it_needs(tmp_path):
    _s, recipient = keypair()
    other, other_pub = keypair()
    desc = crypto.describe([recipient])
    assert desc == {"format": "age", "recipients": [hashlib.sha256(recipient.encode()).hexdigest()]}
    assert recipient not in str(desc)
    with pytest.raises(ConfigError) as e:
        crypto.Keyring(None).check(desc, "Backup b1")
    assert desc["recipients"][0] in e.value.message and "no encryption_identity_file" in e.value.message
    with pytest.raises(ConfigError) as e:
        crypto.Keyring(identity_file(tmp_path, other)).check(desc, "Backup b1")
    assert desc["recipients"][0] in e.value.message and crypto.fingerprint(other_pub) in e.value.message
    assert other not in e.value.message
    assert crypto.Keyring(None).decryptor(None, "plain") is None
    with pytest.raises(IntegrityError):
        crypto.Keyring(None).check({"format": "gpg"}, "Backup b1")


def test_memory_stays_bounded_while_encrypting(fs):
    """64 MiB through compress -> encrypt -> file: Python allocations stay
    far below the size (the queue holds a few chunks)."""
    _secret, recipient = keypair()
    block = os.urandom(1 << 20)

    class Source(object):
        left = 64

        def read(self, n):
            if not self.left:
                return b""
            self.left -= 1
            return block

    tracemalloc.start()
    try:
        with fs.writer("big") as w:
            sink = PipelineSink(w, [crypto.Encrypt([recipient])])
            pump(Source(), sink)
            sink.close()
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.result()["size"] > 64 << 20
    assert peak < 16 << 20, peak


def test_an_abandoned_decryptor_ends_its_thread():
    secret, recipient = keypair()
    blob = pyrage.encrypt(os.urandom(300000), [pyrage.x25519.Recipient.from_str(recipient)])
    before = threading.active_count()
    d = crypto.Decrypt([pyrage.x25519.Identity.from_str(secret)])
    d.update(blob[:100000])
    d.close()
    del d
    for _attempt in range(50):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.05)
    assert threading.active_count() <= before
