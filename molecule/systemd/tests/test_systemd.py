# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""testinfra verifier of the systemd scenario: the units are valid, the
timers persistent with the cron schedule converted exactly, no secret in any
unit, and the service's ExecStart= lines, run as its User=, back up, rotate
and verify for real."""

import json
import os
import re
import shlex

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("all")

with open(os.environ["DRKIT_MOLECULE_VARS"]) as _fh:
    V = json.load(_fh)

UNITS = V["molecule_unit_dir"]
JOB = "molecule_sd"


def unit(host, name):
    return host.file("%s/drkit-%s-%s" % (UNITS, JOB, name)).content_string


def directive(text, key):
    return re.findall(r"^%s=(.*)$" % key, text, re.M)


def test_units_pass_systemd_analyze_verify(host):
    cmd = host.run("systemd-analyze verify %s/drkit-%s-*.service %s/drkit-%s-*.timer" % (UNITS, JOB, UNITS, JOB))
    assert cmd.rc == 0, cmd.stderr


def test_timers_are_persistent_and_match_the_cron_schedule(host):
    backup = unit(host, "backup.timer")
    assert directive(backup, "Persistent") == ["true"]
    assert directive(backup, "OnCalendar") == ["Mon,Tue,Wed,Thu,Fri *-*-* 01,02,03,04,05:00,30:00"]
    assert directive(unit(host, "verify.timer"), "OnCalendar") == ["Sun *-*-* 04:30:00"]
    cmd = host.run("systemd-analyze calendar --iterations=3 '%s'" % directive(backup, "OnCalendar")[0])
    assert cmd.rc == 0, cmd.stderr


def test_no_secret_in_the_units(host):
    for name in ("backup.service", "backup.timer", "verify.service", "verify.timer"):
        assert V["molecule_pg_password"] not in unit(host, name)


def run_service(host, name):
    text = unit(host, name)
    (user,) = directive(text, "User")
    for line in directive(text, "ExecStart"):
        cmd = host.run("runuser -u %s -- env -i PATH=/usr/bin:/bin %s" % (user, line))
        assert cmd.rc == 0, "%s: %s" % (line, cmd.stderr[-3000:])
    return directive(text, "ExecStart")


def test_backup_service_backs_up_then_rotates(host):
    lines = run_service(host, "backup.service")
    assert [shlex.split(line)[1] for line in lines] == ["pg-backup", "rotate"]
    cmd = host.run("runuser -u postgres -- /usr/local/bin/drkit list --config /etc/drkit/%s.yml --json" % JOB)
    assert len(json.loads(cmd.stdout)["backups"]) >= 1
    text = host.file("%s/drkit_%s.prom" % (V["molecule_metrics_dir"], JOB)).content_string
    assert re.search(r'^drkit_backup_last_status\{drkit_job="%s",kind="pg_logical"\} 1$' % JOB, text, re.M)


def test_verify_service_passes_twice(host):
    for _attempt in range(2):
        run_service(host, "verify.service")
        text = host.file("%s/drkit_%s.prom" % (V["molecule_metrics_dir"], JOB)).content_string
        assert re.search(r'^drkit_verify_last_status\{drkit_job="%s",kind="pg_logical"\} 1$' % JOB, text, re.M)
