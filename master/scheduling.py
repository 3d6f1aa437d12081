"""The leader's scheduling loop: pending tasks → scheduler_core.place → committed ASSIGNED →
StartTask down the node's stream. Also the time queue for tasks due later: one timer for the
earliest due instant, no polling.

Tasks due within the look-ahead window are placed ahead of their instant; the StartTask
carries the due time and the nodelet starts the task on its own timer, so lateness is the
nodelet's timer and process start, not a scheduling round trip. Tasks that share an
ordering_key run one at a time, in the order etcd first committed them. A task with a
starting_deadline that is still unplaced past it ends SKIPPED.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import heapq
import logging
import time
from collections.abc import Callable

import corral.scheduler_core as sc
from corral.errors import Aborted
from corral.v1 import types_pb2 as pb

from . import lifecycle, metrics, records
from .cache import Cache
from .gateway import Gateway
from .taskops import Mutator, TaskWriter

log = logging.getLogger("corral.scheduler")

DEFAULT_LOOKAHEAD = 1.0  # seconds; `corral master --lookahead`
MAX_LOOKAHEAD = 5.0  # the lookahead grows with the nodes' prepare p99 up to this
START_HORIZON = 2.0  # a node is given at most this many seconds of starts at its measured rate
APPLY_RETRIES = 3  # placements refused by the re-check before the task says it is blocked
DRIVER_NAMES = {pb.PROCESS: "process", pb.DOCKER: "docker", pb.DRIVER_UNSPECIFIED: "process"}


def to_request(task: pb.TaskExecution, now: float | None = None) -> sc.TaskRequest:
    s = task.spec
    return sc.TaskRequest(
        task_id=task.task_id,
        request=sc.Resources(s.cpu_request, s.mem_request, s.pids_limit),
        driver=DRIVER_NAMES.get(s.driver, "process"),
        constraints=tuple(sc.Constraint(c.key, c.op, tuple(c.values)) for c in s.constraints),
        priority=s.priority,
        template_id=task.template_id,
        user_id=task.user_id,
        distinct_nodes=s.distinct_nodes,
        gang=f"{task.user_id}/{s.gang}" if s.gang else "",
        strategy=s.placement,
        scheduled=records.seconds(task.due_time) > (time.time() if now is None else now),
    )


class Tally:
    """What runs where, kept up to date from cache changes (O(1) per change), so a pass
    builds its snapshot from per-node totals instead of re-adding every task."""

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, sc.Running]] = {}
        self.allocated: dict[str, sc.Resources] = {}
        self._where: dict[str, str] = {}
        self.assigned: dict[str, set[str]] = {}  # node → tasks sent to it and not yet started
        self._assigned_at: dict[str, str] = {}
        self.dirty: set[str] = set()  # nodes whose tasks changed since the last snapshot

    def update(self, task_id: str, msg: pb.TaskExecution | None) -> None:
        was = self._assigned_at.pop(task_id, None)
        if was is not None:
            self.assigned[was].discard(task_id)
            self.dirty.add(was)
        if msg is not None and msg.state == pb.ASSIGNED and msg.node_id:
            self.assigned.setdefault(msg.node_id, set()).add(task_id)
            self._assigned_at[task_id] = msg.node_id
        node = self._where.pop(task_id, None)
        if node is not None:
            r = self.by_node[node].pop(task_id)
            self.allocated[node] = self.allocated[node] - r.request
            self.dirty.add(node)
        if msg is not None and msg.state in records.ACTIVE and msg.node_id:
            self.dirty.add(msg.node_id)
            s = msg.spec
            r = sc.Running(task_id, sc.Resources(s.cpu_request, s.mem_request, s.pids_limit), s.priority, msg.template_id)
            self.by_node.setdefault(msg.node_id, {})[task_id] = r
            self.allocated[msg.node_id] = self.allocated.get(msg.node_id, sc.Resources()) + r.request
            self._where[task_id] = msg.node_id

    def fits(self, node: pb.NodeInfo, request: sc.Resources) -> bool:
        """The plan applier's re-check against the latest committed state."""
        cap = sc.Resources(node.allocatable.cpu, node.allocatable.memory, node.allocatable.pids or 1 << 30)
        return (self.allocated.get(node.node_id, sc.Resources()) + request).fits_in(cap)


def start_room(rate: float, assigned: int, horizon: float = START_HORIZON) -> int:
    """Starts a node can still be given: its measured rate over `horizon` seconds, less the
    starts it has not begun; -1 (no limit) while it has measured nothing."""
    return -1 if rate <= 0 else max(0, int(rate * horizon) - assigned)


def _node(node_id: str, n: pb.NodeInfo, tally: Tally, ready: bool, room: int = -1) -> sc.Node:
    return sc.Node(
        node_id=node_id,
        allocatable=sc.Resources(n.allocatable.cpu, n.allocatable.memory, n.allocatable.pids or 1 << 30),
        allocated=tally.allocated.get(node_id, sc.Resources()),
        ready=ready,
        schedulable=n.state == pb.READY,
        drivers=frozenset(n.drivers),
        labels=tuple(sorted(n.labels.items())),
        running=tuple(tally.by_node.get(node_id, {}).values()),
        start_room=room,
    )


class Snapshots:
    """The scheduler_core view of every node, rebuilt per node only when its record or its
    tasks changed: with thousands of nodes, rebuilding all of them for every pass was a
    measured share of the leader's time."""

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[int, sc.Node]] = {}  # node id -> (record revision, view)

    def build(self, cache: Cache, gateway: Gateway, tally: Tally) -> sc.Snapshot:
        dirty, tally.dirty = tally.dirty, set()
        out = []
        for node_id, rec in cache.nodes.items():
            n = rec.msg
            ready = n.state in (pb.READY, pb.CORDONED, pb.DRAINING) and gateway.connected(node_id)
            room = start_room(gateway.prepare_rate(node_id), len(tally.assigned.get(node_id, ())))
            known = self._nodes.get(node_id)
            if known is None or known[0] != rec.rev or node_id in dirty:
                view = _node(node_id, n, tally, ready, room)
                self._nodes[node_id] = (rec.rev, view)
            elif known[1].ready != ready or known[1].start_room != room:
                view = dataclasses.replace(known[1], ready=ready, start_room=room)
                self._nodes[node_id] = (rec.rev, view)
            else:
                view = known[1]
            out.append(view)
        if len(self._nodes) > len(out):
            for gone in set(self._nodes) - set(cache.nodes):
                del self._nodes[gone]
        return sc.Snapshot(tuple(out))


class Scheduler:
    """Places due PENDING tasks. Tasks due later wait in a heap behind one timer; the set of
    due-but-unplaced tasks is retried whenever something changes that could make room
    (a node joins or changes, a task ends, a new task arrives)."""

    def __init__(
        self,
        cache: Cache,
        writer: TaskWriter,
        gateway: Gateway,
        *,
        concurrency: int = 1024,
        config: sc.PlaceConfig | None = None,
        lookahead: float = DEFAULT_LOOKAHEAD,
    ) -> None:
        self.config = config or sc.PlaceConfig()
        self.lookahead = lookahead
        self.base_lookahead = lookahead
        self._p99: dict[str, float] = {}  # node → its prepare p99, seconds
        # the lookahead changed: the cron loop creates its runs this far ahead too
        self.on_lookahead: Callable[[float], None] = lambda seconds: None
        self._orders: dict[tuple[str, str], dict[str, int]] = {}  # (user, ordering_key) -> unfinished task -> create revision
        self._order_of: dict[str, tuple[str, str]] = {}
        self._deadline_timers: dict[str, asyncio.TimerHandle] = {}
        self.cache = cache
        self.writer = writer
        self.gateway = gateway
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.concurrency = concurrency  # placements per batch of writes
        self._heap: list[tuple[float, str]] = []
        self._ready: set[str] = set()
        self.tally = Tally()
        self.snapshots = Snapshots()
        self._apply_retries: dict[str, int] = {}
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    def node_prepare(self, node_id: str, rate: float, p99_ms: float) -> None:
        """A node's prepare figures: send runs due later ahead by twice the slowest node's
        prepare p99 (at least the configured lookahead, at most MAX_LOOKAHEAD), so a run is
        parked on its node before its instant even when prepares slow down."""
        if p99_ms > 0:
            self._p99[node_id] = p99_ms / 1000
        want = min(MAX_LOOKAHEAD, max(self.base_lookahead, 2 * max(self._p99.values(), default=0.0)))
        if abs(want - self.lookahead) >= 0.05:
            self.lookahead = want
            self.on_lookahead(want)
            if self._heap and self._timer is not None:
                self._arm(self._heap[0][0])
    def _track(self, task: pb.TaskExecution) -> None:
        due = records.seconds(task.due_time)
        if due <= time.time() + self.lookahead:
            self._ready.add(task.task_id)
            self._wake.set()
        else:
            heapq.heappush(self._heap, (due, task.task_id))
            if due < self._timer_at:
                self._arm(due)

    def _track_order(self, task_id: str, msg: pb.TaskExecution | None) -> None:
        """Keep the unfinished tasks of each ordering key, with their create revisions."""
        old = self._order_of.pop(task_id, None)
        if old is not None:
            group = self._orders[old]
            group.pop(task_id, None)
            if not group:
                del self._orders[old]
        if msg is not None and msg.spec.ordering_key and msg.state not in records.TERMINAL:
            key = (msg.user_id, msg.spec.ordering_key)
            rec = self.cache.tasks.get(task_id)
            self._orders.setdefault(key, {})[task_id] = rec.created if rec is not None else 0
            self._order_of[task_id] = key

    def on_cache_change(self, prefix: str, ident: str, msg: object) -> None:
        if prefix == "nodes/":
            self._wake.set()
        elif prefix == "tasks/":
            self.tally.update(ident, msg if isinstance(msg, pb.TaskExecution) else None)
            self._track_order(ident, msg if isinstance(msg, pb.TaskExecution) else None)
            if isinstance(msg, pb.TaskExecution) and msg.state == pb.PENDING:
                self._track(msg)
            else:
                self._ready.discard(ident)
                if isinstance(msg, pb.TaskExecution) and msg.state in records.TERMINAL:
                    self._wake.set()

    async def run(self) -> None:
        unlisten = self.cache.listen(self.on_cache_change)
        try:
            await self.cache.ready.wait()
            self.tally = Tally()
            self.snapshots = Snapshots()
            self._orders, self._order_of = {}, {}
            # finished tasks neither hold resources nor an ordering key: only the others
            for state, ids in list(self.cache.by_state.items()):
                if state in records.TERMINAL:
                    continue
                for task_id in list(ids):
                    msg = self.cache.tasks[task_id].msg
                    self.tally.update(task_id, msg)
                    self._track_order(task_id, msg)
                    if state == pb.PENDING:
                        self._track(msg)
            self._wake.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Aborted as e:
                    log.info("scheduling pass stopped: %s", e)
                    await asyncio.sleep(0.5)
                    self._wake.set()
                except Exception:
                    log.exception("scheduling pass failed")
                    await asyncio.sleep(0.5)
                    self._wake.set()
        finally:
            unlisten()
            if self._timer:
                self._timer.cancel()
            for timer in self._deadline_timers.values():
                timer.cancel()
            self._deadline_timers.clear()

    def _arm(self, due: float) -> None:
        if self._timer:
            self._timer.cancel()
        self._timer_at = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - self.lookahead - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._wake.set()

    def _collect_due(self) -> list[pb.TaskExecution]:
        now = time.time()
        horizon = now + self.lookahead + 0.0005
        while self._heap and self._heap[0][0] <= horizon:
            _, task_id = heapq.heappop(self._heap)
            self._ready.add(task_id)
        if self._heap and self._heap[0][0] < self._timer_at:
            self._arm(self._heap[0][0])
        due: list[pb.TaskExecution] = []
        for task_id in list(self._ready):
            rec = self.cache.tasks.get(task_id)
            if rec is None or rec.msg.state != pb.PENDING:
                self._ready.discard(task_id)
            elif records.seconds(rec.msg.due_time) <= horizon:
                due.append(rec.msg)
        return due

    async def pass_once(self) -> None:
        self.passes += 1
        with metrics.SCHEDULER_PASS.time():
            await self._pass()

    async def _pass(self) -> None:
        due_tasks = self._collect_due()
        if not due_tasks:
            return
        due_tasks.sort(key=lambda t: (records.seconds(t.due_time), t.task_id))
        due_tasks = await self._skip_past_deadline(due_tasks)
        due_tasks = await self._hold_ordered(due_tasks)
        due_tasks = await self._hold_incomplete_gangs(due_tasks)
        if not due_tasks:
            return
        by_id = {t.task_id: t for t in due_tasks}
        requests = []
        for t in due_tasks:
            try:
                requests.append(to_request(t))
            except Exception as e:  # noqa: BLE001 - this record's, not the pass's
                await self._unplaceable(t, e)
        try:
            plan = sc.place(self.snapshots.build(self.cache, self.gateway, self.tally), requests, config=self.config)
        except Exception as e:
            # one record the placer cannot take (nothing the API would accept, written
            # into the store some other way) must not stop every placement: find it, end
            # it FAILED with the error, place the rest
            bad = self._culprits(requests)
            if not bad:
                raise
            for task_id, err in bad:
                await self._unplaceable(by_id[task_id], err)
            log.error("scheduling pass: %d task(s) could not be placed at all and were ended: %s", len(bad), e)
            gone = {task_id for task_id, _ in bad}
            plan = sc.place(self.snapshots.build(self.cache, self.gateway, self.tally),
                            [r for r in requests if r.task_id not in gone], config=self.config)
        for pre in plan.preemptions:
            await self._preempt(pre)
        await self._assign_all(plan.placements)
        for u in plan.unplaced:
            t = by_id[u.task_id]
            self._wake_at_deadline(t)
            if t.reason != u.reason:
                await self.writer.update(u.task_id, functools.partial(lifecycle.pending_reason, reason=u.reason), fenced=True)

    def _culprits(self, requests: list[sc.TaskRequest]) -> list[tuple[str, Exception]]:
        """The requests the placer fails on, by halving (each try on a fresh snapshot)."""
        try:
            sc.place(self.snapshots.build(self.cache, self.gateway, self.tally), requests, config=self.config)
            return []
        except Exception as e:  # noqa: BLE001 - looking for it
            if len(requests) == 1:
                return [(requests[0].task_id, e)]
        mid = len(requests) // 2
        return self._culprits(requests[:mid]) + self._culprits(requests[mid:])

    async def _unplaceable(self, t: pb.TaskExecution, e: Exception) -> None:
        metrics.RECORD_ERRORS.labels("scheduler").inc()
        log.error("task %s cannot be placed: %s: %s", t.task_id, type(e).__name__, e)
        why = f"the scheduler cannot place this task ({type(e).__name__}: {str(e)[:200]}); its record is not one the API accepts"
        await self.writer.update(t.task_id, functools.partial(lifecycle.unplaceable, reason=why, now=time.time()), fenced=True)
        self._ready.discard(t.task_id)

    def _wake_at_deadline(self, t: pb.TaskExecution) -> None:
        """An unplaced task with a starting deadline gets a pass when the deadline passes,
        even if nothing else changes by then."""
        deadline = records.seconds(t.spec.starting_deadline)
        if deadline <= 0 or t.task_id in self._deadline_timers:
            return
        at = records.seconds(t.due_time) + deadline + 0.001

        def wake(task_id: str = t.task_id) -> None:
            self._deadline_timers.pop(task_id, None)
            self._ready.add(task_id)
            self._wake.set()

        self._deadline_timers[t.task_id] = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), wake)

    async def _skip_past_deadline(self, tasks: list[pb.TaskExecution]) -> list[pb.TaskExecution]:
        """A task still unplaced past its due time plus starting_deadline will not start
        late: it ends SKIPPED, saying what kept it waiting."""
        now = time.time()
        keep = []
        for t in tasks:
            deadline = records.seconds(t.spec.starting_deadline)
            late = now - records.seconds(t.due_time)
            if deadline > 0 and late > deadline:
                await self.writer.update(t.task_id, functools.partial(lifecycle.skipped_past_deadline, deadline=deadline, now=now), fenced=True)
            else:
                keep.append(t)
        return keep

    async def _hold_ordered(self, tasks: list[pb.TaskExecution]) -> list[pb.TaskExecution]:
        """Of the tasks sharing an ordering_key, only the first committed may run, and only
        once no earlier one is still assigned or running."""
        keep = []
        for t in tasks:
            if t.spec.ordering_key:
                group = self._orders.get((t.user_id, t.spec.ordering_key), {})
                head = min(group, key=lambda i: (group[i], i)) if group else t.task_id
                if head != t.task_id:
                    reason = f"waiting for earlier tasks with ordering_key {t.spec.ordering_key!r} to finish"
                    if t.reason != reason:
                        await self.writer.update(t.task_id, functools.partial(lifecycle.pending_reason, reason=reason), fenced=True)
                    continue
            keep.append(t)
        return keep

    async def _hold_incomplete_gangs(self, tasks: list[pb.TaskExecution]) -> list[pb.TaskExecution]:
        """Leave out gangs with fewer members pending than their size (they wait, saying so)."""
        members: dict[tuple[str, str], list[pb.TaskExecution]] = {}
        for t in tasks:
            if t.spec.gang:
                members.setdefault((t.user_id, t.spec.gang), []).append(t)
        held: set[str] = set()
        for (_, gang), ms in members.items():
            size = ms[0].spec.gang_size
            if len(ms) < size:
                reason = f"waiting for gang {gang}: {len(ms)} of {size} tasks pending"
                for t in ms:
                    held.add(t.task_id)
                    if t.reason != reason:
                        await self.writer.update(t.task_id, functools.partial(lifecycle.pending_reason, reason=reason), fenced=True)
        return [t for t in tasks if t.task_id not in held]

    async def _preempt(self, pre: sc.Preemption) -> None:
        """Requeue each victim as a new attempt (history: PREEMPTED), then kill its copy."""
        for victim in pre.victims:
            old = self.cache.tasks.get(victim)
            if old is None or old.msg.state not in records.ACTIVE or old.msg.node_id != pre.node_id:
                continue
            stale = pb.TaskExecution()
            stale.CopyFrom(old.msg)

            requeue = functools.partial(lifecycle.preempted, node_id=pre.node_id, by=pre.for_task)
            if await self.writer.update(victim, requeue, fenced=True) is not None:
                self.gateway.send_stop(stale, pb.PREEMPTED, f"preempted for {pre.for_task}")
                log.info("preempted %s on %s for %s", victim, pre.node_id, pre.for_task)

    def _assignment(self, p: sc.Placement) -> Mutator:
        """The plan applier's change for one placement: re-check the node against the
        latest committed state, assign what still fits; a task refused too often is left
        PENDING with its reason."""

        def mutate(t: pb.TaskExecution) -> pb.TaskExecution | None:
            if t.state != pb.PENDING or t.stop_requested:
                return None
            node = self.cache.nodes.get(p.node_id)
            request = sc.Resources(t.spec.cpu_request, t.spec.mem_request, t.spec.pids_limit)
            if node is None or node.msg.state != pb.READY or not self.tally.fits(node.msg, request):
                tries = self._apply_retries.get(t.task_id, 0) + 1
                self._apply_retries[t.task_id] = tries
                if tries < APPLY_RETRIES:
                    self._wake.set()
                    return None
                t.reason = f"blocked: node {p.node_id} no longer has room (plan refused {tries} times)"
                self._apply_retries.pop(t.task_id, None)
                return t
            self._apply_retries.pop(t.task_id, None)
            return lifecycle.assigned(t, p.node_id)

        return mutate

    async def _assign_all(self, placements: list[sc.Placement]) -> None:
        """Commit a pass's placements, `concurrency` per batch of writes. The gateway sends
        each committed assignment to its node (see Gateway._on_cache_change)."""
        chunks = [placements[i : i + self.concurrency] for i in range(0, len(placements), self.concurrency)]
        done = await asyncio.gather(*(self.writer.update_many([(p.task_id, self._assignment(p)) for p in c], fenced=True) for c in chunks))
        now = time.time()
        for t in (t for results in done for t in results):
            if t is not None and t.state == pb.ASSIGNED:
                metrics.PLACEMENT.observe(max(0.0, now - max(records.seconds(t.submit_time), records.seconds(t.due_time))))
