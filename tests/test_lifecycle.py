"""The task lifecycle as a table: (record, event) → the new record, or no change. Pure."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import given
from hypothesis import strategies as st

from corral.master import lifecycle, records
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

NOW = 1_800_000_000.0
P, A, R = pb.PENDING, pb.ASSIGNED, pb.RUNNING
FINAL = sorted(records.TERMINAL)


def task(state: int = P, *, attempt: int = 1, node: str = "a", stop: bool = False, retry_on_failure: bool = False, max_attempts: int = 0,
         on_lost: str = "") -> pb.TaskExecution:
    t = pb.TaskExecution(task_id="t1", state=state, attempt=attempt, node_id=node if state != P else "", stop_requested=stop,
                         spec=pb.TaskTemplate(run_script="x", timeout=Duration(seconds=30), on_lost=on_lost,
                                              retry=pb.RetryPolicy(retry_on_failure=retry_on_failure, max_attempts=max_attempts)))
    t.due_time.CopyFrom(records.ts(NOW - 5))
    return t


def status(state: int, attempt: int = 1, code: int = 0, *, started: bool = True) -> npb.TaskStatus:
    s = npb.TaskStatus(task_id="t1", attempt=attempt, state=state, exit_code=code, reason="why")
    if started:  # a nodelet sends a start time only for what it started
        s.start_time.CopyFrom(records.ts(NOW - 1))
    s.finish_time.CopyFrom(records.ts(NOW))
    return s


Event = Callable[[pb.TaskExecution], pb.TaskExecution | None]

# (name, record, event, expected (state, attempt, node, stop_requested) or None for "no change")
TABLE: list[tuple[str, pb.TaskExecution, Event, tuple[int, int, str, bool] | None]] = [
    ("placed", task(P), lambda t: lifecycle.assigned(t, "b"), (A, 1, "b", False)),
    ("placed once only", task(R), lambda t: lifecycle.assigned(t, "b"), None),
    ("a stopped task is not placed", task(P, stop=True), lambda t: lifecycle.assigned(t, "b"), None),
    ("started", task(A), lambda t: lifecycle.reported(t, status(R)), (R, 1, "a", False)),
    ("started twice", task(R), lambda t: lifecycle.reported(t, status(R)), None),
    ("a report on another attempt", task(R, attempt=2), lambda t: lifecycle.reported(t, status(pb.SUCCEEDED, attempt=1)), None),
    ("succeeded", task(R), lambda t: lifecycle.reported(t, status(pb.SUCCEEDED)), (pb.SUCCEEDED, 1, "a", False)),
    ("failed", task(R), lambda t: lifecycle.reported(t, status(pb.FAILED, code=3)), (pb.FAILED, 1, "a", False)),
    ("failed, retried by policy", task(R, retry_on_failure=True), lambda t: lifecycle.reported(t, status(pb.FAILED, code=3)), (P, 2, "", False)),
    ("killed by its node lease", task(R), lambda t: lifecycle.reported(t, status(pb.LOST)), (P, 2, "", False)),
    ("killed by its node lease, no attempts left", task(R, attempt=3), lambda t: lifecycle.reported(t, status(pb.LOST, attempt=3)), (pb.LOST, 3, "a", False)),
    ("node lost", task(R), lambda t: lifecycle.lost(t, "a", "DOWN"), (P, 2, "", False)),
    ("node lost while assigned", task(A), lambda t: lifecycle.lost(t, "a", "DOWN"), (P, 2, "", False)),
    ("another node lost", task(R), lambda t: lifecycle.lost(t, "b", "DOWN"), None),
    ("node lost, no attempts left", task(R, attempt=1, max_attempts=1), lambda t: lifecycle.lost(t, "a", "DOWN"), (pb.LOST, 1, "a", False)),
    ("node lost after a stop was asked", task(R, stop=True), lambda t: lifecycle.lost(t, "a", "DOWN"), (pb.STOPPED, 1, "a", True)),
    ("preempted", task(R), lambda t: lifecycle.preempted(t, "a", "t9"), (P, 2, "", False)),
    ("stopped before it started", task(P), lambda t: lifecycle.stop_requested(t, "by u", now=NOW), (pb.STOPPED, 1, "", True)),
    ("stop asked while running", task(R), lambda t: lifecycle.stop_requested(t, "by u", now=NOW), (R, 1, "a", True)),
    ("paused before its instant", task(A), lambda t: lifecycle.skipped_before_start(t, "paused", now=NOW), (A, 1, "a", True)),
    ("paused before it was placed", task(P), lambda t: lifecycle.skipped_before_start(t, "paused", now=NOW), (pb.SKIPPED, 1, "", True)),
    ("paused while running", task(R), lambda t: lifecycle.skipped_before_start(t, "paused", now=NOW), None),
    ("its node confirms it never started", lifecycle.skipped_before_start(task(A), "paused", now=NOW),  # type: ignore[arg-type]
     lambda t: lifecycle.reported(t, status(pb.SKIPPED, started=False)), (pb.SKIPPED, 1, "a", True)),
    ("it had started when the skip came", lifecycle.skipped_before_start(task(A), "paused", now=NOW),  # type: ignore[arg-type]
     lambda t: lifecycle.reported_all(t, [status(R), status(pb.SKIPPED)]), (pb.STOPPED, 1, "a", True)),
    ("a skip its node never had", lifecycle.skipped_before_start(task(A), "paused", now=NOW),  # type: ignore[arg-type]
     lambda t: lifecycle.ended_unstarted(t, now=NOW), (pb.SKIPPED, 1, "a", True)),
    ("a stop its node never had", task(A, stop=True), lambda t: lifecycle.ended_unstarted(t, now=NOW), (pb.STOPPED, 1, "a", True)),
    ("past its starting deadline", task(P), lambda t: lifecycle.skipped_past_deadline(t, 30, now=NOW), (pb.SKIPPED, 1, "", False)),
    # a retry of a LOST attempt that cannot start in time: attempt 1 may have run, so not SKIPPED
    ("lost, then past its starting deadline", lifecycle.lost(task(R), "a", "DOWN"),  # type: ignore[arg-type]
     lambda t: lifecycle.skipped_past_deadline(t, 30, now=NOW), (pb.LOST, 2, "", False)),
    ("node lost, on_lost: end", task(R, on_lost="end"), lambda t: lifecycle.lost(t, "a", "DOWN"), (pb.LOST, 1, "a", False)),
    ("killed by its node lease, on_lost: end", task(R, on_lost="end"), lambda t: lifecycle.reported(t, status(pb.LOST)), (pb.LOST, 1, "a", False)),
    ("placed in time", task(A), lambda t: lifecycle.skipped_past_deadline(t, 30, now=NOW), None),
    ("retried by a user", task(pb.FAILED), lambda t: lifecycle.retried(t, "u", now=NOW), (P, 2, "", False)),
    ("retry of a running task", task(R), lambda t: lifecycle.retried(t, "u", now=NOW), None),
]


@pytest.mark.parametrize(("name", "record", "event", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_transition(name: str, record: pb.TaskExecution, event: Event, expected: tuple[int, int, str, bool] | None) -> None:
    before = pb.TaskExecution()
    before.CopyFrom(record)
    got = event(record)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.state, got.attempt, got.node_id, got.stop_requested) == expected, got
    if got.attempt > before.attempt:  # a new attempt keeps what became of the last one
        assert got.history[-1].attempt == before.attempt and got.history[-1].node_id == before.node_id


@given(st.sampled_from(FINAL), st.sampled_from([R, pb.SUCCEEDED, pb.FAILED, pb.LOST, pb.STOPPED]), st.integers(1, 3))
def test_a_final_record_is_never_revived_by_a_report_or_a_lost_node(final: int, reported: int, attempt: int) -> None:
    for event in (lambda t: lifecycle.reported(t, status(reported, attempt=attempt)), lambda t: lifecycle.lost(t, "a", "DOWN"),
                  lambda t: lifecycle.assigned(t, "b"), lambda t: lifecycle.stop_requested(t, "x", now=NOW),
                  lambda t: lifecycle.preempted(t, "a", "t9"), lambda t: lifecycle.skipped_past_deadline(t, 1, now=NOW)):
        assert event(task(final, attempt=attempt)) is None
