# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""container/client.py without a Docker Engine: when a container can take
a tool (container_problem), the Docker options (community.docker's names,
aliases and environment), TLS settings, and an Engine that does not answer.
(tests/integration/test_containers.py runs the real thing.)"""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.container import client
from ansible_collections.drkit.backup.plugins.module_utils.container.client import (
    container_problem,
    docker_settings,
    open_client,
    tls_config,
)
from ansible_collections.drkit.backup.plugins.module_utils.container.runner import open_runner
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError, SourceError
from ansible_collections.drkit.backup.plugins.module_utils.core.process import LocalRunner

RUNNING = {"Status": "running", "Running": True, "Paused": False, "Restarting": False, "ExitCode": 0}


def state(**changes):
    return {"State": dict(RUNNING, **changes)}


@pytest.mark.parametrize("info, words", [
    (state(Status="exited", Running=False, ExitCode=137), ["Container db is not running (status exited, exit code 137)",
                                                           "docker start db"]),
    (state(Status="created", Running=False), ["Container db is not running (status created"]),
    (state(Status="paused", Paused=True), ["Container db is paused", "docker unpause db"]),
    (state(Status="restarting", Restarting=True, ExitCode=1), ["Container db is restarting (exit code 1)",
                                                               "docker logs db"]),
    (state(Health={"Status": "unhealthy", "FailingStreak": 4,
                   "Log": [{"Output": "ok"}, {"Output": "no response\nconnection refused\n"}]}),
     ["Container db is unhealthy: its healthcheck failed 4 time(s) in a row (last output: connection refused)",
      "docker inspect db"]),
    (state(Health={"Status": "unhealthy", "FailingStreak": 1, "Log": []}),
     ["Container db is unhealthy: its healthcheck failed 1 time(s) in a row", "health log"]),
])
def test_a_container_that_cannot_take_a_tool_is_named_with_what_to_do(info, words):
    message, hint = container_problem("db", info)
    for word in words:
        assert word in message + " / " + hint


@pytest.mark.parametrize("health", [None, {"Status": "healthy"}, {"Status": "starting"}])
def test_a_running_container_that_is_not_unhealthy_can(health):
    info = state(Health=health) if health else state()
    assert container_problem("db", info) is None


@pytest.fixture
def no_docker_env(monkeypatch):
    for var in ("DOCKER_HOST", "DOCKER_TLS", "DOCKER_TLS_VERIFY"):
        monkeypatch.delenv(var, raising=False)


def test_docker_options_default_and_aliases_as_community_docker(no_docker_env, monkeypatch):
    s = docker_settings({"container": "db"})
    assert s == {"container": "db", "docker_host": "unix:///var/run/docker.sock", "docker_tls": False,
                 "docker_tls_verify": False, "ca_path": None, "client_cert": None, "client_key": None}
    assert docker_settings({"docker_url": "tcp://h:2376"})["docker_host"] == "tcp://h:2376"
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    assert docker_settings({})["docker_tls_verify"] is True
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")
    assert docker_settings({})["docker_host"] == "unix:///run/other.sock"
    assert docker_settings({"docker_host": "unix:///given.sock"})["docker_host"] == "unix:///given.sock"


def test_a_client_cert_needs_its_key_and_files_must_exist(tmp_path, no_docker_env):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError) as err:
        docker_settings({"client_cert": str(cert)})
    assert "client_cert and client_key go together; only client_cert is set" in str(err.value)
    with pytest.raises(ConfigError) as err:
        docker_settings({"docker_tls_verify": True, "ca_path": str(tmp_path / "nope.pem")})
    assert "ca_path %s is not a file" % (tmp_path / "nope.pem") in str(err.value)


def test_tls_follows_community_docker(tmp_path, no_docker_env):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert tls_config(docker_settings({})) is False
    plain = tls_config(docker_settings({"docker_tls": True, "ca_path": str(ca)}))
    assert plain.verify is False and plain.ca_cert is None
    verified = tls_config(docker_settings({"docker_tls_verify": True, "ca_path": str(ca)}))
    assert verified.verify == str(ca) or (verified.verify and verified.ca_cert == str(ca))


def test_an_engine_that_does_not_answer_names_docker_host(tmp_path, no_docker_env):
    host = "unix://%s" % (tmp_path / "no.sock")
    with pytest.raises(SourceError) as err:
        open_client(docker_settings({"docker_host": host}))
    assert "Cannot reach the Docker Engine at %s" % host in str(err.value)
    assert "docker_host" in err.value.hint


def test_without_a_container_tools_run_locally(no_docker_env):
    assert isinstance(open_runner({"container": None}), LocalRunner)
    assert isinstance(open_runner({}), LocalRunner)


def test_the_docker_options_are_the_registry_s():
    assert client.DOCKER_KEYS == ("container", "docker_host", "docker_tls", "docker_tls_verify", "ca_path",
                                  "client_cert", "client_key")
