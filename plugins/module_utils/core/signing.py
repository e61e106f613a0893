# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed manifests: Ed25519 through the maintained ``cryptography`` package
(no primitive is written here; this file loads keys, builds the signed
message and turns the library's answers into drkit's errors).

Backup hosts hold the signing key (``signing_key_file``, a path: the key's
content never goes on a command line, in a message or a log); everything
that lists, rotates, verifies, restores or copies holds only public keys
(``verify_keys``), so someone who can write to the bucket but has no backup
host's key cannot forge or edit a manifest (docs/encryption.md).

The signature lives inside the manifest, as its ``signature`` field, over
the manifest's canonical JSON without that field and without the digest
(repo/manifest.py): the manifest stays one object, written create-only and
LAST, read by listing anyway (no extra request per backup) and copied with
its signature by backup_copy. A key is named by its key id: the SHA-256 of
the 32 raw bytes of the public key, in hex.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import hashlib
import os
import stat

from .errors import ConfigError, IntegrityError
from .options import Option

ALGORITHM = "ed25519"
# Domain separation: a manifest signature is never valid as anything else.
CONTEXT = b"drkit.backup/manifest-signature/1\n"

# Writers (doc fragment drkit.backup.signing): the private key, as a path.
SIGNING_KEY_FILE = Option(
    "signing_key_file", "path", env=("DRKIT_SIGNING_KEY_FILE",), flags=("--signing-key-file",),
    help="Ed25519 private key file (PEM, OpenSSH or 32 raw bytes) that signs the manifest",
    hint="Make one with 'openssl genpkey -algorithm ed25519 -out signing.key' (or ssh-keygen -t ed25519 -N ''), "
         "mode 0600, readable only by the user that runs the backup")
SIGNING = (SIGNING_KEY_FILE,)
# Readers (doc fragment drkit.backup.signing.verify): the trusted public keys.
VERIFY_KEYS = Option(
    # public keys: no secret (no_log=False silences Ansible's warning for the name)
    "verify_keys", "list", elements="str", no_log=False, flags=("--verify-key",), metavar="KEY_OR_FILE",
    help="trust manifests signed by this Ed25519 public key (ssh-ed25519 ... or PEM) or every key in this "
         "file; repeatable. Set: unsigned or forged manifests do not count",
    hint="Give Ed25519 public keys: an 'ssh-ed25519 AAAA...' line, a PEM public key "
         "(openssl pkey -in signing.key -pubout), or the path of a file of them")
VERIFYING = (VERIFY_KEYS,)


def _serialization():
    try:
        from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives.asymmetric import ed25519  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("Signed manifests need the Python library cryptography",
                          "Install it (pip install cryptography) in the Python that runs drkit")
    return serialization, ed25519


def _raw_public(public_key):
    serialization = _serialization()[0]
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key):
    """The key's name in manifests and messages: sha256 of its 32 raw bytes.
    By hand: ``openssl pkey -pubin -in signing.pub -outform DER | tail -c 32 | sha256sum``."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()


def public_line(public_key):
    """The public key as one ``ssh-ed25519 AAAA...`` line (what verify_keys takes)."""
    serialization = _serialization()[0]
    return public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def message(canonical):
    """The bytes that are signed: the context line, then the manifest's canonical JSON."""
    return CONTEXT + canonical


# --------------------------------------------------------------------------
# Writers


class Signer(object):
    """The private key of one backup host, loaded once."""

    def __init__(self, private_key, path=None):
        self._key = private_key
        self.path = path
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def from_file(cls, path, option=SIGNING_KEY_FILE.name):
        """The Ed25519 private key in ``path``: PEM (PKCS#8, unencrypted),
        OpenSSH, or the 32 raw bytes. Nothing of the content goes into a message."""
        serialization, ed25519 = _serialization()
        try:
            with open(path, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                data = fh.read(65536)
        except OSError as e:
            raise ConfigError("%s: cannot read %s: %s" % (option, path, e.strerror or e), SIGNING_KEY_FILE.hint)
        # as for a config file holding secrets (cli.load_config): whoever can
        # read the key can sign manifests every reader trusts
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError("%s: %s is readable by others (mode %o); anyone who can read it can forge manifests"
                              % (option, path, stat.S_IMODE(mode)), "chmod 600 %s" % path)
        key, why = None, "not a PEM, OpenSSH or raw 32-byte Ed25519 private key"
        try:
            if len(data) == 32:
                key = ed25519.Ed25519PrivateKey.from_private_bytes(data)
            elif b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
                key = serialization.load_ssh_private_key(data, password=None)
            elif b"-----BEGIN" in data:
                key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            why = "it is encrypted with a passphrase; drkit reads unencrypted keys (protect the file instead)"
        except (ValueError, binascii.Error):
            key = None
        except Exception:  # pylint: disable=broad-except
            # unsupported key types come as UnsupportedAlgorithm; say where, never what
            key = None
        if key is not None and not isinstance(key, ed25519.Ed25519PrivateKey):
            why = "it holds a %s key, not Ed25519" % type(key).__name__.replace("PrivateKey", "").lstrip("_")
            key = None
        if key is None:
            raise ConfigError("%s: %s is %s" % (option, path, why if why.startswith("not") else "unusable: " + why),
                              SIGNING_KEY_FILE.hint)
        return cls(key, path)

    def sign(self, canonical):
        """The manifest's ``signature`` field for its canonical JSON (bytes)."""
        value = self._key.sign(message(canonical))
        return {"algorithm": ALGORITHM, "key_id": self.key_id, "value": base64.b64encode(value).decode("ascii")}


def signer_for(path):
    """A Signer, or None when no signing_key_file is set."""
    return Signer.from_file(path) if path else None


# --------------------------------------------------------------------------
# Readers


def _public_keys(text, where):
    """The Ed25519 public keys in ``text``: PEM blocks and ssh-ed25519 lines, # comments."""
    serialization, ed25519 = _serialization()
    keys = []
    pem = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if pem:
            pem.append(line)
            if line.startswith("-----END"):
                block = "\n".join(pem).encode("ascii", "replace")
                pem = []
                try:
                    keys.append(serialization.load_pem_public_key(block))
                except Exception as e:  # pylint: disable=broad-except
                    raise ConfigError("%s: the PEM block ending on line %d is not a public key (%s)" % (
                        where, number, e), VERIFY_KEYS.hint)
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("-----BEGIN"):
            if "PRIVATE KEY" in line:
                raise ConfigError("%s holds a PRIVATE key (line %d)" % (where, number),
                                  "verify_keys takes public keys only: the signing key stays on the backup "
                                  "hosts. Extract the public one with 'openssl pkey -in signing.key -pubout'")
            pem = [line]
            continue
        try:
            keys.append(serialization.load_ssh_public_key(line.encode("ascii", "replace")))
        except Exception as e:  # pylint: disable=broad-except
            raise ConfigError("%s: line %d is not an ssh-ed25519 public key (%s)" % (where, number, e),
                              VERIFY_KEYS.hint)
    if pem:
        raise ConfigError("%s: a PEM block has no END line" % where, VERIFY_KEYS.hint)
    for k in keys:
        if not isinstance(k, ed25519.Ed25519PublicKey):
            raise ConfigError("%s holds a %s key, not Ed25519" % (
                where, type(k).__name__.replace("PublicKey", "").lstrip("_")), VERIFY_KEYS.hint)
    return keys


def load_verify_keys(values, option=VERIFY_KEYS.name):
    """{key id: public key} from ``values``: each an inline key (an
    ``ssh-ed25519`` line or a PEM block) or the path of a file of them.
    None or [] -> {}: manifests are not checked."""
    out = {}
    for value in values or []:
        value = value.strip()
        # inline: an OpenSSH line ("ssh-ed25519 AAAA... comment") or a PEM block; else a path
        if (value.startswith("ssh-") and " " in value) or value.startswith("-----BEGIN"):
            keys = _public_keys(value, "%s entry %s..." % (option, value[:20]))
        else:
            try:
                with open(value) as fh:
                    text = fh.read(1 << 20)
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError("%s: %r is neither a public key (ssh-ed25519 ..., PEM) nor a readable file of "
                                  "them: %s" % (option, value, getattr(e, "strerror", None) or e), VERIFY_KEYS.hint)
            keys = _public_keys(text, "%s file %s" % (option, value))
            if not keys:
                raise ConfigError("%s: the file %s holds no public key" % (option, value), VERIFY_KEYS.hint)
        for k in keys:
            out.setdefault(key_id(k), k)
    return out


class Trust(object):
    """The public keys a reader trusts (``verify_keys``). ``check`` says
    whether a manifest was signed by one of them."""

    def __init__(self, keys):
        self.keys = dict(keys)  # key id -> public key

    @classmethod
    def from_params(cls, p):
        """A Trust, or None when verify_keys is unset (manifests not checked)."""
        keys = load_verify_keys(p.get(VERIFY_KEYS.name))
        return cls(keys) if keys else None

    def ids(self):
        return sorted(self.keys)

    def check(self, signature, canonical, what):
        """The key id that signed ``canonical`` (the manifest's canonical
        JSON, bytes) with ``signature`` (the manifest's field, None when it
        has none). IntegrityError naming the key ids and what to do otherwise."""
        trusted = ", ".join(self.ids())
        if signature is None:
            raise IntegrityError(
                "%s is not signed, and verify_keys trusts only manifests signed by the key ids %s" % (what, trusted),
                "The backup was written by a host without signing_key_file, or its signature was removed: do not "
                "trust it. Set signing_key_file on every backup host (docs/encryption.md); a backup from before "
                "signing was enabled is used only by a reader without verify_keys")
        if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM \
                or not isinstance(signature.get("key_id"), str) or not isinstance(signature.get("value"), str):
            raise IntegrityError("%s has a malformed signature field (expected algorithm %s, key_id, value)" % (
                what, ALGORITHM), "The manifest is damaged or forged: do not trust this backup, use another one")
        kid = signature["key_id"]
        key = self.keys.get(kid)
        if key is None:
            raise IntegrityError(
                "%s is signed by the key id %s, which is not one of the trusted keys (verify_keys: %s)" % (
                    what, kid, trusted),
                "If %s is a new backup host's signing key, add its public key to verify_keys (a rotation keeps "
                "the old key there until its backups expired); otherwise the manifest is forged: do not trust "
                "this backup" % kid[:16])
        try:
            value = base64.b64decode(signature["value"].encode("ascii"), validate=True)
            key.verify(value, message(canonical))
        except Exception:  # pylint: disable=broad-except
            # InvalidSignature, or a value that is not base64 / not 64 bytes
            raise IntegrityError(
                "%s has a signature by the key id %s that does not match its content: it was edited or forged "
                "after it was signed" % (what, kid),
                "Do not trust this backup; use another one, and find out who can write to the repository")
        return kid
