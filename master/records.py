"""Small pure helpers over task records: states, times, ids, attempts."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from corral.v1 import types_pb2 as pb

TERMINAL = frozenset(
    {pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED, pb.TIMED_OUT, pb.STOPPED, pb.LOST, pb.SKIPPED}
)
ACTIVE = frozenset({pb.ASSIGNED, pb.RUNNING})
DEFAULT_MAX_ATTEMPTS = 3

_lock = threading.Lock()
log = logging.getLogger("corral.records")


M = TypeVar("M", bound=Message)


def parse(msg: M, raw: bytes, where: str) -> M | None:
    """`msg` filled from a stored record, or None (logged) when the bytes do not decode:
    a record that no corral wrote, or damaged, must not stop a loop or an answer."""
    try:
        msg.ParseFromString(raw)
    except DecodeError:
        log.error("undecodable %s record at %s; ignored", msg.DESCRIPTOR.name, where)
        return None
    return msg
_last = [0, 0]


def new_task_id() -> str:
    """A time-ordered unique id: milliseconds, a per-process counter and random bits (not
    secret: uniqueness comes from the time and counter; a rare clash between masters is
    caught by create-if-absent)."""
    ms = int(time.time() * 1000)
    with _lock:
        if ms == _last[0]:
            _last[1] += 1
        else:
            _last[0], _last[1] = ms, 0
        seq = _last[1]
    return f"t{ms:011x}{seq:03x}{random.getrandbits(24):06x}"


def new_template_id() -> str:
    return f"tpl-{os.urandom(5).hex()}"


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def seconds(t: Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


def state_name(state: int) -> str:
    return pb.TaskState.Name(state)


def next_attempt(task: pb.TaskExecution, end_state: int, reason: str) -> pb.TaskExecution:
    """The record for a new attempt: the current one moved to history, back to PENDING."""
    new = pb.TaskExecution()
    new.CopyFrom(task)
    new.history.add(
        attempt=task.attempt,
        node_id=task.node_id,
        state=end_state,
        exit_code=task.exit_code,
        reason=reason,
        start_time=task.start_time,
        finish_time=task.finish_time,
    )
    new.attempt = task.attempt + 1
    new.state = pb.PENDING
    new.node_id = ""
    new.exit_code = 0
    new.reason = f"attempt {task.attempt} {state_name(end_state)}: {reason}"
    for f in ("start_time", "finish_time", "expiry_time"):
        new.ClearField(f)
    return new


def max_attempts(task: pb.TaskExecution) -> int:
    return task.spec.retry.max_attempts or DEFAULT_MAX_ATTEMPTS


def fire_id(template_id: str, scheduled: int) -> str:
    """A scheduled instant's task id: the same on every master, so it is created once."""
    return f"{template_id}@{scheduled}"


def scheduled_run(t: pb.TaskTemplate, scheduled: int, now: float, *, reason: str) -> pb.TaskExecution:
    """The PENDING record of one fire of a template."""
    spec = pb.TaskTemplate()
    spec.CopyFrom(t)
    del spec.next_fires[:]
    return pb.TaskExecution(
        task_id=fire_id(t.template_id, scheduled), template_id=t.template_id, user_id=t.owner,
        state=pb.PENDING, attempt=1, submit_time=ts(now), due_time=ts(scheduled), name=t.name,
        spec=spec, reason=reason,
    )


def skipped_run(t: pb.TaskTemplate, scheduled: int, now: float, *, reason: str, range_end: int = 0) -> pb.TaskExecution:
    """The record of an instant that did not run: its one outcome, SKIPPED with the reason.
    It carries no spec (nothing will run it), which keeps it small. With `range_end`, one
    record for every instant from `scheduled` to `range_end` (id `{template}@{first}..{end}`)."""
    rec = pb.TaskExecution(
        task_id=fire_id(t.template_id, scheduled) + (f"..{range_end}" if range_end else ""), template_id=t.template_id,
        user_id=t.owner, state=pb.SKIPPED, attempt=1, submit_time=ts(now), due_time=ts(scheduled), finish_time=ts(now),
        name=t.name, reason=reason,
    )
    if range_end:
        rec.range_end.CopyFrom(ts(range_end))
    return rec
