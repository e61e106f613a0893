# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention policy against an independent reference model.

The model below is written from the statement of the semantics in
docs/retention.md (restic's ``forget``), one rule at a time, with nothing
shared with plugins/module_utils/repo/retention.py except the input and output
shapes.  Hypothesis drives both with backup sets built around the awkward
dates: leap days, ISO week 53, DST changes, year ends, and many ties.
"""

import calendar
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.repo.retention import (
    Duration,
    Policy,
    apply_policy,
    check_group_by,
    group_key,
    period_keys,
)
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

UTC = dt.timezone.utc
RULE_ORDER = ["last", "daily", "weekly", "monthly", "yearly"]


# --------------------------------------------------------------------------
# The reference model: plain, one rule at a time.


def model_cutoff(newest, within, tzname):
    """newest minus (years, months, weeks, days, hours) the way the docs say:
    calendar months with the day clamped, calendar days on the wall clock,
    then hours of elapsed time.  None when it falls before year 1."""
    years, months, weeks, days, hours = within
    tz = ZoneInfo(tzname)
    local = newest.astimezone(tz)
    year = local.year - years
    month = local.month - months
    while month < 1:
        month += 12
        year -= 1
    if year < 1:
        return None
    days_in_month = calendar.monthrange(year, month)[1]
    day = local.day if local.day <= days_in_month else days_in_month
    wall = dt.datetime(year, month, day, local.hour, local.minute, local.second, local.microsecond)
    wall = wall - dt.timedelta(days=7 * weeks + days)
    return wall.replace(tzinfo=tz).astimezone(UTC) - dt.timedelta(hours=hours)


def model_period(rule, when, position, tzname):
    local = when.astimezone(ZoneInfo(tzname))
    if rule == "last":
        return position
    if rule == "daily":
        return "%04d-%02d-%02d" % (local.year, local.month, local.day)
    if rule == "weekly":
        iso = local.isocalendar()
        return "%04d-W%02d" % (iso[0], iso[1])
    if rule == "monthly":
        return "%04d-%02d" % (local.year, local.month)
    return "%04d" % local.year


def model_forget(backups, counts, within, tzname):
    """{backup_id: reasons}, reasons empty for deleted backups, and the ids
    newest first."""
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    ids = [b[0] for b in ordered]
    nothing = all(counts[r] == 0 for r in RULE_ORDER) and (within is None or not any(within))
    if nothing:
        return dict((b, ["policy is empty"]) for b in ids), ids
    reasons = dict((b, []) for b in ids)
    if within is not None and any(within) and ordered:
        cutoff = model_cutoff(ordered[0][1], within, tzname)
        label = "".join("%d%s" % (n, u) for n, u in zip(within, "ymwdh") if n)
        for bid, when in ordered:
            if cutoff is None or when > cutoff:
                reasons[bid].append("within " + label)
    for rule in RULE_ORDER:
        wanted = counts[rule]
        if wanted == 0:
            continue
        kept = 0
        previous = None
        for position, (bid, when) in enumerate(ordered):
            if wanted != -1 and kept == wanted:
                break
            key = model_period(rule, when, position, tzname)
            text = "last" if rule == "last" else "%s %s" % (rule, key)
            if key != previous:
                reasons[bid].append(text)
            elif position == len(ordered) - 1:
                reasons[bid].append(text + " (oldest)")  # count left at the oldest: keep it
            else:
                continue
            previous = key
            kept += 1
    return reasons, ids


# --------------------------------------------------------------------------
# Strategies

ANCHORS = [
    dt.datetime(2024, 2, 29, 12, 0, tzinfo=UTC),   # leap day
    dt.datetime(2024, 3, 31, 6, 0, tzinfo=UTC),    # month end after a leap February
    dt.datetime(2023, 3, 31, 23, 30, tzinfo=UTC),  # month end after a common February
    dt.datetime(2025, 5, 31, 22, 45, tzinfo=UTC),  # 31st before a 30-day month
    dt.datetime(2100, 3, 1, 0, 30, tzinfo=UTC),    # 2100 is not a leap year
    dt.datetime(2000, 2, 29, 1, 0, tzinfo=UTC),    # 2000 is
    dt.datetime(2027, 1, 1, 9, 0, tzinfo=UTC),     # ISO week 2026-W53 (28 Dec 2026 - 3 Jan 2027)
    dt.datetime(2027, 1, 3, 23, 0, tzinfo=UTC),    # last day of 2026-W53 (next day in Asia)
    dt.datetime(2021, 1, 2, 12, 0, tzinfo=UTC),    # ISO week 2020-W53
    dt.datetime(2016, 1, 1, 0, 30, tzinfo=UTC),    # ISO week 2015-W53 (31 Dec in the Americas)
    dt.datetime(2025, 3, 30, 11, 30, tzinfo=UTC),  # Europe's spring DST change (01:00 UTC)
    dt.datetime(2025, 10, 26, 1, 30, tzinfo=UTC),  # and autumn
    dt.datetime(2025, 3, 9, 8, 0, tzinfo=UTC),     # New York's spring change (07:00 UTC)
    dt.datetime(2025, 4, 6, 15, 45, tzinfo=UTC),   # Lord Howe's half-hour DST change
    dt.datetime(2026, 11, 25, 21, 15, tzinfo=UTC),
]
DST_ZONES = {ANCHORS[10]: "Europe/Berlin", ANCHORS[11]: "Europe/Berlin", ANCHORS[12]: "America/New_York",
             ANCHORS[13]: "Australia/Lord_Howe"}
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago",
         "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe", "Asia/Tokyo"]
UNITS = [dt.timedelta(minutes=7), dt.timedelta(minutes=45), dt.timedelta(hours=1), dt.timedelta(hours=5),
         dt.timedelta(days=1), dt.timedelta(days=3), dt.timedelta(days=8), dt.timedelta(days=33),
         dt.timedelta(days=100)]

counts_st = st.one_of(st.just(0), st.just(0), st.integers(1, 6), st.just(-1))
within_st = st.one_of(
    st.none(),
    # one unit: cutoffs land on whole units, so exact ties with the cutoff happen
    st.integers(0, 4).flatmap(lambda i: st.integers(1, 40).map(
        lambda n: tuple(n if j == i else 0 for j in range(5)))),
    st.tuples(st.integers(0, 2), st.integers(0, 13), st.integers(0, 3), st.integers(0, 40), st.integers(0, 50)))


@st.composite
def scenarios(draw, max_size=40):
    """(backups, (counts, within, tzname)). Backups are (id, time): small
    integer multiples of one unit before an awkward anchor (repeats are exact
    ties, missing ones are empty periods and gaps), often the anchor itself
    as the newest, and often backups exactly at and around the keep_within
    cutoff."""
    counts = dict((r, draw(counts_st)) for r in RULE_ORDER)
    within = draw(within_st)
    anchor = draw(st.sampled_from(ANCHORS))
    # Half the time the zone whose DST change the anchor sits on.
    tzname = draw(st.sampled_from(ZONES + [DST_ZONES.get(anchor, "UTC")] * len(ZONES)))
    unit = draw(st.sampled_from(UNITS))
    offsets = draw(st.lists(st.integers(-40, 2), max_size=max_size))
    if draw(st.booleans()):
        offsets.append(0)
    jitter = draw(st.sampled_from([0, 0, 1, 59]))
    times = [anchor + off * unit - dt.timedelta(seconds=jitter * (i % 3)) for i, off in enumerate(offsets)]
    if times and within is not None and any(within) and draw(st.booleans()):
        cutoff = model_cutoff(max(times), within, tzname)
        if cutoff is not None:
            times += [cutoff, cutoff + dt.timedelta(seconds=1), cutoff - dt.timedelta(seconds=1)]
    # ids deliberately unrelated to time: the order must come from the time
    names = draw(st.lists(st.integers(0, 16 ** 6 - 1), min_size=len(times), max_size=len(times), unique=True))
    backups = [("b-%06x" % name, when) for name, when in zip(names, times)]
    return backups, (counts, within, tzname)


def backup_sets():
    return scenarios().map(lambda s: s[0])


def make_policy(counts, within, tzname):
    text = None
    if within is not None:
        text = "".join("%d%s" % (n, u) for n, u in zip(within, "ymwdh") if n) or "0h"
    return Policy(last=counts["last"], daily=counts["daily"], weekly=counts["weekly"],
                  monthly=counts["monthly"], yearly=counts["yearly"], within=text, timezone=tzname)


def run_impl(backups, counts, within, tzname):
    decisions = apply_policy(backups, make_policy(counts, within, tzname))
    return dict((d.backup_id, list(d.reasons)) for d in decisions), [d.backup_id for d in decisions], decisions


# --------------------------------------------------------------------------
# Properties


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
@example(([("b-000001", ANCHORS[0]), ("b-000002", ANCHORS[0])],
          ({"last": 0, "daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}, None, "UTC")))
@example(([], ({"last": 3, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}, None, "UTC")))
def test_policy_matches_reference_model(scenario):
    backups, (counts, within, tzname) = scenario
    expected, expected_order = model_forget(backups, counts, within, tzname)
    got, got_order, decisions = run_impl(backups, counts, within, tzname)
    assert got_order == expected_order
    assert got == expected
    for d in decisions:
        assert d.keep == bool(d.reasons)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_non_empty_policy_keeps_the_newest(scenario):
    backups, (counts, within, tzname) = scenario
    p = make_policy(counts, within, tzname)
    decisions = apply_policy(backups, p)
    if decisions:
        assert decisions[0].keep
    if p.empty:
        assert all(d.keep for d in decisions)


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.sampled_from(RULE_ORDER), st.integers(1, 3))
def test_raising_a_count_never_deletes_more(scenario, rule, extra):
    backups, (counts, within, tzname) = scenario
    assume(not make_policy(counts, within, tzname).empty)  # the empty policy keeps everything
    before = set(d.backup_id for d in apply_policy(backups, make_policy(counts, within, tzname)) if d.keep)
    more = dict(counts)
    more[rule] = -1 if counts[rule] == -1 else counts[rule] + extra
    after = set(d.backup_id for d in apply_policy(backups, make_policy(more, within, tzname)) if d.keep)
    assert before <= after


@settings(max_examples=200, deadline=None)
@given(backup_sets(), st.sampled_from(ZONES), st.integers(1, 6))
def test_order_comes_from_time_not_from_input_order(backups, tzname, n):
    counts = {"last": 0, "daily": n, "weekly": n, "monthly": 0, "yearly": 0}
    a = apply_policy(backups, make_policy(counts, None, tzname))
    b = apply_policy(list(reversed(backups)), make_policy(counts, None, tzname))
    assert a == b


# --------------------------------------------------------------------------
# Worked examples (docs/retention.md shows the same ones)


def day(y, m, d, h=12, mi=0):
    return dt.datetime(y, m, d, h, mi, tzinfo=UTC)


def kept(backups, **kw):
    return [d.backup_id for d in apply_policy(backups, Policy(**kw)) if d.keep]


def test_daily_seven_of_thirty():
    backups = [("d%02d" % i, day(2026, 11, i)) for i in range(1, 31)]
    assert kept(backups, daily=7) == ["d%02d" % i for i in range(30, 23, -1)]


def test_several_per_day_keeps_newest_of_each_day():
    backups = [("a", day(2026, 11, 24, 1)), ("b", day(2026, 11, 24, 13)), ("c", day(2026, 11, 25, 2)),
               ("d", day(2026, 11, 25, 14)), ("e", day(2026, 11, 23, 3)), ("f", day(2026, 11, 23, 4))]
    assert kept(backups, daily=2) == ["d", "b"]
    # Three days, count 5: the newest of each day, and since count is left
    # when the walk reaches the oldest backup (e, same day as f), e too.
    assert kept(backups, daily=5) == ["d", "b", "f", "e"]


def test_count_left_at_oldest_keeps_the_oldest_of_a_shared_period():
    backups = [("new", day(2026, 11, 25, 20)), ("mid", day(2026, 11, 25, 10)), ("old", day(2026, 11, 25, 1))]
    decisions = apply_policy(backups, Policy(daily=3))
    assert [(d.backup_id, d.reasons) for d in decisions] == [
        ("new", ["daily 2026-11-25"]), ("mid", []), ("old", ["daily 2026-11-25 (oldest)"])]


def test_rules_overlap_and_reasons_list_every_rule():
    backups = [("x", day(2026, 11, 25)), ("y", day(2026, 11, 24))]
    d = apply_policy(backups, Policy(last=1, daily=7, weekly=4, monthly=12, yearly=7))
    assert d[0].reasons == ["last", "daily 2026-11-25", "weekly 2026-W48", "monthly 2026-11", "yearly 2026"]
    # y: daily (new day); weekly/monthly/yearly: same period as x but count left at the oldest.
    assert d[1].reasons == ["daily 2026-11-24", "weekly 2026-W48 (oldest)", "monthly 2026-11 (oldest)",
                            "yearly 2026 (oldest)"]


def test_ties_are_broken_by_backup_id():
    t = day(2026, 11, 25)
    backups = [("aaa", t), ("ccc", t), ("bbb", t)]
    d = apply_policy(backups, Policy(last=1))
    assert [x.backup_id for x in d] == ["ccc", "bbb", "aaa"]
    assert [x.keep for x in d] == [True, False, False]


def test_iso_week_53():
    # 28 Dec 2026 (Mon) .. 3 Jan 2027 (Sun) is ISO week 2026-W53; 4 Jan 2027 starts 2027-W01.
    backups = [("w01", day(2027, 1, 4)), ("w53-sun", day(2027, 1, 3)), ("w53-mon", day(2026, 12, 28)),
               ("w52", day(2026, 12, 27))]
    d = apply_policy(backups, Policy(weekly=3))
    assert [(x.backup_id, x.reasons) for x in d] == [
        ("w01", ["weekly 2027-W01"]), ("w53-sun", ["weekly 2026-W53"]), ("w53-mon", []),
        ("w52", ["weekly 2026-W52"])]
    assert period_keys(day(2027, 1, 3))["yearly"] == "2027"  # calendar year, not ISO year


def test_time_zone_moves_period_boundaries():
    # 22:30 UTC on 30 June is 00:30 on 1 July in Berlin (CEST, +2).
    backups = [("july", day(2025, 6, 30, 22, 30)), ("june", day(2025, 6, 30, 8))]
    assert kept(backups, monthly=1, yearly=0) == ["july"]
    utc = apply_policy(backups, Policy(monthly=5))
    berlin = apply_policy(backups, Policy(monthly=5, timezone="Europe/Berlin"))
    assert utc[0].reasons == ["monthly 2025-06"] and utc[1].reasons == ["monthly 2025-06 (oldest)"]
    assert berlin[0].reasons == ["monthly 2025-07"] and berlin[1].reasons == ["monthly 2025-06"]


def test_leap_year_and_month_end_durations():
    assert Duration.parse("1m").before(day(2024, 3, 31)) == day(2024, 2, 29)
    assert Duration.parse("1m").before(day(2023, 3, 31)) == day(2023, 2, 28)
    assert Duration.parse("1y").before(day(2024, 2, 29)) == day(2023, 2, 28)
    assert Duration.parse("4y").before(day(2024, 2, 29)) == day(2020, 2, 29)
    assert Duration.parse("1y1m").before(day(2025, 3, 29)) == day(2024, 2, 29)
    assert Duration.parse("2w3d").before(day(2026, 1, 10)) == day(2025, 12, 24)
    assert Duration.parse("36h").before(day(2026, 1, 10)) == day(2026, 1, 9, 0)


def test_within_days_follow_the_wall_clock_across_dst():
    berlin = ZoneInfo("Europe/Berlin")
    newest = dt.datetime(2025, 3, 30, 12, 0, tzinfo=berlin)  # CEST, the day of the spring change
    cutoff = Duration.parse("1d").before(newest, berlin)
    assert cutoff == dt.datetime(2025, 3, 29, 12, 0, tzinfo=berlin)
    assert newest - cutoff == dt.timedelta(hours=23)
    # Hours are elapsed time: 12h before 12:00 CEST is 23:00 CET the day before, not midnight.
    assert Duration.parse("12h").before(newest, berlin) == dt.datetime(2025, 3, 29, 23, 0, tzinfo=berlin)
    # In UTC, 1d is 24 hours.
    assert Duration.parse("1d").before(newest) == newest.astimezone(UTC) - dt.timedelta(hours=24)


def test_within_is_strict_and_keeps_only_newer():
    backups = [("n", day(2026, 11, 25, 12)), ("edge", day(2026, 11, 23, 12)), ("in", day(2026, 11, 23, 13)),
               ("out", day(2026, 11, 20))]
    d = apply_policy(backups, Policy(within="2d"))
    assert [(x.backup_id, x.keep) for x in d] == [("n", True), ("in", True), ("edge", False), ("out", False)]
    assert d[0].reasons == ["within 2d"]


def test_unlimited_count():
    backups = [("d%02d" % i, day(2026, 11, i)) for i in range(1, 31)]
    assert len(kept(backups, daily=-1)) == 30
    assert kept(backups, monthly=-1) == ["d30", "d01"]  # one per month, plus the oldest


def test_empty_policy_keeps_everything():
    backups = [("a", day(2026, 1, 1)), ("b", day(2025, 1, 1))]
    p = Policy(last=0, daily=0, within="0d")
    assert p.empty
    assert [(d.backup_id, d.keep, d.reasons) for d in apply_policy(backups, p)] == [
        ("a", True, ["policy is empty"]), ("b", True, ["policy is empty"])]
    assert apply_policy([], Policy(last=1)) == []


@pytest.mark.parametrize("text,expected", [
    ("2d", "2d"), ("12h", "12h"), ("1w", "1w"), ("1m", "1m"), ("1y", "1y"), (" 1Y6M ", "1y6m"),
    ("3d12h", "3d12h"), ("1y2m3w4d5h", "1y2m3w4d5h"), ("0d", "0h"),
])
def test_duration_parse(text, expected):
    assert str(Duration.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "2", "d", "2x", "1h2d", "-1d", "1.5d", "2 days", None, True])
def test_duration_parse_rejects(text):
    with pytest.raises(ConfigError):
        Duration.parse(text)


@pytest.mark.parametrize("kw", [{"daily": -2}, {"last": True}, {"weekly": "many"}, {"monthly": 1.5},
                                {"timezone": "Mars/Olympus"}, {"within": "forever"}])
def test_policy_rejects(kw):
    with pytest.raises(ConfigError):
        Policy(**kw)


def test_policy_from_params():
    p = Policy.from_params({"keep_last": 3, "keep_daily": "7", "keep_within": "2d", "timezone": "Europe/Berlin"})
    assert p.describe() == {"keep_last": 3, "keep_daily": 7, "keep_weekly": 0, "keep_monthly": 0,
                            "keep_yearly": 0, "keep_within": "2d", "timezone": "Europe/Berlin"}
    assert not p.empty
    assert Policy.from_params({}).empty


def test_grouping():
    m = {"kind": "pg_logical", "source": {"type": "postgresql", "host": "db1", "port": 5432, "database": "app"}}
    assert group_key(m, ["kind", "source"]) == "pg_logical|postgresql:db1:5432:app"
    assert group_key(m, ["database"]) == "app"
    assert group_key(m, ["none"]) == "all"
    assert check_group_by(None) == ["kind", "source"]
    assert check_group_by("kind, database") == ["kind", "database"]
    for bad in (["none", "kind"], ["host"], []):
        with pytest.raises(ConfigError):
            check_group_by(bad)
