"""Deadline-first admission to task preparation.

A node prepares a bounded number of tasks at once (each prepare is a few milliseconds of
two busy CPUs). Which ones go first decides who is late: in arrival order, a scheduled run
due in a second waits behind hundreds of one-off tasks that arrived just before it and
starts seconds late. Here the earliest deadline goes first: a scheduled task's deadline is
its due instant; a task to run "as soon as possible" gets `asap_after` seconds from its
arrival, so due work whose instant is near goes before it, and it still cannot be
overtaken for ever (later arrivals of either kind get later deadlines).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

ASAP_AFTER = 2.0


def deadline_of(due: float, now: float, asap_after: float = ASAP_AFTER) -> float:
    """The instant by which a task must be prepared: its due time if that is ahead, else
    (it is due now: one-off work, or a late run) `asap_after` from now."""
    return due if due > now else now + asap_after


class PrepareQueue:
    def __init__(self, width: int = 8) -> None:
        self.width = width
        self.running = 0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def waiting(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    @asynccontextmanager
    async def turn(self, deadline: float) -> AsyncIterator[None]:
        """Wait until this prepare may run (earliest deadline first, at most `width` at
        once), and hold its place while the body runs."""
        await self._acquire(deadline)
        try:
            yield
        finally:
            self._release()

    def busy(self) -> int:
        """Prepares under way or waiting for their turn."""
        return self.running + self.waiting()

    async def _acquire(self, deadline: float) -> None:
        if self.running < self.width and not self.waiting():
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (deadline, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted in the same instant it was cancelled: pass it on
            raise

    def _release(self) -> None:
        self.running -= 1
        while self._heap and self.running < self.width:
            _, _, fut = heapq.heappop(self._heap)
            if fut.done():
                continue  # its task was cancelled while it waited
            self.running += 1
            fut.set_result(None)


class PrepareStats:
    """The last prepares' durations (at most `keep`, none older than `window` seconds):
    what the node reports in its heartbeats so the leader can send runs early enough
    (p99) and hold back what the node cannot start (rate = lanes / mean duration)."""

    def __init__(self, lanes: int = 8, keep: int = 500, window: float = 60.0) -> None:
        self.lanes = lanes
        self.window = window
        self._d: deque[tuple[float, float]] = deque(maxlen=keep)  # (monotonic end, seconds)

    def add(self, seconds: float) -> None:
        self._d.append((time.monotonic(), seconds))

    def figures(self) -> tuple[float, float]:
        """(prepares per second the node can do, p99 of one in ms); (0, 0) with no recent prepare."""
        cutoff = time.monotonic() - self.window
        while self._d and self._d[0][0] < cutoff:
            self._d.popleft()
        if not self._d:
            return 0.0, 0.0
        d = sorted(x for _, x in self._d)
        mean = sum(d) / len(d)
        p99 = d[min(len(d) - 1, int(round(0.99 * (len(d) - 1))))]
        return (self.lanes / mean if mean > 0 else 0.0), p99 * 1000
