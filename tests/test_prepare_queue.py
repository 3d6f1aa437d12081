"""The nodelet's prepare queue: earliest deadline first, a bounded number at once, and a
task cancelled while it waits gives up its place (nodelet/prepare_queue.py)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.nodelet.prepare_queue import PrepareQueue, deadline_of


def test_deadline_of_puts_near_due_work_before_asap_work() -> None:
    now = 1000.0
    assert deadline_of(1000.5, now) == 1000.5  # due in half a second: its instant
    assert deadline_of(999.0, now) == now + 2.0  # due already: two seconds from now
    assert deadline_of(1000.5, now) < deadline_of(0.0, now)  # due work first when its instant is near
    assert deadline_of(1005.0, now) > deadline_of(0.0, now)  # but not work due much later


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=40), st.integers(1, 4))
def test_grants_in_deadline_order_and_never_more_than_width(deadlines: list[float], width: int) -> None:
    async def run() -> list[float]:
        q = PrepareQueue(width)
        order: list[float] = []
        gate = asyncio.Event()
        peak = 0

        async def hold() -> None:  # fills the queue's width, so every later one must wait
            async with q.turn(-1.0):
                await gate.wait()

        async def one(d: float) -> None:
            nonlocal peak
            async with q.turn(d):
                peak = max(peak, q.running)
                order.append(d)
                await asyncio.sleep(0)

        holders = [asyncio.create_task(hold()) for _ in range(width)]
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(one(d)) for d in deadlines]
        await asyncio.sleep(0)
        assert q.waiting() == len(deadlines)
        gate.set()
        await asyncio.gather(*holders, *waiters)
        assert peak <= width
        assert q.running == 0
        return order

    assert asyncio.run(run()) == sorted(deadlines), "granted earliest deadline first"


async def _behind_one_holder(waiters: list[tuple[str, float]], cancel: tuple[str, ...] = ()) -> list[str]:
    """A one-wide queue held while `waiters` (name, deadline) queue up in list order; the
    ones named in `cancel` are cancelled while they wait. Returns the order they ran in."""
    q = PrepareQueue(1)
    order: list[str] = []
    gate = asyncio.Event()

    async def hold() -> None:
        async with q.turn(0):
            await gate.wait()

    async def one(name: str, d: float) -> None:
        async with q.turn(d):
            order.append(name)

    h = asyncio.create_task(hold())
    await asyncio.sleep(0)
    tasks = {name: asyncio.create_task(one(name, d)) for name, d in waiters}
    await asyncio.sleep(0)
    for name in cancel:
        tasks.pop(name).cancel()
    gate.set()
    await asyncio.gather(h, *tasks.values())
    assert q.running == 0 and q.waiting() == 0
    return order


def test_first_grants_follow_the_earliest_deadline_with_width_one() -> None:
    order = asyncio.run(_behind_one_holder([*((f"asap-{i}", 100.0 + i) for i in range(300)), ("cron", 50.0)]))
    assert order[0] == "cron", "the run due first is prepared first, whatever arrived before it"
    assert order[1:] == [f"asap-{i}" for i in range(300)], "the rest in arrival (deadline) order"


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    assert asyncio.run(_behind_one_holder([("stopped", 1.0), ("kept", 2.0)], cancel=("stopped",))) == ["kept"]
