# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drill/container.py without an Engine: the refusal without confirmation,
the containers option, what Redis's persistence promises, the report."""

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.drill import container as dc
from ansible_collections.drkit.backup.plugins.module_utils.drill import report as rp


def test_scenarios_without_confirmation_are_refused_before_the_engine():
    # no Engine at this address: the refusal comes first
    with pytest.raises(ConfigError) as err:
        dc.container_drill({"containers": ["agentic-postgres"], "docker_host": "unix:///nonexistent.sock"})
    assert "runs them only with confirm: true" in str(err.value)
    assert "restart, crash, stop_start, cascade" in str(err.value)


def test_a_password_in_containers_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as err:
        dc._target_entry(0, {"name": "db", "login_password": "hunter2"})
    assert "passwords go in login_passwords" in str(err.value) and "hunter2" not in str(err.value) + err.value.hint


@pytest.mark.parametrize("raw, message", [
    ({"port": 5432}, "containers[0] has no name"),
    ({"name": "db", "kind": "mysql"}, "kind must be one of postgres, redis, other"),
    ({"name": "db", "port": 0}, "port must be 1-65535"),
    ({"name": "db", "host": "x"}, "unknown key(s) host"),
])
def test_bad_container_items_name_the_option(raw, message):
    with pytest.raises(ConfigError) as err:
        dc._target_entry(0, raw)
    assert message in str(err.value)


@pytest.mark.parametrize("conf, must_keep, settle, words", [
    ({"appendonly": "yes", "appendfsync": "always"}, True, 0.0, "every acknowledged write"),
    ({"appendonly": "yes", "appendfsync": "everysec"}, True, 1.5, "older than 1 s survives"),
    ({"appendonly": "no", "save": "3600 1"}, False, 0.0, "may lose up to the save interval"),
    ({"appendonly": "no", "save": ""}, False, 0.0, "a restart loses every key"),
    ({}, False, 0.0, "unknown"),
])
def test_redis_promise(conf, must_keep, settle, words):
    promise, keep, wait = dc.redis_promise(conf)
    assert keep is must_keep and wait == settle and words in promise


def test_the_report_says_what_was_not_shown_and_escapes_names():
    target = {"name": "db|<x>", "kind": "postgres", "restart_policy": "no", "healthcheck": False,
              "data_dir": "/d", "data_volume": None, "findings": ["db|<x> has no restart policy"]}
    scen = {"container": "db|<x>", "kind": "postgres", "scenario": "crash", "status": "failed",
            "reason": "did not come back within 5 s: exited (exit code 137)", "rto_seconds": None,
            "healthy_seconds": None, "answers_seconds": None, "marker": None}
    report = rp.build("Drill", "2026-01-01T00:00:00Z", "h", [target], {"file": None, "findings": [], "depends_on": []},
                      [scen], dc.not_shown([({"name": "db"}, {"HostConfig": {"NetworkMode": "host"}})], [target], None,
                                           ["crash"]),
                      inspect_only=False)
    assert report["passed"] is False and report["worst_rto_seconds"] is None
    assert "db|<x>, crash: did not come back" in " ".join(report["findings"])
    md = rp.markdown(report)
    assert "db\\|&lt;x&gt;" in md and "host network, which cannot be disconnected" in md
    assert "<x>" not in rp.html(report)
    assert rp.summary(report).endswith("scenarios: 1 FAILED")


def entry(**kw):
    out = dict((k, None) for k in dc.TARGET_KEYS)
    out.update(kw)
    return out


def test_markers_reach_the_server_by_the_published_port_and_the_password_by_service_name():
    info = {"Config": {"Labels": {"com.docker.compose.service": "db"}, "Image": "postgres:15"},
            "NetworkSettings": {"Ports": {"5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "15432"}]}}}
    m = dc.marker_for(entry(name="agentic-db-1", kind="postgres"), info, {"db": "s3cret"})
    assert isinstance(m, dc.PgMarker) and m.cp["port"] == 15432 and m.cp["login_password"] == "s3cret"
    assert m.cp["login_host"] == "127.0.0.1" and m.database == "postgres"
    r = dc.marker_for(entry(name="cache", kind="redis", port=7000), {"Config": {}}, None)
    assert isinstance(r, dc.RedisMarker) and r.cp["port"] == 7000 and r.cp["password"] is None
    assert dc.marker_for(entry(name="gw", kind="other"), {"Config": {}}, None) is None


def test_not_shown_names_what_the_drill_was_not_given():
    pairs = [({"name": "db"}, {"HostConfig": {"NetworkMode": "host"}})]
    db = {"name": "db", "kind": "postgres"}
    gateway = {"name": "gw", "kind": "other"}
    alone = dict((n["scenario"], n["reason"]) for n in dc.not_shown(pairs, [db], None, list(dc.SCENARIOS)))
    assert "add their containers with kind: other" in alone["dependent_failure"]
    assert "at least two containers" in alone["cascading_failure"]
    assert "a cold start needs at least two containers" in alone["startup_order"]
    given = dict((n["scenario"], n["reason"]) for n in dc.not_shown(pairs, [db, gateway], None, list(dc.SCENARIOS)))
    assert sorted(given) == ["network_partition"]
    unasked = dict((n["scenario"], n["reason"]) for n in dc.not_shown(pairs, [db, gateway], "c.yml", ["crash"]))
    assert unasked["cascading_failure"] == "not asked for (scenarios)"
    assert unasked["startup_order"] == ("checked by inspection of c.yml (depends_on conditions above); a cold start "
                                        "is not asked for (scenarios)")


def test_the_report_shows_each_dependents_reconnection():
    scen = {"container": "db", "kind": "postgres", "scenario": "crash", "status": "failed",
            "reason": "gw did not pass a healthcheck", "rto_seconds": 1.5, "healthy_seconds": 1.5,
            "answers_seconds": 1.2, "marker": None, "dependents": {"api": 2.25, "gw": None, "l01": "no healthcheck"}}
    text = rp._dependents_text(scen)
    assert text == "api 2.2 s; gw NOT reconnected; l01 no healthcheck" or text.startswith("api 2.")
    assert "gw NOT reconnected" in text and "l01 no healthcheck" in text
