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


def test_a_long_gap_is_not_enumerated_and_says_so() -> None:
    week = 7 * 86400
    plan = cron_plan.suspended(PER_SECOND, T0, T0 + week)
    assert len(plan.skip) <= cron_plan.SKIP_RECORD_CAP + 1 and plan.skip[-1][0] == T0 + week
    assert "not recorded one by one" in plan.unlisted
    run_all = cron_plan.missed(_tpl(misfire_policy=pb.RUN_ALL), PER_SECOND, T0, T0 + week)
    assert len(run_all.fire) == cron_plan.RUN_ALL_CAP and run_all.fire[-1] == T0 + week


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
    assert handled == list(range(T0 + 1, T0 + gap + 1))
    st_ = pb.CronState(last_scheduled=T0)
    recorded = cron_plan.skip_state(st_, plan.skip, plan.unlisted)
    assert len(recorded) == min(len(plan.skip), cron_plan.SKIP_RECORD_CAP)
    assert st_.skipped == len(plan.skip)


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
