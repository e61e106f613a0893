# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Databases that run in Docker containers: the connection to the Docker
Engine through the Docker SDK for Python (the ``docker`` package), with its
options named as community.docker names them, and the one rule for when a
container can take a tool (running, not paused or restarting, not unhealthy).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..core.errors import ConfigError, SourceError
from ..core.options import Option, resolve

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT = 60  # seconds for one Engine API call; exec streams have no timeout

CONTAINER = Option(
    "container", "str", flags=("--container",),
    help="name or id of the Docker container the database runs in: its own client tools run inside it "
         "through the Docker Engine API")
# community.docker's names, aliases and environment variables (docker_host,
# ca_path, client_cert, client_key), except for two that other options of the same
# commands already hold (validate_certs: the S3 storage's; tls, tls_ca_cert:
# Redis's): those are docker_tls and docker_tls_verify, after their environment
# variables. The flags carry a docker- prefix: --ca-path alone would read as the
# database's or the storage's.
DOCKER = (
    CONTAINER,
    Option("docker_host", "str", default=DEFAULT_DOCKER_HOST, aliases=("docker_url",), env=("DOCKER_HOST",),
           flags=("--docker-host",), help="Docker Engine API address (default %s)" % DEFAULT_DOCKER_HOST),
    Option("docker_tls", "bool", default=False, env=("DOCKER_TLS",), flags=("--docker-tls",),
           help="TLS to the Docker Engine, without verifying its certificate"),
    Option("docker_tls_verify", "bool", default=False, env=("DOCKER_TLS_VERIFY",), flags=("--docker-tls-verify",),
           help="TLS to the Docker Engine, verifying its certificate"),
    Option("ca_path", "path", aliases=("ca_cert", "cacert_path"), flags=("--docker-ca-path",),
           help="CA certificate that signed the Docker Engine's certificate"),
    Option("client_cert", "path", aliases=("tls_client_cert", "cert_path"), flags=("--docker-client-cert",),
           help="client certificate for the Docker Engine"),
    Option("client_key", "path", aliases=("tls_client_key", "key_path"), no_log=False,
           flags=("--docker-client-key",), help="key of client_cert"),
)
DOCKER_KEYS = tuple(o.name for o in DOCKER)
# Where a test-restore of a database in a container runs (pg_verify, redis_verify).
VERIFY_IN = ("scratch", "container")
SCRATCH_VERIFY = (
    Option("verify_in", "str", default="scratch", choices=VERIFY_IN, flags=("--verify-in",),
           help="with container: test-restore in a scratch container of its image (default), or inside "
                "the container itself"),
    Option("image", "str", flags=("--image",),
           help="with container: image of the scratch container (default: the container's own)"),
)
# the Engine connection alone, for commands that take many containers (container_drill)
DOCKER_ENGINE = DOCKER[1:]


def _docker():
    try:
        import docker  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("container needs the Python library docker (the Docker SDK for Python)",
                          "Install it (pip install docker) in the Python that runs drkit")
    return docker


def docker_settings(params):
    """The Docker options out of a command's parameters, resolved and checked
    against each other (certificate files exist, a client certificate comes
    with its key)."""
    p = resolve(DOCKER, params)
    s = dict((k, p[k]) for k in DOCKER_KEYS)
    if bool(s["client_cert"]) != bool(s["client_key"]):
        raise ConfigError("client_cert and client_key go together; only %s is set" % (
            "client_cert" if s["client_cert"] else "client_key"), "Set both, or neither")
    for name in ("ca_path", "client_cert", "client_key"):
        if s[name] and not os.path.isfile(s[name]):
            raise ConfigError("%s %s is not a file" % (name, s[name]), "Point %s at the PEM file" % name)
    return s


def tls_config(s):
    """docker.tls.TLSConfig for the settings, or False (plain connection):
    community.docker's meaning: ``docker_tls`` (its ``tls``) encrypts,
    ``docker_tls_verify`` (its ``validate_certs``) also verifies, against
    ca_path when given."""
    if not (s["docker_tls"] or s["docker_tls_verify"] or s["client_cert"]):
        return False
    from docker.tls import TLSConfig  # pylint: disable=import-outside-toplevel
    cert = (s["client_cert"], s["client_key"]) if s["client_cert"] else None
    return TLSConfig(client_cert=cert, ca_cert=s["ca_path"] if s["docker_tls_verify"] else None,
                     verify=bool(s["docker_tls_verify"]))


def open_client(s):
    """A docker.APIClient for the settings; SourceError naming docker_host
    when the Engine does not answer."""
    docker = _docker()
    try:
        tls = tls_config(s)
        # version="auto" asks the Engine for its API version: the reachability check.
        return docker.APIClient(base_url=s["docker_host"], tls=tls, version="auto", timeout=API_TIMEOUT)
    except docker.errors.TLSParameterError as e:
        raise ConfigError("Docker TLS settings: %s" % e,
                          "Check docker_tls, docker_tls_verify, ca_path, client_cert, client_key")
    except docker.errors.DockerException as e:
        raise SourceError("Cannot reach the Docker Engine at %s: %s" % (s["docker_host"], _first_line(e)),
                          "Check docker_host (or DOCKER_HOST) and that dockerd runs and this user may use "
                          "its socket")


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def container_problem(name, info):
    """Why the container described by ``info`` (docker inspect) cannot take a
    tool now, as (message, hint), or None when it can. A healthcheck that is
    still starting is no problem: the database connection says whether the
    server answers."""
    state = info.get("State") or {}
    status = state.get("Status") or "unknown"
    if state.get("Paused"):
        return ("Container %s is paused" % name, "Unpause it (docker unpause %s) and run again" % name)
    if state.get("Restarting"):
        return ("Container %s is restarting (exit code %s)" % (name, state.get("ExitCode")),
                "It keeps failing: read docker logs %s, fix it, and run again" % name)
    if not state.get("Running"):
        return ("Container %s is not running (status %s, exit code %s)" % (name, status, state.get("ExitCode")),
                "Start it (docker start %s) and run again" % name)
    health = state.get("Health") or {}
    if health.get("Status") == "unhealthy":
        log = health.get("Log") or [{}]
        last = (log[-1].get("Output") or "").strip().splitlines()
        return ("Container %s is unhealthy: its healthcheck failed %s time(s) in a row%s" % (
            name, health.get("FailingStreak", "?"), " (last output: %s)" % last[-1][:300] if last else ""),
            "Fix the container first (docker inspect %s shows the health log); drkit does not back up "
            "or restore a database its own healthcheck calls broken" % name)
    return None


def inspect_any(client, name, docker_host):
    """docker inspect of ``name`` in any state (a restore target may be
    stopped or never started); SourceError naming the container (and the
    Engine) when it is missing."""
    docker = _docker()
    try:
        return client.inspect_container(name)
    except docker.errors.NotFound:
        raise SourceError("Container %s does not exist on the Docker Engine at %s" % (name, docker_host),
                          "Check the container option (docker ps -a lists names and ids) and docker_host")
    except docker.errors.DockerException as e:
        raise SourceError("Cannot inspect container %s at %s: %s" % (name, docker_host, _first_line(e)),
                          "Check docker_host and that this user may use the Docker Engine")


def inspect_container(client, name, docker_host):
    """docker inspect of ``name``, checked by container_problem; SourceError
    naming the container (and the Engine) otherwise."""
    info = inspect_any(client, name, docker_host)
    problem = container_problem(name, info)
    if problem:
        raise SourceError(*problem)
    return info
