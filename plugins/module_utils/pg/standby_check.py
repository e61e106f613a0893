# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How far a standby is behind its primary, as metrics (``drkit
standby-check``, run every minute beside the standby; alerts in the
backup_monitoring role: docs/failover.md, "Watching the standby").

Lag in seconds is measured, not derived from timestamps: the primary's
flush position is read, then the standby's replay position is polled until
it has passed it. The time that takes is the replay lag (a few
milliseconds on a healthy pair); when it has not passed it within
``lag_wait`` seconds the lag is at least that long, and at least the age of
the last transaction the standby replayed. ``pg_last_xact_replay_timestamp``
alone would count an idle primary's quiet hours as lag, and
pg_stat_replication's ``replay_lag`` freezes at its last value while replay
is stuck.

The primary may be unreachable (the region it is in is lost): the standby's
own view (its WAL receiver's state, the last message it got) is still
written, and the lag, unknown, is written as NaN so that no earlier value
stands in for it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..core import metrics
from ..core.errors import DrkitError, SourceError
from ..core.options import Option, Options, resolve
from ..repo.manifest import parse_time
from .client import CONNECTION, _psycopg, conn_params, connect
from .standby import (DEFAULT_APP_NAME, DEFAULT_SLOT, lsn_diff, primary_position, slot_facts, standby_status,
                      standby_status_on)

NAN = float("nan")

OPTIONS = Options(
    CONNECTION,
    Option("standby_host", "str", default="127.0.0.1", flags=("--standby-host",),
           help="address of the standby (default 127.0.0.1); it takes the primary's role and password"),
    Option("standby_port", "int", required=True, min=1, max=65535, flags=("--standby-port",),
           help="port of the standby"),
    Option("application_name", "str", default=DEFAULT_APP_NAME, flags=("--application-name",),
           help="the standby's name in the primary's pg_stat_replication"),
    Option("slot_name", "str", default=DEFAULT_SLOT, flags=("--slot-name",),
           help="the standby's replication slot on the primary (default drkit_standby): what it retains"),
    Option("lag_wait", "float", default=5.0, above=0, flags=("--lag-wait",),
           help="seconds to wait for the standby to replay what the primary has flushed (default 5)"),
    metrics.METRICS,
)


def _epoch(iso):
    return parse_time(iso).timestamp() if iso else None


def _replayed_past(scp, goal, wait):
    """Seconds until the standby's replay passed ``goal`` (an LSN text), or
    None if it had not after ``wait`` seconds; and its last status."""
    t0 = time.time()
    with connect(scp, "postgres", autocommit=True) as conn:
        while True:
            now = standby_status_on(conn)
            behind = lsn_diff(goal, now.get("replay_lsn"))
            if behind is not None and behind <= 0:
                return time.time() - t0, now
            if time.time() - t0 >= wait:
                return None, now
            time.sleep(0.05)


def standby_check(params):
    """Returns (False, result); writes the metrics when metrics_dir is set.
    SourceError when the standby itself cannot be reached (after writing
    metrics that say so)."""
    p = resolve(OPTIONS, params)
    pcp = conn_params(p)
    scp = dict(pcp, login_host=p["standby_host"], port=p["standby_port"])
    job = p["job_name"] or "standby_%d" % p["standby_port"]
    t0 = time.time()
    result = {"changed": False, "standby": "%s:%d" % (p["standby_host"], p["standby_port"])}
    values = {"drkit_standby_last_check_timestamp_seconds": t0, "drkit_standby_up": 0,
              "drkit_standby_streaming": 0, "drkit_standby_primary_reachable": 0,
              "drkit_standby_replay_lag_seconds": NAN, "drkit_standby_replay_lag_bytes": NAN}
    try:
        try:
            standby = standby_status(scp)
        except (DrkitError, _psycopg().Error) as e:
            result.update(up=False, error=str(e))
            raise SourceError("The standby at %s does not answer: %s" % (result["standby"], e),
                              "Start it (drkit standby starts a stopped standby it built) and check its log")
        values["drkit_standby_up"] = 1
        streaming = standby.get("receiver_status") == "streaming"
        values["drkit_standby_streaming"] = 1 if streaming else 0
        values["drkit_standby_in_recovery"] = 1 if standby.get("in_recovery") else 0
        values["drkit_standby_last_replay_timestamp_seconds"] = _epoch(standby.get("last_replayed_xact_time"))
        values["drkit_standby_last_message_timestamp_seconds"] = _epoch(standby.get("last_msg_receipt_time"))
        result.update(up=True, streaming=streaming, in_recovery=standby.get("in_recovery"),
                      receiver_status=standby.get("receiver_status"))
        try:
            primary = primary_position(pcp, p["application_name"])
        except (DrkitError, _psycopg().Error) as e:
            primary = None
            result.update(primary_reachable=False, primary_error=str(e))
        if primary is not None and standby.get("in_recovery"):
            values["drkit_standby_primary_reachable"] = 1
            seconds, standby = _replayed_past(scp, primary["flush_lsn"], p["lag_wait"])
            behind = max(0, lsn_diff(primary["flush_lsn"], standby.get("replay_lsn")) or 0)
            caught_up = seconds is not None
            if not caught_up:
                seconds = time.time() - t0
                last = _epoch(standby.get("last_replayed_xact_time"))
                if last is not None:
                    seconds = max(seconds, time.time() - last)
            values["drkit_standby_replay_lag_seconds"] = round(seconds, 3)
            values["drkit_standby_replay_lag_bytes"] = behind
            result.update(primary_reachable=True, caught_up=caught_up, replay_lag_seconds=round(seconds, 3),
                          replay_lag_bytes=behind, primary_flush_lsn=primary["flush_lsn"],
                          replay_lsn=standby.get("replay_lsn"))
            _watch_slot(pcp, p["slot_name"], result, values)
        elif primary is not None:
            result.update(primary_reachable=True)  # promoted: no longer a standby, nothing to lag behind
        result["msg"] = _describe(result)
        return False, result
    finally:
        metrics.update_textfile(p["metrics_dir"], job, values)


def _watch_slot(pcp, slot, result, values):
    """What the standby's slot makes the primary keep, and whether it has
    lost WAL already; a standby without that slot (streaming without one)
    writes no slot metrics."""
    try:
        facts = slot_facts(pcp, slot)
    except (DrkitError, _psycopg().Error) as e:
        result["slot_error"] = str(e)
        return
    result["slot"] = facts
    if facts is None:
        return
    values["drkit_standby_slot_retained_bytes"] = facts["retained_bytes"]
    values["drkit_standby_slot_safe_wal_bytes"] = NAN if facts["safe_wal_bytes"] is None else facts["safe_wal_bytes"]
    values["drkit_standby_slot_lost"] = 1 if facts["wal_status"] == "lost" else 0


def _describe(r):
    if not r.get("in_recovery"):
        return "%s is not in recovery: it is a primary now" % r["standby"]
    state = "streaming" if r["streaming"] else "NOT streaming (receiver: %s)" % (r.get("receiver_status") or "none")
    if not r.get("primary_reachable"):
        return "Standby %s %s; the primary does not answer (%s): lag unknown" % (
            r["standby"], state, r.get("primary_error"))
    return "Standby %s %s; replay lag %s%.3f s, %d bytes" % (
        r["standby"], state, "" if r["caught_up"] else "at least ", r["replay_lag_seconds"], r["replay_lag_bytes"])
