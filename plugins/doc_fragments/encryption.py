# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # drkit.backup.encryption: the options of core.crypto.ENCRYPTION
    # (_ansible.encryption_argument_spec), docs/encryption.md
    DOCUMENTATION = r"""
options:
  encryption_recipients:
    description:
      - Encrypt every stored artifact for these age recipients (client-side, after compression, in the age
        format, X25519 and ChaCha20-Poly1305 in authenticated 64 KiB chunks, through the Python library pyrage).
      - Each entry is an age X25519 public key (C(age1...), as printed by C(age-keygen -y)) or the path of a file
        of them on the managed host, one a line, C(#) comments allowed. Any one of the recipients' identities
        decrypts the backup; list an operations key and an offline escrow key.
      - The host that backs up needs only these public keys; it cannot read its own backups. The manifest records
        the recipients' fingerprints (SHA-256 of the recipient string), never a key; size and SHA-256 in the
        manifest are those of the stored, encrypted bytes, so listing, rotation, copies and checksum-level
        verification need no key.
      - Without an identity the backup host cannot decode what it stored. M(drkit.backup.pg_backup) then skips
        C(pg_restore --list) on the stored dump; an encrypted dump's structure is checked by a later verification
        at level C(structure) or C(restore). M(drkit.backup.redis_snapshot) still checks the plaintext with
        C(redis-check-rdb) / C(redis-check-aof) before it is encrypted; the stored bytes are re-read for size and
        SHA-256 only.
      - Unset (the default), nothing is encrypted. Not supported yet with M(drkit.backup.pg_backup)'s
        C(mode=physical) (the task fails).
      - See docs/encryption.md for the threat model and key rotation.
    type: list
    elements: str
requirements:
  - pyrage (Python library on the managed host) when O(encryption_recipients) is set
"""

    # drkit.backup.encryption.decryption: the options of core.crypto.DECRYPTION
    # (_ansible.decryption_argument_spec)
    DECRYPTION = r"""
options:
  encryption_identity_file:
    description:
      - Path, on the managed host, of an age identity file (C(AGE-SECRET-KEY-1...) lines, as made by C(age-keygen))
        holding the private key of one of the recipients an encrypted backup was written for.
      - Needed only to decrypt, by restores and verifications that decode the data (levels C(structure) and
        C(restore)). Without it, or with an identity of none of the backup's recipients, the task fails before
        anything is created, naming the fingerprints of the recipients it needs.
      - The file's content is a secret; it is read by drkit only, never put on a command line or in a message.
        Keep it in Ansible Vault on the controller and copy it with mode C(0600) only where restores run
        (docs/encryption.md).
      - Decryption authenticates every 64 KiB chunk; a modified or truncated ciphertext fails the task with an
        authentication error and nothing decoded from it is kept (a PostgreSQL restore drops its staging
        database, a Redis restore removes its staging directory before anything is placed).
      - Falls back to the environment variable E(DRKIT_AGE_IDENTITY_FILE).
    type: path
"""
