"""Pure catch-up planning and the runaway guard, with an injected clock."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.master import cron_plan
from corral.master.cron import Schedule
from corral.master.runaway import RunawayGuard, smallest_gap
from corral.v1 import types_pb2 as pb

T0 = 1_800_000_000  # an instant on a whole minute


def _tpl(**kw) -> pb.TaskTemplate:  # type: ignore[no-untyped-def]
    return pb.TaskTemplate(template_id="tpl", name="x", cron_schedule="* * * * * *", **kw)


PER_SECOND = Schedule("* * * * * *")


def test_run_once_fires_the_latest_and_records_the_rest() -> None:
    plan = cron_plan.missed(_tpl(misfire_policy=pb.RUN_ONCE), PER_SECOND, T0, T0 + 5.5)
    assert plan.fire == [T0 + 5]
    assert [i for i, _ in plan.skip] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]


def test_skip_fires_nothing_and_run_all_fires_each() -> None:
    skip = cron_plan.missed(_tpl(misfire_policy=pb.SKIP), PER_SECOND, T0, T0 + 3)
    assert skip.fire == [] and [i for i, _ in skip.skip] == [T0 + 1, T0 + 2, T0 + 3]
    every = cron_plan.missed(_tpl(misfire_policy=pb.RUN_ALL), PER_SECOND, T0, T0 + 3)
    assert every.fire == [T0 + 1, T0 + 2, T0 + 3] and every.skip == []


def test_starting_deadline_skips_instants_too_late_to_start() -> None:
    plan = cron_plan.missed(_tpl(misfire_policy=pb.RUN_ALL, starting_deadline={"seconds": 2}), PER_SECOND, T0, T0 + 6)
    assert plan.fire == [T0 + 4, T0 + 5, T0 + 6]
    assert all("starting_deadline" in r for _, r in plan.skip) and [i for i, _ in plan.skip] == [T0 + 1, T0 + 2, T0 + 3]


def test_a_long_gap_is_recorded_one_by_one_up_to_the_cap_and_as_one_range_before() -> None:
    week = 7 * 86400
    plan = cron_plan.suspended(_tpl(), PER_SECOND, T0, T0 + week)
    assert [i for i, _ in plan.skip] == list(range(T0 + week - 999, T0 + week + 1)), "the latest 1000, one by one"
    assert plan.older is not None and (plan.older.first, plan.older.last) == (T0 + 1, T0 + week - 1000)
    assert "every instant from" in plan.older.reason
    run_all = cron_plan.missed(_tpl(misfire_policy=pb.RUN_ALL), PER_SECOND, T0, T0 + week)
    assert len(run_all.fire) == cron_plan.RUN_ALL_CAP and run_all.fire[-1] == T0 + week
    assert run_all.older is not None and run_all.older.first == T0 + 1
    assert run_all.older.last + 1 == min(i for i, _ in run_all.skip) and max(i for i, _ in run_all.skip) + 1 == run_all.fire[0]
    small = cron_plan.missed(_tpl(misfire_policy=pb.SKIP, max_skip_records=10), PER_SECOND, T0, T0 + 120)
    assert [i for i, _ in small.skip] == list(range(T0 + 111, T0 + 121))
    assert small.older is not None and (small.older.first, small.older.last) == (T0 + 1, T0 + 110)


@settings(max_examples=200, deadline=None)
@given(
    gap=st.integers(min_value=0, max_value=400),
    policy=st.sampled_from([pb.RUN_ONCE, pb.SKIP, pb.RUN_ALL]),
    deadline=st.integers(min_value=0, max_value=50),
)
def test_each_missed_instant_is_fired_or_skipped_exactly_once(gap: int, policy: int, deadline: int) -> None:
    t = _tpl(misfire_policy=policy, starting_deadline={"seconds": deadline})
    plan = cron_plan.missed(t, PER_SECOND, T0, T0 + gap)
    handled = sorted([*plan.fire, *(i for i, _ in plan.skip)])
    assert handled == list(range(T0 + 1, T0 + gap + 1)), "each instant one by one (under the default cap of 1000)"
    assert plan.older is None
    records = cron_plan.skip_records(plan.skip, plan.older)
    assert [i for i, _, _ in records] == sorted(i for i, _ in plan.skip)


@settings(max_examples=200, deadline=None)
@given(gap=st.integers(0, 400), policy=st.sampled_from([pb.RUN_ONCE, pb.SKIP, pb.RUN_ALL]), cap=st.integers(1, 50),
       every=st.sampled_from(["* * * * * *", "* * * * * */7", "* * * * * 0,1,2,30"]))
def test_with_a_cap_every_instant_is_fired_recorded_or_in_the_range_record(gap: int, policy: int, cap: int, every: str) -> None:
    sched = Schedule(every)
    t = _tpl(misfire_policy=policy, max_skip_records=cap)
    plan = cron_plan.missed(t, sched, T0, T0 + gap)
    want = [int(i.timestamp()) for i in sched.between(dt.datetime.fromtimestamp(T0, dt.UTC), dt.datetime.fromtimestamp(T0 + gap, dt.UTC))]
    ranged = [i for i in want if plan.older and plan.older.first <= i <= plan.older.last]
    handled = sorted([*plan.fire, *(i for i, _ in plan.skip), *ranged])
    assert handled == want, "each instant once: fired, recorded, or inside the one range record"
    assert len(plan.skip) <= cap
    if plan.older:
        assert plan.older.first == want[0] and all(plan.older.last < i for i in [*plan.fire, *(i for i, _ in plan.skip)])


def test_runaway_guard_trips_on_fires_faster_than_the_schedule() -> None:
    gap = smallest_gap(Schedule("* * * * * */10"), dt.datetime.fromtimestamp(T0, dt.UTC))
    assert gap == 10
    guard = RunawayGuard()
    now = 1000.0
    for _ in range(30):  # on schedule for 300 s: never trips
        assert guard.record("tpl", gap, now) is None
        now += gap
    tripped = None
    for i in range(40):  # then a fire every 100 ms
        tripped = guard.record("tpl", gap, now + i * 0.1)
        if tripped:
            break
    assert tripped and "runaway guard" in tripped and "suspended" in tripped
    assert i < 30, "trips within the allowance, not after thousands of fires"


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    one = st.integers(lo, hi).map(str)
    span = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.integers(1, hi - lo + 1).map(lambda n: f"*/{n}")
    items = st.lists(st.one_of(one, span), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), one, span, step, items)


EXPRESSIONS = st.one_of(
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"]),
    st.tuples(_field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 7), st.none() | _field(0, 59)).map(
        lambda f: " ".join(x for x in f if x is not None)
    ),
)
ZONES = st.sampled_from(["", "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham"])


@settings(max_examples=150, deadline=None)
@given(EXPRESSIONS, ZONES, st.sampled_from([pb.RUN_ONCE, pb.SKIP, pb.RUN_ALL]), st.integers(0, 3600),
       st.integers(0, 3 * 86400), st.integers(0, 20 * 365 * 86400))
def test_every_schedule_the_api_accepts_goes_through_the_cron_loop_s_planning(
    expr: str, zone: str, policy: int, deadline: int, missed_for: int, offset: int
) -> None:
    """What the cron loop computes for a template (its schedule, the runaway guard's gap,
    catch-up after an outage or a pause, the next fire) never raises for a template the API
    accepted: a template must not be able to stop the loop."""
    from corral.errors import InvalidArgument
    from corral.master import validate

    t = _tpl(misfire_policy=policy, starting_deadline={"seconds": deadline})
    t.cron_schedule, t.time_zone = expr, zone
    try:
        validate.check_schedule(t)
    except InvalidArgument:
        return
    now = T0 + offset + 0.5
    sched = Schedule(expr, zone)
    assert sched.next_after(dt.datetime.fromtimestamp(now, dt.UTC), 1), "accepted, so it has a next fire"
    smallest_gap(sched, dt.datetime.fromtimestamp(now, dt.UTC))
    plan = cron_plan.missed(t, sched, int(now) - missed_for, now)
    assert all(int(now) - missed_for < i <= now for i in plan.fire)
    cron_plan.suspended(t, sched, int(now) - missed_for, now)
