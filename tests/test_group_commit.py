"""Group commit against a real etcd: concurrent writes share transactions, and each caller
gets the answer its own transaction would have had."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.master.group_commit import GroupCommit
from corral.master.store import Cmp, EtcdStore, Put

pytestmark = pytest.mark.integration


def _run(etcd: str, body) -> object:  # type: ignore[no-untyped-def]
    async def main() -> object:
        store = EtcdStore(etcd, prefix=f"/t-commit-{time.time_ns()}/")
        await store.connect()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_concurrent_creates_share_transactions_and_duplicates_lose(etcd: str) -> None:
    async def body(store: EtcdStore) -> None:
        commit = GroupCommit(store, max_ops=64)
        n = 400

        async def create(i: int) -> bool:
            # every tenth write claims one shared key (an idempotency key): one may win
            key = "idem/shared" if i % 10 == 0 else f"task/{i}"
            r = await commit.txn([Cmp(key, 0)], [Put(key, str(i).encode())])
            return r.succeeded

        results = await asyncio.gather(*(create(i) for i in range(n)))
        shared = [ok for i, ok in enumerate(results) if i % 10 == 0]
        assert sum(shared) == 1, "exactly one claim of the shared key succeeds"
        assert all(ok for i, ok in enumerate(results) if i % 10), "independent creates all succeed"
        kvs, _ = await store.range("task/")
        assert len(kvs) == n - n // 10
        assert commit.writes == n
        assert commit.transactions < n / 4, f"{commit.transactions} transactions for {n} writes"

    _run(etcd, body)


def test_a_failing_compare_fails_only_its_own_write(etcd: str) -> None:
    async def body(store: EtcdStore) -> None:
        await store.put("taken", b"x")
        kv = await store.get("taken")
        assert kv is not None
        commit = GroupCommit(store, max_inflight=1)
        blocker = asyncio.create_task(commit.txn([], [Put("first", b"1")]))  # holds the only slot
        writes = [
            commit.txn([Cmp("taken", 0)], [Put("taken", b"y")]),              # fails: exists
            commit.txn([Cmp("taken", kv.mod_revision)], [Put("other", b"z")]),  # holds
            commit.txn([Cmp("new", 0)], [Put("new", b"n")]),                  # holds
            commit.txn([Cmp("taken", 999_999)], [Put("stale", b"s")]),        # fails: stale
        ]
        results = await asyncio.gather(blocker, *writes)
        assert [r.succeeded for r in results] == [True, False, True, True, False]
        assert (await store.get("taken")).value == b"x"  # type: ignore[union-attr]
        assert await store.get("stale") is None
        assert (await store.get("other")).value == b"z"  # type: ignore[union-attr]
        assert commit.writes == 5

    _run(etcd, body)


def test_update_many_commits_together_and_retries_a_lost_race_alone(etcd: str) -> None:
    """TaskWriter.update_many: the changes share transactions; a change computed from a
    record someone else has since rewritten is recomputed from the new record, not
    written over it; a mutator that declines writes nothing."""
    from corral.master import keys
    from corral.master.cache import Cache
    from corral.master.leadership import Always
    from corral.master.taskops import TaskWriter
    from corral.v1 import types_pb2 as pb

    async def body(store: EtcdStore) -> None:
        n = 60
        for i in range(n):
            await store.put(keys.task(f"t{i}"), pb.TaskExecution(task_id=f"t{i}", state=pb.PENDING, user_id="u").SerializeToString())
        cache = Cache(store)
        runner = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(cache.ready.wait(), 10)
            commit = GroupCommit(store)
            writer = TaskWriter(store, cache, Always(), commit)
            # rewritten behind the cache's back: the cached revision is stale for t7
            await store.put(keys.task("t7"), pb.TaskExecution(task_id="t7", state=pb.PENDING, user_id="u", reason="changed").SerializeToString())
            cache.tasks["t7"].rev -= 1  # whether or not the watch has applied it yet: stale

            def assign(t: pb.TaskExecution) -> pb.TaskExecution | None:
                if t.task_id == "t3":
                    return None
                t.state = pb.ASSIGNED
                t.node_id = "n1"
                return t

            out = await writer.update_many([(f"t{i}", assign) for i in range(n)], fenced=True)
            assert out[3] is None
            assert all(out[i] is not None and out[i].state == pb.ASSIGNED for i in range(n) if i != 3)  # type: ignore[union-attr]
            for i in range(n):
                kv = await store.get(keys.task(f"t{i}"))
                assert kv is not None
                t = pb.TaskExecution.FromString(kv.value)
                assert t.state == (pb.PENDING if i == 3 else pb.ASSIGNED), i
            t7 = pb.TaskExecution.FromString((await store.get(keys.task("t7"))).value)  # type: ignore[union-attr]
            assert t7.reason == "changed", "the retried change kept the other writer's change"
            assert cache.tasks["t10"].msg.state == pb.ASSIGNED, "answered only once the cache has it"
            assert commit.transactions < n / 4, f"{commit.transactions} transactions for {n} changes"
        finally:
            runner.cancel()

    _run(etcd, body)
