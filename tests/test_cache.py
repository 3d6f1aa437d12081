"""The master's cache against a real etcd: assigned and running tasks stay parsed, every
other task record is kept packed (its bytes) and reads back whole; finished tasks are
indexed by finish time, which is what retention deletes from."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.master import keys
from corral.master.cache import Cache, Packed, Rec, editable
from corral.master.group_commit import GroupCommit
from corral.master.leadership import Always
from corral.master.retention import Retention
from corral.master.store import EtcdStore
from corral.master.taskops import TaskWriter
from corral.v1 import types_pb2 as pb

pytestmark = pytest.mark.integration


def _task(task_id: str, state: int, finished: float = 0.0) -> pb.TaskExecution:
    t = pb.TaskExecution(task_id=task_id, state=state, user_id="u", attempt=1, node_id="n1" if state != pb.PENDING else "",
                         spec=pb.TaskTemplate(run_script="echo hi", cpu_request=100, mem_request=8 << 20), reason="r")
    t.submit_time.FromNanoseconds(int(time.time() * 1e9))
    if finished:
        t.finish_time.FromNanoseconds(int(finished * 1e9))
    return t


def test_packed_and_parsed_records_and_the_finish_index(etcd: str) -> None:
    async def main() -> None:
        store = EtcdStore(etcd, prefix=f"/t-cache-{time.time_ns()}/")
        await store.connect()
        cache = Cache(store)
        runner = asyncio.create_task(cache.run())
        try:
            now = time.time()
            want = {
                "pending": _task("pending", pb.PENDING),
                "running": _task("running", pb.RUNNING),
                "old": _task("old", pb.SUCCEEDED, finished=now - 3600),
                "older": _task("older", pb.FAILED, finished=now - 7200),
                "recent": _task("recent", pb.SUCCEEDED, finished=now - 5),
            }
            for t in want.values():
                await store.put(keys.task(t.task_id), t.SerializeToString())
            await asyncio.wait_for(cache.ready.wait(), 10)
            await cache.sync()

            assert isinstance(cache.tasks["running"], Rec)
            for ident in ("pending", "old", "older", "recent"):
                assert isinstance(cache.tasks[ident], Packed), ident
            for ident, t in want.items():
                assert cache.tasks[ident].msg == t, ident  # reads back whole, packed or not

            # a read of a packed record is a copy: changing it changes nothing cached
            got = cache.tasks["pending"].msg
            got.reason = "changed"
            assert cache.tasks["pending"].msg.reason == "r"
            mine = editable(cache.tasks["running"])
            mine.reason = "changed"
            assert cache.tasks["running"].msg.reason == "r"

            assert [i for _, i in cache.finished] == ["older", "old", "recent"]
            retention = Retention(cache, GroupCommit(store), Always(), keep=600)
            assert sorted(i for i, _ in retention.expired(now)) == ["old", "older"]

            # a transition changes the form: placed → parsed, finished → packed and indexed
            writer = TaskWriter(store, cache, Always(), GroupCommit(store))

            def assign(t: pb.TaskExecution) -> pb.TaskExecution:
                t.state, t.node_id = pb.ASSIGNED, "n2"
                return t

            def finish(t: pb.TaskExecution) -> pb.TaskExecution:
                t.state = pb.SUCCEEDED
                t.finish_time.FromNanoseconds(int((now - 4000) * 1e9))
                return t

            await writer.update("pending", assign)
            await writer.update("running", finish)
            assert isinstance(cache.tasks["pending"], Rec) and cache.tasks["pending"].msg.node_id == "n2"
            assert isinstance(cache.tasks["running"], Packed)
            assert [i for _, i in cache.finished] == ["older", "running", "old", "recent"]
            assert cache.tasks_in(pb.ASSIGNED) == {"pending"}
            assert await retention.sweep() == 3
            await cache.sync()
            assert sorted(cache.tasks) == ["pending", "recent"]
            assert [i for _, i in cache.finished] == ["recent"]
        finally:
            runner.cancel()
            await store.close()

    asyncio.run(main())


def test_a_watch_resumed_far_behind_reports_only_what_it_delivered(etcd: str) -> None:
    """etcd sends a far-behind watch its backlog in several responses, each headed with the
    *current* revision. The revision the store yields (what the cache resumes from) must be
    the last event delivered: resuming after the header would skip the rest of the backlog."""
    async def main() -> None:
        store = EtcdStore(etcd, prefix=f"/t-gap-{time.time_ns()}/")
        await store.connect()
        try:
            first = await store.current_revision() + 1
            n = 2500  # etcd sends a backlog 1,000 revisions per response
            sem = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with sem:
                    await store.put(f"k/{i:05d}", b"x")

            await asyncio.gather(*(put(i) for i in range(n)))
            last = await store.current_revision()
            seen: list[int] = []
            resume = first
            responses = 0
            while len(seen) < n and responses < 50:  # the watch breaks after each response
                async for rev, events in store.watch("k/", resume):
                    responses += 1
                    seen.extend(ev.mod_revision for ev in events)
                    assert rev <= max(seen), f"yielded {rev}, but only revisions up to {max(seen)} came"
                    resume = rev + 1
                    break
            assert responses > 1, "the backlog came in one response; the gap could not show"
            assert sorted(seen) == list(range(first, last + 1)), "events skipped or repeated"
        finally:
            await store.close()

    asyncio.run(main())
