# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The alert rules of drkit.backup.backup_monitoring, installed by the role
(which validates them with `promtool check rules`) and unit-tested with
`promtool test rules` (tests/promtool/*.test.yml): each alert fires when it
should and stays quiet when it should.

promtool comes from Debian's prometheus package (scripts/bootstrap.sh
installs it); without it these tests FAIL, they do not skip."""

import os
import re
import shutil
import subprocess

import pytest
import yaml
from helpers import REPO_ROOT, run_playbook

from ansible_collections.drkit.backup.plugins.module_utils.core import metrics

PROMTOOL_TESTS = sorted((REPO_ROOT / "tests" / "promtool").glob("*.test.yml"))
RULES_FILE = "drkit-alerts.rules.yml"
# Metrics from other exporters the rules use.
FOREIGN_METRICS = {"node_textfile_mtime_seconds", "node_textfile_scrape_error", "redis_rdb_last_bgsave_status",
                   "pg_stat_archiver_failed_count", "pg_stat_archiver_last_archive_age"}
# Published by the job roles (drkit_runtime's schedule.prom.j2), documented in docs/monitoring.md.
SCHEDULE_METRICS = {"drkit_schedule_backup_interval_seconds", "drkit_schedule_backup_max_age_seconds",
                    "drkit_schedule_verify_interval_seconds", "drkit_schedule_verify_max_age_seconds"}


def promtool():
    path = shutil.which("promtool") or "/usr/bin/promtool"
    assert os.path.exists(path), (
        "promtool not found: run scripts/bootstrap.sh (installs Debian's prometheus package, which ships it)")
    return path


def install_rules(tmp_path, **extra):
    """Run the role (rules only) into tmp_path/rules; returns the PlaybookRun."""
    rules_dir = tmp_path / "rules"
    variables = {"backup_monitoring_textfile": False, "backup_monitoring_rules_dir": str(rules_dir),
                 "backup_monitoring_runbook_url": "RUNBOOK", "backup_monitoring_promtool": promtool()}
    variables.update(extra)
    run = run_playbook([{"name": "backup_monitoring",
                         "ansible.builtin.include_role": {"name": "drkit.backup.backup_monitoring"}}],
                       extra_vars=variables, tmp_dir=tmp_path)
    return run, rules_dir / RULES_FILE


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rules")
    run, path = install_rules(tmp)
    assert run.rc == 0, run.describe()
    return path


def test_rules_pass_promtool_check(rendered):
    proc = subprocess.run([promtool(), "check", "rules", str(rendered)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout
    assert "SUCCESS: 24 rules found" in proc.stdout


@pytest.mark.parametrize("test_file", PROMTOOL_TESTS, ids=lambda p: p.name)
def test_promtool_rule_tests(rendered, tmp_path, test_file):
    shutil.copy(str(rendered), str(tmp_path / RULES_FILE))
    shutil.copy(str(test_file), str(tmp_path / test_file.name))
    proc = subprocess.run([promtool(), "test", "rules", str(tmp_path / test_file.name)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout
    assert "SUCCESS" in proc.stdout


def _alerts(path):
    with open(str(path)) as fh:
        doc = yaml.safe_load(fh)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_is_tested_firing_and_quiet(rendered):
    fires, quiet = set(), set()
    for path in PROMTOOL_TESTS:
        with open(str(path)) as fh:
            doc = yaml.safe_load(fh)
        for t in doc["tests"]:
            for case in t.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(r["alert"] for r in _alerts(rendered))
    assert names - fires == set(), "alerts never shown firing in tests/promtool"
    assert names - quiet == set(), "alerts never shown quiet in tests/promtool"


def test_rules_use_only_known_metrics(rendered):
    used = set()
    for rule in _alerts(rendered):
        used.update(re.findall(r"\b((?:drkit|node|redis|pg)_[a-z0-9_]+)\b", rule["expr"]))
    known = set(metrics.HELP) | FOREIGN_METRICS | SCHEDULE_METRICS | {"drkit_job"}  # drkit_job: the label
    assert used - known == set(), "metric names in the rules that nothing writes (typo?)"


def test_schedule_metrics_match_role_templates():
    # the job roles publish them through drkit_runtime's "jobs" entry point
    text = (REPO_ROOT / "roles" / "drkit_runtime" / "templates" / "schedule.prom.j2").read_text()
    assert set(re.findall(r"^# TYPE (\S+) gauge$", text, re.M)) == SCHEDULE_METRICS


def test_invalid_rules_are_refused_and_nothing_installed(tmp_path):
    # "5 minutes" is no Prometheus duration: promtool check rules fails the
    # template's validate step, so no rules file is left behind.
    run, path = install_rules(tmp_path, backup_monitoring_failed_for="5m",
                              backup_monitoring_alert_labels={"bad label": "x"})
    assert run.rc != 0, run.describe()
    assert "promtool" in run.text or "failed to validate" in run.text
    assert not path.exists()


def test_preflight_says_what_to_fix(tmp_path):
    run, path = install_rules(tmp_path, backup_monitoring_failed_for="5 minutes")
    assert run.rc != 0
    assert "Prometheus durations such as 5m" in run.text
    run, path = install_rules(tmp_path, backup_monitoring_promtool=str(tmp_path / "no-promtool"))
    assert run.rc != 0
    assert "Install Debian's prometheus package" in run.text
    assert not path.exists()
