# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schedule filters: cron_max_interval (alert thresholds) and
cron_to_oncalendar (systemd timers), the latter checked against
`systemd-analyze calendar` when it is installed (it is on Debian)."""

import datetime
import shutil
import subprocess

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.drkit.backup.plugins.filter.schedule import FilterModule, cron_max_interval, cron_to_oncalendar

H = 3600


@pytest.mark.parametrize("expr,seconds", [
    ("0 2 * * *", 24 * H),
    ("0 */6 * * *", 6 * H),
    ("15 */6 * * *", 6 * H),
    ("30 4 * * 0", 7 * 24 * H),
    ("30 4 * * 7", 7 * 24 * H),            # 7 is Sunday too
    ("*/15 * * * *", 15 * 60),
    ("0 9-17 * * 1-5", (7 + 24 + 24 + 9) * H),  # Friday 17:00 to Monday 09:00
    ("0 3 1 * *", 31 * 24 * H),             # longest month
    ("0 0 29 2 *", 1461 * 24 * H),          # leap day: every four years
    ("0 0 13 * 5", None),                   # day of month OR Friday (cron semantics)
    ("@daily", 24 * H),
    ("@hourly", H),
    ("0 0 * jan,jul sun", None),
])
def test_cron_max_interval(expr, seconds):
    got = cron_max_interval(expr)
    if seconds is not None:
        assert got == seconds
    else:
        assert 0 < got <= 190 * 24 * H


def test_dom_or_dow_is_an_or():
    # "13th or a Friday": never more than 7 days apart, unlike "Fridays the 13th"
    assert cron_max_interval("0 0 13 * 5") <= 7 * 24 * H


@pytest.mark.parametrize("bad", ["", "0 2 * *", "61 * * * *", "0 25 * * *", "0 0 0 * *", "0 0 * 13 *",
                                 "* * * * 8", "*/0 * * * *", "5-1 * * * *", "0 2 * * funday", 42, None])
def test_invalid_schedules_say_what_is_wrong(bad):
    with pytest.raises(AnsibleFilterError) as e:
        cron_max_interval(bad)
    assert "chedule" in str(e.value)


@pytest.mark.parametrize("expr,expected", [
    ("0 2 * * *", "*-*-* 02:00:00"),
    ("0 */6 * * *", "*-*-* 00,06,12,18:00:00"),
    ("30 4 * * 0", "Sun *-*-* 04:30:00"),
    ("*/30 1-5 * * 1-5", "Mon,Tue,Wed,Thu,Fri *-*-* 01,02,03,04,05:00,30:00"),
    ("0 3 1 * *", "*-*-01 03:00:00"),
    ("@hourly", "*-*-* *:00:00"),
])
def test_cron_to_oncalendar(expr, expected):
    assert cron_to_oncalendar(expr) == expected


def test_oncalendar_refuses_dom_and_dow_together():
    with pytest.raises(AnsibleFilterError, match="EITHER"):
        cron_to_oncalendar("0 0 13 * 5")


def _cron_runs(expr, start, count):
    """Reference: the next runs of a cron expression by brute force, minute by minute."""
    from ansible_collections.drkit.backup.plugins.filter.schedule import _day_matches, parse

    spec = parse(expr)
    t, out = start, []
    while len(out) < count:
        t += datetime.timedelta(minutes=1)
        if t.minute in spec["minute"] and t.hour in spec["hour"] and _day_matches(spec, t.date()):
            out.append(t)
    return out


@pytest.mark.parametrize("expr", ["0 2 * * *", "0 */6 * * *", "30 4 * * 0", "*/30 1-5 * * 1-5", "0 3 1 * *"])
def test_oncalendar_fires_when_cron_does(expr):
    """systemd-analyze calendar's next elapses equal cron's next runs."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing (Debian package systemd)"
    proc = subprocess.run([tool, "calendar", "--iterations=5", cron_to_oncalendar(expr)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode == 0, proc.stdout
    got = []
    for line in proc.stdout.splitlines():
        parts = line.split()  # "Next elapse: Mon 2026-11-30 08:00:00 UTC", "Iteration #2: ..."
        if len(parts) >= 4 and parts[-1] == "UTC" and ("elapse:" in line or "Iter." in line):
            got.append(datetime.datetime.strptime(" ".join(parts[-3:-1]), "%Y-%m-%d %H:%M:%S"))
    assert len(got) == 5, proc.stdout
    start = got[0] - datetime.timedelta(minutes=1)
    assert got == _cron_runs(expr, start, 5)


def test_filter_module_exports():
    assert set(FilterModule().filters()) == {"cron_max_interval", "cron_to_oncalendar"}
