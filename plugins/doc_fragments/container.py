# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The database runs in a Docker container; names as community.docker's.
    DOCUMENTATION = r"""
options:
  container:
    description:
      - Name or id of the Docker container the database runs in. Its own client tools, those of the server's
        version, then run inside that container through the Docker Engine API (C(docker exec) with the Docker
        SDK for Python), their output streamed out of the exec's socket into the same pipeline; nothing is
        written inside the container and nothing is copied with C(docker cp).
      - M(drkit.backup.pg_backup) (C(mode=logical)) runs C(pg_dump) there; M(drkit.backup.pg_restore) and
        M(drkit.backup.pg_verify) (C(level=structure) or C(restore), logical backups) run C(pg_restore) there,
        fed through the exec's standard input; custom format and one job only. The tools
        connect to the same login host and port as drkit, which fits a container on the host network or one
        whose port is published under the same number. The password reaches them in the exec's environment
        (E(PGPASSWORD)), never a command line.
      - M(drkit.backup.redis_snapshot) (C(mode=rdb)) runs its BGSAVE over its own connection, then
        streams the saved RDB out of the container through the Engine's archive API, checked by the
        container's C(redis-check-rdb) on the way. With C(mode=aof) it reads the multi-part AOF's files
        through the same API (sizes taken while writes are paused, automatic rewrites off until they are
        copied) and checks the copy with the container's C(redis-check-aof), in a temp directory there
        that is removed afterwards. C(mode=remote) takes no container.
      - M(drkit.backup.redis_restore) places the backup into the container's data volume (the container is
        stopped first, only with its C(force=true)), honouring the AOF-wins trap, starts it
        again and compares the key counts; M(drkit.backup.redis_verify) loads the backup into a scratch
        container of the same image (see those modules).
      - A container that is missing, not running, paused, restarting or unhealthy (its healthcheck failing), or
        that lacks the tool, fails the task with a message naming it; nothing is written.
      - See C(docs/containers.md).
    type: str
  docker_host:
    description:
      - Address of the Docker Engine API, as in community.docker, for example C(unix:///var/run/docker.sock) or
        C(tcp://192.0.2.23:2376). If not set, the E(DOCKER_HOST) environment variable is used.
    type: str
    default: unix:///var/run/docker.sock
    aliases: [docker_url]
  docker_tls:
    description:
      - Use TLS to the Docker Engine without verifying its certificate. If not set, the E(DOCKER_TLS)
        environment variable is used. O(docker_tls_verify) also verifies it.
      - community.docker calls it C(tls); here that name is the Redis connection's.
    type: bool
    default: false
  docker_tls_verify:
    description:
      - Use TLS to the Docker Engine and verify its certificate, against O(ca_path) when given. If not set, the
        E(DOCKER_TLS_VERIFY) environment variable is used.
      - community.docker calls it C(validate_certs) (alias C(tls_verify)); here that name is the S3 storage's.
    type: bool
    default: false
  ca_path:
    description:
      - CA certificate (PEM) that signed the Docker Engine's certificate.
    type: path
    aliases: [ca_cert, cacert_path]
  client_cert:
    description:
      - Client certificate (PEM) for the Docker Engine; needs O(client_key).
    type: path
    aliases: [tls_client_cert, cert_path]
  client_key:
    description:
      - Key (PEM) of O(client_cert).
    type: path
    aliases: [tls_client_key, key_path]
requirements:
  - docker (the Docker SDK for Python) on the host that runs drkit, when O(container) is set
"""

    # The Engine connection alone, for commands that take many containers
    # (container_drill). A copy of the options above: ansible-test reads doc
    # fragments as plain string constants, so they cannot be composed.
    ENGINE = r"""
options:
  docker_host:
    description:
      - Address of the Docker Engine API, as in community.docker, for example C(unix:///var/run/docker.sock) or
        C(tcp://192.0.2.23:2376). If not set, the E(DOCKER_HOST) environment variable is used.
    type: str
    default: unix:///var/run/docker.sock
    aliases: [docker_url]
  docker_tls:
    description:
      - Use TLS to the Docker Engine without verifying its certificate. If not set, the E(DOCKER_TLS)
        environment variable is used. O(docker_tls_verify) also verifies it.
      - community.docker calls it C(tls); here that name is the Redis connection's.
    type: bool
    default: false
  docker_tls_verify:
    description:
      - Use TLS to the Docker Engine and verify its certificate, against O(ca_path) when given. If not set, the
        E(DOCKER_TLS_VERIFY) environment variable is used.
      - community.docker calls it C(validate_certs) (alias C(tls_verify)); here that name is the S3 storage's.
    type: bool
    default: false
  ca_path:
    description:
      - CA certificate (PEM) that signed the Docker Engine's certificate.
    type: path
    aliases: [ca_cert, cacert_path]
  client_cert:
    description:
      - Client certificate (PEM) for the Docker Engine; needs O(client_key).
    type: path
    aliases: [tls_client_cert, cert_path]
  client_key:
    description:
      - Key (PEM) of O(client_cert).
    type: path
    aliases: [tls_client_key, key_path]
requirements:
  - docker (the Docker SDK for Python) on the host that runs drkit
"""

    # where a test-restore of a database in a container runs (pg_verify, redis_verify)
    SCRATCH_VERIFY = r"""
options:
  verify_in:
    description:
      - With O(container), where the test-restore of O(level=restore) runs. V(scratch) - a scratch container of
        the container's image (its own server version), on the host network bound to 127.0.0.1 on a free port
        with a random password, removed afterwards, also on failure or SIGTERM; the container may be stopped,
        only its image is used. V(container) - inside the running container itself, which then bears the load
        of the backup (memory and CPU); only when asked.
    type: str
    default: scratch
    choices: [scratch, container]
  image:
    description:
      - Image of the scratch container. Default - the image of O(container). Set it when the container is gone
        (a rebuild) or to prove the backup restores with another server version.
    type: str
"""
