"""The nodelet's start timer: tasks sent ahead of their due time are released together, by
one timer per instant, in one synchronous callback.

A hundred cron runs are often due at the same second. Waking a hundred coroutines lets
other work (stream reads, finished tasks) interleave between them, and the last one starts
tens of milliseconds late; one callback that releases every task due at the instant back to
back keeps them within a millisecond or two of each other. The callback never runs before
the wall-clock instant (it re-arms if the loop's timer woke it early).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Group:
    timer: asyncio.TimerHandle | None = None
    waiting: list[tuple[Callable[[], None] | None, asyncio.Future[None]]] = field(default_factory=list)


class ReleaseTimer:
    def __init__(self) -> None:
        self._groups: dict[float, _Group] = {}

    def at(self, due: float, release: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """A future done at wall-clock `due`, right after `release()` ran (synchronously,
        with the other releases of that instant). Cancel it to withdraw."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        group = self._groups.get(due)
        if group is None:
            group = self._groups[due] = _Group()
            group.timer = loop.call_at(loop.time() + max(0.0, due - time.time()), self._fire, due)
        group.waiting.append((release, fut))
        return fut

    def _fire(self, due: float) -> None:
        group = self._groups.get(due)
        if group is None:
            return
        left = due - time.time()
        if left > 0:  # woke a hair early: never start before the instant
            loop = asyncio.get_running_loop()
            group.timer = loop.call_at(loop.time() + left, self._fire, due)
            return
        del self._groups[due]
        for release, fut in group.waiting:
            if fut.done():
                continue  # withdrawn (stopped before its instant)
            try:
                if release is not None:
                    release()
            except Exception as e:  # noqa: BLE001 - handed to the waiting task
                fut.set_exception(e)
            else:
                fut.set_result(None)

    def close(self) -> None:
        for group in self._groups.values():
            if group.timer is not None:
                group.timer.cancel()
            for _, fut in group.waiting:
                fut.cancel()
        self._groups.clear()
