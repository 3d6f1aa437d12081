"""The runaway guard: a schedule that fires faster than its own calendar allows is
suspended, and says why.

Fires are created once per instant (`{template}@{unix}` with create-if-absent), so a runaway
cannot come from a retry or a second leader; it would come from a bug in the instant
arithmetic or a timer that keeps firing. Schedulers that lacked such a guard have launched a
job thousands of times over one DST change. Pure code: the caller passes the clock.

The expected rate is the schedule's densest: the smallest gap between its next instants.
Over a window of ten such gaps, more than twice the fires the gap allows (plus a small
allowance) trips the guard. Catch-up fires after a leader change are not counted: their
number is bounded by the misfire policy instead.
"""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass, field

from .cron import Schedule

WINDOW_GAPS = 10
ALLOWANCE = 3
MIN_WINDOW = 10.0  # seconds


def smallest_gap(sched: Schedule, after: dt.datetime, samples: int = 12) -> float:
    """The smallest gap (seconds) between the schedule's next instants; inf if it has < 2."""
    nxt = sched.next_after(after, samples)
    gaps = [(b - a).total_seconds() for a, b in zip(nxt, nxt[1:], strict=False)]
    return min(gaps) if gaps else float("inf")


@dataclass
class _Track:
    gap: float
    fires: collections.deque[float] = field(default_factory=collections.deque)


class RunawayGuard:
    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}

    def forget(self, template_id: str) -> None:
        self._tracks.pop(template_id, None)

    def record(self, template_id: str, gap: float, now: float) -> str | None:
        """Count one (non catch-up) fire at `now`; a sentence if the schedule ran away."""
        tr = self._tracks.get(template_id)
        if tr is None or tr.gap != gap:
            tr = self._tracks[template_id] = _Track(gap)
        if gap == float("inf"):
            return None
        window = max(MIN_WINDOW, WINDOW_GAPS * gap)
        limit = 2 * (int(window / gap) + 1) + ALLOWANCE
        tr.fires.append(now)
        while tr.fires and tr.fires[0] <= now - window:
            tr.fires.popleft()
        if len(tr.fires) > limit:
            return (
                f"runaway guard: {len(tr.fires)} fires in {window:g}s, more than twice the "
                f"{int(window / gap) + 1} the schedule allows; suspended"
            )
        return None
