"""The leader's cron loop: one timer for the earliest fire of all templates, and every
scheduled instant fired exactly once.

A fire creates task `{template_id}@{unix_seconds}` in one transaction with the template's
CronState, guarded by create-if-absent on the task and by the leader's fence: a second
leader, a retry or a restart can never create it twice. A new leader catches up on the
instants it missed per the template's misfire policy (RUN_ONCE by default: the latest
missed instant only; SKIP; RUN_ALL up to a cap).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import logging
import time

from corral.errors import CorralError
from corral.v1 import types_pb2 as pb

from . import keys, records
from .cache import Cache
from .cron import Schedule
from .leadership import Leadership
from .store import Cmp, Delete, EtcdStore, Put

log = logging.getLogger("corral.cron")

RUN_ALL_CAP = 1000


def cron_key(template_id: str) -> str:
    return keys.CRON + template_id


class CronLoop:
    def __init__(self, store: EtcdStore, cache: Cache, leadership: Leadership) -> None:
        self.store = store
        self.cache = cache
        self.leadership = leadership
        self._heap: list[tuple[float, str, int]] = []   # (due, template id, generation)
        self._gen: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._dirty: set[str] = set()  # templates whose schedule must be worked out again

    def _on_change(self, prefix: str, ident: str, msg: object) -> None:
        if prefix == keys.TEMPLATES:
            self._gen[ident] = self._gen.get(ident, 0) + 1
            self._dirty.add(ident)
            self._wake.set()

    async def run(self) -> None:
        unlisten = self.cache.listen(self._on_change)
        try:
            await self.cache.ready.wait()
            self._dirty = set(self.cache.templates)
            self._wake.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    for tid in list(self._dirty):
                        self._dirty.discard(tid)
                        await self._schedule(tid, catch_up=True)
                    await self._fire_due()
                except CorralError as e:
                    log.warning("cron pass: %s", e)
                    await asyncio.sleep(0.5)
                    self._wake.set()
                self._arm()
        finally:
            unlisten()
            if self._timer:
                self._timer.cancel()

    def _arm(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._heap:
            delay = max(0.0, self._heap[0][0] - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _state(self, tid: str) -> tuple[pb.CronState, int]:
        kv = await self.store.get(cron_key(tid))
        st = pb.CronState()
        if kv is not None:
            st.ParseFromString(kv.value)
        return st, kv.mod_revision if kv else 0

    async def _schedule(self, tid: str, *, catch_up: bool) -> None:
        rec = self.cache.templates.get(tid)
        gen = self._gen.get(tid, 0)
        if rec is None or not rec.msg.cron_schedule or rec.msg.suspended:
            return
        t = rec.msg
        sched = Schedule(t.cron_schedule, t.time_zone)
        st, _ = await self._state(tid)
        now = time.time()
        if st.last_scheduled == 0:
            # never fired: nothing before the template's creation is owed
            st.last_scheduled = int(records.seconds(t.create_time) or now)
        last = dt.datetime.fromtimestamp(st.last_scheduled, dt.UTC)
        missed = [i for i in sched.between(last, dt.datetime.fromtimestamp(now, dt.UTC))] if catch_up else []
        policy = t.misfire_policy or pb.RUN_ONCE
        if missed:
            if policy == pb.SKIP:
                await self._advance(tid, int(missed[-1].timestamp()), skipped=len(missed), reason="misfire: SKIP")
            elif policy == pb.RUN_ALL:
                for inst in missed[-RUN_ALL_CAP:]:
                    await self._fire(t, int(inst.timestamp()))
            else:
                await self._fire(t, int(missed[-1].timestamp()), skipped=len(missed) - 1)
        nxt = sched.next_after(dt.datetime.fromtimestamp(max(now, st.last_scheduled), dt.UTC), 1)
        if nxt:
            heapq.heappush(self._heap, (nxt[0].timestamp(), tid, gen))

    async def _fire_due(self) -> None:
        now = time.time()
        while self._heap and self._heap[0][0] <= now:
            due, tid, gen = heapq.heappop(self._heap)
            if gen != self._gen.get(tid, 0):
                continue  # the template changed; its entry was rescheduled
            rec = self.cache.templates.get(tid)
            if rec is None or rec.msg.suspended or not rec.msg.cron_schedule:
                continue
            await self._fire(rec.msg, int(due))
            await self._schedule(tid, catch_up=False)

    async def _advance(self, tid: str, scheduled: int, *, skipped: int, reason: str) -> None:
        st, rev = await self._state(tid)
        st.last_scheduled = max(st.last_scheduled, scheduled)
        st.skipped += skipped
        st.last_skip_reason = reason
        await self.store.txn([Cmp(cron_key(tid), rev), *self.leadership.fence()], [Put(cron_key(tid), st.SerializeToString())])

    async def _fire(self, t: pb.TaskTemplate, scheduled: int, *, skipped: int = 0) -> None:
        task_id = f"{t.template_id}@{scheduled}"
        active = [
            x for x in self.cache.tasks_of(t.template_id) if x.state in (pb.PENDING, *records.ACTIVE)
        ] if t.concurrency_policy in (pb.FORBID, pb.REPLACE) else []
        if active and t.concurrency_policy == pb.FORBID:
            await self._advance(t.template_id, scheduled, skipped=1 + skipped, reason=f"overlap: {active[0].task_id} still runs (FORBID)")
            return
        st, rev = await self._state(t.template_id)
        if scheduled <= st.last_scheduled and st.fired:
            return
        st.last_scheduled = scheduled
        st.fired += 1
        st.skipped += skipped
        spec = pb.TaskTemplate()
        spec.CopyFrom(t)
        now = time.time()
        task = pb.TaskExecution(
            task_id=task_id, template_id=t.template_id, user_id=t.owner, state=pb.PENDING, attempt=1,
            submit_time=records.ts(now), due_time=records.ts(scheduled), name=t.name, spec=spec,
            reason="fired by its schedule",
        )
        result = await self.store.txn(
            [Cmp(keys.task(task_id), 0), Cmp(cron_key(t.template_id), rev), *self.leadership.fence()],
            [Put(keys.task(task_id), task.SerializeToString()), Put(cron_key(t.template_id), st.SerializeToString())],
        )
        if result.succeeded:
            for old in active:  # REPLACE: the older runs make way
                await self._stop(old)
            log.debug("fired %s", task_id)
            if t.history_limit > 0:
                await self._trim(t)

    async def _trim(self, t: pb.TaskTemplate) -> None:
        """Delete the template's finished runs beyond its history_limit, oldest first."""
        done = sorted(
            (x for x in self.cache.tasks_of(t.template_id) if x.state in records.TERMINAL),
            key=lambda x: (records.seconds(x.due_time), x.task_id),
            reverse=True,
        )
        old = done[t.history_limit :]
        for i in range(0, len(old), 100):
            batch = old[i : i + 100]
            await self.store.txn(self.leadership.fence(), [Delete(keys.task(x.task_id)) for x in batch])

    async def _stop(self, old: pb.TaskExecution) -> None:
        kv = await self.store.get(keys.task(old.task_id))
        if kv is None:
            return
        t = pb.TaskExecution()
        t.ParseFromString(kv.value)
        if t.state in records.TERMINAL:
            return
        if t.state == pb.PENDING:
            t.state = pb.STOPPED
            t.finish_time.CopyFrom(records.ts(time.time()))
        t.stop_requested = True
        t.reason = "replaced by a newer run (REPLACE)"
        await self.store.txn([Cmp(keys.task(old.task_id), kv.mod_revision)], [Put(keys.task(old.task_id), t.SerializeToString())])
