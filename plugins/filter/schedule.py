# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the roles' schedules (five-field cron expressions).

``cron_max_interval``: the longest gap in seconds between two consecutive
runs of a schedule, found by walking a whole leap-year cycle of days (so
monthly and yearly schedules, day-of-month/day-of-week OR rules and February
29 all count).  The roles derive the "backup too old" alert threshold from it.

``cron_to_oncalendar``: the same schedule as a systemd ``OnCalendar=`` value.
Fields are expanded into explicit lists, which systemd reads exactly as cron
does, except one case it cannot express: cron ORs day-of-month and
day-of-week when both are restricted, systemd ANDs them, so that is refused.

Docs: cron_max_interval.yml and cron_to_oncalendar.yml beside this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible.errors import AnsibleFilterError

# (name, lowest, highest) of the five cron fields
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))
NAMES = {
    "month": dict((n, i + 1) for i, n in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])),
    "day of week": dict((n, i) for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])),
}
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
SYSTEMD_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


def _value(text, field, expr):
    name, lo, hi = field
    try:
        v = int(text)
    except ValueError:
        v = NAMES.get(name, {}).get(text.lower())
        if v is None:
            raise AnsibleFilterError("Schedule %r: %r is not a valid %s" % (expr, text, name))
    if not lo <= v <= hi:
        raise AnsibleFilterError("Schedule %r: %s %d is outside %d-%d" % (expr, name, v, lo, hi))
    return v


def _field(text, field, expr):
    """Set of values of one cron field, and whether it was '*' (unrestricted)."""
    name, lo, hi = field
    values = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/", 1)
            try:
                step = int(s)
            except ValueError:
                step = 0
            if step < 1:
                raise AnsibleFilterError("Schedule %r: bad step %r in the %s field" % (expr, s, name))
        if part == "*":
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, field, expr), _value(b, field, expr)
            if start > end:
                raise AnsibleFilterError("Schedule %r: range %s is backwards in the %s field" % (expr, part, name))
        elif part:
            start = _value(part, field, expr)
            end = hi if step > 1 else start
        else:
            raise AnsibleFilterError("Schedule %r: empty item in the %s field" % (expr, name))
        values.update(range(start, end + 1, step))
    if name == "day of week" and 7 in values:
        values.discard(7)
        values.add(0)
    # Vixie cron: a field starting with '*' counts as unrestricted for the
    # day-of-month/day-of-week OR rule ("*/2" included)
    return values, text.startswith("*")


def parse(expr):
    """{'minute': set, ..., 'dom_star': bool, 'dow_star': bool} of a cron expression."""
    if not isinstance(expr, str):
        raise AnsibleFilterError("Schedule must be a string like '0 2 * * *', got %r" % (expr,))
    text = MACROS.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise AnsibleFilterError("Schedule %r must have five fields (minute hour day-of-month month "
                                 "day-of-week) or be one of %s" % (expr, ", ".join(sorted(MACROS))))
    out = {}
    for part, field in zip(parts, FIELDS):
        out[field[0]], star = _field(part, field, expr)
        out[field[0] + " star"] = star
    return out


def _day_matches(spec, day):
    dom_ok = day.day in spec["day of month"]
    dow_ok = (day.isoweekday() % 7) in spec["day of week"]
    if day.month not in spec["month"]:
        return False
    # cron: when both day fields are restricted, either one matching is enough
    if spec["day of month star"] or spec["day of week star"]:
        return dom_ok and dow_ok
    return dom_ok or dow_ok


def cron_max_interval(expr):
    """Longest gap, in seconds, between consecutive runs of ``expr``."""
    spec = parse(expr)
    day_minutes = sorted(h * 60 + m for h in spec["hour"] for m in spec["minute"])
    # 2000-01-01 starts a 400-year cycle; 8 years cover every weekday/leap-day
    # combination a real schedule can hit, plus wrap-around into the next year.
    start = datetime.date(2000, 1, 1)
    runs = []
    for offset in range(366 * 8 + 1):
        day = start + datetime.timedelta(days=offset)
        if _day_matches(spec, day):
            base = offset * 1440
            runs.extend(base + m for m in day_minutes)
    if len(runs) < 2:
        raise AnsibleFilterError("Schedule %r runs less than twice in eight years" % (expr,))
    return max(b - a for a, b in zip(runs, runs[1:])) * 60


def _join(values, fmt=str):
    return ",".join(fmt(v) for v in sorted(values))


def cron_to_oncalendar(expr):
    """systemd OnCalendar= value running at the same times as ``expr``."""
    spec = parse(expr)
    if not spec["day of month star"] and not spec["day of week star"]:
        raise AnsibleFilterError(
            "Schedule %r restricts both day of month and day of week: cron runs when EITHER matches, "
            "systemd only when BOTH do; use two jobs or the cron scheduler" % (expr,))
    full = dict((f[0], set(range(f[1], f[2] + 1))) for f in FIELDS)
    full["day of week"] = set(range(0, 7))

    def part(name, fmt="%02d"):
        vals = spec[name]
        if vals == full[name]:
            return "*"
        return _join(vals, lambda v: fmt % v)

    dow = "" if spec["day of week"] == full["day of week"] else \
        _join(spec["day of week"], lambda v: SYSTEMD_DAYS[v]) + " "
    return "%s*-%s-%s %s:%s:00" % (dow, part("month"), part("day of month"), part("hour"), part("minute"))


class FilterModule(object):
    def filters(self):
        return {"cron_max_interval": cron_max_interval, "cron_to_oncalendar": cron_to_oncalendar}
