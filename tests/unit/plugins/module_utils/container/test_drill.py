# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""container/drill.py without a Docker Engine: what a container declares
and each gap as a finding, a compose file's depends_on conditions, and the
wait for a container to come back (a fake Engine and clock).
(tests/integration/test_container_drill.py runs the real thing.)"""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.container import drill as dd
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError


def info(policy="unless-stopped", health=True, mounts=None, env=None, path="postgres", args=(), image="postgres:15"):
    return {"Id": "c" * 64, "Path": path, "Args": list(args),
            "Config": {"Image": image, "Env": env or [], "Labels": {},
                       "Healthcheck": {"Test": ["CMD", "pg_isready"]} if health else None},
            "HostConfig": {"RestartPolicy": {"Name": policy, "MaximumRetryCount": 0}, "NetworkMode": "host"},
            "Mounts": mounts if mounts is not None else [
                {"Type": "volume", "Name": "pgdata", "Source": "/v/pgdata", "Destination": "/var/lib/postgresql/data"}],
            "State": {"Status": "running", "Running": True}}


def test_a_well_declared_postgres_container_has_no_findings():
    t = dd.inspect_target("agentic-postgres", None, info())
    assert t["kind"] == "postgres" and t["findings"] == []
    assert t["data_dir"] == "/var/lib/postgresql/data" and t["data_volume"]["name"] == "pgdata"


def test_each_gap_is_a_finding():
    t = dd.inspect_target("agentic-redis", None, info(policy="", health=False, mounts=[], path="redis-server",
                                                      args=["--dir", "/srv/redis"], image="redis:7"))
    assert t["kind"] == "redis" and t["data_dir"] == "/srv/redis"
    text = " | ".join(t["findings"])
    assert "agentic-redis has no restart policy: a crash leaves it down" in text
    assert "agentic-redis has no healthcheck" in text
    assert "keeps its data directory /srv/redis in the container's own layer" in text


def test_pgdata_an_anonymous_volume_and_on_failure_are_findings():
    anon = [{"Type": "volume", "Name": "a" * 64, "Destination": "/pg"}]
    t = dd.inspect_target("db", "postgres", info(policy="on-failure", mounts=anon, env=["PGDATA=/pg/data"]))
    assert t["data_dir"] == "/pg/data" and t["data_volume"]["anonymous"] is True
    assert any("anonymous volume" in f for f in t["findings"])
    assert any("restarts only on failure" in f for f in t["findings"])


def test_healthcheck_none_is_no_healthcheck():
    i = info()
    i["Config"]["Healthcheck"] = {"Test": ["NONE"]}
    assert dd.healthcheck_of(i) is None


def test_compose_depends_on_without_service_healthy_is_a_finding(tmp_path):
    path = tmp_path / "compose.yml"
    path.write_text("""
services:
  agentic-postgres:
    image: postgres:15
    restart: unless-stopped
    healthcheck: {test: ["CMD", "pg_isready"]}
  agentic-redis:
    image: redis:7
  l01-data-layer:
    depends_on:
      agentic-postgres: {condition: service_healthy}
      agentic-redis: {condition: service_started}
  l09-api-gateway:
    depends_on: [agentic-postgres]
""")
    findings, edges = dd.compose_findings(dd.load_compose(str(path)), ["agentic-postgres", "agentic-redis"])
    text = " | ".join(findings)
    assert "l09-api-gateway depends on agentic-postgres without condition: service_healthy" in text
    assert "l01-data-layer depends on agentic-redis without condition: service_healthy" in text
    assert "l01-data-layer depends on agentic-postgres" not in text
    assert "compose service agentic-redis declares restart: no (unset)" in text
    assert "compose service agentic-redis declares no healthcheck" in text
    assert {"service": "l09-api-gateway", "depends_on": "agentic-postgres", "condition": "service_started"} in edges


def test_a_bad_compose_file_names_the_option(tmp_path):
    (tmp_path / "bad.yml").write_text("services: [")
    with pytest.raises(ConfigError) as err:
        dd.load_compose(str(tmp_path / "bad.yml"))
    assert "compose_file %s is not valid YAML" % (tmp_path / "bad.yml") in str(err.value)


def test_a_crash_needs_the_docker_host():
    assert "on another host" in dd.crash_unsupported("tcp://192.0.2.1:2376")
    assert dd.crash_unsupported("unix:///var/run/docker.sock") is None


class FakeEngine(object):
    def __init__(self, states):
        self.states = list(states)

    def inspect_container(self, cid):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"Config": {"Healthcheck": {"Test": ["CMD", "true"]}}, "State": state}


class Clock(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_wait_recovered_needs_a_new_start_and_healthy_and_an_answer():
    old = {"Running": True, "StartedAt": "old", "Health": {"Status": "healthy"}}
    starting = {"Running": True, "StartedAt": "new", "Health": {"Status": "starting"}}
    healthy = {"Running": True, "StartedAt": "new", "Health": {"Status": "healthy"}}
    clock = Clock()
    res = dd.wait_recovered(FakeEngine([old, old, starting, healthy]), "c", "old", lambda: True, 60,
                            clock=clock, sleep=clock.sleep)
    assert res["recovered"] and res["healthy_seconds"] == pytest.approx(3 * dd.POLL)
    assert res["seconds"] == pytest.approx(3 * dd.POLL)


def test_a_container_that_stays_down_did_not_come_back():
    down = {"Running": False, "Status": "exited", "ExitCode": 137, "StartedAt": "old"}
    clock = Clock()
    res = dd.wait_recovered(FakeEngine([down]), "c", "old", lambda: True, 5, clock=clock, sleep=clock.sleep)
    assert res == {"recovered": False, "seconds": None, "healthy_seconds": None, "answers_seconds": None,
                   "state": "exited (exit code 137)"}


def test_docker_timestamps_with_nanoseconds_and_offsets():
    assert dd._docker_time("1970-01-01T00:00:10.5Z") == pytest.approx(10.5)
    assert dd._docker_time("2026-12-03T10:55:01.123456789Z") == pytest.approx(1796295301.123457, abs=1e-5)
    assert dd._docker_time("2026-12-03T11:55:01.5+01:00") == pytest.approx(1796295301.5)
    assert dd._docker_time("2026-12-03T10:55:01Z") == pytest.approx(1796295301.0)
    assert dd._docker_time("0001-01-01T00:00:00Z") is None and dd._docker_time("") is None


def health_log(*entries):
    return {"State": {"Health": {"Log": [{"Start": "1970-01-01T00:00:%02d.000000001Z" % start, "ExitCode": code}
                                         for start, code in entries]}}}


def test_a_dependent_reconnected_when_a_check_started_after_the_database_answered_passed():
    assert not dd.passed_check_after(health_log((5, 0), (9, 1)), since=8)  # the pass is from before
    assert dd.passed_check_after(health_log((5, 0), (9, 1), (11, 0)), since=8)
    assert not dd.passed_check_after({"State": {}}, since=0)


def test_wait_reconnected_times_each_dependent_and_gives_up_at_the_timeout():
    class Engine(object):
        def __init__(self):
            self.calls = 0

        def inspect_container(self, cid):
            self.calls += 1
            if cid == "gw" and self.calls > 4:
                return health_log((20, 0))
            return health_log((5, 0))
    clock = Clock()
    deps = [{"name": "gateway", "id": "gw", "healthcheck": True}, {"name": "stuck", "id": "st", "healthcheck": True},
            {"name": "blind", "id": "bl", "healthcheck": False}]
    res = dd.wait_reconnected(Engine(), deps, since=10, timeout=3, clock=clock, sleep=clock.sleep)
    assert res["gateway"] == pytest.approx(2 * dd.POLL) and res["stuck"] is None and "blind" not in res
    assert clock.t > 3  # waited for the stuck one until the timeout
