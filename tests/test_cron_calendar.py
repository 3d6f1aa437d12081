"""Cron calendar math against a brute-force scan of real minutes around every DST
transition 2020–2035 in four zones (including 30-minute and 45-minute offsets)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import InvalidArgument
from corral.master.cron import Schedule

UTC = dt.UTC
MIN = dt.timedelta(minutes=1)
ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Pacific/Chatham"]
SCHEDULES = ["0 2 * * *", "30 1 * * *", "0 * * * *", "*/15 * * * *"]


def transitions(zone: str, years: range) -> list[dt.datetime]:
    tz = zoneinfo.ZoneInfo(zone)
    out = []
    t = dt.datetime(years.start, 1, 1, tzinfo=UTC)
    end = dt.datetime(years.stop, 1, 1, tzinfo=UTC)
    step = dt.timedelta(hours=6)
    while t < end:
        if t.astimezone(tz).utcoffset() != (t + step).astimezone(tz).utcoffset():
            lo, hi = int(t.timestamp()), int((t + step).timestamp())
            after = (t + step).astimezone(tz).utcoffset()
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if dt.datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == after:
                    hi = mid
                else:
                    lo = mid
            out.append(dt.datetime.fromtimestamp(hi, UTC))
        t += step
    return out


def brute(expr: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Every real minute in (start, end]: fire where the wall clock matches (second
    occurrences only for every-hour schedules); wall minutes skipped by a gap fire at the
    first real minute after it."""
    tz = zoneinfo.ZoneInfo(zone)
    every_hour = croniter(expr, dt.datetime(2000, 1, 1)).expanded[1] == ["*"]
    fires = set()
    u = start + MIN
    while u <= end:
        w = u.astimezone(tz)
        naive = w.replace(tzinfo=None)
        if croniter.match(expr, naive) and (w.fold == 0 or every_hour):
            fires.add(u)
        m = (u - MIN).astimezone(tz).replace(tzinfo=None) + MIN
        while m < naive:  # the clock jumped: these wall minutes never happened
            if croniter.match(expr, m):
                fires.add(u)
            m += MIN
        u += MIN
    return sorted(fires)


@pytest.mark.parametrize("zone", ZONES)
def test_matches_brute_force_around_every_transition(zone: str) -> None:
    ts = transitions(zone, range(2020, 2036))
    assert len(ts) >= 30, f"{zone}: expected two transitions a year, found {len(ts)}"
    for expr in SCHEDULES:
        s = Schedule(expr, zone)
        for t in ts:
            start = t.replace(second=0) - dt.timedelta(hours=3)
            end = t.replace(second=0) + dt.timedelta(hours=3)
            got = s.between(start, end)
            want = brute(expr, zone, start, end)
            assert got == want, f"{zone} {expr} around {t.isoformat()}: {got} != {want}"
            assert all(a < b for a, b in zip(got, got[1:], strict=False)), "strictly increasing in UTC"


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expr", ["0 2 * * *", "30 1 * * *"])
def test_daily_schedules_fire_once_per_local_day_across_transitions(zone: str, expr: str) -> None:
    s = Schedule(expr, zone)
    tz = zoneinfo.ZoneInfo(zone)
    for t in transitions(zone, range(2020, 2036)):
        fires = s.between(t - dt.timedelta(days=3), t + dt.timedelta(days=3))
        days = Counter(f.astimezone(tz).date() for f in fires)
        inner = [d for d in days if (t - dt.timedelta(days=2)).date() <= d <= (t + dt.timedelta(days=2)).date()]
        assert inner and all(days[d] == 1 for d in inner), f"{zone} {expr} near {t}: {days}"


def test_seconds_field_and_macros() -> None:
    s = Schedule("* * * * * */10", "UTC")
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert [x.second for x in s.next_after(start, 4)] == [10, 20, 30, 40]
    assert Schedule("@hourly", "Europe/Berlin").next_after(start, 1)[0] == dt.datetime(2026, 1, 1, 1, tzinfo=UTC)


def test_bad_expression_or_zone_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="cron_schedule"):
        Schedule("61 * * * *")
    with pytest.raises(InvalidArgument, match="time_zone"):
        Schedule("* * * * *", "Mars/Olympus")


@settings(max_examples=120, deadline=None)
@given(
    expr=st.sampled_from(["* * * * * */7", "* */20 * * * *", "*/15 * * * *", "30 1 * * *", "0 * * * *", "@hourly"]),
    zone=st.sampled_from(ZONES + ["UTC"]),
    at=st.integers(min_value=1577836800_000000, max_value=2082758400_000000),  # 2020..2036, in µs
    n=st.integers(min_value=1, max_value=6),
)
def test_fast_path_agrees_with_the_general_rule(expr: str, zone: str, at: int, n: int) -> None:
    """The fixed-offset shortcut must give exactly what the DST-aware path gives, for any
    instant (fractions of a second included), near a transition or not."""
    after = dt.datetime.fromtimestamp(at / 1e6, dt.UTC)
    s = Schedule(expr, zone)
    fast = s.next_after(after, n)
    general = Schedule(expr, zone)
    general._next_fixed_offset = lambda a, k: None  # type: ignore[method-assign]
    assert fast == general.next_after(after, n)
    assert all(f > after for f in fast)
