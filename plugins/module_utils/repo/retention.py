# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention policy: which backups a grandfather-father-son policy keeps.

Pure functions, no storage access. The semantics are restic's ``forget``
(see docs/retention.md for the full statement and examples):

* Backups are sorted newest first by the time in their manifest; equal
  times are ordered by backup id, the greater id counting as newer.
* Each rule (last, daily, weekly, monthly, yearly) walks from newest to
  oldest and keeps a backup when its period key differs from the key of the
  last backup that rule kept, until the rule's count is used up.  Period
  keys are computed in the policy's time zone (UTC by default): day
  ``YYYY-MM-DD``, ISO week ``YYYY-Www``, month ``YYYY-MM``, year ``YYYY``;
  for ``last`` every backup is its own period.
* Rules overlap: one backup can satisfy several; its reasons list them all.
* A rule that still has count left when the walk reaches the oldest backup
  keeps the oldest backup, even when it shares a period with a kept one.
* ``within`` keeps every backup strictly newer than (newest - duration).
* A count of -1 means unlimited.  A policy with no count and no duration
  is empty: it keeps everything.

Safety rules (newest, newest verified, pinned) are not policy: they are
applied on top by rotate.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import datetime
import re
from collections import namedtuple

from ..core.errors import ConfigError
from ..core.options import Option, resolve
from .manifest import source_key

RULES = ("last", "daily", "weekly", "monthly", "yearly")
UNLIMITED = -1
GROUP_FIELDS = ("kind", "source", "database", "none")
DEFAULT_GROUP_BY = ("kind", "source")

# The policy options of s3_rotate / drkit rotate (Policy.from_params).
RETENTION = tuple(
    Option("keep_" + rule, "int", default=0, min=UNLIMITED, allowed="0 or more, or -1 for unlimited",
           flags=("--keep-" + rule,), metavar="N", help=text + " (-1: unlimited)")
    for rule, text in (("last", "keep the newest N backups"),
                       ("daily", "newest backup of each of the last N days that have backups"),
                       ("weekly", "newest backup of each of the last N ISO weeks that have backups"),
                       ("monthly", "newest backup of each of the last N months that have backups"),
                       ("yearly", "newest backup of each of the last N years that have backups"))
) + (
    Option("keep_within", "str", flags=("--keep-within",), metavar="DURATION", help="e.g. 2d, 12h, 1w, 1m, 1y"),
    Option("timezone", "str", default="UTC", flags=("--timezone",),
           help="IANA zone for day/week/month/year boundaries (default UTC)"),
    Option("group_by", "list", elements="str", default=list(DEFAULT_GROUP_BY), choices=GROUP_FIELDS,
           flags=("--group-by",), help="group backups by these fields (default kind, source); repeatable"),
)

UTC = datetime.timezone.utc

Decision = namedtuple("Decision", ["backup_id", "time", "keep", "reasons"])
"""The verdict on one backup: keep (bool) and the rules that kept it."""

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$")


# --------------------------------------------------------------------------
# Durations


class Duration(object):
    """A calendar duration written like restic's: ``2d``, ``12h``, ``1w``,
    ``1m`` (month), ``1y``, or combined in the order y m w d h (``1y6m``,
    ``3d12h``).

    Subtracting it from a time (see ``before``) works on the wall clock of
    a time zone: years and months move the calendar month, keeping the day
    and time of day (clamped to the month's last day: 31 March - 1m is
    28/29 February); weeks and days move the calendar date, keeping the time
    of day across DST changes; hours are then subtracted as elapsed time."""

    def __init__(self, years=0, months=0, weeks=0, days=0, hours=0):
        self.years, self.months, self.weeks, self.days, self.hours = years, months, weeks, days, hours

    @classmethod
    def parse(cls, text, what="duration"):
        if isinstance(text, Duration):
            return text
        if text is None or isinstance(text, bool):
            raise ConfigError("%s is missing" % what)
        raw = str(text).strip().lower().replace(" ", "")
        m = _DURATION_RE.match(raw)
        if not raw or not m:
            raise ConfigError("%s %r is not a duration" % (what, text),
                              "Write a number and a unit, units in the order y (years), m (months), "
                              "w (weeks), d (days), h (hours): 2d, 12h, 1w, 1m, 1y, 1y6m, 3d12h")
        return cls(*[int(g or 0) for g in m.groups()])

    @property
    def zero(self):
        return not (self.years or self.months or self.weeks or self.days or self.hours)

    def __str__(self):
        out = "".join("%d%s" % (n, u) for n, u in zip(
            (self.years, self.months, self.weeks, self.days, self.hours), "ymwdh") if n)
        return out or "0h"

    def __repr__(self):
        return "Duration(%s)" % self

    def __eq__(self, other):
        return isinstance(other, Duration) and str(self) == str(other)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(str(self))

    def before(self, when, tz=UTC):
        """``when`` minus this duration, as an aware UTC datetime; None when
        that lies before year 1 (everything is newer)."""
        local = when.astimezone(tz).replace(tzinfo=None)
        months = local.year * 12 + (local.month - 1) - (self.years * 12 + self.months)
        year, month0 = divmod(months, 12)
        if year < 1:
            return None
        day = min(local.day, calendar.monthrange(year, month0 + 1)[1])
        local = local.replace(year=year, month=month0 + 1, day=day)
        try:
            local -= datetime.timedelta(days=self.weeks * 7 + self.days)
            # fold=0: an ambiguous or non-existent wall time resolves as PEP 495 says.
            return local.replace(tzinfo=tz).astimezone(UTC) - datetime.timedelta(hours=self.hours)
        except OverflowError:
            return None

    def seconds(self):
        """Length in seconds when it has no calendar part (for grace periods)."""
        return (self.weeks * 7 + self.days) * 86400 + self.hours * 3600


# --------------------------------------------------------------------------
# Time zones


def get_timezone(name):
    """A tzinfo for an IANA name; UTC needs no tz database."""
    if name in (None, "", "UTC", "utc", "Z", "Etc/UTC"):
        return UTC
    if not isinstance(name, str):
        raise ConfigError("timezone must be an IANA name such as Europe/Berlin, got %r" % (name,))
    try:
        import zoneinfo  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("timezone %r needs Python 3.9 or later (zoneinfo)" % name,
                          "Use timezone: UTC or a newer Python for drkit")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError("Unknown time zone %r" % name,
                          "Use an IANA name such as Europe/Berlin or UTC; install the tz database "
                          "(package tzdata) if the name is right")


def period_keys(when, tz=UTC):
    """The period keys of a time in a time zone: {rule: key}."""
    local = when.astimezone(tz)
    iso_year, iso_week = local.isocalendar()[:2]
    return {
        "daily": "%04d-%02d-%02d" % (local.year, local.month, local.day),
        "weekly": "%04d-W%02d" % (iso_year, iso_week),
        "monthly": "%04d-%02d" % (local.year, local.month),
        "yearly": "%04d" % local.year,
    }


# --------------------------------------------------------------------------
# Policy


def _count(value, name):
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ConfigError("%s must be a number, got %r" % (name, value))
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError("%s must be a whole number, got %r" % (name, value))
    if n < UNLIMITED or str(value).strip() not in (str(n), "+%d" % n):
        raise ConfigError("%s must be 0 or more, or -1 for unlimited, got %r" % (name, value))
    return n


class Policy(object):
    """keep_last/daily/weekly/monthly/yearly counts (-1 = unlimited),
    keep_within (a Duration or None) and the time zone of period keys."""

    def __init__(self, last=0, daily=0, weekly=0, monthly=0, yearly=0, within=None, timezone="UTC"):
        self.counts = {}
        for rule, value in zip(RULES, (last, daily, weekly, monthly, yearly)):
            self.counts[rule] = _count(value, "keep_" + rule)
        if within in (None, ""):
            self.within = None
        else:
            self.within = Duration.parse(within, "keep_within")
            if self.within.zero:
                self.within = None  # restic: a zero duration is no rule
        self.timezone = timezone or "UTC"
        self.tz = get_timezone(self.timezone)

    @classmethod
    def from_params(cls, params):
        p = resolve(RETENTION, params)
        return cls(last=p["keep_last"], daily=p["keep_daily"], weekly=p["keep_weekly"],
                   monthly=p["keep_monthly"], yearly=p["keep_yearly"], within=p["keep_within"],
                   timezone=p["timezone"])

    @property
    def empty(self):
        return self.within is None and not any(self.counts.values())

    def describe(self):
        out = dict(("keep_" + r, self.counts[r]) for r in RULES)
        out["keep_within"] = str(self.within) if self.within else None
        out["timezone"] = self.timezone
        return out

    def __repr__(self):
        return "Policy(%s)" % ", ".join("%s=%s" % kv for kv in sorted(self.describe().items()))


def sort_newest_first(backups):
    """(backup_id, time) pairs, newest first; ties: greater id first."""
    return sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)


def apply_policy(backups, policy):
    """Decide for every backup of ONE group.

    ``backups`` is an iterable of (backup_id, aware datetime). Returns a
    list of Decision, newest first."""
    items = sort_newest_first(backups)
    if policy.empty:
        return [Decision(bid, t, True, ["policy is empty"]) for bid, t in items]
    if not items:
        return []
    cutoff = policy.within.before(items[0][1], policy.tz) if policy.within else None
    left = dict(policy.counts)
    last_key = dict((r, None) for r in RULES)
    oldest = len(items) - 1
    out = []
    for nr, (bid, when) in enumerate(items):
        reasons = []
        if policy.within is not None and (cutoff is None or when > cutoff):
            reasons.append("within %s" % policy.within)
        keys = period_keys(when, policy.tz)
        keys["last"] = nr  # every backup is its own period for keep_last
        for rule in RULES:
            if left[rule] == 0:
                continue
            key = keys[rule]
            if key != last_key[rule] or nr == oldest:
                label = rule if rule == "last" else "%s %s" % (rule, key)
                if key == last_key[rule]:
                    label += " (oldest)"
                reasons.append(label)
                last_key[rule] = key
                if left[rule] > 0:
                    left[rule] -= 1
        out.append(Decision(bid, when, bool(reasons), reasons))
    return out


# --------------------------------------------------------------------------
# Grouping


def check_group_by(group_by):
    if group_by is None:
        return list(DEFAULT_GROUP_BY)
    if isinstance(group_by, str):
        group_by = [g.strip() for g in group_by.split(",") if g.strip()]
    group_by = list(group_by)
    bad = [g for g in group_by if g not in GROUP_FIELDS]
    if bad or not group_by:
        raise ConfigError("group_by %r is not a list of %s" % (group_by, ", ".join(GROUP_FIELDS)),
                          "e.g. group_by: [kind, source] (the default), or [none] for one group")
    if "none" in group_by and len(group_by) > 1:
        raise ConfigError("group_by 'none' cannot be combined with other fields",
                          "Use group_by: [none] alone for a single group")
    return group_by


def group_key(manifest, group_by):
    """A readable key naming a backup's group, e.g. ``pg_logical|postgresql:db1:5432:app``."""
    if list(group_by) == ["none"]:
        return "all"
    source = manifest.get("source") or {}
    parts = []
    for field in group_by:
        if field == "kind":
            parts.append(str(manifest.get("kind")))
        elif field == "source":
            parts.append(source_key(source))
        elif field == "database":
            parts.append(str(source.get("database") if isinstance(source, dict) else None))
    return "|".join(parts)
