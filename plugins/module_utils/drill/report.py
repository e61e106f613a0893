# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The container drill's report: JSON for machines, Markdown and HTML for
people, laid out like the DR rehearsal's (repo/report.py, whose escaping and
duration helpers it uses): the measured RTO per container and scenario, the
findings of the inspection, and the scenarios not shown with their reason."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ..core.errors import StorageError
from ..core.osutil import atomic_write
from ..repo import manifest as mf
from ..repo.report import _esc as esc, _fmt_s as fmt_s, _md as md

FORMAT = "drkit.backup/container-drill"
STATUS_WORDS = {"passed": "passed", "failed": "FAILED", "not_run": "not run", "not_shown": "not shown"}


def build(title, started_at, host, targets, compose, scenarios, not_shown, inspect_only):
    findings = [f for t in targets for f in t["findings"]] + list(compose["findings"])
    for s in scenarios:
        if s["status"] == "failed":
            findings.append("%s, %s: %s" % (s["container"], s["scenario"], s["reason"]))
        elif s["reason"] and s["status"] == "passed":
            findings.append("%s, %s: %s" % (s["container"], s["scenario"], s["reason"]))
    measured = [s["rto_seconds"] for s in scenarios if s["rto_seconds"] is not None]
    return {
        "format": FORMAT, "version": 1, "title": title, "host": host,
        "started_at": started_at, "finished_at": mf.isoformat(mf.utcnow()),
        "inspect_only": bool(inspect_only),
        "passed": not any(s["status"] == "failed" for s in scenarios),
        "worst_rto_seconds": max(measured) if measured else None,
        "containers": targets, "compose": compose, "scenarios": scenarios, "not_shown": not_shown,
        "findings": findings,
    }


def summary(report):
    counts = {}
    for s in report["scenarios"]:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    text = "Container drill of %s: %d finding(s)" % (
        ", ".join(t["name"] for t in report["containers"]), len(report["findings"]))
    if report["inspect_only"]:
        return text + "; inspection only, no scenario run"
    parts = ["%d %s" % (n, STATUS_WORDS[k]) for k, n in sorted(counts.items())]
    text += "; scenarios: %s" % (", ".join(parts) or "none")
    if report["worst_rto_seconds"] is not None:
        text += "; worst RTO %s" % fmt_s(report["worst_rto_seconds"])
    return text


def _marker_text(s):
    m = s.get("marker")
    if not m:
        return "-"
    if "kept" not in m:
        return "not checked"
    if m["kept"] is None:
        return "unreadable"
    return "kept" if m["kept"] else ("LOST" if m["must_keep"] else "lost (allowed)")


def _dependents_text(s):
    """How long each dependent took to pass a healthcheck again after the
    database answered (counted from the failure)."""
    deps = s.get("dependents")
    if not deps:
        return "-"
    return "; ".join("%s %s" % (name, fmt_s(v) if isinstance(v, (int, float)) else (v or "NOT reconnected"))
                     for name, v in sorted(deps.items()))


def _rto(s):
    return fmt_s(s["rto_seconds"]) if s["rto_seconds"] is not None else "-"


def _volume_text(t):
    vol = t["data_volume"]
    if not vol:
        return "**none**" if t["data_dir"] else "-"
    return md("%s %s%s" % (vol["type"], vol["name"] or vol["source"], " (anonymous)" if vol["anonymous"] else ""))


def markdown(report):
    lines = ["# %s: %s" % (md(report["title"]), "inspection only" if report["inspect_only"] else
                           ("PASSED" if report["passed"] else "FAILED")), "",
             "| | |", "|---|---|",
             "| Host | %s |" % md(report["host"]),
             "| Started | %s |" % md(report["started_at"]),
             "| Finished | %s |" % report["finished_at"],
             "| **Worst measured RTO** | **%s** |" % (fmt_s(report["worst_rto_seconds"])
                                                      if report["worst_rto_seconds"] is not None else "-"), ""]
    if report["findings"]:
        lines += ["## Findings", ""] + ["- %s" % md(f) for f in report["findings"]] + [""]
    lines += ["## Containers", "", "| Container | Kind | Restart policy | Healthcheck | Data directory | Volume |",
              "|---|---|---|---|---|---|"]
    for t in report["containers"]:
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            md(t["name"]), md(t["kind"]), md(t["restart_policy"]), "yes" if t["healthcheck"] else "**no**",
            md(t["data_dir"] or "-"), _volume_text(t)))
    lines.append("")
    if report["scenarios"]:
        lines += ["## Scenarios (RTO: from the failure until healthy and answering)", "",
                  "| Container | Scenario | Result | RTO | Healthy after | Answers after | Marker | Dependents "
                  "reconnected | Note |",
                  "|---|---|---|---:|---:|---:|---|---|---|"]
        for s in report["scenarios"]:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                md(s["container"]), s["scenario"], STATUS_WORDS[s["status"]], _rto(s),
                fmt_s(s["healthy_seconds"]) if s["healthy_seconds"] is not None else "-",
                fmt_s(s["answers_seconds"]) if s["answers_seconds"] is not None else "-",
                _marker_text(s), md(_dependents_text(s)), md(s["reason"] or "")))
        lines.append("")
    lines += ["## Not shown", "", "| Scenario | Why |", "|---|---|"]
    lines += ["| %s | %s |" % (n["scenario"], md(n["reason"])) for n in report["not_shown"]]
    if report["compose"]["depends_on"]:
        lines += ["", "## depends_on in %s" % md(report["compose"]["file"]), "",
                  "| Service | Depends on | Condition |", "|---|---|---|"]
        lines += ["| %s | %s | %s |" % (md(e["service"]), md(e["depends_on"]), md(e["condition"]))
                  for e in report["compose"]["depends_on"]]
    return "\n".join(lines) + "\n"


def html(report):
    state = "inspection only" if report["inspect_only"] else ("PASSED" if report["passed"] else "FAILED")
    body = ["<!doctype html><html><head><meta charset='utf-8'><title>%s</title>" % esc(report["title"]),
            "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
            ".pass{color:#2a7a2a}.fail{color:#b00020}.bar{background:#59a14f;height:12px}</style></head><body>",
            "<h1>%s: <span class='%s'>%s</span></h1>" % (
                esc(report["title"]), "fail" if not report["passed"] else "pass", state),
            "<p>%s &middot; %s to %s</p>" % (esc(report["host"]), esc(report["started_at"]),
                                             esc(report["finished_at"]))]
    if report["findings"]:
        body.append("<h2>Findings</h2><ul>%s</ul>" % "".join(
            "<li class='fail'>%s</li>" % esc(f) for f in report["findings"]))
    body.append("<h2>Containers</h2><table><tr><th>Container</th><th>Kind</th><th>Restart policy</th>"
                "<th>Healthcheck</th><th>Data directory</th><th>Volume</th></tr>")
    for t in report["containers"]:
        vol = t["data_volume"]
        body.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            esc(t["name"]), esc(t["kind"]), esc(t["restart_policy"]), "yes" if t["healthcheck"] else "no",
            esc(t["data_dir"] or "-"), esc("-" if not vol else "%s %s" % (vol["type"], vol["name"] or vol["source"]))))
    body.append("</table>")
    if report["scenarios"]:
        worst = max([s["rto_seconds"] or 0 for s in report["scenarios"]] + [0.001])
        body.append("<h2>Scenarios</h2><table><tr><th>Container</th><th>Scenario</th><th>Result</th><th>RTO</th>"
                    "<th></th><th>Marker</th><th>Dependents reconnected</th><th>Note</th></tr>")
        for s in report["scenarios"]:
            width = int(300 * (s["rto_seconds"] or 0) / worst)
            body.append("<tr><td>%s</td><td>%s</td><td class='%s'>%s</td><td>%s</td>"
                        "<td><div class='bar' style='width:%dpx'></div></td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                            esc(s["container"]), esc(s["scenario"]), "fail" if s["status"] == "failed" else "pass",
                            STATUS_WORDS[s["status"]], _rto(s), width, _marker_text(s), esc(_dependents_text(s)),
                            esc(s["reason"] or "")))
        body.append("</table>")
    body.append("<h2>Not shown</h2><table>%s</table>" % "".join(
        "<tr><th>%s</th><td>%s</td></tr>" % (esc(n["scenario"]), esc(n["reason"])) for n in report["not_shown"]))
    body.append("</body></html>")
    return "\n".join(body)


def write(out_dir, report):
    """report.json, report.md and report.html in ``out_dir``; their paths."""
    paths = {}
    try:
        if not os.path.isdir(out_dir):
            os.makedirs(out_dir, 0o755)
        for name, data in (("report.json", json.dumps(report, indent=2, sort_keys=True) + "\n"),
                           ("report.md", markdown(report)), ("report.html", html(report))):
            paths[name] = atomic_write(os.path.join(out_dir, name), data, mode=0o644)
    except (IOError, OSError) as e:
        raise StorageError("Could not write the drill report to %s: %s" % (out_dir, e),
                           "Check report_dir exists and is writable")
    return paths
