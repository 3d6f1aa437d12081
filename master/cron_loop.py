"""The leader's cron loop: one timer for the earliest fire of all templates, and every
scheduled instant given exactly one outcome: a run, or a SKIPPED record with the reason.

A fire creates task `{template_id}@{unix_seconds}` in one transaction with the template's
CronState, guarded by create-if-absent on the task and by the leader's fence: a second
leader, a retry or a restart can never create it twice. Fires are created `lookahead`
seconds before their instant, so the task is placed and on its node when the instant comes
(the nodelet starts it on its own timer). A new leader catches up on the instants it missed
per the template's starting deadline and misfire policy (see cron_plan).

No template can stop the loop: an error that comes from a template (its schedule, its
cron state, a bug its fields reach) sets that template aside — it is suspended with the
reason, logged and counted — and the others fire on. Only the store's own trouble
(unavailable, a deadline) makes a whole pass wait and try again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

from corral.errors import Aborted, CorralError, DeadlineExceeded, NotFound, Unavailable
from corral.v1 import types_pb2 as pb

from . import cron_plan, keys, lifecycle, metrics, records
from .cache import Cache
from .cron import Schedule
from .group_commit import GroupCommit
from .leadership import Leadership
from .runaway import RunawayGuard, smallest_gap
from .store import Cmp, Delete, EtcdStore, Put, TxnResult
from .taskops import TaskWriter

log = logging.getLogger("corral.cron")

DEFAULT_LOOKAHEAD = 1.0  # seconds; `corral master --lookahead`
STORE_TROUBLE = (Unavailable, DeadlineExceeded, Aborted)  # the store's, not a template's: retry the pass


def cron_key(template_id: str) -> str:
    return keys.CRON + template_id


async def write_skips(
    txn: Callable[[list[Cmp], list[Put]], Awaitable[TxnResult]], t: pb.TaskTemplate, st: pb.CronState, rev: int,
    skips: list[tuple[int, str]], older: cron_plan.SkipRange | None, now: float, fence: list[Cmp],
) -> tuple[bool, int]:
    """Record skipped instants, cron_plan.SKIP_CHUNK records per transaction, oldest first.
    Each transaction also moves the cron state past its records and holds only if the state
    is still the one the previous wrote (and each record is created only if absent), so a
    catch-up cut short by a failure resumes where it stopped. `st` is updated in place;
    returns (all written, the cron state's revision)."""
    items = cron_plan.skip_records(skips, older)
    for i in range(0, len(items), cron_plan.SKIP_CHUNK):
        chunk = items[i:i + cron_plan.SKIP_CHUNK]
        recs = [records.skipped_run(t, at, now, reason=why, range_end=end) for at, end, why in chunk]
        st.last_scheduled = max(st.last_scheduled, *(end or at for at, end, _ in chunk))
        st.skipped += sum(1 for _, end, _ in chunk if not end)
        st.last_skip_reason = chunk[-1][2]
        result = await txn(
            [Cmp(cron_key(t.template_id), rev), *(Cmp(keys.task(r.task_id), 0) for r in recs), *fence],
            [*(Put(keys.task(r.task_id), r.SerializeToString()) for r in recs), Put(cron_key(t.template_id), st.SerializeToString())],
        )
        if not result.succeeded:
            return False, rev
        rev = result.revision
    return True, rev


class CronLoop:
    def __init__(
        self, store: EtcdStore, cache: Cache, leadership: Leadership, *, lookahead: float = DEFAULT_LOOKAHEAD, commit: GroupCommit | None = None,
        writer: TaskWriter | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self._txn = commit.txn if commit is not None else store.txn
        self.cache = cache
        self.leadership = leadership
        self.lookahead = lookahead
        self._heap: list[tuple[float, float, str, int]] = []   # (wake at, due, template id, generation)
        self._gen: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._dirty: set[str] = set()  # templates whose schedule must be worked out again
        self._scheds: dict[str, tuple[int, Schedule, float]] = {}  # id -> (generation, schedule, smallest gap)
        # the leader is the only writer of cron states (fenced), so it keeps them after
        # writing; a template change (ResumeTemplate writes both) or a refused write drops one
        self._states: dict[str, tuple[pb.CronState, int]] = {}
        self.guard = RunawayGuard()
        self._broken: dict[str, int] = {}  # template → generation set aside (until it changes)
        self._trims: set[str] = set()  # templates with a run that ended: trim to history_limit

    def _on_change(self, prefix: str, ident: str, msg: object) -> None:
        if prefix == keys.TASKS and isinstance(msg, pb.TaskExecution) and msg.template_id and msg.state in records.TERMINAL:
            tpl = self.cache.templates.get(msg.template_id)
            if tpl is not None and tpl.msg.history_limit > 0:
                self._trims.add(msg.template_id)  # history_limit holds from when a run ends
                self._wake.set()
        if prefix == keys.TEMPLATES:
            self._states.pop(ident, None)
            self._gen[ident] = self._gen.get(ident, 0) + 1
            self._dirty.add(ident)
            self._wake.set()

    async def run(self) -> None:
        unlisten = self.cache.listen(self._on_change)
        try:
            await self.cache.ready.wait()
            self._states.clear()
            self._heap.clear()
            self._dirty = set(self.cache.templates)
            self._wake.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    for tid in list(self._dirty):
                        self._dirty.discard(tid)
                        try:
                            await self._schedule(tid, catch_up=True)
                        except STORE_TROUBLE:
                            self._dirty.add(tid)
                            raise
                        except Exception as e:  # noqa: BLE001 - this template's, not the loop's
                            await self._set_aside(tid, e)
                    await self._fire_due()
                    for tid in list(self._trims):
                        self._trims.discard(tid)
                        rec = self.cache.templates.get(tid)
                        if rec is not None and rec.msg.history_limit > 0:
                            await self._trim(rec.msg)
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

    def _schedule_of(self, t: pb.TaskTemplate) -> tuple[Schedule, float]:
        gen = self._gen.get(t.template_id, 0)
        got = self._scheds.get(t.template_id)
        if got is None or got[0] != gen:
            sched = Schedule(t.cron_schedule, t.time_zone)
            got = (gen, sched, smallest_gap(sched, dt.datetime.now(dt.UTC)))
            self._scheds[t.template_id] = got
        return got[1], got[2]

    async def _state(self, tid: str) -> tuple[pb.CronState, int]:
        """A copy of the template's cron state and its revision (0: none yet)."""
        st = pb.CronState()
        known = self._states.get(tid)
        if known is not None:
            st.CopyFrom(known[0])
            return st, known[1]
        kv = await self.store.get(cron_key(tid))
        if kv is not None and records.parse(st, kv.value, kv.key) is None:
            raise ValueError(f"its cron state at {kv.key} cannot be read")
        rev = kv.mod_revision if kv else 0
        self._states[tid] = (st, rev)
        copy = pb.CronState()
        copy.CopyFrom(st)
        return copy, rev

    def _wrote(self, tid: str, st: pb.CronState, result_revision: int, succeeded: bool) -> None:
        if succeeded:
            self._states[tid] = (st, result_revision)
        else:
            self._states.pop(tid, None)

    async def _schedule(self, tid: str, *, catch_up: bool) -> None:
        rec = self.cache.templates.get(tid)
        gen = self._gen.get(tid, 0)
        if self._broken.get(tid, -1) == gen:
            return
        self._broken.pop(tid, None)
        if rec is None or not rec.msg.cron_schedule or rec.msg.suspended:
            self.guard.forget(tid)
            self._scheds.pop(tid, None)
            return
        t = rec.msg
        sched, _ = self._schedule_of(t)
        st, _ = await self._state(tid)
        now = time.time()
        last = st.last_scheduled or int(records.seconds(t.create_time) or now)  # nothing is owed before creation
        if catch_up and last < now:
            plan = cron_plan.missed(t, sched, last, now)
            if plan.skip or plan.older:
                await self._record_skips(t, plan.skip, plan.older)
            for inst in plan.fire:
                await self._fire(t, inst, catch_up=True)
            last = max([last, *plan.fire, *(i for i, _ in plan.skip), plan.older.last if plan.older else 0])
        nxt = sched.next_after(dt.datetime.fromtimestamp(max(now, last), dt.UTC), 1)
        if nxt:
            due = nxt[0].timestamp()
            heapq.heappush(self._heap, (due - self.lookahead, due, tid, gen))

    def _active(self, t: pb.TaskTemplate) -> list[pb.TaskExecution]:
        return [x for x in self.cache.tasks_of(t.template_id) if x.state in (pb.PENDING, *records.ACTIVE)]

    async def _fire_due(self) -> None:
        """Fire every entry whose time has come; templates fire side by side (each has
        its own state), so a hundred templates due at one instant take one round trip."""
        now = time.time()
        entries = []
        while self._heap and self._heap[0][0] <= now:
            entries.append(heapq.heappop(self._heap))
        results = await asyncio.gather(*(self._fire_entry(due, tid, gen, now) for _, due, tid, gen in entries), return_exceptions=True)
        failed = []
        for entry, r in zip(entries, results, strict=True):
            if isinstance(r, STORE_TROUBLE):
                self._dirty.add(entry[2])  # worked out again (with catch-up) on the next pass
                failed.append(r)
            elif isinstance(r, Exception):
                await self._set_aside(entry[2], r)
            elif isinstance(r, BaseException):
                raise r
        for err in failed[:1]:
            raise err

    async def _set_aside(self, tid: str, e: Exception) -> None:
        """A template the loop cannot handle: not again until it changes; suspended, so its
        owner sees why (`template get`) and can fix and resume it."""
        self._broken[tid] = self._gen.get(tid, 0)
        metrics.RECORD_ERRORS.labels("cron").inc()
        log.error("template %s set aside: the cron loop cannot handle it: %s: %s", tid, type(e).__name__, e, exc_info=e)
        rec = self.cache.templates.get(tid)
        if rec is None or rec.msg.suspended:
            return
        reason = f"suspended: the scheduler could not handle this template ({type(e).__name__}: {str(e)[:200]}); fix it and resume"
        try:
            await self._suspend(rec.msg, reason)
        except Exception as err:  # noqa: BLE001 - set aside all the same; the next leader tries again
            log.warning("template %s: could not record its suspension: %s", tid, err)

    async def _fire_entry(self, due: float, tid: str, gen: int, now: float) -> None:
        if gen != self._gen.get(tid, 0) or self._broken.get(tid, -1) == gen:
            return  # the template changed (its entry was rescheduled), or was set aside
        rec = self.cache.templates.get(tid)
        if rec is None or rec.msg.suspended or not rec.msg.cron_schedule:
            return
        t = rec.msg
        if due > now and t.concurrency_policy in (pb.FORBID, pb.REPLACE) and self._active(t):
            # an earlier run may still end in time: decide at the instant itself
            heapq.heappush(self._heap, (due, due, tid, gen))
            return
        await self._fire(t, int(due), catch_up=False)
        await self._schedule(tid, catch_up=False)

    async def _record_skips(self, t: pb.TaskTemplate, skips: list[tuple[int, str]], older: cron_plan.SkipRange | None = None) -> None:
        st, rev = await self._state(t.template_id)
        skips = [(i, r) for i, r in skips if i > st.last_scheduled]
        if older is not None and older.last <= st.last_scheduled:
            older = None
        if not skips and older is None:
            return
        ok, rev = await write_skips(self.store.txn, t, st, rev, skips, older, time.time(), self.leadership.fence())
        self._wrote(t.template_id, st, rev, ok)
        if not ok:
            log.warning("template %s: recording %d skipped instants lost a race; the next pass retries", t.template_id, len(skips))
            self._dirty.add(t.template_id)

    async def _fire(self, t: pb.TaskTemplate, scheduled: int, *, catch_up: bool) -> None:
        active = self._active(t) if t.concurrency_policy in (pb.FORBID, pb.REPLACE) else []
        if active and t.concurrency_policy == pb.FORBID:
            await self._record_skips(t, [(scheduled, f"overlap: {active[0].task_id} still runs (FORBID)")])
            return
        st, rev = await self._state(t.template_id)
        if scheduled <= st.last_scheduled and st.fired:
            return
        st.last_scheduled = scheduled
        st.fired += 1
        task = records.scheduled_run(t, scheduled, time.time(), reason="fired by its schedule")
        result = await self._txn(
            [Cmp(keys.task(task.task_id), 0), Cmp(cron_key(t.template_id), rev), *self.leadership.fence()],
            [Put(keys.task(task.task_id), task.SerializeToString()), Put(cron_key(t.template_id), st.SerializeToString())],
        )
        self._wrote(t.template_id, st, result.revision, result.succeeded)
        if not result.succeeded:
            if task.task_id in self.cache.tasks:
                # the instant has its record already (a run of the schedule before an update,
                # skipped by it): its outcome stands; the state moves past it
                await self._advance(t, scheduled)
            return
        if t.concurrency_policy in (pb.FORBID, pb.REPLACE):
            # the next decision (a catch-up fires several in a row) must see this run active
            await self.cache.wait_revision(result.revision)
        for old in active:  # REPLACE: the older runs make way
            await self._stop(old)
        log.debug("fired %s", task.task_id)
        if t.history_limit > 0:
            await self._trim(t)
        if not catch_up:
            _, gap = self._schedule_of(t)
            tripped = self.guard.record(t.template_id, gap, time.monotonic())
            if tripped:
                await self._suspend(t, tripped)

    async def _advance(self, t: pb.TaskTemplate, scheduled: int) -> None:
        st, rev = await self._state(t.template_id)
        if scheduled <= st.last_scheduled:
            return
        st.last_scheduled = scheduled
        result = await self.store.txn([Cmp(cron_key(t.template_id), rev), *self.leadership.fence()],
                                      [Put(cron_key(t.template_id), st.SerializeToString())])
        self._wrote(t.template_id, st, result.revision, result.succeeded)

    async def _suspend(self, t: pb.TaskTemplate, reason: str) -> None:
        """The runaway guard's stop: the template is suspended and says why."""
        rec = self.cache.templates.get(t.template_id)
        if rec is None:
            return
        new = pb.TaskTemplate()
        new.CopyFrom(rec.msg)
        new.suspended = True
        new.suspend_reason = reason
        new.update_time.CopyFrom(records.ts(time.time()))
        await self.store.txn(
            [Cmp(keys.template(t.template_id), rec.rev), *self.leadership.fence()],
            [Put(keys.template(t.template_id), new.SerializeToString())],
        )
        log.warning("template %s (%s): %s", t.name, t.template_id, reason)

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
        """REPLACE: the older run makes way, through the fenced task writer like every other
        task change (its node stops it once the stop is committed)."""
        if self.writer is None:
            return
        replace = functools.partial(lifecycle.stop_requested, reason="replaced by a newer run (REPLACE)", now=time.time())
        try:
            await self.writer.update(old.task_id, replace, fenced=True)
        except NotFound:
            pass  # gone meanwhile (history trimmed): nothing runs
