# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification of PostgreSQL backups, by level:

* ``checksum``: every artifact is read back from storage; size and sha256
  must match the manifest.
* ``structure``: plus ``pg_restore --list`` on the decompressed stream.
* ``restore``: plus a real restore into a scratch database (unique name,
  dropped afterwards on every path, SIGTERM included) and a comparison of
  every table's row count with the counts recorded from pg_dump's snapshot,
  plus optional SQL checks.

Each run writes a verification record next to the manifest (never rewriting
it): ``backups/<id>/verify-<UTC time>-<rand>.json``, see
docs/verification-records.md, and updates the job's metrics.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import json
import os
import socket
import time

from . import manifest as mf
from . import metrics
from .backup import VERSION
from .errors import ConfigError, DrkitError, IntegrityError, ToolError
from .pg_logical import list_archive
from .pg_restore import (ArtifactFetch, compare_counts, count_rows, create_database, drop_database,
                         run_pg_restore, signals_raise, unique_name)
from .pipeline import LocalRunner, read_stored
from .postgres import conn_params, connect, find_tool, server_facts
from .storage import open_storage, storage_options

LEVELS = ("checksum", "structure", "restore")
RECORD_FORMAT = "drkit.backup/verification"


def record_key(backup_id, when):
    return mf.backup_prefix(backup_id) + "verify-%s-%s.json" % (
        when.strftime("%Y%m%dT%H%M%SZ"), binascii.hexlify(os.urandom(2)).decode("ascii"))


def normalise_checks(checks):
    out = []
    for i, c in enumerate(checks or []):
        if isinstance(c, str):
            c = {"sql": c}
        if not isinstance(c, dict) or not c.get("sql"):
            raise ConfigError("checks[%d] must be a SQL string or a mapping with 'sql'" % i,
                              "e.g. {name: agents present, sql: 'SELECT count(*) FROM mcp_documents.agents', min: 1}")
        unknown = set(c) - set(["name", "sql", "min", "max", "equals"])
        if unknown:
            raise ConfigError("checks[%d] has unknown keys %s" % (i, ", ".join(sorted(unknown))),
                              "Use name, sql, min, max, equals")
        c = dict(c)
        c.setdefault("name", c["sql"][:60])
        out.append(c)
    return out


def run_checks(cp, dbname, checks):
    """Each check's SQL must return one value; with no min/max/equals the
    value must be truthy (non-zero, true, non-empty)."""
    results = []
    conn = connect(cp, dbname, autocommit=True)
    try:
        for c in checks:
            entry = {"name": c["name"], "sql": c["sql"]}
            try:
                with conn.cursor() as cur:
                    cur.execute(c["sql"])
                    row = cur.fetchone()
                value = row[0] if row else None
                entry["value"] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
                ok = True
                if "equals" in c:
                    ok = ok and value == c["equals"]
                if "min" in c:
                    ok = ok and value is not None and value >= c["min"]
                if "max" in c:
                    ok = ok and value is not None and value <= c["max"]
                if not any(k in c for k in ("equals", "min", "max")):
                    ok = bool(value)
                entry["ok"] = bool(ok)
            except DrkitError:
                raise  # an interrupt is not a failed check
            except Exception as e:  # pylint: disable=broad-except
                entry.update(ok=False, error=str(e).strip())
            results.append(entry)
    finally:
        conn.close()
    return results


def pg_verify(params, check_mode=False, runner=None, progress=None):
    runner = runner or LocalRunner()
    progress = progress or (lambda msg: None)
    level = params.get("level") or "structure"
    if level not in LEVELS:
        raise ConfigError("level must be one of %s, got %r" % (", ".join(LEVELS), level))
    checks = normalise_checks(params.get("checks"))
    storage = open_storage(params.get("storage_url"), light=True, **storage_options(params))
    entry = mf.resolve(storage, params.get("backup_id") or "latest", before=params.get("before"),
                       database=params.get("source_database"))
    manifest = entry.manifest
    kind = manifest["kind"]
    if kind == "pg_physical":
        try:
            from .pg_pitr import verify_physical  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise ConfigError("Verifying physical backups is not available in this version")
        return verify_physical(params, entry, check_mode=check_mode, runner=runner, progress=progress)
    if kind != "pg_logical":
        raise ConfigError("Backup %s is a %s backup" % (entry.backup_id, kind),
                          "Use drkit.backup.redis_verify for Redis backups")
    if check_mode:
        return True, {"backup_id": entry.backup_id, "level": level, "passed": None,
                      "msg": "Would verify %s at level %s" % (entry.backup_id, level)}

    job = params.get("job_name") or "pg_%s" % manifest["source"].get("database", "unknown")
    started = mf.utcnow()
    t0 = time.time()
    findings, tables, check_results, timings = [], [], [], {}
    scratch = None
    passed = False
    with signals_raise():
        fetch = ArtifactFetch(storage, manifest, params.get("work_dir"))
        try:
            extra = manifest["artifacts"][1:]
            for art in extra:
                key = mf.artifact_key(entry.backup_id, art["name"])
                if storage.stat(key) is None:
                    raise IntegrityError("Artifact %s of backup %s is missing" % (art["name"], entry.backup_id))
                read_stored(storage, key, art["size"], art["sha256"])
            if level == "checksum":
                progress("checking size and sha256 of %s" % fetch.artifact["name"])
                fetch.check_only()
                timings["download_seconds"] = round(fetch.seconds, 3)
            elif level == "structure":
                pg_restore = find_tool("pg_restore", manifest["source"].get("server_version_num"),
                                       params.get("pg_bin_dir"))
                fetch.require_reader(runner, pg_restore)
                progress("checking %s and listing it with pg_restore --list" % fetch.artifact["name"])
                t1 = time.time()
                toc = list_archive(runner, pg_restore, fetch.fmt, fetch.artifact["name"],
                                   lambda consumer: fetch.check_only(consumer=consumer))
                timings["download_seconds"] = round(time.time() - t1, 3)
                expected_toc = manifest.get("data", {}).get("toc_entries")
                if expected_toc is not None and toc != expected_toc:
                    raise IntegrityError("pg_restore --list shows %d entries, the manifest recorded %d" % (
                        toc, expected_toc))
            else:
                cp = conn_params(params)
                conn = connect(cp, params.get("maintenance_db") or "postgres", autocommit=True)
                try:
                    facts = server_facts(conn)
                    pg_restore = find_tool("pg_restore", facts["server_version_num"], params.get("pg_bin_dir"))
                    fetch.require_reader(runner, pg_restore)
                    scratch = unique_name("drkit_verify")
                    progress("restoring %s into scratch database %s" % (entry.backup_id, scratch))
                    create_database(conn, scratch)
                    try:
                        jobs = int(params.get("jobs") or 1)
                        opts = {"no_owner": params.get("no_owner", True),
                                "no_privileges": params.get("no_privileges", True),
                                "restore_settings": params.get("restore_settings")}
                        timings.update(run_pg_restore(runner, cp, fetch, pg_restore, scratch, jobs, opts, progress))
                        expected = manifest.get("data", {}).get("row_counts")
                        t2 = time.time()
                        if expected:
                            tables, problems = compare_counts(expected, count_rows(cp, scratch, expected, jobs))
                            findings.extend(problems)
                        else:
                            findings.append("the manifest holds no row counts (row_counts was off): "
                                            "only the restore itself was checked")
                        if checks:
                            check_results = run_checks(cp, scratch, checks)
                            findings.extend("check %r failed%s" % (
                                r["name"], (": " + r["error"]) if r.get("error") else " (value %r)" % (r.get("value"),))
                                for r in check_results if not r["ok"])
                        timings["check_seconds"] = round(time.time() - t2, 3)
                    finally:
                        progress("dropping scratch database %s" % scratch)
                        drop_database(conn, scratch)
                finally:
                    conn.close()
            hard = [f for f in findings if not f.startswith("the manifest holds no row counts")]
            passed = not hard
        except (IntegrityError, ToolError) as e:
            findings.append(str(e))
            passed = False
        finally:
            fetch.cleanup()

    return finish_verification(storage, params, entry, job, level, passed, started, t0, timings, findings,
                               {"tables": tables, "checks": check_results, "scratch_database": scratch})


def finish_verification(storage, params, entry, job, level, passed, started, t0, timings, findings, extra):
    """Shared end of every verifier (logical, physical, Redis): write the
    record next to the manifest (never rewriting it), update the metrics, and
    return (True, result) or raise VerificationFailed carrying the result."""
    manifest = entry.manifest
    finished = mf.utcnow()
    duration = round(time.time() - t0, 3)
    age = (started - manifest.finished).total_seconds()
    record = {
        "format": RECORD_FORMAT, "version": 1, "backup_id": entry.backup_id, "level": level,
        "result": "pass" if passed else "fail", "started_at": mf.isoformat(started),
        "finished_at": mf.isoformat(finished), "duration_seconds": duration, "timings": timings,
        "backup_age_seconds": round(age, 3), "findings": findings,
        "verifier": {"host": socket.gethostname(), "drkit": VERSION},
    }
    record.update(extra)
    key = record_key(entry.backup_id, finished)
    storage.put_bytes(key, (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))
    _record_metrics(params.get("metrics_dir"), job, manifest["kind"], passed, duration, timings, age)
    result = dict(record)
    result.update({"passed": passed, "record_key": key, "duration": duration,
                   "msg": "%s %s at level %s in %.1f s" % (
                       entry.backup_id, "passed" if passed else "FAILED", level, duration)})
    if not passed:
        raise VerificationFailed("Backup %s failed verification at level %s: %s" % (
            entry.backup_id, level, "; ".join(findings[:10])),
            "Do not rely on this backup; see the verification record %s" % key, details=result)
    return True, result


class VerificationFailed(IntegrityError):
    pass


def _record_metrics(directory, job, kind, passed, duration, timings, age):
    if not directory:
        return
    now = time.time()
    values = {"drkit_verify_last_attempt_timestamp_seconds": now,
              "drkit_verify_last_status": 1 if passed else 0,
              "drkit_verify_duration_seconds": duration,
              "drkit_backup_age_at_verify_seconds": round(age, 3)}
    if passed:
        values["drkit_verify_last_success_timestamp_seconds"] = now
    if "restore_seconds" in timings:
        values["drkit_restore_duration_seconds"] = timings["restore_seconds"]
    try:
        metrics.update_textfile(directory, job, values, labels={"kind": kind})
    except DrkitError:
        pass
