# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.py: RTO/RPO arithmetic from the measured step times, the
timeline, and reports that stay well-formed whatever the table names."""

import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.repo import manifest as mf
from ansible_collections.drkit.backup.plugins.module_utils.repo import report as dr

BID = "20261125T211500Z-pg-logical-3fa9c1"
HOSTILE = "</td><script>alert('x')</script>|a|b&amp;\"q\"<svg onload=1>"


def verification(streamed, download=2.0, restore=10.0, check=0.5, age=3600.0, passed=True, tables=None,
                 started="2026-11-25T22:00:00.000000Z", **extra):
    v = {"backup_id": BID, "level": "restore", "passed": passed, "started_at": started,
         "timings": {"download_seconds": download, "restore_seconds": restore, "check_seconds": check,
                     "streamed": streamed},
         "backup_age_seconds": age, "findings": [] if passed else ["public.t: expected 3 rows, restored 2"],
         "tables": tables if tables is not None else [
             {"table": "public.t", "expected": 3, "actual": 3 if passed else 2, "ok": passed},
             {"table": "public.u", "expected": 5, "actual": 5, "ok": True}],
         "checks": [], "record_key": "backups/%s/verify-x.json" % BID}
    v.update(extra)
    return v


def backup(size=1000, raw=5000):
    return {"backup_id": BID, "size": size, "duration": 4.25,
            "manifest": {"kind": "pg_logical", "started_at": "2026-11-25T21:59:50.000000Z",
                         "finished_at": "2026-11-25T21:59:54.250000Z",
                         "artifacts": [{"name": "database.pgdump.zst", "size": size, "raw_size": raw}]}}


def ts(text):
    return mf.parse_time(text).timestamp()


# --------------------------------------------------------------------------
# arithmetic


def test_streamed_rto_counts_the_overlapping_download_once():
    c = dr.component_summary({"name": "postgresql", "verification": verification(True), "backup": backup()})
    # jobs=1: the download streams into pg_restore, so it overlaps the restore
    assert c["rto_seconds"] == pytest.approx(10.0 + 0.5)
    steps = dict((s["step"], s) for s in c["steps"])
    assert ts(steps["download"]["start"]) == ts(steps["restore"]["start"]) == ts("2026-11-25T22:00:00Z")
    assert ts(steps["verify"]["start"]) - ts(steps["restore"]["start"]) == pytest.approx(10.0)
    assert ts(steps["verify"]["end"]) - ts(steps["verify"]["start"]) == pytest.approx(0.5)


def test_local_copy_rto_adds_download_restore_and_checks():
    c = dr.component_summary({"name": "postgresql", "verification": verification(False), "backup": backup()})
    assert c["rto_seconds"] == pytest.approx(2.0 + 10.0 + 0.5)
    steps = [(s["step"], ts(s["start"]), ts(s["end"])) for s in c["steps"]]
    assert [s[0] for s in steps] == ["backup", "download", "restore", "verify"]
    t0 = ts("2026-11-25T22:00:00Z")
    assert [round(s[1] - t0, 3) for s in steps[1:]] == [0.0, 2.0, 12.0]
    assert [round(s[2] - t0, 3) for s in steps[1:]] == [2.0, 12.0, 12.5]
    # the backup step is the manifest's own start/finish
    assert steps[0][2] - steps[0][1] == pytest.approx(4.25)


def test_overlapped_rto_starts_the_restore_during_the_download():
    # jobs=2, custom format: pre-data began 0.3 s into a 2 s download, took
    # 0.5 s, waited 1.2 s for the rest; the parallel sections took 9.5 s
    v = verification(False, download=2.0, restore=10.0, check=0.5)
    v["timings"].update({"restore_offset_seconds": 0.3, "pre_data_seconds": 0.5, "wait_seconds": 1.2})
    c = dr.component_summary({"name": "postgresql", "verification": v, "backup": backup()})
    assert c["rto_seconds"] == pytest.approx(0.3 + 0.5 + 1.2 + 9.5 + 0.5)  # = download + 9.5 + checks
    steps = dict((s["step"], (ts(s["start"]), ts(s["end"]))) for s in c["steps"])
    t0 = ts("2026-11-25T22:00:00Z")
    assert [round(x - t0, 3) for x in steps["download"]] == [0.0, 2.0]
    assert [round(x - t0, 3) for x in steps["restore"]] == [0.3, 11.5]
    assert [round(x - t0, 3) for x in steps["verify"]] == [11.5, 12.0]


def test_rpo_is_the_backup_age_and_the_component_facts():
    c = dr.component_summary({"name": "postgresql", "verification": verification(True, age=7261.5),
                              "backup": backup()})
    assert c["rpo_seconds"] == 7261.5
    assert c["fresh_backup"] is True and c["backup_size"] == 1000 and c["backup_raw_size"] == 5000
    assert c["tables_ok"] == 2 and c["rows_restored"] == 8 and c["passed"] is True


def test_without_a_fresh_backup():
    c = dr.component_summary({"name": "postgresql", "verification": verification(True), "backup": {}})
    assert c["fresh_backup"] is False and c["backup_size"] is None
    assert [s["step"] for s in c["steps"]] == ["download", "restore", "verify"]


def test_platform_rto_is_the_sum_rpo_the_worst_and_one_failure_fails_all():
    pg = {"name": "postgresql", "verification": verification(True, restore=10.0, age=100.0)}
    redis = {"name": "redis", "verification": verification(False, download=1.0, restore=3.0, check=0.25,
                                                           age=900.0, passed=False)}
    rep = dr.build_report([pg, redis], title="t", started_at="2026-11-25T21:59:00Z", storage="file:///b")
    assert rep["rto_seconds"] == pytest.approx((10.0 + 0.5) + (1.0 + 3.0 + 0.25))
    assert rep["rpo_seconds"] == 900.0
    assert rep["passed"] is False and [c["passed"] for c in rep["components"]] == [True, False]
    assert dr.build_report([pg])["passed"] is True
    lines = dr.summary_lines(rep)
    assert lines[0].startswith("DR rehearsal FAILED: RTO 14.8 s, RPO 15 min 00 s")
    assert "public.t: expected 3 rows, restored 2" in lines[2]


def test_missing_verification_and_empty_report_are_config_errors():
    with pytest.raises(ConfigError, match="has no verification result"):
        dr.component_summary({"name": "postgresql", "backup": backup()})
    with pytest.raises(ConfigError, match="at least one component"):
        dr.build_report([])


def test_failed_verify_without_timings_still_reports():
    """pg_verify failed before measuring anything (e.g. storage unreachable):
    the registered result holds little more than msg and failed."""
    c = dr.component_summary({"name": "postgresql", "verification": {"failed": True, "msg": "boom"}})
    assert c["passed"] is False and c["rto_seconds"] == 0 and c["steps"] == []
    rep = dr.build_report([{"name": "postgresql", "verification": {"failed": True, "msg": "boom"}}])
    assert rep["passed"] is False
    ET.fromstring(dr.timeline_svg(rep))


# --------------------------------------------------------------------------
# hostile names


class _Collector(HTMLParser):
    def __init__(self):
        HTMLParser.__init__(self)
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def hostile_report():
    tables = [{"table": "public." + HOSTILE, "expected": 1, "actual": 1, "ok": True}]
    ver = verification(True, tables=tables, checks=[{"name": HOSTILE, "value": HOSTILE, "ok": False}],
                       findings=["check %r failed" % HOSTILE], passed=False)
    return dr.build_report([{"name": "pg " + HOSTILE, "verification": ver, "backup": backup()}],
                           title="T " + HOSTILE, started_at="2026-11-25T21:59:00Z<b>",
                           storage="s3://b/<x>", host="h<o>st")


def test_svg_escapes_hostile_names():
    svg = dr.timeline_svg(hostile_report())
    root = ET.fromstring(svg)  # still well-formed XML
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    text = "".join(root.itertext())
    assert "pg " + HOSTILE in text and "T " + HOSTILE in text


def test_html_escapes_hostile_names():
    rep = hostile_report()
    page = dr.html(rep, dr.timeline_svg(rep))
    p = _Collector()
    p.feed(page)
    assert "script" not in p.tags and "td" in p.tags
    text = "".join(p.text)
    assert ("public." + HOSTILE) in text and ("pg " + HOSTILE) in text and "h<o>st" in text
    assert "s3://b/<x>" in text and "2026-11-25T21:59:00Z<b>" in text
    # the SQL checks are on the page too (name and value)
    assert text.count(HOSTILE) >= 3


def test_markdown_keeps_hostile_names_inside_their_cell():
    md = dr.markdown(hostile_report())
    assert "<script>" not in md and "<svg" not in md.replace("![timeline](timeline.svg)", "")
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "public." in ln]
    assert len(rows) == 1
    # an unescaped '|' would add columns: table name, expected, restored, ok
    cells = list(_md_cells(rows[0]))
    assert len(cells) == 4, rows[0]


def _md_cells(row):
    """Split a Markdown table row on unescaped pipes."""
    cells, cur, i = [], "", 1
    body = row.strip()
    while i < len(body) - 1:
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            cur += body[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    cells.append(cur.strip())
    return cells


# --------------------------------------------------------------------------
# write_report


def test_write_report_files_and_metrics(tmp_path):
    params = {"components": [{"name": "postgresql", "verification": verification(True), "backup": backup()}],
              "report_dir": str(tmp_path / "r"), "metrics_dir": str(tmp_path / "m"), "title": "Weekly",
              "storage": "file:///b"}
    changed, res = dr.write_report(params, check_mode=True)
    assert changed is False and res["paths"] == {} and res["passed"] is True
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()

    changed, res = dr.write_report(params)
    assert changed is True and sorted(res["paths"]) == ["report.html", "report.json", "report.md", "timeline.svg"]
    assert sorted(os.listdir(str(tmp_path / "r"))) == ["report.html", "report.json", "report.md", "timeline.svg"]
    with open(res["paths"]["report.json"]) as fh:
        assert json.load(fh) == res["report"]
    prom = (tmp_path / "m" / "drkit_dr_rehearsal.prom").read_text()
    assert "drkit_dr_rehearsal_last_status 1" in prom.replace('{drkit_job="dr_rehearsal"}', "")
    assert 'drkit_dr_rehearsal_rto_seconds{drkit_job="dr_rehearsal"} 10.5' in prom

    params["components"][0]["verification"] = verification(True, passed=False)
    _changed, res = dr.write_report(params)
    prom = (tmp_path / "m" / "drkit_dr_rehearsal.prom").read_text()
    assert 'drkit_dr_rehearsal_last_status{drkit_job="dr_rehearsal"} 0' in prom
    # the last success stays at the passing run's time
    assert "drkit_dr_rehearsal_last_success_timestamp_seconds" in prom
    assert (tmp_path / "r" / "report.md").read_text().startswith("# Weekly: FAILED")


def test_tables_are_shown_by_their_qualified_name():
    """"a.b".c and a."b.c": two rows, told apart by the quoted name pg_verify gives."""
    tables = [{"schema": "a.b", "table": "c", "name": '"a.b".c', "expected": 10, "actual": 10, "ok": True},
              {"schema": "a", "table": "b.c", "name": 'a."b.c"', "expected": 20, "actual": 20, "ok": True}]
    rep = dr.build_report([{"name": "pg", "verification": verification(True, tables=tables), "backup": backup()}])
    md = dr.markdown(rep)
    assert '| "a.b".c | 10 | 10 | yes |' in md and '| a."b.c" | 20 | 20 | yes |' in md, md
    page = dr.html(rep, dr.timeline_svg(rep))
    assert "<td>&quot;a.b&quot;.c</td><td>10</td>" in page and "<td>a.&quot;b.c&quot;</td><td>20</td>" in page


def test_the_rpo_with_pitr_is_the_age_of_the_newest_archived_wal(tmp_path):
    wal = {"system_identifier": "7300000000000000001",
           "newest": {"name": "000000020000000000000007", "key": "wal/00000002/000000020000000000000007.zst",
                      "timeline": "00000002", "stored_at": "2026-11-25T22:00:30.000000Z", "age_seconds": 42.5}}
    comps = [{"name": "postgresql", "verification": verification(True), "backup": backup()}]
    report = dr.build_report(comps, wal_archive=wal)
    assert report["wal_rpo_seconds"] == 42.5 and report["rpo_seconds"] == 3600.0
    assert "RPO with PITR 42.5 s (000000020000000000000007" in dr.summary_lines(report)[0]
    assert "| **Achieved RPO with PITR** (age of the newest archived WAL) | **42.5 s" in dr.markdown(report)
    assert "with PITR <b>42.5 s" in dr.html(report, "")
    # no archive, or one without WAL: nothing claimed
    for empty in (None, {"system_identifier": None, "newest": None}):
        bare = dr.build_report(comps, wal_archive=empty)
        assert bare["wal_rpo_seconds"] is None and "PITR" not in dr.markdown(bare) + dr.summary_lines(bare)[0]
    _changed, res = dr.write_report({"components": comps, "report_dir": str(tmp_path / "r"), "wal_archive": wal,
                                     "metrics_dir": str(tmp_path)})
    assert res["wal_rpo_seconds"] == 42.5
    prom = (tmp_path / "drkit_dr_rehearsal.prom").read_text()
    assert 'drkit_dr_rehearsal_wal_rpo_seconds{drkit_job="dr_rehearsal"} 42.5' in prom


def test_an_unreadable_wal_archive_fails_the_report_and_says_why(tmp_path):
    """The rehearsal's WAL lookup used to be ignore_errors with the line
    simply left out: an archive PITR could not read looked like no archive."""
    comps = [{"name": "postgresql", "verification": verification(True), "backup": backup()}]
    why = "Access denied to s3://wal-archive/pg-main (check the credentials)"
    report = dr.build_report(comps, wal_error=why)
    assert report["passed"] is False and report["wal_rpo_seconds"] is None
    assert report["findings"] == ["The WAL archive could not be read, so a point-in-time recovery would fail now: "
                                  + why]
    assert "- The WAL archive could not be read" in dr.markdown(report)
    assert "<p class='fail'>The WAL archive could not be read" in dr.html(report, "")
    assert dr.summary_lines(report)[0].startswith("DR rehearsal FAILED")
    assert "The WAL archive could not be read" in dr.summary_lines(report)[1]
    _changed, res = dr.write_report({"components": comps, "report_dir": str(tmp_path / "r"), "wal_error": why,
                                     "metrics_dir": str(tmp_path)})
    assert res["passed"] is False
    prom = (tmp_path / "drkit_dr_rehearsal.prom").read_text()
    assert 'drkit_dr_rehearsal_wal_rpo_seconds{drkit_job="dr_rehearsal"} NaN' in prom
    assert 'drkit_dr_rehearsal_last_status{drkit_job="dr_rehearsal"} 0' in prom
    # a readable one passes as before, without findings
    assert dr.build_report(comps)["findings"] == [] and dr.build_report(comps)["passed"] is True


def test_notes_say_what_the_numbers_mean():
    comps = [{"name": "postgresql", "verification": verification(True), "backup": backup()}]
    notes = ["Region loss: restored from the second repository alone.", "RPO <includes> the copy lag | here."]
    report = dr.build_report(comps, notes=notes)
    assert report["notes"] == notes and report["passed"] is True
    md = dr.markdown(report)
    assert "**Notes**" in md and "- RPO &lt;includes&gt; the copy lag \\| here." in md, md
    assert "<p>RPO &lt;includes&gt; the copy lag | here.</p>" in dr.html(report, "")
    assert "**Notes**" not in dr.markdown(dr.build_report(comps))
