# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side encryption of stored artifacts: the age format (X25519
recipients, ChaCha20-Poly1305 STREAM in authenticated 64 KiB chunks) through
the maintained ``pyrage`` bindings of the Rust ``age`` crate. No primitive is
written here: this file only adapts pyrage's streaming calls to the
pipeline's transforms (core.stream: ``update(bytes) -> bytes``,
``finish() -> bytes``) and turns its errors into drkit's.

pyrage 1.4.0 streams with ``encrypt_io(reader, writer, recipients)`` and
``decrypt_io(reader, writer, identities)``: it pulls the input in 8 KiB
reads and writes one 64 KiB age chunk at a time (measured: 5 MiB encrypted
at 16 MiB peak RSS). Those calls own the loop, the pipeline pushes: so each
transform runs its pyrage call in a thread of its own, fed through a bounded
queue (a few pipeline chunks ahead at most, memory stays flat).

Decryption hands on only chunks age has authenticated, but a stream cut
short or damaged further on is only known later (at the damaged chunk, or
at ``finish()`` for a truncation): callers must treat what they received as
provisional until ``finish()`` returned, and discard it otherwise (a restore
drops its staging database; pg.restore does).

Backup hosts hold recipients (public keys) only; the identity (private key)
is read from a file on the host that restores, never from argv, never
logged. The manifest records the recipients' fingerprints (sha256 of the
recipient string), never a key.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import hashlib
import json
import queue
import threading

from .errors import ConfigError, DrkitError, IntegrityError, Terminated
from .options import Option

FORMAT = "age"
_IN_DEPTH = 4  # pipeline chunks (about 1 MiB each) queued ahead of the cipher thread

# Writers (doc fragment drkit.backup.encryption): the recipients.
ENCRYPTION_RECIPIENTS = Option(
    "encryption_recipients", "list", elements="str", flags=("--encryption-recipient",),
    metavar="AGE1_OR_FILE",
    help="encrypt for this age recipient (age1...) or every recipient in this file; repeatable",
    hint="Give age X25519 public keys (age1..., from age-keygen -y) or paths to files of them, one a line")
ENCRYPTION = (ENCRYPTION_RECIPIENTS,)
# Readers (doc fragment drkit.backup.decryption): the identity file. The path
# is not a secret; its content is, and never leaves this process.
ENCRYPTION_IDENTITY_FILE = Option(
    "encryption_identity_file", "path", env=("DRKIT_AGE_IDENTITY_FILE",), flags=("--encryption-identity-file",),
    help="age identity file (AGE-SECRET-KEY-1...) to decrypt encrypted backups",
    hint="Point it at a file made by age-keygen, readable only by the user that restores")
DECRYPTION = (ENCRYPTION_IDENTITY_FILE,)


def _pyrage():
    try:
        import pyrage  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("Encryption needs the Python library pyrage",
                          "Install it (pip install pyrage) in the Python that runs drkit")
    return pyrage


def fingerprint(recipient):
    """The recipient's name in manifests and messages: sha256 of its string."""
    return hashlib.sha256(recipient.strip().encode("ascii")).hexdigest()


def _lines(text):
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def load_recipients(values, option=ENCRYPTION_RECIPIENTS.name):
    """The age recipients (their strings, checked) from ``values``: each an
    ``age1...`` key or the path of a file of them (one a line, # comments).
    None or [] -> []: nothing is encrypted (and pyrage is not even imported:
    wal-push starts once per WAL file)."""
    if not values:
        return []
    rage = _pyrage()
    out = []
    for value in values or []:
        value = value.strip()
        if value.startswith("age1"):
            keys, where = [value], "%s entry %s..." % (option, value[:12])
        else:
            try:
                with open(value) as fh:
                    keys = list(_lines(fh.read()))
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError("%s: %r is neither an age recipient (age1...) nor a readable file of them: %s"
                                  % (option, value, getattr(e, "strerror", None) or e), ENCRYPTION_RECIPIENTS.hint)
            if not keys:
                raise ConfigError("%s: the file %s holds no recipient" % (option, value), ENCRYPTION_RECIPIENTS.hint)
            where = "%s file %s" % (option, value)
        for key in keys:
            try:
                rage.x25519.Recipient.from_str(key)
            except Exception as e:  # pylint: disable=broad-except
                raise ConfigError("%s: %r is not an age X25519 recipient (%s)" % (where, key[:80], e),
                                  ENCRYPTION_RECIPIENTS.hint)
            if key not in out:
                out.append(key)
    return out


def describe(recipients):
    """The manifest's ``encryption``: format and fingerprints, never keys (None: not encrypted)."""
    if not recipients:
        return None
    return {"format": FORMAT, "recipients": [fingerprint(r) for r in recipients]}


def load_identities(path, option=ENCRYPTION_IDENTITY_FILE.name):
    """The age identities in the file ``path`` (pyrage objects). Nothing of
    the file's content ever goes into a message."""
    rage = _pyrage()
    try:
        with open(path) as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("%s: cannot read %s: %s" % (option, path, getattr(e, "strerror", None) or e),
                          ENCRYPTION_IDENTITY_FILE.hint)
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(rage.x25519.Identity.from_str(line))
        except Exception:  # pylint: disable=broad-except
            # the line may be a mangled key: say where, never what
            raise ConfigError("%s: line %d of %s is not an age identity (AGE-SECRET-KEY-1...)" % (
                option, number, path), ENCRYPTION_IDENTITY_FILE.hint)
    if not identities:
        raise ConfigError("%s: %s holds no age identity" % (option, path), ENCRYPTION_IDENTITY_FILE.hint)
    return identities


class Keyring(object):
    """The identities of one reader (``encryption_identity_file``), loaded
    once; ``None`` path: a reader without a key (checksum-level verify,
    listing, rotation, copy)."""

    def __init__(self, path=None):
        self.path = path
        self._identities = None

    def identities(self):
        if self._identities is None and self.path:
            self._identities = load_identities(self.path)
        return self._identities or []

    def fingerprints(self):
        return [fingerprint(str(i.to_public())) for i in self.identities()]

    def decryptor(self, encryption, what):
        """A Decrypt transform for data described by the manifest's
        ``encryption`` (None: not encrypted -> None). Fails before any data
        is read when this reader has no key, or none of the recipients'."""
        if not encryption:
            return None
        self.check(encryption, what)
        return Decrypt(self.identities(), what)

    def check(self, encryption, what):
        """ConfigError unless this reader can decrypt what ``encryption``
        (the manifest's) describes; ``what`` names it in the message."""
        if encryption.get("format") != FORMAT:
            raise IntegrityError("%s is encrypted with %r, which this drkit does not know" % (
                what, encryption.get("format")), "This backup was written by a newer drkit; upgrade drkit")
        needed = list(encryption.get("recipients") or [])
        if not self.path:
            raise ConfigError("%s is encrypted (age) for the recipients with fingerprints %s; no "
                              "encryption_identity_file was given" % (what, ", ".join(needed)),
                              "Set encryption_identity_file to an age identity file holding the private key of "
                              "one of these recipients (docs/encryption.md)")
        have = self.fingerprints()
        if needed and not set(have) & set(needed):
            raise ConfigError("%s is encrypted (age) for the recipients with fingerprints %s; the identities in %s "
                              "belong to %s" % (what, ", ".join(needed), self.path, ", ".join(have)),
                              "Use the identity file of one of those recipients (docs/encryption.md)")


# --------------------------------------------------------------------------
# Transforms around pyrage's streaming calls


class _Feed(object):
    """What the cipher thread sees: a file-like reader over the queued chunks
    and a writer collecting its output. Holds no reference to the transform,
    so a transform dropped half-way (a failed pipeline) ends the thread."""

    EOF = object()
    ABORT = object()

    def __init__(self):
        self.inbox = queue.Queue(_IN_DEPTH)
        self.outbox = collections.deque()
        self.lock = threading.Lock()
        self.error = None
        self._buf = memoryview(b"")
        self._eof = False

    def read(self, n=-1):
        while not self._buf:
            if self._eof:
                return b""
            item = self.inbox.get()
            if item is self.ABORT:
                raise _Aborted()
            if item is self.EOF:
                self._eof = True
                return b""
            self._buf = memoryview(item)
        if n is None or n < 0:
            n = len(self._buf)
        data, self._buf = self._buf[:n].tobytes(), self._buf[n:]
        return data

    def write(self, data):
        with self.lock:
            self.outbox.append(bytes(data))
        return len(data)

    def flush(self):
        pass

    def take(self):
        with self.lock:
            out = b"".join(self.outbox)
            self.outbox.clear()
        return out


class _Aborted(Exception):
    pass


class _Streaming(object):
    """Runs ``call(reader, writer)`` (a pyrage *_io function) in a thread."""

    def __init__(self, call):
        self._feed = feed = _Feed()

        def run():
            try:
                call(feed, feed)
            except _Aborted:
                pass
            except BaseException as e:  # pylint: disable=broad-except
                feed.error = e
                # drain so that a producer blocked on the full queue moves on
                while True:
                    try:
                        feed.inbox.get_nowait()
                    except queue.Empty:
                        break
        self._thread = threading.Thread(target=run, name="drkit-age")
        self._thread.daemon = True
        self._thread.start()
        self._finished = False

    def _put(self, item):
        while True:
            self._raise()
            if not self._thread.is_alive():
                return
            try:
                self._feed.inbox.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _raise(self):
        if self._feed.error is not None:
            raise self._translate(self._feed.error)

    def update(self, data):
        if data:
            self._put(bytes(data))
        self._raise()
        return self._feed.take()

    def finish(self):
        if self._finished:
            return b""
        self._finished = True
        self._put(_Feed.EOF)
        self._thread.join()
        self._raise()
        return self._feed.take()

    def close(self):
        """Stop the thread early (a pipeline that failed elsewhere): what it
        has not read yet is dropped, then it reads the end."""
        if self._finished or not self._thread.is_alive():
            return
        self._finished = True
        while True:
            try:
                self._feed.inbox.get_nowait()
            except queue.Empty:
                break
        try:
            self._feed.inbox.put_nowait(_Feed.ABORT)
        except queue.Full:
            pass  # the thread died meanwhile and nothing reads: it holds no resource

    def __del__(self):
        try:
            self.close()
        except Exception:  # pylint: disable=broad-except
            pass  # at interpreter exit the modules may be gone; the thread is a daemon

    def _translate(self, error):
        raise NotImplementedError


class Encrypt(_Streaming):
    """age encryption to ``recipients`` (strings, see load_recipients)."""

    name = FORMAT

    def __init__(self, recipients):
        rage = _pyrage()
        self.recipients = list(recipients)
        keys = [rage.x25519.Recipient.from_str(r) for r in self.recipients]
        super(Encrypt, self).__init__(lambda reader, writer: rage.encrypt_io(reader, writer, keys))

    def _translate(self, error):
        if isinstance(error, (DrkitError, Terminated)):
            return error
        return IntegrityError("age encryption failed: %s" % error, "Check the recipients (docs/encryption.md)")


class Decrypt(_Streaming):
    """age decryption with ``identities``. A wrong key, a damaged or a
    truncated stream are IntegrityErrors (read_stored reports them with the
    object's name once it has hashed the whole object)."""

    name = FORMAT

    def __init__(self, identities, what="the data"):
        rage = _pyrage()
        self.what = what
        ids = list(identities)
        super(Decrypt, self).__init__(lambda reader, writer: rage.decrypt_io(reader, writer, ids))

    def _translate(self, error):
        if isinstance(error, (DrkitError, Terminated)):
            return error
        text = str(error) or type(error).__name__
        if "No matching keys" in text:
            return IntegrityError("%s: none of the identities can decrypt it (age: %s)" % (self.what, text),
                                  "Use the identity file of one of the recipients the manifest names")
        return IntegrityError("%s failed age authentication: %s; the ciphertext was modified or truncated, "
                              "nothing decrypted from it may be used" % (self.what, text),
                              "The object is damaged or was tampered with; use another backup")


def encryptor_for(recipients):
    return Encrypt(recipients) if recipients else None


# --------------------------------------------------------------------------
# Objects without a manifest (the WAL archive): a one-line cleartext header
# before the age stream. It says what a reader needs without the key: that
# the object is encrypted, for which recipients (fingerprints), and the
# sha256 and size of the content, so that an archiver holding only public
# keys can tell an identical re-push from a different file. A reader with
# the key checks the decrypted content against it: an edited header fails.
# What it costs: the sha256 of each WAL file is readable in the bucket
# (pgBackRest's repository names archived WAL by its SHA-1 the same way);
# docs/encryption.md.

HEADER_PREFIX = b"drkit-age1 "
_HEADER_MAX = 8192


def object_header(recipients, sha256, size):
    fields = {"format": FORMAT, "recipients": [fingerprint(r) for r in recipients], "sha256": sha256,
              "size": size}
    return HEADER_PREFIX + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def split_header(chunks, what):
    """(header dict or None, chunks from the first byte after it): reads the
    head of a stored object's ``chunks`` (an iterator of bytes). None: the
    object has no header (stored unencrypted); its chunks are all given back."""
    head = b""
    chunks = iter(chunks)
    for chunk in chunks:
        head += chunk
        if len(head) >= len(HEADER_PREFIX) and (b"\n" in head or len(head) > _HEADER_MAX):
            break
    if not head.startswith(HEADER_PREFIX):
        return None, _prepend(head, chunks)
    end = head.find(b"\n")
    try:
        if end < 0:
            raise ValueError("no end of line in %d bytes" % len(head))
        header = json.loads(head[len(HEADER_PREFIX):end].decode("ascii"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise IntegrityError("%s has a damaged encryption header (%s)" % (what, e),
                             "The stored object is damaged; it cannot be used")
    return header, _prepend(head[end + 1:], chunks)


def _prepend(head, chunks):
    if head:
        yield head
    yield from chunks
