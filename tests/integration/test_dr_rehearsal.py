# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/dr_rehearsal.yml end to end through ansible-playbook:

* the README's way, ``ansible-playbook drkit.backup.dr_rehearsal`` on
  localhost with the embedded defaults (a pg_sandbox PostgreSQL with the
  sample dataset, backups in a local directory);
* against an inventory host (the ``pg`` fixture, dr_rehearsal_sandbox=false)
  with S3 storage on SeaweedFS, then again on a corrupted latest backup,
  which must fail and say so in its report and metrics."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pyrage
import pytest
from helpers import (PlaybookRun, _ansible_bin, ansible_environment, drop_database, list_keys,
                     key_files, make_sample_database, run_drkit)

from ansible_collections.drkit.backup.plugins.module_utils.core.scratch import free_port

REPO = Path(__file__).resolve().parents[2]


def run_rehearsal(tmp_path, extra_vars, inventory=None, env=None, playbook="drkit.backup.dr_rehearsal"):
    """ansible-playbook on the rehearsal playbook; extra vars through a 0600
    file (they may hold a password). Without ``inventory`` it runs on the
    implicit localhost, like the README's command."""
    work = Path(tempfile.mkdtemp(prefix="play-", dir=str(tmp_path)))
    vars_file = work / "vars.json"
    fd = os.open(str(vars_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(extra_vars, fh)
    argv = [_ansible_bin("ansible-playbook"), "-e", "@%s" % vars_file]
    if inventory:
        argv += ["-i", str(inventory)]
    argv.append(playbook)
    e = ansible_environment(str(work), env)
    e["DRKIT_TEST_RESULTS_FILE"] = str(work / "results.json")
    proc = subprocess.run(argv, cwd=str(work), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=600, check=False)
    data = {}
    if (work / "results.json").exists():
        data = json.loads((work / "results.json").read_text())
    return PlaybookRun(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                       proc.stderr.decode("utf-8", "replace"), data, playbook)


def read_metrics(metrics_dir):
    out = {}
    for name in sorted(os.listdir(str(metrics_dir))):
        if name.endswith(".prom"):
            out[name] = (Path(str(metrics_dir)) / name).read_text()
    return out


def metric_value(text, name):
    """Value of the (single) series of ``name`` in a .prom file's text."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + "{") or line.startswith(name + " ")]
    assert len(values) == 1, (name, text)
    return values[0]


def check_report_files(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    svg = (report_dir / "timeline.svg").read_text()
    root = ET.fromstring(svg)  # well-formed SVG
    assert root.tag.endswith("svg")
    assert page.startswith("<!doctype html>") and "<svg" in page
    return report, md, page, svg


def assert_good_report(report, md, page, storage_keys, sample_tables):
    assert report["passed"] is True
    assert report["rto_seconds"] > 0 and report["rpo_seconds"] >= 0
    comps = dict((c["name"], c) for c in report["components"])
    comp = comps["postgresql"]
    assert comp["passed"] is True and comp["kind"] == "pg_logical" and comp["level"] == "restore"
    assert comp["fresh_backup"] is True
    # the report names a backup that really is in storage, verified by this run
    assert "backups/%s/manifest.json" % comp["backup_id"] in storage_keys
    assert comp["record_key"] in storage_keys
    assert comp["backup_size"] > 0 and comp["backup_raw_size"] > comp["backup_size"]
    t = comp["timings"]
    assert t["restore_seconds"] > 0 and t["check_seconds"] >= 0
    # the platform's RTO adds up its components (restored one after another)
    assert sum(c["rto_seconds"] for c in comps.values()) == pytest.approx(report["rto_seconds"], abs=0.002)
    # RTO is made of the measured step times
    expected_rto = (t["restore_seconds"] if t["streamed"] else t["download_seconds"] + t["restore_seconds"])
    assert comp["rto_seconds"] == pytest.approx(expected_rto + t["check_seconds"], abs=0.002)
    # a fresh backup is seconds old, not hours
    assert 0 <= comp["rpo_seconds"] < 300
    assert len(comp["tables"]) == sample_tables and comp["tables_ok"] == sample_tables
    assert all(x["ok"] and x["expected"] == x["actual"] for x in comp["tables"])
    assert comp["rows_restored"] > 0
    assert [c["ok"] for c in comp["checks"]] == [True]
    assert [s["step"] for s in comp["steps"]] == ["backup", "download", "restore", "verify"]
    assert md.startswith("# DR rehearsal of ") and ": PASSED" in md.splitlines()[0]
    assert comp["backup_id"] in md and comp["backup_id"] in page and "PASSED" in page
    return comp


# --------------------------------------------------------------------------
# the README's command: localhost, sandbox PostgreSQL, local directory


def test_rehearsal_on_localhost_with_sandbox(scratch_dir, tmp_path):
    work_dir = scratch_dir / "rehearsal"  # the postgres OS user must reach it
    report_dir = tmp_path / "report"
    metrics_dir = tmp_path / "metrics"
    run = run_rehearsal(tmp_path, {
        "dr_rehearsal_work_dir": str(work_dir),
        "dr_rehearsal_sample_scale": 0.005,
        "dr_rehearsal_report_dir": str(report_dir),
        "dr_rehearsal_metrics_dir": str(metrics_dir),
    })
    assert run.rc == 0, run.describe()
    sandbox = run.result("Start the sandbox PostgreSQL with the sample dataset")
    assert sandbox["changed"] is True and sandbox["login_host"] == "127.0.0.1"
    n_tables = sandbox["sample"]["tables"]
    assert n_tables >= 30

    report, md, page, _svg = check_report_files(report_dir)
    storage_url = "file://%s/backups" % work_dir
    keys = list_keys(storage_url)
    comp = assert_good_report(report, md, page, keys, n_tables)
    assert comp["timings"]["streamed"] is True
    assert report["storage"] == storage_url
    # Redis is rehearsed beside PostgreSQL in the sandbox: its snapshot was
    # loaded into a scratch redis-server and the key counts compared.
    redis = [c for c in report["components"] if c["name"] == "redis"]
    assert len(redis) == 1 and redis[0]["passed"] is True and redis[0]["kind"] == "redis_rdb"
    assert redis[0]["fresh_backup"] is True and redis[0]["rto_seconds"] > 0
    assert redis[0]["tables"] and all(t["ok"] and t["actual"] > 0 for t in redis[0]["tables"])
    assert "backups/%s/manifest.json" % redis[0]["backup_id"] in keys
    # the summary was shown, with the report's path
    shown = run.result("Show the result")["msg"]
    assert shown[0].startswith("DR rehearsal PASSED: RTO ") and shown[-1] == "Report: %s" % (report_dir / "report.html")

    prom = read_metrics(metrics_dir)
    rehearsal = prom["drkit_dr_rehearsal_localhost.prom"]
    assert metric_value(rehearsal, "drkit_dr_rehearsal_last_status") == 1
    assert metric_value(rehearsal, "drkit_dr_rehearsal_rto_seconds") == pytest.approx(report["rto_seconds"])
    assert metric_value(rehearsal, "drkit_dr_rehearsal_rpo_seconds") == pytest.approx(report["rpo_seconds"])
    assert metric_value(rehearsal, "drkit_dr_rehearsal_last_success_timestamp_seconds") > 0
    # the drill writes its own file only: no backup/verify job series of its steps
    assert sorted(prom) == ["drkit_dr_rehearsal_localhost.prom"], sorted(prom)

    # the sandbox was stopped and removed; the backups stay
    assert not (work_dir / "sandbox").exists()
    assert run.result("Remove the sandbox")["changed"] is True
    assert "backups/%s/manifest.json" % comp["backup_id"] in keys


# --------------------------------------------------------------------------
# an inventory host: the pg fixture, S3 storage


@pytest.fixture
def rehearsal_dbs(pg):
    """Two sample databases: one per inventory host."""
    names = ["rh_%s" % uuid.uuid4().hex[:8] for _i in range(2)]
    try:
        dbs = [(n, make_sample_database(pg, n, scale=0.005, seed=17 + i)) for i, n in enumerate(names)]
        # the sample's row counts depend on the scale only: tell the two apart
        pg.psql("CREATE TABLE public.only_in_two AS SELECT generate_series(1, 7) AS id", dbname=names[1])
        dbs[1][1]["public.only_in_two"] = 7
        yield dbs
    finally:
        for n in names:
            drop_database(pg, n)


def scratch_left(pg):
    return [d for d in pg.psql("SELECT datname FROM pg_database").splitlines() if d.startswith("drkit_verify")]


def test_rehearsal_against_inventory_hosts_then_corrupted_latest_then_region_loss(
        pg, s3, bucket, rehearsal_dbs, tmp_path):
    """Two inventory hosts (both the ``pg`` fixture, one database each, set
    as host vars in the inventory) rehearse in one run; S3 options come
    from the AWS environment, as documented. Then host 2's latest backup is
    corrupted and the rehearsal rerun without fresh backups: host 1 passes,
    host 2 fails, each in its own report and metrics."""
    (db1, counts1), (db2, counts2) = rehearsal_dbs
    storage_url = "s3://%s/postgresql" % bucket
    metrics_dir = tmp_path / "metrics"
    # The scheduled jobs' files of the same databases, host 1's last nightly
    # backup failed: the drills must leave both alone (they once overwrote
    # them, and a failed nightly job turned green).
    metrics_dir.mkdir()
    nightly = {}
    for db, status in ((db1, 0), (db2, 1)):
        path = metrics_dir / ("drkit_pg_%s.prom" % db)
        path.write_text('drkit_backup_last_status{kind="pg_logical"} %d\n'
                        'drkit_verify_last_status{kind="pg_logical"} 1\n' % status)
        nightly[path] = path.read_bytes()
    reports = {"dbhost1": tmp_path / "report-1", "dbhost2": tmp_path / "report-2"}
    # host 1's cluster archives its WAL (one segment here): its report gives the RPO of a PITR too
    wal_url = "file://%s" % (tmp_path / "wal-archive")
    pg.psql("SELECT pg_logical_emit_message(false, 'drkit-test', 'x')")
    segment = pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
    shutil.copyfile(os.path.join(pg.data_dir, "pg_wal", segment), str(tmp_path / segment))
    assert run_drkit(["wal-push", "--storage-url", wal_url, str(tmp_path / segment), segment]).returncode == 0
    # host 1 rehearses as its jobs back up: signed, and encrypted to an age key the host does not hold
    signing_key, verify_key, key_id = key_files(tmp_path, "rehearsal-signing")
    ident = pyrage.x25519.Identity.generate()
    (tmp_path / "age.key").write_text("%s\n" % ident)
    os.chmod(str(tmp_path / "age.key"), 0o600)
    protected = {"dr_rehearsal_signing_key_file": signing_key, "dr_rehearsal_verify_keys": [verify_key],
                 "dr_rehearsal_encryption_recipients": [str(ident.to_public())],
                 "dr_rehearsal_encryption_identity_file": str(tmp_path / "age.key")}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"databases": {
        "hosts": {"dbhost1": dict({"dr_rehearsal_database": db1, "dr_rehearsal_report_dir": str(reports["dbhost1"]),
                                   "dr_rehearsal_wal_storage_url": wal_url}, **protected),
                  "dbhost2": {"dr_rehearsal_database": db2, "dr_rehearsal_report_dir": str(reports["dbhost2"])}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "dr_rehearsal_sandbox": False, "dr_rehearsal_storage_url": storage_url,
                 "dr_rehearsal_format": "directory", "dr_rehearsal_jobs": 2,
                 "dr_rehearsal_metrics_dir": str(metrics_dir),
                 "dr_rehearsal_checks": [{"name": "agents present",
                                          "sql": "SELECT count(*) FROM mcp_documents.agents", "min": 1}]}}}))
    # the connection always as extra vars: never the machine's own :5432
    extra = {"dr_rehearsal_hosts": "databases", "dr_rehearsal_login_host": pg.host,
             "dr_rehearsal_login_port": pg.port, "dr_rehearsal_login_user": pg.superuser,
             "dr_rehearsal_login_password": pg.password, "dr_rehearsal_work_dir": str(tmp_path / "unused")}
    env = s3.env()
    run = run_rehearsal(tmp_path, extra, inventory=inventory, env=env)
    assert run.rc == 0, run.describe()
    assert pg.password not in run.text and s3.secret_key not in run.text
    assert sorted(e["host"] for e in run.entries("Take a fresh backup")) == ["dbhost1", "dbhost2"]
    assert set(e["status"] for e in run.entries("Start the sandbox PostgreSQL with the sample dataset")) == {"skipped"}
    keys = list_keys(storage_url, s3)
    bids = {}
    for host, db, counts in (("dbhost1", db1, counts1), ("dbhost2", db2, counts2)):
        report, md, page, _svg = check_report_files(reports[host])
        comp = assert_good_report(report, md, page, keys, len(counts))
        assert report["title"] == "DR rehearsal of %s" % host
        # each host restored its own database's backup
        assert dict((t["name"], t["actual"]) for t in comp["tables"]) == counts
        (taken,) = [e["result"] for e in run.entries("Take a fresh backup") if e["host"] == host]
        assert comp["backup_id"] == taken["backup_id"] and taken["manifest"]["source"]["database"] == db
        # directory format with two jobs: downloaded and unpacked, then restored in parallel
        assert comp["timings"]["streamed"] is False and comp["timings"]["download_seconds"] > 0
        bids[host] = comp["backup_id"]
        if host == "dbhost1":
            assert taken["manifest"]["signature"]["key_id"] == key_id
            assert taken["manifest"]["encryption"]["recipients"], taken["manifest"]
            assert report["wal_newest"]["name"] == segment and report["wal_rpo_seconds"] >= 0
            assert "Achieved RPO with PITR" in md and segment in md
        else:  # its storage holds no WAL: no such line
            assert report["wal_rpo_seconds"] is None and "with PITR" not in md
    assert counts1 != counts2 and bids["dbhost1"] != bids["dbhost2"]
    assert scratch_left(pg) == []
    prom = read_metrics(metrics_dir)
    for host in ("dbhost1", "dbhost2"):
        assert metric_value(prom["drkit_dr_rehearsal_%s.prom" % host], "drkit_dr_rehearsal_last_status") == 1
    assert metric_value(prom["drkit_dr_rehearsal_dbhost1.prom"], "drkit_dr_rehearsal_wal_rpo_seconds") >= 0
    assert "drkit_dr_rehearsal_wal_rpo_seconds" not in prom["drkit_dr_rehearsal_dbhost2.prom"]

    # corrupt host 2's latest backup and rehearse without fresh backups
    bid = bids["dbhost2"]
    (art,) = [k for k in keys if k.startswith("backups/%s/database." % bid)]
    client = s3.client()
    prefix = urlsplit(storage_url).path.strip("/")
    data = client.get_object(Bucket=bucket, Key="%s/%s" % (prefix, art))["Body"].read()
    i = len(data) // 3
    client.put_object(Bucket=bucket, Key="%s/%s" % (prefix, art),
                      Body=data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    # and host 2's WAL archive is now one that cannot be read: said in its report, not left out
    hosts = json.loads(inventory.read_text())
    hosts["databases"]["hosts"]["dbhost2"]["dr_rehearsal_wal_storage_url"] = "file://%s" % (tmp_path / "gone")
    inventory.write_text(json.dumps(hosts))
    run = run_rehearsal(tmp_path, dict(extra, dr_rehearsal_take_backup=False), inventory=inventory, env=env)
    assert run.rc != 0, run.describe()
    assert set(e["status"] for e in run.entries("Take a fresh backup")) == {"skipped"}
    verify = dict((e["host"], e["status"]) for e in
                  run.entries("Restore into a scratch database and verify every table"))
    assert verify == {"dbhost1": "ok", "dbhost2": "failed"}, run.describe()
    gate = dict((e["host"], e) for e in run.entries("Fail when the rehearsal failed"))
    assert gate["dbhost1"]["status"] == "ok" and gate["dbhost2"]["status"] == "failed"
    fail_msg = gate["dbhost2"]["result"]["msg"]
    assert "The DR rehearsal FAILED" in fail_msg and art.split("/")[-1] in fail_msg, fail_msg

    report, md, page, _svg = check_report_files(reports["dbhost1"])
    assert report["passed"] is True and report["components"][0]["fresh_backup"] is False
    assert report["components"][0]["backup_id"] == bids["dbhost1"]
    report, md, page, _svg = check_report_files(reports["dbhost2"])
    assert report["passed"] is False
    (comp,) = report["components"]
    assert comp["backup_id"] == bid and comp["fresh_backup"] is False and comp["passed"] is False
    assert any("Stored object %s" % art in f and "does not match its manifest" in f for f in comp["findings"])
    assert md.splitlines()[0].endswith(": FAILED") and "does not match its manifest" in md
    assert len(report["findings"]) == 1 and report["findings"][0].startswith(
        "The WAL archive could not be read, so a point-in-time recovery would fail now: "), report["findings"]
    assert str(tmp_path / "gone") in report["findings"][0] and "The WAL archive could not be read" in md
    assert "FAILED" in page
    # the failed verification is recorded next to the manifest
    recs = [k for k in list_keys(storage_url, s3) if k.startswith("backups/%s/verify-" % bid)]
    results = sorted(json.loads(client.get_object(Bucket=bucket, Key="%s/%s" % (prefix, k))["Body"].read())["result"]
                     for k in recs)
    assert results == ["fail", "pass"]
    # the alert fires for host 2 only; its last success is still the first run's
    prom = read_metrics(metrics_dir)
    assert metric_value(prom["drkit_dr_rehearsal_dbhost1.prom"], "drkit_dr_rehearsal_last_status") == 1
    bad = prom["drkit_dr_rehearsal_dbhost2.prom"]
    assert metric_value(bad, "drkit_dr_rehearsal_last_status") == 0
    assert (metric_value(bad, "drkit_dr_rehearsal_last_attempt_timestamp_seconds")
            > metric_value(bad, "drkit_dr_rehearsal_last_success_timestamp_seconds"))
    assert sorted(prom) == sorted(["drkit_dr_rehearsal_dbhost1.prom", "drkit_dr_rehearsal_dbhost2.prom"]
                                  + [p.name for p in nightly])
    for path, data in nightly.items():
        assert path.read_bytes() == data, "the rehearsal rewrote the scheduled job's %s" % path.name
    assert scratch_left(pg) == []

    # the first region is lost: host 1 restores from the copy in a second repository alone, the first one's
    # endpoint down; its signed and encrypted backup was copied verbatim and verifies with the public key and
    # the identity only
    secondary = "file://%s" % (tmp_path / "region-b")
    copied = run_drkit(["copy", "--storage-url", storage_url, "--to-storage-url", secondary, "--database", db1,
                        "--no-wal"], env=env)
    assert copied.returncode == 0, copied.stderr
    down = dict(env, AWS_ENDPOINT_URL="http://127.0.0.1:%d" % free_port())
    run = run_rehearsal(tmp_path, dict(extra, dr_rehearsal_hosts="dbhost1", dr_rehearsal_scenario="region_loss",
                                       dr_rehearsal_secondary_storage_url=secondary), inventory=inventory, env=down)
    assert run.rc == 0, run.describe()
    assert set(e["status"] for e in run.entries("Take a fresh backup")) == {"skipped"}
    report, md, page, _svg = check_report_files(reports["dbhost1"])
    assert report["passed"] is True and report["title"] == "Region-loss rehearsal of dbhost1"
    assert report["storage"] == secondary and md.startswith("# Region-loss rehearsal of dbhost1: PASSED")
    (comp,) = report["components"]
    assert comp["backup_id"] == bids["dbhost1"] and comp["fresh_backup"] is False
    assert dict((t["name"], t["actual"]) for t in comp["tables"]) == counts1
    assert secondary in report["notes"][0] and "copy lag" in report["notes"][1] and "**Notes**" in md
    # no rehearsal of the corrupted host 2 ran
    assert [e["host"] for e in run.entries("Restore into a scratch database and verify every table")] == ["dbhost1"]
    # an unknown scenario, or region_loss without a second repository, is refused before anything runs
    run = run_rehearsal(tmp_path, dict(extra, dr_rehearsal_hosts="dbhost1", dr_rehearsal_scenario="region_loss"),
                        inventory=inventory, env=down)
    assert run.rc != 0 and "set dr_rehearsal_secondary_storage_url" in run.text, run.describe()
    assert not run.entries("Restore into a scratch database and verify every table")
