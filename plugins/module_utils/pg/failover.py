# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover to a standby, measured (``drkit failover`` /
drkit.backup.pg_failover).

The clock starts at the decision (the call) and stops at the first write
committed through the clients' endpoint: a libpq multi-host connection
string with ``target_session_attrs=read-write``, so the endpoint switch is
part of the RTO.

planned
  The standby must stream. The primary is stopped (fast): PostgreSQL's
  walsender sends everything up to the shutdown checkpoint before it exits.
  drkit waits until the standby has replayed past that checkpoint (read
  from the old primary's pg_control), fences the old primary and promotes.
  RPO 0, checked.

unplanned
  The standby's last view of replication is taken first (it is the bound:
  what the primary had flushed when it last reported, and when). The old
  primary is fenced where its data directory is on this host: stopped
  (fast, else immediate) if it runs, then ``standby.signal`` and, in
  postgresql.auto.conf, ``archive_mode = off`` and no primary_conninfo or
  restore_command: restarted by systemd or a reboot it comes up a
  read-only standby of nothing, takes no writes and archives nothing.
  One that still answers SQL but cannot be fenced here is refused (two
  primaries). Then the standby is promoted.

  Loss bound: only transactions committed after ``safe_before`` (the
  primary's time of its last flush report the standby had received in
  full) can be lost; ``rpo_bound_seconds`` is the window from then to the
  fence (or the decision, for a dead primary). Exact loss when the old
  primary's pg_wal can be read here: pg_waldump from the new timeline's
  switch point to the end of the old WAL; the commits found there are the
  lost transactions, with their times.

Afterwards the promoted server keeps archiving (its configuration is the
primary's, from the base backup) on the new timeline, and the standby-only
settings drkit wrote (primary_conninfo, primary_slot_name) are reset.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ..core.errors import ConfigError, IntegrityError, SafetyError, SourceError, ToolError, WaitTimeout
from ..core.options import Option, Options, resolve
from ..repo import manifest as mf
from ..repo.wal_layout import format_lsn, parse_history
from .client import CONNECTION, _psycopg, conn_params, connect
from .cluster import (
    control_facts,
    default_os_user,
    find_pg_bindir,
    os_user_ids,
    stop_server,
)
from .fencing import fence
from .standby import lsn_diff, primary_position, standby_status
from .waldump import run_waldump

MODES = ("planned", "unplanned")

OPTIONS = Options(
    CONNECTION,
    Option("mode", "str", default="planned", choices=MODES, flags=("--mode",),
           help="planned: nothing may be lost; unplanned: the primary is lost or must be given up"),
    Option("standby_host", "str", default="127.0.0.1", flags=("--standby-host",)),
    Option("standby_port", "int", required=True, min=1, max=65535, flags=("--standby-port",)),
    Option("primary_data_directory", "path", flags=("--primary-data-directory",),
           help="the old primary's data directory on this host: stopped and fenced; its WAL gives the exact loss"),
    Option("endpoint", "str", flags=("--endpoint",),
           help="the clients' libpq hosts, host:port[,host:port...] (default: primary then standby); the "
                "write check connects with target_session_attrs=read-write"),
    Option("database", "str", default="postgres", flags=("--database",), help="database of the write check"),
    Option("fence", "bool", default=True, off_flags=("--no-fence",),
           help="fence the old primary (standby.signal, archive_mode off) where its data directory is here"),
    Option("timeout", "float", default=300, above=0, flags=("--timeout",),
           help="seconds for each wait: catch-up, promotion, the first write (default 300)"),
    Option("os_user", "str", flags=("--os-user",), help="owner of the clusters (default: postgres as root)"),
)


# --------------------------------------------------------------------------
# the pieces of a failover


def endpoint_hosts(params, cp):
    default = "%s:%d,%s:%d" % (cp["login_host"], cp["port"], params["standby_host"], params["standby_port"])
    text = params["endpoint"] or default
    hosts = []
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        host, _sep, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("endpoint entry %r is not host:port" % item,
                              "Give endpoint as host:port,host:port (the clients' libpq hosts)")
        hosts.append((host, int(port)))
    return hosts


def write_check(params, cp, hosts, deadline):
    """Connect as a client would (all hosts, target_session_attrs=read-write)
    and commit a transaction that writes (it takes a transaction id). Returns
    (time of the commit, host:port that took it, attempts)."""
    psycopg = _psycopg()
    attempts = 0
    last = None
    while True:
        attempts += 1
        try:
            with psycopg.connect(host=",".join(h for h, _p in hosts), port=",".join(str(p) for _h, p in hosts),
                                 user=cp["login_user"], password=cp.get("login_password") or None,
                                 dbname=params["database"], target_session_attrs="read-write", connect_timeout=2,
                                 application_name="drkit_failover_check") as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_current_xact_id()::text, inet_server_port()")
                    _xid, port = cur.fetchone()
                conn.commit()
                return time.time(), port, attempts
        except psycopg.Error as e:
            last = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        if time.time() > deadline:
            raise WaitTimeout("No write succeeded through %s within the timeout (last: %s)" % (
                ",".join("%s:%d" % h for h in hosts), last), "Check the endpoint and the new primary's pg_hba.conf")
        time.sleep(0.1)


def promote(scp, timeout):
    """pg_promote(wait) on the standby; the new timeline and its switch point."""
    with connect(scp, "postgres", autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_promote(true, %s)", (int(timeout),))
            if not cur.fetchone()[0]:
                raise WaitTimeout("The standby did not finish its promotion within %d s" % timeout)
            cur.execute("SELECT pg_is_in_recovery(), substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
            in_recovery, tli_hex = cur.fetchone()
            if in_recovery:
                raise IntegrityError("pg_promote returned but the server is still in recovery")
            timeline = int(tli_hex, 16)
            cur.execute("SELECT pg_read_file(%s)", ("pg_wal/%08X.history" % timeline,))
            history = parse_history(cur.fetchone()[0])
            # the standby-only settings, out of the new primary's configuration
            for name in ("primary_conninfo", "primary_slot_name"):
                cur.execute("ALTER SYSTEM RESET %s" % name)
            cur.execute("SELECT pg_reload_conf()")
    old_tl, switch = history[-1] if history else (timeline - 1, None)
    return timeline, old_tl, switch


def exact_loss(bin_dir, data_dir, old_timeline, switch_lsn):
    """What the old primary's WAL holds after the switch point: the lost
    transactions (commit records) and bytes."""
    records = run_waldump(os.path.join(bin_dir, "pg_waldump"), os.path.join(data_dir, "pg_wal"), old_timeline,
                          switch_lsn)
    commits = [r for r in records if r.is_commit and r.lsn >= switch_lsn]
    out = {"lost_transactions": len(commits), "lost_xids": [r.xid for r in commits][:1000],
           "old_wal_end_lsn": format_lsn(records[-1].lsn) if records else format_lsn(switch_lsn),
           "lost_bytes": (records[-1].lsn - switch_lsn) if records else 0}
    if commits:
        out["first_lost_commit_time"] = mf.isoformat(commits[0].xact_time)
        out["last_lost_commit_time"] = mf.isoformat(commits[-1].xact_time)
    return out


def loss_bound(snapshot, until):
    """From the standby's last view of the primary: what it had received,
    how far the primary said it was, and since when anything may be lost."""
    received = snapshot.get("receiver_flushed_lsn") or snapshot.get("receive_lsn")
    reported = snapshot.get("latest_end_lsn")
    behind = lsn_diff(reported, received)
    out = {"received_lsn": received, "primary_reported_lsn": reported,
           "primary_reported_at": snapshot.get("latest_end_time"),
           "known_unreceived_bytes": max(0, behind) if behind is not None else None,
           "last_replayed_xact_time": snapshot.get("last_replayed_xact_time")}
    if behind is not None and behind <= 0 and snapshot.get("latest_end_time"):
        safe = mf.parse_time(snapshot["latest_end_time"])
        out["safe_before"] = snapshot["latest_end_time"]
        out["rpo_bound_seconds"] = round(max(0.0, until - safe.timestamp()), 3)
    else:
        # the standby had not even received what the primary last reported:
        # everything since its last replayed commit may be lost
        last = snapshot.get("last_replayed_xact_time")
        out["safe_before"] = last
        out["rpo_bound_seconds"] = round(max(0.0, until - mf.parse_time(last).timestamp()), 3) if last else None
    return out


# --------------------------------------------------------------------------
# pg_failover


def pg_failover(params, check_mode=False, runner=None, progress=None):
    """Engine entry point of drkit.backup.pg_failover / ``drkit failover``."""
    progress = progress or (lambda msg: None)
    t0 = time.time()
    params = resolve(OPTIONS, params)
    mode = params["mode"]
    cp = conn_params(params)
    scp = dict(cp, login_host=params["standby_host"], port=params["standby_port"])
    hosts = endpoint_hosts(params, cp)
    old_dir = params["primary_data_directory"]
    if old_dir:
        old_dir = os.path.abspath(old_dir)
        if not os.path.isfile(os.path.join(old_dir, "PG_VERSION")):
            raise ConfigError("primary_data_directory %s is not a PostgreSQL data directory" % old_dir,
                              "Give the old primary's data directory on this host, or leave it unset")
    if mode == "planned" and not old_dir:
        raise ConfigError("A planned failover stops the primary: give primary_data_directory",
                          "Run it on the primary's host, or use mode: unplanned when the primary is lost")
    timeout = params["timeout"]
    ids = os_user_ids(default_os_user(params))

    before = standby_status(scp)
    if not before.get("in_recovery"):
        raise SafetyError("%s:%d is not a standby (not in recovery): nothing to promote" % (
            params["standby_host"], params["standby_port"]), "Check standby_host and standby_port")
    try:
        primary = primary_position(dict(cp, connect_timeout=3))
    except SourceError as e:
        primary = {"error": str(e)}
    if mode == "planned":
        if "error" in primary:
            raise SourceError("Planned failover: the primary cannot be reached: %s" % primary["error"],
                              "Use mode: unplanned if it is lost")
        if before.get("receiver_status") != "streaming":
            raise SafetyError("Planned failover: the standby does not stream (wal receiver: %s)" % (
                before.get("receiver_status"),), "Fix replication first (drkit standby reports its state)")
    elif "error" not in primary and not (old_dir and params["fence"]):
        raise SafetyError("The old primary %s:%s still accepts connections and cannot be fenced from here: "
                          "promoting now makes two primaries" % (cp["login_host"], cp["port"]),
                          "Run on its host with primary_data_directory, or stop it, then run again")
    plan = {"mode": mode, "standby": "%s:%d" % (params["standby_host"], params["standby_port"]),
            "primary": "%s:%d" % (cp["login_host"], cp["port"]), "primary_reachable": "error" not in primary,
            "primary_data_directory": old_dir, "endpoint": ",".join("%s:%d" % h for h in hosts),
            "standby_before": before}
    if check_mode:
        steps = (["stop the primary (fast)", "wait until the standby replayed its shutdown checkpoint"]
                 if mode == "planned" else ["take the standby's last replication view as the loss bound"])
        if old_dir and params["fence"]:
            steps.append("fence %s (standby.signal, archive_mode off)" % old_dir)
        steps += ["promote %s" % plan["standby"], "write through %s (target_session_attrs=read-write)" %
                  plan["endpoint"]]
        plan.update(changed=True, steps=steps, msg="Would %s" % "; ".join(steps))
        return True, plan

    bin_dir = find_pg_bindir(_pg_version(old_dir)) if old_dir else None
    result = dict(plan)
    deadline = time.time() + timeout
    if mode == "planned":
        progress("stopping the primary (fast)")
        if not stop_server(bin_dir, old_dir, ids, mode="fast", timeout=timeout):
            raise ToolError("The primary in %s did not stop (fast); nothing promoted" % old_dir,
                            "See its log; run again once it is stopped")
        control = control_facts(bin_dir, old_dir)
        if control.get("Database cluster state") != "shut down":
            raise IntegrityError("The primary's pg_control says %r after the stop, not 'shut down'" % (
                control.get("Database cluster state"),))
        checkpoint = control["Latest checkpoint location"]
        progress("waiting until the standby replayed the primary's shutdown checkpoint %s" % checkpoint)
        while True:
            now = standby_status(scp)
            if (lsn_diff(now.get("replay_lsn"), checkpoint) or 0) > 0:
                break
            if time.time() > deadline:
                raise WaitTimeout("The standby did not replay up to the primary's shutdown checkpoint %s within "
                                  "%s s (replayed %s); nothing promoted" % (
                                      checkpoint, timeout, now.get("replay_lsn")),
                                  "Start the primary again (it is not fenced yet) and check replication")
            time.sleep(0.1)
        result.update(primary_shutdown_checkpoint=checkpoint, standby_replayed=now.get("replay_lsn"))
    bound_until = time.time()
    if old_dir and params["fence"]:
        result["fenced"] = fence(old_dir, bin_dir, ids, "%s failover to %s" % (mode, plan["standby"]), progress)
        bound_until = time.time()
    elif old_dir is None:
        result["fenced"] = []
    snapshot = standby_status(scp) if mode == "unplanned" else None
    progress("promoting %s" % plan["standby"])
    t_promote = time.time()
    timeline, old_tl, switch = promote(scp, max(1, deadline - time.time()))
    result.update(new_timeline=timeline, old_timeline=old_tl,
                  switch_lsn=format_lsn(switch) if switch is not None else None,
                  promote_seconds=round(time.time() - t_promote, 3))
    t_write, served_by, attempts = write_check(params, cp, hosts, time.time() + timeout)
    result.update(rto_seconds=round(t_write - t0, 3), write_served_by_port=served_by, write_attempts=attempts,
                  first_write_at=mf.iso_from_epoch(t_write))
    if mode == "planned":
        result["rpo"] = {"lost_transactions": 0, "lost_bytes": 0, "exact": True,
                         "how": "the standby replayed past the primary's shutdown checkpoint"}
    else:
        # the later view when the WAL receiver still has one (a dead primary's
        # receiver may be gone by then): it can only have received more
        rpo = loss_bound(snapshot if snapshot and snapshot.get("latest_end_lsn") else before, bound_until)
        rpo["exact"] = False
        if old_dir and switch is not None:
            try:
                rpo.update(exact_loss(bin_dir, old_dir, old_tl, switch))
                rpo["exact"] = True
            except (ToolError, OSError) as e:
                rpo["exact_error"] = str(e)
        result["rpo"] = rpo
    if served_by != params["standby_port"]:
        raise IntegrityError("The write went to port %s, not to the promoted standby %s" % (
            served_by, plan["standby"]), "Another primary answers on the endpoint: fence it now", details=result)
    result.update(changed=True, duration=round(time.time() - t0, 3))
    rpo = result["rpo"]
    lost = ("nothing lost" if rpo.get("exact") and not rpo.get("lost_transactions") else
            "%d transaction(s) lost (exact)" % rpo["lost_transactions"] if rpo.get("exact") else
            "loss bound: commits after %s (%s s)" % (rpo.get("safe_before"), rpo.get("rpo_bound_seconds")))
    result["msg"] = "%s failover to %s: timeline %d, RTO %.2f s, %s" % (
        mode.capitalize(), plan["standby"], timeline, result["rto_seconds"], lost)
    return True, result


def _pg_version(data_dir):
    with open(os.path.join(data_dir, "PG_VERSION")) as fh:
        return fh.read().strip()
