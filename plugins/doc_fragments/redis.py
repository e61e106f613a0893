# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or address of the Redis server.
    type: str
    default: localhost
  login_port:
    description:
      - Port of the Redis server, V(1) to V(65535).
    type: int
    default: 6379
  login_user:
    description:
      - ACL user (Redis 6+). Leave unset for the C(default) user / C(requirepass).
    type: str
  login_password:
    description:
      - Password of O(login_user), or the C(requirepass) password. If not given, the
        E(REDISCLI_AUTH) environment variable is used.
      - Sent only inside the C(AUTH) command on the connection; never on a command line,
        never in the task result.
    type: str
  tls:
    description:
      - Connect with TLS (the server's C(tls-port)).
    type: bool
    default: false
  tls_ca_cert:
    description:
      - CA certificate(s) (PEM) to check the server certificate against. Defaults to the system's CAs.
    type: path
  tls_cert:
    description:
      - Client certificate (PEM), for servers with C(tls-auth-clients yes). Needs O(tls_key).
    type: path
  tls_key:
    description:
      - Private key (PEM) of O(tls_cert).
    type: path
  tls_validate_certs:
    description:
      - Check the server certificate and that it names O(login_host). Turn off only for tests.
    type: bool
    default: true
  connect_timeout:
    description:
      - Seconds (more than 0; fractions allowed) to wait for the connection and for each reply.
    type: float
    default: 10
notes:
  - Talks to Redis with a small built-in client (RESP over a socket, TLS from Python's C(ssl)); no
    Redis Python library is needed on the managed host.
"""
