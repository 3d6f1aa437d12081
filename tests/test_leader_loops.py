"""A leader loop that fails (an etcd error, a bad record) is started again; it never takes
the other loops or the master process down with it."""

from __future__ import annotations

import asyncio

from corral.errors import Unavailable
from corral.master.leader import _supervised


def test_a_failing_leader_loop_is_restarted_not_fatal() -> None:
    calls = 0
    other_ran = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Unavailable("etcd: connection refused")  # as the store raises it
        if calls == 3:
            raise RuntimeError("a bug in one loop")

    async def other() -> None:
        await asyncio.sleep(0.1)
        other_ran.set()

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:  # as LeaderLoops runs them
            tg.create_task(_supervised(flaky))
            tg.create_task(_supervised(other))

    asyncio.run(asyncio.wait_for(main(), 30))
    assert calls == 4, "restarted after each failure, until it returned"
    assert other_ran.is_set()


def test_cancellation_still_ends_a_supervised_loop() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def main() -> bool:
        t = asyncio.create_task(_supervised(forever))
        await asyncio.sleep(0.05)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())
