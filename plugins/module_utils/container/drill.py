# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker side of the container drill (drkit.backup.container_drill):
what a database container declares (restart policy, healthcheck, the volume
under its data directory, a compose file's ``depends_on`` conditions), the
failures the drill causes (docker restart, SIGKILL of the main process,
stop/start) and the wait until the container is back.

Nothing here knows PostgreSQL or Redis beyond their data directories: the
caller (drill/container.py) passes a ``probe`` that says whether the server
answers, and writes and checks its markers itself.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import signal
import time

from ..core.errors import ConfigError, SourceError
from .client import _docker

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
# PGDATA of the official postgres image and of Debian's; Redis's images use /data
DEFAULT_DATA_DIRS = {"postgres": "/var/lib/postgresql/data", "redis": "/data"}
SAFE_RESTART = ("always", "unless-stopped")
POLL = 0.2


# -- what the container declares ----------------------------------------


def guess_kind(info):
    """postgres, redis or other, from the main process's command, then the image."""
    config = info.get("Config") or {}
    command = " ".join([info.get("Path") or ""] + list(info.get("Args") or []))
    for text in (command, config.get("Image") or ""):
        low = text.lower()
        if "redis-server" in low or ("redis" in low and "postgres" not in low):
            return "redis"
        if "postgres" in low:
            return "postgres"
    return "other"


def _env(info):
    out = {}
    for item in (info.get("Config") or {}).get("Env") or []:
        key, _sep, value = item.partition("=")
        out[key] = value
    return out


def data_dir(kind, info):
    """The server's data directory inside the container: PGDATA (else the
    images' default) for PostgreSQL; ``--dir`` on redis-server's command line
    (else /data) for Redis; None for anything else."""
    if kind == "postgres":
        return _env(info).get("PGDATA") or DEFAULT_DATA_DIRS["postgres"]
    if kind == "redis":
        args = list(info.get("Args") or [])
        words = " ".join([info.get("Path") or ""] + args).split()
        for i, word in enumerate(words[:-1]):
            if word == "--dir":
                return words[i + 1].strip("'\"")
        return DEFAULT_DATA_DIRS["redis"]
    return None


def mount_for(info, path):
    """The mount that holds ``path`` (its own or a parent directory's), or None."""
    best = None
    for m in info.get("Mounts") or []:
        dest = (m.get("Destination") or "").rstrip("/") or "/"
        if path == dest or path.startswith(dest.rstrip("/") + "/"):
            if best is None or len(dest) > len(best["Destination"].rstrip("/")):
                best = m
    return best


def _anonymous(mount):
    name = mount.get("Name") or ""
    return mount.get("Type") == "volume" and len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def healthcheck_of(info):
    """The container's healthcheck test, or None when it has none (or NONE)."""
    hc = (info.get("Config") or {}).get("Healthcheck") or {}
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    return test


def inspect_target(name, kind, info):
    """What the container declares, and each gap as a finding (one sentence
    that says what it costs)."""
    kind = kind or guess_kind(info)
    host = info.get("HostConfig") or {}
    policy = (host.get("RestartPolicy") or {}).get("Name") or "no"
    retries = (host.get("RestartPolicy") or {}).get("MaximumRetryCount") or 0
    findings = []
    if policy == "no":
        findings.append("%s has no restart policy: a crash leaves it down until someone starts it" % name)
    elif policy == "on-failure":
        findings.append("%s restarts only on failure%s: it stays down after a reboot of the Docker host; "
                        "use unless-stopped" % (name, " (at most %d times)" % retries if retries else ""))
    health = healthcheck_of(info)
    if health is None:
        findings.append("%s has no healthcheck: dependents cannot wait for it (condition: service_healthy) and "
                        "a starting server looks ready" % name)
    directory = data_dir(kind, info)
    mount = mount_for(info, directory) if directory else None
    volume = None
    if directory and mount is None:
        findings.append("%s keeps its data directory %s in the container's own layer: removing or recreating the "
                        "container (docker compose up after an image change) loses the data; put it on a named "
                        "volume" % (name, directory))
    elif mount is not None:
        volume = {"type": mount.get("Type"), "name": mount.get("Name"), "source": mount.get("Source"),
                  "destination": mount.get("Destination"), "anonymous": _anonymous(mount)}
        if volume["anonymous"]:
            findings.append("%s keeps %s on an anonymous volume: docker compose down -v or docker rm -v deletes "
                            "it with the container; use a named volume" % (name, directory))
    state = info.get("State") or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    return {
        "name": name, "id": info.get("Id"), "kind": kind, "image": (info.get("Config") or {}).get("Image"),
        "status": state.get("Status"), "health": (state.get("Health") or {}).get("Status"),
        "restart_policy": policy, "healthcheck": health is not None, "data_dir": directory, "data_volume": volume,
        "network_mode": host.get("NetworkMode"), "compose_service": labels.get(SERVICE_LABEL),
        "compose_project": labels.get(PROJECT_LABEL), "findings": findings,
    }


def inspect_or_none(api, name):
    """docker inspect of ``name``, or None when there is no such container."""
    try:
        return api.inspect_container(name)
    except _docker().errors.NotFound:
        return None


def project_containers(api, project):
    """Names of the containers of a compose project (found by its label), sorted."""
    found = api.containers(all=True, filters={"label": "%s=%s" % (PROJECT_LABEL, project)})
    return sorted(c["Names"][0].lstrip("/") for c in found if c.get("Names"))


# -- the compose file --------------------------------------------------------


def load_compose(path):
    import yaml  # pylint: disable=import-outside-toplevel
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except (IOError, OSError) as e:
        raise ConfigError("compose_file %s cannot be read: %s" % (path, e), "Point compose_file at the compose file")
    except yaml.YAMLError as e:
        raise ConfigError("compose_file %s is not valid YAML: %s" % (path, str(e).splitlines()[0]),
                          "Check it with docker compose config")
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ConfigError("compose_file %s has no services mapping" % path, "Point compose_file at the compose file")
    return doc["services"]


def _depends(spec):
    """depends_on in either syntax as {service: condition}."""
    dep = spec.get("depends_on") or {}
    if isinstance(dep, list):
        return dict((str(d), None) for d in dep)
    if isinstance(dep, dict):
        return dict((str(k), (v or {}).get("condition") if isinstance(v, dict) else None) for k, v in dep.items())
    return {}


def compose_findings(services, databases):
    """Gaps in a compose file: a database service without restart policy or
    healthcheck, and every dependent that does not wait for a database to be
    healthy. ``databases``: the services (or container_names) drilled.
    Returns (findings, [{service, depends_on, condition}])."""
    findings, edges = [], []
    by_name = {}
    for svc, spec in services.items():
        spec = spec if isinstance(spec, dict) else {}
        by_name[svc] = svc
        if spec.get("container_name"):
            by_name[str(spec["container_name"])] = svc
    wanted = set(by_name.get(d, d) for d in databases)
    for svc in sorted(wanted & set(services)):
        spec = services[svc] if isinstance(services[svc], dict) else {}
        if str(spec.get("restart") or "no") not in SAFE_RESTART:
            findings.append("compose service %s declares restart: %s; use unless-stopped" % (
                svc, spec.get("restart") or "no (unset)"))
        hc = spec.get("healthcheck") or {}
        if not hc or hc.get("disable") or (hc.get("test") or [None])[0] == "NONE":
            findings.append("compose service %s declares no healthcheck: condition: service_healthy cannot work "
                            "for its dependents" % svc)
    for svc, spec in sorted(services.items()):
        for dep, condition in sorted(_depends(spec if isinstance(spec, dict) else {}).items()):
            edges.append({"service": svc, "depends_on": dep, "condition": condition or "service_started"})
            if dep in wanted and condition != "service_healthy":
                findings.append("compose service %s depends on %s without condition: service_healthy: it starts "
                                "as soon as the container does, before the database accepts connections" % (
                                    svc, dep))
    return findings, edges


# -- failures ----------------------------------------------------------------


def restart(api, cid, stop_timeout):
    api.restart(cid, timeout=stop_timeout)


def stop_start(api, cid, stop_timeout):
    api.stop(cid, timeout=stop_timeout)
    api.start(cid)


def crash_unsupported(docker_host):
    """Why the crash scenario cannot run from here, or None: SIGKILL of the
    main process needs the Docker host's process table."""
    if not docker_host.startswith("unix://"):
        return ("the Docker Engine at %s is on another host: the crash sends SIGKILL to the container's main "
                "process from the Docker host itself; run the drill there" % docker_host)
    if not hasattr(os, "pidfd_open"):
        return "this Python or kernel has no pidfd_open, needed to signal the container's process safely"
    return None


def _belongs(pid, cid):
    """Whether host process ``pid`` is the container's: its cgroup names the
    container id, or (cgroup namespaces hide that) it lives in another PID
    namespace than ours."""
    try:
        with open("/proc/%d/cgroup" % pid) as fh:
            if cid in fh.read():
                return True
        return os.readlink("/proc/%d/ns/pid" % pid) != os.readlink("/proc/self/ns/pid")
    except (IOError, OSError):
        return False


def crash(api, cid):
    """SIGKILL of the container's main process (State.Pid) from the host, as
    a crash does it. Not ``docker kill``: the Engine records that as a stop by
    hand, and unless-stopped then leaves the container down. The process is
    held by a pidfd while the Engine confirms it is still the container's, so
    a reused PID is never signalled."""
    state = api.inspect_container(cid)["State"]
    pid = state.get("Pid") or 0
    if not state.get("Running") or pid <= 0:
        raise SourceError("Container %s is not running: nothing to crash" % cid)
    try:
        fd = os.pidfd_open(pid)
    except OSError as e:
        raise SourceError("Cannot reach process %d of container %s from this host: %s" % (pid, cid, e),
                          "Run the drill on the Docker host, as root")
    try:
        again = api.inspect_container(cid)["State"]
        if again.get("Pid") != pid or again.get("StartedAt") != state.get("StartedAt") or not _belongs(pid, cid):
            raise SourceError("Process %d is no longer the main process of container %s" % (pid, cid),
                              "Run the drill again")
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except PermissionError:
            raise SourceError("Not allowed to signal process %d of container %s" % (pid, cid),
                              "Run the drill as root on the Docker host")
    finally:
        os.close(fd)
    return pid


def wait_recovered(api, cid, started_before, probe, timeout, clock=time.monotonic, sleep=time.sleep, t0=None):
    """Wait until the container runs again from a new start (StartedAt moved
    on), its healthcheck (if any) says healthy and ``probe()`` answers.
    Returns {"recovered", "healthy_seconds", "answers_seconds", "seconds",
    "state"} with seconds counted from ``t0``; not recovered after
    ``timeout`` seconds."""
    t0 = clock() if t0 is None else t0
    healthy_at = answers_at = None
    has_health = False
    while True:
        info = api.inspect_container(cid)
        state = info.get("State") or {}
        has_health = healthcheck_of(info) is not None
        fresh = state.get("Running") and not state.get("Restarting") and state.get("StartedAt") != started_before
        if fresh:
            # no healthcheck: the probe alone says when it is back
            if healthy_at is None and (not has_health or (state.get("Health") or {}).get("Status") == "healthy"):
                healthy_at = clock() - t0
            if answers_at is None and probe():
                answers_at = clock() - t0
        if healthy_at is not None and answers_at is not None:
            return {"recovered": True, "seconds": round(max(answers_at, healthy_at), 3),
                    "healthy_seconds": round(healthy_at, 3) if has_health else None,
                    "answers_seconds": round(answers_at, 3), "state": _state_text(state)}
        if clock() - t0 > timeout:
            return {"recovered": False, "seconds": None, "healthy_seconds": None,
                    "answers_seconds": round(answers_at, 3) if answers_at is not None else None,
                    "state": _state_text(state)}
        sleep(POLL)


def _docker_time(text):
    """Epoch seconds of a Docker timestamp (RFC 3339, nanoseconds), or None."""
    if not text or text.startswith("0001-"):
        return None
    main, _dot, rest = text.partition(".")
    frac, zone = "", "Z"
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, zone = rest[:digits], rest[digits:] or "Z"
    elif main.endswith("Z"):
        main = main[:-1]
    zone = "+00:00" if zone == "Z" else zone
    try:
        stamp = datetime.datetime.strptime(main.rstrip("Z"), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    offset = sign * (hours * 3600 + minutes * 60)
    epoch = (stamp - datetime.datetime(1970, 1, 1)).total_seconds() - offset
    return epoch + (float("0." + frac) if frac else 0.0)


def passed_check_after(info, since):
    """Whether the container's healthcheck passed in a check that started
    at or after ``since`` (epoch seconds): a dependent that reconnected to a
    database which came back at ``since``. Docker keeps the last 5 checks."""
    for entry in ((info.get("State") or {}).get("Health") or {}).get("Log") or []:
        started = _docker_time(entry.get("Start"))
        if entry.get("ExitCode") == 0 and started is not None and started >= since:
            return True
    return False


def wait_reconnected(api, dependents, since, timeout, clock=time.monotonic, sleep=time.sleep, t0=None):
    """For each dependent container (a target dict with id, name and
    healthcheck), the seconds from ``t0`` until its healthcheck passed in a
    check started after ``since`` (the database answered again); None when
    that did not happen within ``timeout`` seconds of ``t0``. Dependents
    without a healthcheck are left out: their reconnection cannot be seen."""
    t0 = clock() if t0 is None else t0
    waiting = dict((d["name"], d["id"]) for d in dependents if d["healthcheck"])
    done = dict((name, None) for name in waiting)
    while waiting:
        for name, cid in list(waiting.items()):
            if passed_check_after(api.inspect_container(cid), since):
                done[name] = round(clock() - t0, 3)
                del waiting[name]
        if not waiting or clock() - t0 > timeout:
            break
        sleep(POLL)
    return done


def _state_text(state):
    text = state.get("Status") or "unknown"
    if not state.get("Running") and state.get("ExitCode") is not None:
        text += " (exit code %s)" % state.get("ExitCode")
    health = (state.get("Health") or {}).get("Status")
    return text + (", %s" % health if health else "")
