# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DR rehearsal report: JSON for machines, Markdown and HTML (with an
SVG timeline of backup -> download -> restore -> verify) for people, and
textfile metrics so an alert fires when rehearsals stop passing.

Inputs are the results of the backup and verify steps (pg_backup / pg_verify
and their Redis twins), so the numbers are the ones measured by those steps:

* measured RTO of a component: download + restore + checks of its
  restore-level verification (what it takes to get a usable copy back);
* achieved RPO: how old the backup was when the restore started;
* with a WAL archive (``wal_archive``: backup_info's ``wal_archive``), the
  RPO a point-in-time recovery achieves: how long ago the archive's newest
  WAL file was stored when the rehearsal looked. On a server that wrote
  nothing since, that age overstates what could be lost (there was nothing
  to archive); it is what a PITR could recover to, measured. A WAL archive
  that could not be read (``wal_error``) fails the report: a
  point-in-time recovery would fail the same way.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import time

from ..core import metrics
from ..core.errors import ConfigError, StorageError
from ..core.options import Option, Options, resolve
from ..core.osutil import atomic_write
from . import manifest as mf

# drkit.backup.dr_report
OPTIONS = Options(
    metrics.METRICS,
    Option("components", "list", elements="dict", required=True),
    Option("report_dir", "path", required=True),
    Option("title", "str", default="DR rehearsal"),
    Option("started_at", "str"),
    Option("storage", "str"),
    Option("wal_archive", "dict"),
    Option("wal_error", "str"),
    Option("notes", "list", elements="str"),
)

_iso = mf.iso_from_epoch

COLORS = {"backup": "#4e79a7", "download": "#f28e2b", "restore": "#59a14f", "verify": "#b07aa1"}


def _num(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def component_summary(comp):
    name = comp.get("name") or "component"
    ver = comp.get("verification") or {}
    if not ver:
        raise ConfigError("Component %s has no verification result" % name,
                          "Pass the registered result of the restore-level verify step")
    bak = comp.get("backup") or {}
    if bak.get("failed") or ver.get("skipped"):
        # The chain broke before a restore could be measured: a failed
        # component with the reason, not a missing report.
        reason = ("backup failed: %s" % bak.get("msg", "no message")) if bak.get("failed") else \
            "verification did not run"
        return {"name": name, "kind": comp.get("kind"), "backup_id": bak.get("backup_id"), "fresh_backup": False,
                "backup_size": None, "backup_raw_size": None, "backup_duration": None, "rpo_seconds": 0.0,
                "rto_seconds": 0.0, "timings": {}, "passed": False, "level": None, "findings": [reason],
                "tables": [], "tables_ok": 0, "rows_restored": 0, "checks": [], "record_key": None, "steps": []}
    manifest = bak.get("manifest") or {}
    timings = ver.get("timings") or {}
    download = _num(timings.get("download_seconds"))
    restore = _num(timings.get("restore_seconds"))
    check = _num(timings.get("check_seconds"))
    # With jobs=1 the download streams into the restore: they overlap.
    streamed = bool(timings.get("streamed"))
    # With jobs>1 on a custom dump the restore (its pre-data section) starts
    # during the download, at this offset, and waits for the rest of it.
    offset = timings.get("restore_offset_seconds")
    overlapped = not streamed and offset is not None
    restore_span = restore + _num(timings.get("wait_seconds"))
    if streamed:
        rto = restore + check
    elif overlapped:
        rto = max(download, _num(offset) + restore_span) + check
    else:
        rto = download + restore + check
    v_start = mf.parse_time(ver["started_at"]) if ver.get("started_at") else None
    steps = []
    if manifest.get("started_at") and manifest.get("finished_at"):
        steps.append({"step": "backup", "start": manifest["started_at"], "end": manifest["finished_at"]})
    if v_start is not None:
        t = v_start.timestamp()
        if streamed:
            steps.append({"step": "download", "start": _iso(t), "end": _iso(t + download)})
            steps.append({"step": "restore", "start": _iso(t), "end": _iso(t + restore)})
            t += restore
        elif overlapped:
            steps.append({"step": "download", "start": _iso(t), "end": _iso(t + download)})
            start = t + _num(offset)
            steps.append({"step": "restore", "start": _iso(start), "end": _iso(start + restore_span)})
            t = max(t + download, start + restore_span)
        else:
            steps.append({"step": "download", "start": _iso(t), "end": _iso(t + download)})
            t += download
            steps.append({"step": "restore", "start": _iso(t), "end": _iso(t + restore)})
            t += restore
        steps.append({"step": "verify", "start": _iso(t), "end": _iso(t + check)})
    tables = ver.get("tables") or []
    if not tables and ver.get("keyspace"):
        # Redis: one row per database, key counts instead of row counts.
        tables = [dict(row, table=str(row.get("db"))) for row in ver["keyspace"]]
    return {
        "name": name,
        "kind": manifest.get("kind") or comp.get("kind"),
        "backup_id": ver.get("backup_id") or bak.get("backup_id"),
        "fresh_backup": bool(bak.get("backup_id")) and bak.get("backup_id") == ver.get("backup_id"),
        "backup_size": bak.get("size") if bak else None,
        "backup_raw_size": sum(a.get("raw_size", 0) for a in manifest.get("artifacts", [])) or None,
        "backup_duration": bak.get("duration"),
        "rpo_seconds": round(_num(ver.get("backup_age_seconds")), 3),
        "rto_seconds": round(rto, 3),
        "timings": timings,
        "passed": bool(ver.get("passed")),
        "level": ver.get("level"),
        "findings": ver.get("findings") or [],
        "tables": tables,
        "tables_ok": sum(1 for t in tables if t.get("ok")),
        "rows_restored": sum(t.get("actual") or 0 for t in tables),
        "checks": ver.get("checks") or [],
        "record_key": ver.get("record_key"),
        "steps": steps,
    }


def _label(row):
    """A per-table row's name for people: PostgreSQL's rows carry schema and
    table apart and both together as ``name``; Redis's the db number."""
    return row.get("name") or row.get("table")


def wal_rpo(wal_archive):
    """(seconds, newest file's facts) of a backup_info ``wal_archive``;
    (None, None) without one or when it holds no WAL."""
    newest = (wal_archive or {}).get("newest")
    if not newest:
        return None, None
    return round(_num(newest.get("age_seconds")), 3), newest


def build_report(components, title=None, started_at=None, storage=None, host=None, wal_archive=None,
                 wal_error=None, notes=None):
    comps = [component_summary(c) for c in components]
    if not comps:
        raise ConfigError("The report needs at least one component")
    now = mf.utcnow()
    report = {
        "format": "drkit.backup/dr-rehearsal", "version": 1,
        "title": title or "DR rehearsal",
        "host": host or socket.gethostname(),
        "storage": storage,
        "started_at": started_at or (comps[0]["steps"][0]["start"] if comps[0]["steps"] else mf.isoformat(now)),
        "finished_at": mf.isoformat(now),
        "passed": all(c["passed"] for c in comps),
        # Components are restored one after another by the rehearsal, so the
        # conservative whole-platform RTO is their sum; RPO is the worst one.
        "rto_seconds": round(sum(c["rto_seconds"] for c in comps), 3),
        "rpo_seconds": round(max(c["rpo_seconds"] for c in comps), 3),
        "components": comps,
        # what the numbers mean in this scenario (a region loss: restored from the copy alone)
        "notes": list(notes or []),
    }
    report["wal_rpo_seconds"], report["wal_newest"] = wal_rpo(None if wal_error else wal_archive)
    # findings of the platform as a whole, beside each component's own
    report["findings"] = []
    if wal_error:
        report["findings"].append("The WAL archive could not be read, so a point-in-time recovery would fail now: %s"
                                  % wal_error)
        report["passed"] = False
    return report


def _wal_line(report):
    newest = report.get("wal_newest")
    if not newest:
        return None
    return "%s (%s, stored %s)" % (_fmt_s(report["wal_rpo_seconds"]), newest.get("name"), newest.get("stored_at"))


def _fmt_bytes(n):
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%.1f %s" % (n, unit) if unit != "B" else "%d B" % n
        n /= 1024.0
    return str(n)


def _fmt_s(s):
    s = float(s or 0)
    if s < 120:
        return "%.1f s" % s
    if s < 7200:
        return "%d min %02d s" % (s // 60, s % 60)
    return "%.1f h" % (s / 3600.0)


def timeline_svg(report, width=900):
    rows = []
    for c in report["components"]:
        for st in c["steps"]:
            rows.append((c["name"], st))
    if not rows:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'></svg>"
    starts = [mf.parse_time(r[1]["start"]).timestamp() for r in rows]
    ends = [mf.parse_time(r[1]["end"]).timestamp() for r in rows]
    t0, t1 = min(starts), max(ends)
    span = max(t1 - t0, 0.001)
    left, right, bar_h, gap = 200, 90, 22, 8
    height = 40 + len(rows) * (bar_h + gap) + 30
    usable = width - left - right
    out = ["<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' font-family='sans-serif' "
           "font-size='12'>" % (width, height),
           "<text x='10' y='20' font-size='14' font-weight='bold'>%s: timeline (%s)</text>" % (
               _esc(report["title"]), _fmt_s(span))]
    for i, (name, st) in enumerate(rows):
        s = mf.parse_time(st["start"]).timestamp()
        e = mf.parse_time(st["end"]).timestamp()
        y = 40 + i * (bar_h + gap)
        x = left + usable * (s - t0) / span
        w = max(usable * (e - s) / span, 2)
        out.append("<text x='10' y='%d'>%s: %s</text>" % (y + 15, _esc(name), st["step"]))
        out.append("<rect x='%.1f' y='%d' width='%.1f' height='%d' fill='%s' rx='3'/>" % (
            x, y, w, bar_h, COLORS.get(st["step"], "#999")))
        out.append("<text x='%.1f' y='%d'>%s</text>" % (x + w + 4, y + 15, _fmt_s(e - s)))
    axis_y = 40 + len(rows) * (bar_h + gap) + 5
    out.append("<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#333'/>" % (left, axis_y, left + usable, axis_y))
    for k in range(5):
        x = left + usable * k / 4.0
        out.append("<text x='%.1f' y='%d' text-anchor='middle'>+%s</text>" % (x, axis_y + 16, _fmt_s(span * k / 4.0)))
    out.append("</svg>")
    return "\n".join(out)


def _esc(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&#39;").replace('"', "&quot;"))


def _md(text):
    """Text for a Markdown cell/line: table and check names come from the
    database, so no raw HTML, no '|' that would split a table cell, no newline."""
    return (str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace("|", "\\|").replace("\r", " ").replace("\n", " "))


def markdown(report):
    lines = ["# %s: %s" % (_md(report["title"]), "PASSED" if report["passed"] else "FAILED"), "",
             "| | |", "|---|---|",
             "| Host | %s |" % _md(report["host"]),
             "| Storage | %s |" % _md(report.get("storage") or "-"),
             "| Started | %s |" % _md(report["started_at"]),
             "| Finished | %s |" % report["finished_at"],
             "| **Measured RTO** (download + restore + checks) | **%s** |" % _fmt_s(report["rto_seconds"]),
             "| **Achieved RPO** (backup age at restore) | **%s** |" % _fmt_s(report["rpo_seconds"])]
    if report.get("wal_newest"):
        lines.append("| **Achieved RPO with PITR** (age of the newest archived WAL) | **%s** |"
                     % _md(_wal_line(report)))
    if report.get("findings"):
        lines += ["", "**Findings**", ""] + ["- %s" % _md(f) for f in report["findings"]]
    if report.get("notes"):
        lines += ["", "**Notes**", ""] + ["- %s" % _md(n) for n in report["notes"]]
    lines += ["", "![timeline](timeline.svg)", ""]
    for c in report["components"]:
        lines += ["## %s (%s): %s" % (_md(c["name"]), _md(c["kind"] or "?"), "passed" if c["passed"] else "FAILED"),
                  "", "| | |", "|---|---|",
                  "| Backup | `%s`%s |" % (c["backup_id"], " (taken by this rehearsal)" if c["fresh_backup"] else ""),
                  "| Stored size | %s (raw %s) |" % (_fmt_bytes(c["backup_size"]), _fmt_bytes(c["backup_raw_size"])),
                  "| Backup duration | %s |" % (_fmt_s(c["backup_duration"]) if c["backup_duration"] else "-"),
                  "| Download | %s |" % _fmt_s(c["timings"].get("download_seconds")),
                  "| Restore | %s |" % _fmt_s(c["timings"].get("restore_seconds")),
                  "| Checks | %s |" % _fmt_s(c["timings"].get("check_seconds")),
                  "| RTO | %s |" % _fmt_s(c["rto_seconds"]),
                  "| RPO | %s |" % _fmt_s(c["rpo_seconds"]),
                  "| Tables matching | %d / %d (%d rows) |" % (c["tables_ok"], len(c["tables"]), c["rows_restored"]),
                  ""]
        if c["findings"]:
            lines += ["**Findings**", ""] + ["- %s" % _md(f) for f in c["findings"]] + [""]
        if c["checks"]:
            lines += ["| Check | Value | OK |", "|---|---|---|"]
            lines += ["| %s | %s | %s |" % (_md(k["name"]), _md(k.get("value", k.get("error"))),
                                            "yes" if k["ok"] else "**no**") for k in c["checks"]]
            lines.append("")
        if c["tables"]:
            key = "keys" if c["kind"] and c["kind"].startswith("redis") else "rows"
            lines += ["<details><summary>Per-table comparison</summary>", "",
                      "| Table | Expected %s | Restored %s | OK |" % (key, key), "|---|---:|---:|---|"]
            lines += ["| %s | %s | %s | %s |" % (_md(_label(t)), t.get("expected"), t.get("actual"),
                                                 "yes" if t.get("ok") else "**no**") for t in c["tables"]]
            lines += ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def html(report, svg):
    body = ["<!doctype html><html><head><meta charset='utf-8'><title>%s</title>" % _esc(report["title"]),
            "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
            ".pass{color:#2a7a2a}.fail{color:#b00020}.big{font-size:1.4em}</style></head><body>",
            "<h1>%s: <span class='%s'>%s</span></h1>" % (
                _esc(report["title"]), "pass" if report["passed"] else "fail",
                "PASSED" if report["passed"] else "FAILED"),
            "<p class='big'>Measured RTO <b>%s</b> &middot; achieved RPO <b>%s</b>%s</p>" % (
                _fmt_s(report["rto_seconds"]), _fmt_s(report["rpo_seconds"]),
                " &middot; with PITR <b>%s</b>" % _esc(_wal_line(report)) if report.get("wal_newest") else ""),
            "<p>%s &middot; %s &middot; %s to %s</p>" % (
                _esc(report["host"]), _esc(report.get("storage") or ""), _esc(report["started_at"]),
                _esc(report["finished_at"]))]
    body += ["<p class='fail'>%s</p>" % _esc(f) for f in report.get("findings") or []]
    body += ["<p>%s</p>" % _esc(n) for n in report.get("notes") or []]
    body += [svg]
    for c in report["components"]:
        body.append("<h2>%s (%s): <span class='%s'>%s</span></h2>" % (
            _esc(c["name"]), _esc(c["kind"]), "pass" if c["passed"] else "fail",
            "passed" if c["passed"] else "FAILED"))
        body.append("<table>")
        for k, v in (("Backup", c["backup_id"]), ("Stored size", _fmt_bytes(c["backup_size"])),
                     ("Download", _fmt_s(c["timings"].get("download_seconds"))),
                     ("Restore", _fmt_s(c["timings"].get("restore_seconds"))),
                     ("Checks", _fmt_s(c["timings"].get("check_seconds"))),
                     ("RTO", _fmt_s(c["rto_seconds"])), ("RPO", _fmt_s(c["rpo_seconds"])),
                     ("Tables matching", "%d / %d" % (c["tables_ok"], len(c["tables"])))):
            body.append("<tr><th>%s</th><td>%s</td></tr>" % (k, _esc(v)))
        body.append("</table>")
        for f in c["findings"]:
            body.append("<p class='fail'>%s</p>" % _esc(f))
        if c["checks"]:
            body.append("<table><tr><th>Check</th><th>Value</th><th>OK</th></tr>")
            for k in c["checks"]:
                body.append("<tr><td>%s</td><td>%s</td><td class='%s'>%s</td></tr>" % (
                    _esc(k["name"]), _esc(k.get("value", k.get("error"))), "pass" if k["ok"] else "fail",
                    "yes" if k["ok"] else "no"))
            body.append("</table>")
        if c["tables"]:
            body.append("<details><summary>Per-table comparison</summary><table><tr><th>Table</th>"
                        "<th>Expected</th><th>Restored</th><th>OK</th></tr>")
            for t in c["tables"]:
                body.append("<tr><td>%s</td><td>%s</td><td>%s</td><td class='%s'>%s</td></tr>" % (
                    _esc(_label(t)), t.get("expected"), t.get("actual"),
                    "pass" if t.get("ok") else "fail", "yes" if t.get("ok") else "no"))
            body.append("</table></details>")
    body.append("</body></html>")
    return "\n".join(body)


def summary_lines(report):
    out = ["DR rehearsal %s: RTO %s, RPO %s%s" % ("PASSED" if report["passed"] else "FAILED",
                                                  _fmt_s(report["rto_seconds"]), _fmt_s(report["rpo_seconds"]),
                                                  ", RPO with PITR %s" % _wal_line(report)
                                                  if report.get("wal_newest") else "")]
    out += ["  %s" % f for f in report.get("findings") or []]
    for c in report["components"]:
        unit = "databases' key counts" if (c["kind"] or "").startswith("redis") else "tables"
        out.append("  %-10s %-6s backup %s (%s) restore %s, %d/%d %s match%s" % (
            c["name"], "ok" if c["passed"] else "FAILED", c["backup_id"], _fmt_bytes(c["backup_size"]),
            _fmt_s(c["timings"].get("restore_seconds")), c["tables_ok"], len(c["tables"]), unit,
            "" if c["passed"] else ": " + "; ".join(c["findings"][:3])))
    return out


def write_report(params, check_mode=False):
    """Engine entry point for the dr_report module. Returns (changed, result)."""
    p = resolve(OPTIONS, params)
    report = build_report(p["components"] or [], title=p["title"], started_at=p["started_at"], storage=p["storage"],
                          wal_archive=p["wal_archive"], wal_error=p["wal_error"], notes=p["notes"])
    out_dir = p["report_dir"]
    if not out_dir:
        raise ConfigError("report_dir is required", "Name the directory to write the report into")
    paths = {}
    if not check_mode:
        try:
            if not os.path.isdir(out_dir):
                os.makedirs(out_dir, 0o755)
            svg = timeline_svg(report)
            for name, data in (("report.json", json.dumps(report, indent=2, sort_keys=True) + "\n"),
                               ("report.md", markdown(report)), ("timeline.svg", svg),
                               ("report.html", html(report, svg))):
                paths[name] = atomic_write(os.path.join(out_dir, name), data, mode=0o644)
        except (IOError, OSError) as e:
            raise StorageError("Could not write the report to %s: %s" % (out_dir, e),
                               "Check report_dir exists and is writable")
        if p["metrics_dir"]:
            now = time.time()
            values = {"drkit_dr_rehearsal_last_attempt_timestamp_seconds": now,
                      "drkit_dr_rehearsal_last_status": 1 if report["passed"] else 0,
                      "drkit_dr_rehearsal_rto_seconds": report["rto_seconds"],
                      "drkit_dr_rehearsal_rpo_seconds": report["rpo_seconds"]}
            if report["wal_rpo_seconds"] is not None:
                values["drkit_dr_rehearsal_wal_rpo_seconds"] = report["wal_rpo_seconds"]
            elif p["wal_error"]:
                values["drkit_dr_rehearsal_wal_rpo_seconds"] = float("nan")  # not known now, not an old value
            if report["passed"]:
                values["drkit_dr_rehearsal_last_success_timestamp_seconds"] = now
            metrics.update_textfile(p["metrics_dir"], p["job_name"] or "dr_rehearsal", values)
    return not check_mode, {"report": report, "paths": paths, "passed": report["passed"],
                            "summary": summary_lines(report),
                            "rto_seconds": report["rto_seconds"], "rpo_seconds": report["rpo_seconds"],
                            "wal_rpo_seconds": report["wal_rpo_seconds"]}
