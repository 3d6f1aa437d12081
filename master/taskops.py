"""Committed task transitions: read, change, compare-and-swap, retry on a lost race.

Every state change of a task goes through `TaskWriter.update`, so each transition is in
etcd before anyone acts on it, and two writers can never both apply a change computed from
the same old record (the compare is on the record's mod revision).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from corral.errors import Aborted, NotFound
from corral.v1 import types_pb2 as pb

from . import keys
from .cache import Cache, editable
from .group_commit import GroupCommit
from .leadership import Leadership
from .store import Cmp, EtcdStore, Put

log = logging.getLogger("corral.tasks")

Mutator = Callable[[pb.TaskExecution], pb.TaskExecution | None]


class TaskWriter:
    def __init__(self, store: EtcdStore, cache: Cache, leadership: Leadership, commit: GroupCommit | None = None) -> None:
        self.store = store
        self.commit = commit
        self.cache = cache
        self.leadership = leadership
        self.fenced_committed = 0  # leader writes that went through
        self.fenced_rejected = 0   # leader writes refused because another master leads

    async def load(self, task_id: str) -> tuple[pb.TaskExecution, int]:
        rec = self.cache.tasks.get(task_id)
        if rec is not None:
            return rec.msg, rec.rev
        kv = await self.store.get(keys.task(task_id))
        if kv is None:
            raise NotFound(f"task {task_id} not found")
        msg = pb.TaskExecution()
        msg.ParseFromString(kv.value)
        return msg, kv.mod_revision

    async def fence_holds(self) -> bool:
        """Is this master's fencing token still the leader's? (checked after a failed write)"""
        for cmp in self.leadership.fence():
            kv = await self.store.get(cmp.key)
            if kv is None or kv.create_revision != cmp.mod_revision:
                return False
        return self.leadership.still_leader()

    async def update(
        self,
        task_id: str,
        mutate: Mutator,
        *,
        fenced: bool = False,
        attempts: int = 8,
        guard: tuple[list[Cmp], list[Put]] = ([], []),
    ) -> pb.TaskExecution | None:
        """Apply `mutate` to a copy of the task and commit it if nobody changed it meanwhile.

        `mutate` returns the new record, or None to leave the task as it is (the change no
        longer applies). Returns the committed record, or None when nothing was written.
        `fenced` adds the leader's fencing compare (leader-loop writes); `guard` adds
        compares and puts that commit with the change (a request id, see request_ids).
        """
        fresh = False
        for _ in range(attempts):
            if fresh:
                kv = await self.store.get(keys.task(task_id))
                if kv is None:
                    raise NotFound(f"task {task_id} not found")
                current = pb.TaskExecution()
                current.ParseFromString(kv.value)
                rev = kv.mod_revision
            else:
                current, rev = await self.load(task_id)
            copy = pb.TaskExecution()
            copy.CopyFrom(current)
            new = mutate(copy)
            if new is None:
                return None
            compares = [Cmp(keys.task(task_id), rev), *guard[0]]
            if fenced:
                compares += self.leadership.fence()
            txn = self.commit.txn if self.commit is not None else self.store.txn
            result = await txn(compares, [Put(keys.task(task_id), new.SerializeToString()), *guard[1]])
            if result.succeeded:
                if fenced:
                    self.fenced_committed += 1
                await self.cache.wait_revision(result.revision)
                return new
            if fenced and not await self.fence_holds():
                self.fenced_rejected += 1
                self.leadership.step_down()
                raise Aborted("no longer the leader")
            fresh = True
        raise Aborted(f"task {task_id}: too many concurrent changes, try again")

    async def update_many(self, changes: Sequence[tuple[str, Mutator]], *, fenced: bool = False) -> list[pb.TaskExecution | None]:
        """Several independent `update`s (a scheduling pass's placements, a nodelet batch's
        reports): one coroutine and one group-commit enqueue for all of them instead of one
        coroutine each, which was a measured share of a busy leader. A change whose compare
        fails (someone changed the task meanwhile) is retried through `update`, alone.
        Results are in the order of `changes`; the first error is raised, as by gather."""
        if self.commit is None or len(changes) < 2:
            return list(await asyncio.gather(*(self.update(t, m, fenced=fenced) for t, m in changes)))
        out: list[pb.TaskExecution | None] = [None] * len(changes)
        fence = self.leadership.fence() if fenced else []
        slow: list[int] = []  # not in the cache, or lost a race: the one-by-one path
        sent: list[tuple[int, pb.TaskExecution]] = []
        writes: list[tuple[list[Cmp], list[Put]]] = []
        for i, (task_id, mutate) in enumerate(changes):
            rec = self.cache.tasks.get(task_id)
            if rec is None:
                slow.append(i)
                continue
            new = mutate(editable(rec))
            if new is None:
                continue
            writes.append(([Cmp(keys.task(task_id), rec.rev), *fence], [Put(keys.task(task_id), new.SerializeToString())]))
            sent.append((i, new))
        results = await self.commit.txn_many(writes) if writes else []
        newest = 0
        raced = False
        for (i, new), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            if result.succeeded:
                out[i] = new
                newest = max(newest, result.revision)
                if fenced:
                    self.fenced_committed += 1
            else:
                slow.append(i)
                raced = True
        if newest:
            await self.cache.wait_revision(newest)
        if slow:
            if raced and fenced and not await self.fence_holds():
                self.fenced_rejected += 1
                self.leadership.step_down()
                raise Aborted("no longer the leader")
            again = await asyncio.gather(*(self.update(changes[i][0], changes[i][1], fenced=fenced) for i in slow))
            for i, new_or_none in zip(slow, again, strict=True):
                out[i] = new_or_none
        return out
