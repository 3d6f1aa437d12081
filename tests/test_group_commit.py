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
