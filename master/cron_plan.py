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
SKIP_RECORD_CAP = 100   # SKIPPED records written per catch-up (one etcd transaction)


@dataclass
class CatchUp:
    fire: list[int] = field(default_factory=list)              # unix seconds, oldest first
    skip: list[tuple[int, str]] = field(default_factory=list)  # (unix seconds, reason)
    unlisted: str = ""  # a sentence about older instants that were not enumerated


def recent_instants(sched: Schedule, last: int, now: float, limit: int) -> tuple[list[int], bool]:
    """The instants in (last, now], at most about `limit` of the latest; True if older ones
    were left out."""
    end = dt.datetime.fromtimestamp(now, dt.UTC)
    start = dt.datetime.fromtimestamp(last, dt.UTC)
    gap = smallest_gap(sched, start)
    cut = False
    if gap != float("inf") and (now - last) / gap > limit:
        start = dt.datetime.fromtimestamp(now - gap * limit, dt.UTC)
        cut = True
    found = [int(i.timestamp()) for i in sched.between(start, end)]
    return found, cut and bool(found)


def missed(t: pb.TaskTemplate, sched: Schedule, last: int, now: float) -> CatchUp:
    """Instants missed while no leader ran: the starting deadline first, then the policy."""
    instants, cut = recent_instants(sched, last, now, RUN_ALL_CAP + 1)
    plan = CatchUp()
    if cut:
        plan.unlisted = f"instants after {_iso(last)} and before {_iso(instants[0])} were missed and skipped (not recorded one by one)"
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
    plan.skip.sort()
    return plan


def suspended(sched: Schedule, last: int, now: float) -> CatchUp:
    """Instants that passed while the template was paused: each is skipped."""
    instants, cut = recent_instants(sched, last, now, SKIP_RECORD_CAP)
    plan = CatchUp(skip=[(i, "suspended: the template was paused") for i in instants])
    if cut:
        plan.unlisted = f"instants after {_iso(last)} and before {_iso(instants[0])} passed while paused (not recorded one by one)"
    return plan


def skip_state(st: pb.CronState, skips: list[tuple[int, str]], unlisted: str) -> list[tuple[int, str]]:
    """Advance the cron state over skipped instants; the ones to record (the latest
    SKIP_RECORD_CAP). The rest are counted only, and the state says so."""
    if not skips and not unlisted:
        return []
    recorded = skips[-SKIP_RECORD_CAP:]
    if skips:
        st.last_scheduled = max(st.last_scheduled, skips[-1][0])
        st.skipped += len(skips)
        st.last_skip_reason = skips[-1][1]
    dropped = len(skips) - len(recorded)
    notes = [n for n in (unlisted, f"{dropped} more skipped instants are counted, not recorded" if dropped else "") if n]
    if notes:
        st.last_skip_reason = "; ".join([st.last_skip_reason, *notes]) if st.last_skip_reason else "; ".join(notes)
    return recorded


def _iso(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
