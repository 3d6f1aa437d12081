"""What a template owes for the instants it missed: which to fire and which to skip, and
why. Pure code (the caller passes the clock), shared by the leader's cron loop (missed
while no leader ran) and by ResumeTemplate (missed while suspended).

Enumerating a long gap of a dense schedule would be slow (a per-second schedule paused for a
week has 604,800 instants), so only the most recent instants are listed one by one; older
ones are summed up in one sentence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from corral.v1 import types_pb2 as pb

from . import records
from .cron import Schedule
from .runaway import smallest_gap

RUN_ALL_CAP = 1000      # catch-up fires at most, per RUN_ALL template
DEFAULT_SKIP_RECORDS = 1000  # SKIPPED records one by one per catch-up (TaskTemplate.max_skip_records)
SKIP_CHUNK = 100        # SKIPPED records per etcd transaction


@dataclass
class SkipRange:
    """Instants recorded by one SKIPPED record: every instant in [first, last]."""
    first: int
    last: int
    reason: str


@dataclass
class CatchUp:
    fire: list[int] = field(default_factory=list)              # unix seconds, oldest first
    skip: list[tuple[int, str]] = field(default_factory=list)  # (unix seconds, reason)
    older: SkipRange | None = None  # the instants before `skip` and `fire`, as one record


def skip_cap(t: pb.TaskTemplate) -> int:
    return t.max_skip_records or DEFAULT_SKIP_RECORDS


def recent_instants(sched: Schedule, last: int, now: float, limit: int) -> tuple[list[int], tuple[int, int] | None]:
    """The instants in (last, now], at most about `limit` of the latest, and the span
    (first instant, bound) of the older ones left out, if any (not enumerated: after a
    long outage of a per-second schedule they are millions)."""
    end = dt.datetime.fromtimestamp(now, dt.UTC)
    start = dt.datetime.fromtimestamp(last, dt.UTC)
    gap = smallest_gap(sched, start)
    older = None
    if gap != float("inf") and (now - last) / gap > limit:
        cut = int(now - gap * limit)
        start = dt.datetime.fromtimestamp(cut, dt.UTC)
        first = sched.next_after(dt.datetime.fromtimestamp(last, dt.UTC), 1)
        if first and int(first[0].timestamp()) <= cut:
            older = (int(first[0].timestamp()), cut)
    found = [int(i.timestamp()) for i in sched.between(start, end)]
    return found, older


def _cap(plan: CatchUp, cap: int, older: tuple[int, int] | None, why: str) -> CatchUp:
    """Keep the latest `cap` skipped instants one by one; the older ones join the range."""
    plan.skip.sort()
    over = plan.skip[: max(0, len(plan.skip) - cap)]
    plan.skip = plan.skip[len(over):]
    first, last = older if older else (0, 0)
    if over:
        first, last = (first or over[0][0]), over[-1][0]
    if first:
        plan.older = SkipRange(first, last, f"{why}: every instant from {_iso(first)} to {_iso(last)} "
                                             f"(one record for them all: beyond max_skip_records, {cap})")
    return plan


def missed(t: pb.TaskTemplate, sched: Schedule, last: int, now: float) -> CatchUp:
    """Instants missed while no leader ran: the starting deadline first, then the policy."""
    cap = skip_cap(t)
    instants, older = recent_instants(sched, last, now, RUN_ALL_CAP + cap + 1)
    plan = CatchUp()
    deadline = records.seconds(t.starting_deadline)
    if deadline > 0:
        late = [i for i in instants if i < now - deadline]
        plan.skip += [(i, f"misfire: more than {deadline:g}s late (starting_deadline)") for i in late]
        instants = instants[len(late):]
    policy = t.misfire_policy or pb.RUN_ONCE
    if policy == pb.SKIP:
        plan.skip += [(i, "misfire: missed while no leader ran (SKIP)") for i in instants]
    elif policy == pb.RUN_ALL:
        keep = instants[-RUN_ALL_CAP:]
        over = instants[: len(instants) - len(keep)]
        plan.skip += [(i, f"misfire: beyond the RUN_ALL cap of {RUN_ALL_CAP}") for i in over]
        plan.fire = keep
    else:
        plan.skip += [(i, "misfire: RUN_ONCE runs only the latest missed instant") for i in instants[:-1]]
        plan.fire = instants[-1:]
    return _cap(plan, cap, older, "misfire: missed while no leader ran")


def suspended(t: pb.TaskTemplate, sched: Schedule, last: int, now: float) -> CatchUp:
    """Instants that passed while the template was paused: each is skipped."""
    cap = skip_cap(t)
    instants, older = recent_instants(sched, last, now, cap)
    plan = CatchUp(skip=[(i, "suspended: the template was paused") for i in instants])
    return _cap(plan, cap, older, "suspended: the template was paused")


def skip_records(skips: list[tuple[int, str]], older: SkipRange | None) -> list[tuple[int, int, str]]:
    """What to write, oldest first: (instant, range end or 0, reason) — the range record
    first, so the cron state only ever moves forward as they are written in chunks."""
    out = [(older.first, older.last, older.reason)] if older else []
    return out + [(i, 0, r) for i, r in sorted(skips)]


def _iso(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
