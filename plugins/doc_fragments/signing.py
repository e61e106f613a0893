# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # drkit.backup.signing: the options of core.signing.SIGNING
    # (_ansible.signing_argument_spec), docs/encryption.md
    DOCUMENTATION = r"""
options:
  signing_key_file:
    description:
      - Path, on the managed host, of an Ed25519 private key that signs the backup's manifest (PEM as made by
        C(openssl genpkey -algorithm ed25519), an unencrypted OpenSSH key from C(ssh-keygen -t ed25519 -N ''), or
        the 32 raw bytes).
      - The signature is the manifest's C(signature) field, over the manifest's canonical JSON, with the key id
        (SHA-256 of the raw public key) it was made with. Readers that set O(ignore:verify_keys) use a backup only
        when a key they trust signed it, so someone who can write to the bucket but has no backup host's key
        cannot forge or edit a manifest (docs/encryption.md).
      - The file's content is a secret; drkit reads it, never puts it on a command line or in a message. Mode
        C(0600) (or C(0400)), owned by the user that runs the backup; a file readable by group or others is
        refused.
      - Unset (the default), the manifest is not signed.
      - Falls back to the environment variable E(DRKIT_SIGNING_KEY_FILE).
    type: path
requirements:
  - cryptography (Python library on the managed host) when O(signing_key_file) is set
"""

    # drkit.backup.signing.verify: the options of core.signing.VERIFYING
    # (_ansible.verify_argument_spec)
    VERIFY = r"""
options:
  verify_keys:
    description:
      - Ed25519 public keys whose manifest signatures this task trusts. Each entry is a key (an
        C(ssh-ed25519 AAAA...) line, or a PEM public key as printed by C(openssl pkey -in signing.key -pubout)) or
        the path, on the managed host, of a file of them (C(#) comments allowed). List several keys during a key
        rotation.
      - When set, a backup whose manifest is not signed, is signed by another key, or was changed after it was
        signed does not count. Listing marks it (C(counted=false), C(signature_verified=false), the reason in
        C(doubts)); C(latest) passes over it (named in C(passed_over)); named by its id it is refused with an
        error naming the key ids; rotation never gives it a keep slot and never deletes it; a copy leaves it out.
      - Unset (the default), signatures are not checked (listing still shows C(signed_by)).
    type: list
    elements: str
requirements:
  - cryptography (Python library on the managed host) when O(verify_keys) is set
"""
