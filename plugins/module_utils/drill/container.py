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
SCENARIOS = ("restart", "crash", "stop_start")
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


def not_shown(targets, compose_file):
    """The audit's scenarios this drill does not run, each with the reason."""
    host_net = all((info.get("HostConfig") or {}).get("NetworkMode") == "host" for _e, info in targets)
    partition = ("the containers use the host network, which cannot be disconnected from anything"
                 if host_net else
                 "a partition (docker network disconnect of a dependent on a bridge network) is not implemented "
                 "yet, and no machine of the test suite may create a bridge network to prove it")
    return [
        {"scenario": "network_partition", "reason": partition},
        {"scenario": "dependent_failure",
         "reason": "the drill takes no dependent services (the API gateway, the data layer) yet: their failure and "
                   "their reconnection after a database crash are not measured"},
        {"scenario": "cascading_failure",
         "reason": "needs dependent services to fail together with the databases; none are given to the drill"},
        {"scenario": "startup_order",
         "reason": ("checked by inspection of %s (depends_on conditions above); a cold start of the whole "
                    "project is not run" % compose_file) if compose_file else
         "no compose_file given: the depends_on conditions cannot be read, and a cold start is not run"},
    ]


def run_scenario(api, target, scenario, marker, p, clock=time.monotonic):
    """Cause one failure and measure the recovery."""
    name, cid = target["name"], target["id"]
    out = {"container": name, "kind": target["kind"], "scenario": scenario, "status": "passed", "reason": None,
           "rto_seconds": None, "healthy_seconds": None, "answers_seconds": None, "marker": None,
           "started_at": mf.isoformat(mf.utcnow()), "finished_at": None}
    if scenario == "crash":
        why = dd.crash_unsupported(p["docker_host"])
        if why:
            return dict(out, status="not_shown", reason=why)
    info = api.inspect_container(cid)
    problem = container_problem(name, info)
    if problem is None and marker is not None and not marker.probe():
        problem = ("%s does not answer on %s" % (name, _where(marker)), "")
    if problem:
        return dict(out, status="not_run", reason="not healthy before the failure: %s" % problem[0])
    token = secrets.token_hex(8)
    if marker is not None:
        try:
            marker.write(token, scenario)
        except Exception as e:  # pylint: disable=broad-except
            return dict(out, status="not_run", reason="could not write the marker: %s" % _first_line(e))
        out["marker"] = {"token": token, "promise": marker.promise, "must_keep": marker.must_keep}
        if marker.settle:
            time.sleep(marker.settle)
    stop_timeout = (info.get("Config") or {}).get("StopTimeout") or 10
    started = (info.get("State") or {}).get("StartedAt")
    probe = marker.probe if marker is not None else (lambda: True)
    t0 = clock()
    if scenario == "restart":
        dd.restart(api, cid, stop_timeout)
    elif scenario == "crash":
        try:
            out["killed_pid"] = dd.crash(api, cid)
        except SourceError as e:
            return dict(out, status="not_shown", reason=str(e))
    else:
        dd.stop_start(api, cid, stop_timeout)
    rec = dd.wait_recovered(api, cid, started, probe, p["recovery_timeout"], clock=clock, t0=t0)
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
        for target in targets:
            marker = markers[target["name"]]
            if marker is not None and marker.probe():
                marker.prepare()
            tokens = []
            try:
                for scenario in run:
                    res = run_scenario(api, target, scenario, marker, p)
                    scenarios.append(res)
                    if res.get("marker"):
                        tokens.append(res["marker"]["token"])
            finally:
                if marker is not None and (tokens or getattr(marker, "created_table", False)):
                    if marker.probe():
                        marker.cleanup(tokens)
                    else:
                        target["findings"].append("%s does not answer: the drill's marker(s) %s are left in it" % (
                            target["name"], ", ".join(tokens)))
            if marker is not None:
                target["persistence"] = marker.promise
    report = rp.build(p["title"], started_at, socket.gethostname(), targets, compose, scenarios,
                      not_shown(pairs, p["compose_file"]), inspect_only=check_mode or not run)
    paths = {}
    if p["report_dir"] and not check_mode:
        paths = rp.write(p["report_dir"], report)
    return bool(scenarios) or bool(paths), dict(report, paths=paths, msg=rp.summary(report))
