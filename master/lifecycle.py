"""Every transition of a task record, in one place: pure functions (record, event) → the new
record, or None when the event changes nothing. They are the `mutate` of a TaskWriter
update (taskops.py), so each runs on a fresh copy, is committed with a compare on the
record's revision and, from the leader's loops, with its fencing token.

Effects follow the committed state, not the functions: the gateway sends a task to its node
once ASSIGNED is committed, and a stop once `stop_requested` is (Gateway._on_cache_change).

    PENDING ─assigned→ ASSIGNED ─reported RUNNING→ RUNNING ─reported outcome→ final
       │                  │                          │
       ├─ stop_requested ─→ STOPPED (a started one is stopped on its node)
       ├─ skipped_before_start (template paused, deleted, rescheduled) ─→ SKIPPED if it
       │     never started, STOPPED if it had (its node says which)
       ├─ skipped_past_deadline ─→ SKIPPED (or as its earlier attempt ended: it may have run)
       └─ lost (node DOWN, or its node lease ran out) / preempted ─→ the next attempt, PENDING
                                      (or LOST for good: attempts used up, or on_lost: end)
    final ─retried→ the next attempt, PENDING
"""

from __future__ import annotations

import time

from google.protobuf.duration_pb2 import Duration

from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from . import records


def assigned(t: pb.TaskExecution, node_id: str) -> pb.TaskExecution | None:
    """The plan applier placed it (its node's room was re-checked by the caller)."""
    if t.state != pb.PENDING or t.stop_requested:
        return None
    t.state = pb.ASSIGNED
    t.node_id = node_id
    t.reason = ""
    return t


def pending_reason(t: pb.TaskExecution, reason: str) -> pb.TaskExecution | None:
    """Why it still waits (what `corral task get` shows)."""
    if t.state != pb.PENDING or t.reason == reason:
        return None
    t.reason = reason
    return t


def reported(t: pb.TaskExecution, st: npb.TaskStatus) -> pb.TaskExecution | None:
    """Its node's report on the current attempt. A final record is never revived, and a
    report on another attempt changes nothing (the gateway answers those)."""
    if t.state in records.TERMINAL or t.attempt != st.attempt:
        return None
    if st.state == pb.RUNNING:
        if t.state == pb.RUNNING:
            return None
        t.state = pb.RUNNING
        t.reason = ""
        t.start_time.CopyFrom(st.start_time)
        timeout = t.spec.timeout.seconds + t.spec.timeout.nanos / 1e9
        if timeout:
            t.expiry_time.CopyFrom(records.ts(records.seconds(st.start_time) + timeout))
        return t
    if st.state == pb.LOST:  # its node killed it (the node lease ran out): as if the node were lost
        return lost(t, t.node_id, st.reason or "its node lease ran out")
    if st.state == pb.FAILED and t.spec.retry.retry_on_failure and t.attempt < records.max_attempts(t) and not t.stop_requested:
        t.exit_code = st.exit_code
        t.start_time.CopyFrom(st.start_time)
        t.finish_time.CopyFrom(st.finish_time)
        return records.next_attempt(t, pb.FAILED, st.reason or f"exit code {st.exit_code}")
    t.state = st.state
    if st.state == pb.SKIPPED and (t.HasField("start_time") or st.HasField("start_time")):
        t.state = pb.STOPPED  # it ran: never recorded as SKIPPED
    t.exit_code = st.exit_code
    t.reason = st.reason
    if not t.HasField("start_time") and st.HasField("start_time"):
        t.start_time.CopyFrom(st.start_time)
    t.finish_time.CopyFrom(st.finish_time if st.HasField("finish_time") else records.ts(time.time()))
    return t


def reported_all(t: pb.TaskExecution, sts: list[npb.TaskStatus]) -> pb.TaskExecution | None:
    """Several reports in the order the node sent them (one write for all)."""
    changed = None
    for st in sts:
        new = reported(t, st)
        if new is not None:
            t = changed = new
    return changed


def lost(t: pb.TaskExecution, node_id: str, reason: str) -> pb.TaskExecution | None:
    """Its node is gone (DOWN, restarted without it, or its lease ran out): a new attempt
    if its policy allows, else LOST for good; a stop already asked for ends it STOPPED."""
    if t.state not in records.ACTIVE or t.node_id != node_id:
        return None
    if t.stop_requested:
        t.state = pb.STOPPED
        t.reason = f"stopped; its node was lost ({reason})"
        t.finish_time.CopyFrom(records.ts(time.time()))
        return t
    if t.spec.on_lost == "end":
        t.state = pb.LOST
        t.reason = f"node {node_id} lost: {reason}; not retried (on_lost: end): it may have run"
    elif t.attempt < records.max_attempts(t):
        return records.next_attempt(t, pb.LOST, f"node {node_id} lost: {reason}")
    else:
        t.state = pb.LOST
        t.reason = f"node {node_id} lost: {reason}; no attempts left ({t.attempt})"
    t.finish_time.CopyFrom(records.ts(time.time()))
    return t


def preempted(t: pb.TaskExecution, node_id: str, by: str) -> pb.TaskExecution | None:
    """Evicted from `node_id` for a higher-priority task: queued again as a new attempt."""
    if t.state not in records.ACTIVE or t.node_id != node_id:
        return None
    return records.next_attempt(t, pb.PREEMPTED, f"preempted on {node_id} for {by}")


def stop_requested(t: pb.TaskExecution, reason: str, *, now: float, grace: Duration | None = None) -> pb.TaskExecution | None:
    """A stop (by a user, or REPLACE making way for a newer run): one not started yet ends
    STOPPED now; a started one is marked, and its node stops it (grace from `grace`)."""
    if t.state in records.TERMINAL:
        return None
    if t.state == pb.PENDING:
        t.state = pb.STOPPED
        t.finish_time.CopyFrom(records.ts(now))
    t.stop_requested = True
    if grace is not None:
        t.stop_grace.CopyFrom(grace)
    t.reason = reason
    return t


def skipped_before_start(t: pb.TaskExecution, reason: str, *, now: float) -> pb.TaskExecution | None:
    """Its template was paused, deleted or rescheduled before the run's instant: a run not
    yet started never starts and ends SKIPPED (a pending one now; a placed one once its
    node confirms — if it had started meanwhile it ends STOPPED); one in progress goes on."""
    if t.state not in (pb.PENDING, pb.ASSIGNED) or t.stop_requested:
        return None
    if t.state == pb.PENDING:
        t.state = pb.SKIPPED
        t.finish_time.CopyFrom(records.ts(now))
    t.stop_requested = True
    t.stop_as = pb.SKIPPED
    t.reason = reason
    return t


def ended_unstarted(t: pb.TaskExecution, *, now: float) -> pb.TaskExecution | None:
    """A stop was asked for a placed run its node never had (the node registered without
    it): it ends without running, as the stop said."""
    if t.state != pb.ASSIGNED or not t.stop_requested:
        return None
    t.state = t.stop_as or pb.STOPPED
    t.finish_time.CopyFrom(records.ts(now))
    return t


def skipped_past_deadline(t: pb.TaskExecution, deadline: float, *, now: float) -> pb.TaskExecution | None:
    """It could not start within its starting deadline: SKIPPED, with what held it up —
    unless an earlier attempt was placed (LOST or preempted: it may have run, and a run
    that may have executed is never recorded as SKIPPED); then it ends as that attempt did."""
    if t.state != pb.PENDING:
        return None
    if t.history:
        before = t.history[-1]
        t.state = before.state if before.state in records.TERMINAL else pb.FAILED
        t.finish_time.CopyFrom(records.ts(now))
        t.reason = (f"not retried: past its starting deadline ({deadline:g}s after its due time); "
                    f"attempt {before.attempt} ended {records.state_name(before.state)} on {before.node_id or 'its node'} and may have run")
        return t
    waited = f": {t.reason}" if t.reason and t.reason != "fired by its schedule" else ""
    t.state = pb.SKIPPED
    t.finish_time.CopyFrom(records.ts(now))
    t.reason = f"missed its starting deadline ({deadline:g}s after its due time){waited}"
    return t


def unplaceable(t: pb.TaskExecution, reason: str, *, now: float) -> pb.TaskExecution | None:
    """The placer cannot take it at all (a record no API would have accepted): FAILED."""
    if t.state != pb.PENDING:
        return None
    t.state = pb.FAILED
    t.reason = reason
    t.finish_time.CopyFrom(records.ts(now))
    return t


def retried(t: pb.TaskExecution, by: str, *, now: float) -> pb.TaskExecution | None:
    """A user runs a finished task again: the next attempt, due now."""
    if t.state not in records.TERMINAL:
        return None
    new = records.next_attempt(t, t.state, t.reason or "finished")
    new.reason = f"retried by {by}"
    new.stop_requested = False
    new.due_time.CopyFrom(records.ts(now))
    return new
