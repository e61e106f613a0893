# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""drkit.backup.container_drill: inspect database containers for what a
failure would cost, then (only when confirmed) cause the failures one at a
time and measure the recovery: seconds until the container is healthy and
the server answers again (RTO), and whether a marker written before the
failure (a row in PostgreSQL, a key in Redis) is still there, within what
the server's persistence promises.

The Docker side is container/drill.py; this file adds the databases (it sits
above pg and redis) and the report.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import secrets
import socket
import time

from ..container.client import DOCKER_ENGINE, container_problem, docker_settings, open_client
from ..container import drill as dd
from ..core.errors import ConfigError, DrkitError, SourceError
from ..core.options import Option, Options, resolve
from ..pg import client as pg_client
from ..redis import client as redis_client
from ..repo import manifest as mf
from . import report as rp

# The failures the drill causes; the audit's other scenarios are reported
# with the reason they are not shown (NOT_SHOWN).
SCENARIOS = ("restart", "crash", "stop_start", "cascade", "cold_start")
TOGETHER = ("cascade", "cold_start")  # once, on all the containers at the same time
KINDS = ("postgres", "redis", "other")
TARGET_KEYS = ("name", "kind", "login_host", "port", "login_user", "database")
PROBE_TIMEOUT = 3  # seconds for one probe connection: a slow answer is not yet an answer
MARKER_TABLE = "drkit_drill_marker"

OPTIONS = Options(
    DOCKER_ENGINE,
    Option("containers", "list", elements="raw", default=[]),
    Option("compose_project", "str"),
    Option("compose_file", "path"),
    Option("login_passwords", "dict", secret=True),
    Option("confirm", "bool", default=False),
    Option("scenarios", "list", elements="str", choices=SCENARIOS, default=list(SCENARIOS)),
    Option("recovery_timeout", "float", default=120, above=0),
    Option("report_dir", "path"),
    Option("title", "str", default="Container drill"),
)


# -- which containers, and how to reach their servers -----------------------


def _target_entry(i, raw):
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ConfigError("containers[%d] has no name" % i,
                          "Give each item as a container name, or a mapping with name (and kind, port, ...)")
    where = "containers[%d] (%s)" % (i, raw["name"])
    for key in raw:
        if "password" in key:
            raise ConfigError("%s has a %s: passwords go in login_passwords, which is kept out of logs" % (
                where, key), "Move it to login_passwords: {%s: ...}" % raw["name"])
    unknown = sorted(set(raw) - set(TARGET_KEYS))
    if unknown:
        raise ConfigError("%s: unknown key(s) %s" % (where, ", ".join(unknown)), "Use %s" % ", ".join(TARGET_KEYS))
    out = dict((k, raw.get(k)) for k in TARGET_KEYS)
    out["name"] = str(out["name"])
    if out["kind"] is not None and out["kind"] not in KINDS:
        raise ConfigError("%s: kind must be one of %s, got %r" % (where, ", ".join(KINDS), out["kind"]),
                          "Leave kind unset to guess it from the container's command and image")
    if out["port"] is not None:
        try:
            out["port"] = int(out["port"])
        except (TypeError, ValueError):
            out["port"] = 0
        if not 1 <= out["port"] <= 65535:
            raise ConfigError("%s: port must be 1-65535, got %r" % (where, raw.get("port")),
                              "The port where the server answers from this host")
    return out


def select_targets(p, api):
    """[(entry, docker inspect)] of the named containers and of the compose
    project's; an entry of ``containers`` whose name is a compose service
    applies to that service's container."""
    entries = [_target_entry(i, raw) for i, raw in enumerate(p["containers"] or [])]
    if not entries and not p["compose_project"]:
        raise ConfigError("container_drill needs containers or compose_project",
                          "Name the database containers, or the compose project they belong to")
    names = [e["name"] for e in entries]
    if p["compose_project"]:
        found = dd.project_containers(api, p["compose_project"])
        if not found:
            raise SourceError("No container carries the label %s=%s" % (dd.PROJECT_LABEL, p["compose_project"]),
                              "Check compose_project (docker ps -a --filter label=%s shows them)" % dd.PROJECT_LABEL)
        names = found + [n for n in names if n not in found]
    by_name = dict((e["name"], e) for e in entries)
    out, used = [], set()
    for name in names:
        info = dd.inspect_or_none(api, name)
        if info is None:
            if name in by_name and p["compose_project"]:
                continue  # a compose service's name, matched to its container below
            raise SourceError("Container %s does not exist on the Docker Engine at %s" % (name, p["docker_host"]),
                              "Check containers (docker ps -a lists names and ids) and docker_host")
        service = ((info.get("Config") or {}).get("Labels") or {}).get(dd.SERVICE_LABEL)
        entry = by_name.get(name) or by_name.get(service) or {"name": name}
        used.add(entry["name"])
        out.append((dict(entry, name=name), info))
    missing = [n for n in by_name if n not in used]
    if missing:
        raise SourceError("containers %s: neither a container nor a service of compose project %s" % (
            ", ".join(missing), p["compose_project"]), "Check the names (docker ps -a)")
    return out


def published_port(info, port):
    """The host port a bridge-networked container publishes ``port`` on, or None."""
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get("%d/tcp" % port) or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


# -- the databases: is it answering, and is the marker still there ------------


class PgMarker(object):
    """A row in <database>.public.drkit_drill_marker, committed with
    synchronous_commit on (what a committed transaction promises)."""

    kind = "postgres"

    def __init__(self, cp, database):
        self.cp = dict(cp, connect_timeout=PROBE_TIMEOUT)
        self.database = database
        self.created_table = False
        self.promise = "a committed transaction (synchronous_commit on) survives"
        self.must_keep = True
        self.settle = 0.0

    def _connect(self):
        return pg_client.connect(self.cp, self.database, autocommit=True)

    def probe(self):
        try:
            with self._connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except Exception:  # pylint: disable=broad-except
            return False  # not answering yet, whatever the reason

    def prepare(self):
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NULL", ("public." + MARKER_TABLE,))
            if cur.fetchone()[0]:
                cur.execute("CREATE TABLE public.%s (token text PRIMARY KEY, scenario text NOT NULL, "
                            "written_at timestamptz NOT NULL DEFAULT clock_timestamp())" % MARKER_TABLE)
                self.created_table = True

    def write(self, token, scenario):
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SET synchronous_commit = on")
            cur.execute("INSERT INTO public.%s (token, scenario) VALUES (%%s, %%s)" % MARKER_TABLE, (token, scenario))

    def check(self, token):
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.%s WHERE token = %%s" % MARKER_TABLE, (token,))
            return cur.fetchone()[0] == 1

    def cleanup(self, tokens):
        with self._connect() as conn, conn.cursor() as cur:
            if self.created_table:
                cur.execute("DROP TABLE IF EXISTS public.%s" % MARKER_TABLE)
            elif tokens:
                cur.execute("DELETE FROM public.%s WHERE token = ANY(%%s)" % MARKER_TABLE, (list(tokens),))


class RedisMarker(object):
    """A key drkit:drill:<token>; whether it must survive follows the
    server's persistence settings (appendonly, appendfsync, save)."""

    kind = "redis"

    def __init__(self, cp):
        self.cp = dict(cp, connect_timeout=PROBE_TIMEOUT)
        self.promise = "unknown"
        self.must_keep = False
        self.settle = 0.0
        self.persistence = {}

    def probe(self):
        try:
            with redis_client.connect(self.cp) as r:
                return r.call("PING") in (b"PONG", "PONG")
        except Exception:  # pylint: disable=broad-except
            return False

    def prepare(self):
        with redis_client.connect(self.cp) as r:
            try:
                conf = dict((k, r.config_get(k)) for k in ("appendonly", "appendfsync", "save"))
            except (redis_client.ReplyError, DrkitError):
                conf = {}
        self.persistence = conf
        self.promise, self.must_keep, self.settle = redis_promise(conf)

    def write(self, token, scenario):
        with redis_client.connect(self.cp) as r:
            r.call("SET", "drkit:drill:" + token, scenario)

    def check(self, token):
        with redis_client.connect(self.cp) as r:
            return r.call("EXISTS", "drkit:drill:" + token) == 1

    def cleanup(self, tokens):
        if tokens:
            with redis_client.connect(self.cp) as r:
                r.call("DEL", *["drkit:drill:" + t for t in tokens])


def redis_promise(conf):
    """(what Redis's persistence promises, whether a key written before the
    failure must survive it, seconds to wait after writing it)."""
    if not conf:
        return "unknown (CONFIG GET refused): a lost key is reported, not judged", False, 0.0
    if conf.get("appendonly") == "yes":
        if conf.get("appendfsync") == "always":
            return "AOF with appendfsync always: every acknowledged write survives", True, 0.0
        if conf.get("appendfsync") == "everysec":
            # everysec: a write older than a second has been written out
            return "AOF with appendfsync everysec: a write older than 1 s survives", True, 1.5
        return "AOF with appendfsync no: the kernel decides when writes reach the disk", False, 0.0
    if conf.get("save"):
        return ("RDB only (save %s): may lose up to the save interval" % conf["save"]), False, 0.0
    return "no persistence (appendonly no, save \"\"): a restart loses every key", False, 0.0


def marker_for(entry, info, passwords):
    kind = entry["kind"] or dd.guess_kind(info)
    host = entry["login_host"] or "127.0.0.1"
    service = ((info.get("Config") or {}).get("Labels") or {}).get(dd.SERVICE_LABEL)
    passwords = passwords or {}
    password = passwords.get(entry["name"]) or (passwords.get(service) if service else None)
    if kind == "postgres":
        port = entry["port"] or published_port(info, 5432) or 5432
        cp = pg_client.conn_params({"login_host": host, "port": port, "login_user": entry["login_user"] or "postgres",
                                    "login_password": password})
        return PgMarker(cp, entry["database"] or "postgres")
    if kind == "redis":
        port = entry["port"] or published_port(info, 6379) or 6379
        return RedisMarker(redis_client.conn_params({"login_host": host, "login_port": port,
                                                     "login_user": entry["login_user"], "login_password": password}))
    return None


# -- the scenarios ---------------------------------------------------------------


def not_shown(pairs, targets, compose_file, run):
    """The audit's scenarios this drill does not run, each with the reason."""
    host_net = all((info.get("HostConfig") or {}).get("NetworkMode") == "host" for _e, info in pairs)
    partition = ("the containers use the host network, which cannot be disconnected from anything"
                 if host_net else
                 "a partition (docker network disconnect of a dependent on a bridge network) is not implemented "
                 "yet, and no machine of the test suite may create a bridge network to prove it")
    out = [{"scenario": "network_partition", "reason": partition}]
    if not any(t["kind"] == "other" for t in targets):
        out.append({"scenario": "dependent_failure",
                    "reason": "no dependent service (the API gateway, the data layer) was given: add their "
                              "containers with kind: other to measure their failure and their reconnection after a "
                              "database failure"})
    if "cascade" not in run or len(targets) < 2:
        out.append({"scenario": "cascading_failure",
                    "reason": "not asked for (scenarios)" if "cascade" not in run else
                    "needs at least two containers (the databases and their dependents)"})
    if "cold_start" not in run or len(targets) < 2:
        out.append({"scenario": "startup_order",
                    "reason": ("checked by inspection of %s (depends_on conditions above)" % compose_file
                               if compose_file else "no compose_file given: depends_on conditions not read") +
                    ("; a cold start is not asked for (scenarios)" if "cold_start" not in run else
                     "; a cold start needs at least two containers")})
    return out


def _row(target, scenario):
    return {"container": target["name"], "kind": target["kind"], "scenario": scenario, "status": "passed",
            "reason": None, "rto_seconds": None, "healthy_seconds": None, "answers_seconds": None, "marker": None,
            "dependents": None, "started_at": mf.isoformat(mf.utcnow()), "finished_at": None}


def _before(api, target, scenario, marker):
    """Check the container is healthy and answering, write the marker.
    Returns (row, token, info), or (finished row, None, None) when the
    scenario cannot run on it."""
    out = _row(target, scenario)
    info = api.inspect_container(target["id"])
    problem = container_problem(target["name"], info)
    if problem is None and marker is not None and not marker.probe():
        problem = ("%s does not answer on %s" % (target["name"], _where(marker)), "")
    if problem:
        return dict(out, status="not_run", reason="not healthy before the failure: %s" % problem[0]), None, None
    token = secrets.token_hex(8)
    if marker is not None:
        try:
            marker.write(token, scenario)
        except Exception as e:  # pylint: disable=broad-except
            return dict(out, status="not_run", reason="could not write the marker: %s" % _first_line(e)), None, None
        out["marker"] = {"token": token, "promise": marker.promise, "must_keep": marker.must_keep}
    return out, token, info


def _after(api, target, out, info, token, marker, p, t0, clock):
    """Wait until the container is back, then check the marker."""
    started = (info.get("State") or {}).get("StartedAt")
    probe = marker.probe if marker is not None else (lambda: True)
    rec = dd.wait_recovered(api, target["id"], started, probe, p["recovery_timeout"], clock=clock, t0=t0)
    out.update(rto_seconds=rec["seconds"], healthy_seconds=rec["healthy_seconds"],
               answers_seconds=rec["answers_seconds"], state_after=rec["state"],
               finished_at=mf.isoformat(mf.utcnow()))
    if not rec["recovered"]:
        out.update(status="failed", reason="did not come back within %g s: %s, restart policy %s" % (
            p["recovery_timeout"], rec["state"], target["restart_policy"]))
        return out
    if marker is not None:
        try:
            kept = marker.check(token)
        except Exception as e:  # pylint: disable=broad-except
            out["marker"]["kept"] = None
            out.update(status="failed", reason="back, but the marker could not be read: %s" % _first_line(e))
            return out
        out["marker"]["kept"] = kept
        if not kept:
            out["reason"] = "the %s written before the failure is gone (%s)" % (
                "row" if marker.kind == "postgres" else "key", marker.promise)
            if marker.must_keep:
                out["status"] = "failed"
    return out


def _reconnection(api, rows, dependents, since, p, t0, clock):
    """After databases failed and answered again at ``since`` (epoch): the
    seconds until each dependent's healthcheck passed again, on every row;
    a dependent that did not reconnect fails the rows."""
    if not dependents or not any(r["kind"] in ("postgres", "redis") and r["status"] == "passed" for r in rows):
        return
    seen = dd.wait_reconnected(api, dependents, since, p["recovery_timeout"], clock=clock, t0=t0)
    lost = sorted(name for name, seconds in seen.items() if seconds is None)
    blind = sorted(d["name"] for d in dependents if not d["healthcheck"])
    for out in rows:
        if out["kind"] not in ("postgres", "redis") or out["status"] != "passed":
            continue
        out["dependents"] = dict(seen, **dict((name, "no healthcheck") for name in blind))
        if lost:
            out.update(status="failed", reason="%s did not pass a healthcheck within %g s after %s answered "
                       "again: it does not reconnect" % (", ".join(lost), p["recovery_timeout"], out["container"]))


def run_scenario(api, target, scenario, marker, p, dependents=(), clock=time.monotonic):
    """Cause one failure of one container and measure the recovery; for a
    database, also until the ``dependents`` reconnected."""
    if scenario == "crash":
        why = dd.crash_unsupported(p["docker_host"])
        if why:
            return dict(_row(target, scenario), status="not_shown", reason=why)
    out, token, info = _before(api, target, scenario, marker)
    if token is None:
        return out
    if marker is not None and marker.settle:
        time.sleep(marker.settle)
    stop_timeout = (info.get("Config") or {}).get("StopTimeout") or 10
    t0 = clock()
    if scenario == "restart":
        dd.restart(api, target["id"], stop_timeout)
    elif scenario == "crash":
        try:
            out["killed_pid"] = dd.crash(api, target["id"])
        except SourceError as e:
            return dict(out, status="not_shown", reason=str(e))
    else:
        dd.stop_start(api, target["id"], stop_timeout)
    _after(api, target, out, info, token, marker, p, t0, clock)
    _reconnection(api, [out], [d for d in dependents if d["name"] != target["name"]], time.time(), p, t0, clock)
    return out


def _together(api, targets, markers, scenario, cause, p, clock):
    """A failure of every given container at once: markers written,
    ``cause(live, clock)`` fails them all and returns the moment the RTOs
    count from, then each recovery and the dependents' reconnection. One
    row per container."""
    rows, live = [], []
    for target in targets:
        out, token, info = _before(api, target, scenario, markers.get(target["name"]))
        rows.append(out)
        if token is not None:
            live.append((target, out, token, info))
    if len(live) < 2:
        for out in rows:
            if out["status"] == "passed":
                out.update(status="not_run", reason="%s needs at least two healthy containers; %d is" % (
                    scenario, len(live)))
        return rows
    time.sleep(max([markers[t["name"]].settle for t, _o, _k, _i in live if markers.get(t["name"])] + [0.0]))
    t0 = cause(live, clock)
    for target, out, token, info in live:
        if out["status"] == "passed":
            _after(api, target, out, info, token, markers.get(target["name"]), p, t0, clock)
    _reconnection(api, rows, [t for t in targets if t["kind"] == "other"], time.time(), p, t0, clock)
    return rows


def run_cascade(api, targets, markers, p, clock=time.monotonic):
    """The audit's cascading failure: every given container (databases and
    their dependents) crashes at once, SIGKILL of each main process."""
    why = dd.crash_unsupported(p["docker_host"])
    if why:
        return [dict(_row(t, "cascade"), status="not_shown", reason=why) for t in targets]

    def kill_all(live, clock):
        t0 = clock()
        for target, out, _token, _info in live:
            try:
                out["killed_pid"] = dd.crash(api, target["id"])
            except SourceError as e:
                out.update(status="not_shown", reason=str(e))
        return t0
    return _together(api, targets, markers, "cascade", kill_all, p, clock)


def run_cold_start(api, targets, markers, p, clock=time.monotonic):
    """The audit's startup order, the hard way: every given container stopped,
    then started dependents first and databases last, as a Docker host's
    reboot may do it (the Engine starts containers by restart policy and never
    reads depends_on; only ``docker compose up`` does). The RTOs count from
    the first start."""
    def stop_then_start(live, clock):
        for target, _out, _token, info in live:
            api.stop(target["id"], timeout=(info.get("Config") or {}).get("StopTimeout") or 10)
        t0 = clock()
        for target, _out, _token, _info in sorted(live, key=lambda item: item[0]["kind"] != "other"):
            api.start(target["id"])
        return t0
    return _together(api, targets, markers, "cold_start", stop_then_start, p, clock)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _where(marker):
    cp = marker.cp
    return "%s:%s" % (cp.get("login_host") or cp.get("host"), cp.get("port"))


def container_drill(params, check_mode=False):
    """Engine entry point of drkit.backup.container_drill; (changed, result)."""
    p = resolve(OPTIONS, params)
    run = []
    for scenario in p["scenarios"] or []:
        if scenario not in run:
            run.append(scenario)
    if run and not check_mode and not p["confirm"]:
        raise ConfigError(
            "container_drill restarts, kills and stops the containers it is given (scenarios: %s); it runs them "
            "only with confirm: true" % ", ".join(run),
            "Set confirm: true (playbooks/container_drill.yml: -e drill_confirm=yes) when an outage of these "
            "containers is acceptable now; check mode or scenarios: [] only inspects")
    api = open_client(docker_settings(params))
    started_at = mf.isoformat(mf.utcnow())
    pairs = select_targets(p, api)
    targets = [dd.inspect_target(entry["name"], entry["kind"], info) for entry, info in pairs]
    compose = {"file": p["compose_file"], "findings": [], "depends_on": []}
    if p["compose_file"]:
        services = dd.load_compose(p["compose_file"])
        wanted = [t["compose_service"] or t["name"] for t in targets]
        compose["findings"], compose["depends_on"] = dd.compose_findings(services, wanted)
    scenarios = []
    markers = {}
    if run and not check_mode:
        for (entry, info), target in zip(pairs, targets):
            markers[target["name"]] = marker_for(dict(entry, kind=target["kind"]), info, p["login_passwords"])
        dependents = [t for t in targets if t["kind"] == "other"]
        tokens = dict((t["name"], []) for t in targets)
        try:
            for target in targets:
                marker = markers[target["name"]]
                if marker is not None and marker.probe():
                    marker.prepare()
            for target in targets:
                for scenario in run:
                    if scenario not in TOGETHER:
                        scenarios.append(run_scenario(api, target, scenario, markers[target["name"]], p,
                                                      dependents=dependents))
            if "cascade" in run:
                scenarios.extend(run_cascade(api, targets, markers, p))
            if "cold_start" in run:
                scenarios.extend(run_cold_start(api, targets, markers, p))
        finally:
            for res in scenarios:
                if res.get("marker"):
                    tokens[res["container"]].append(res["marker"]["token"])
            for target in targets:
                marker = markers[target["name"]]
                if marker is not None and (tokens[target["name"]] or getattr(marker, "created_table", False)):
                    if marker.probe():
                        marker.cleanup(tokens[target["name"]])
                    else:
                        target["findings"].append("%s does not answer: the drill's marker(s) %s are left in it" % (
                            target["name"], ", ".join(tokens[target["name"]])))
                if marker is not None:
                    target["persistence"] = marker.promise
    report = rp.build(p["title"], started_at, socket.gethostname(), targets, compose, scenarios,
                      not_shown(pairs, targets, p["compose_file"], run), inspect_only=check_mode or not run)
    paths = {}
    if p["report_dir"] and not check_mode:
        paths = rp.write(p["report_dir"], report)
    return bool(scenarios) or bool(paths), dict(report, paths=paths, msg=rp.summary(report))
