"""The leader's scheduling loop: pending tasks → scheduler_core.place → committed ASSIGNED →
StartTask down the node's stream. Also the time queue for tasks due later: one timer for the
earliest due instant, no polling.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time

import corral.scheduler_core as sc
from corral.errors import Aborted
from corral.v1 import types_pb2 as pb

from . import records
from .cache import Cache
from .gateway import Gateway
from .taskops import TaskWriter

log = logging.getLogger("corral.scheduler")

DRIVER_NAMES = {pb.PROCESS: "process", pb.DOCKER: "docker", pb.DRIVER_UNSPECIFIED: "process"}


def to_request(task: pb.TaskExecution) -> sc.TaskRequest:
    s = task.spec
    return sc.TaskRequest(
        task_id=task.task_id,
        request=sc.Resources(s.cpu_request, s.mem_request, s.pids_limit),
        driver=DRIVER_NAMES.get(s.driver, "process"),
        constraints=tuple(sc.Constraint(c.key, c.op, tuple(c.values)) for c in s.constraints),
        priority=s.priority,
        template_id=task.template_id,
        user_id=task.user_id,
    )


def snapshot(cache: Cache, gateway: Gateway) -> sc.Snapshot:
    nodes = []
    for node_id, rec in cache.nodes.items():
        n = rec.msg
        allocated = sc.Resources()
        running = []
        for task_id in cache.by_node.get(node_id, ()):
            t = cache.tasks.get(task_id)
            if t is not None and t.msg.state in records.ACTIVE:
                s = t.msg.spec
                req = sc.Resources(s.cpu_request, s.mem_request, s.pids_limit)
                allocated = allocated + req
                running.append(sc.Running(task_id, req, s.priority, t.msg.template_id))
        nodes.append(
            sc.Node(
                node_id=node_id,
                allocatable=sc.Resources(n.allocatable.cpu, n.allocatable.memory, n.allocatable.pids or 1 << 30),
                allocated=allocated,
                ready=n.state in (pb.READY, pb.CORDONED, pb.DRAINING) and gateway.connected(node_id),
                schedulable=n.state == pb.READY,
                drivers=frozenset(n.drivers),
                labels=tuple(sorted(n.labels.items())),
                running=tuple(running),
            )
        )
    return sc.Snapshot(tuple(nodes))


class Scheduler:
    """Places due PENDING tasks. Tasks due later wait in a heap behind one timer; the set of
    due-but-unplaced tasks is retried whenever something changes that could make room
    (a node joins or changes, a task ends, a new task arrives)."""

    def __init__(self, cache: Cache, writer: TaskWriter, gateway: Gateway, *, concurrency: int = 64) -> None:
        self.cache = cache
        self.writer = writer
        self.gateway = gateway
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._sem = asyncio.Semaphore(concurrency)
        self._heap: list[tuple[float, str]] = []
        self._ready: set[str] = set()
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    def _track(self, task: pb.TaskExecution) -> None:
        due = records.seconds(task.due_time)
        if due <= time.time():
            self._ready.add(task.task_id)
            self._wake.set()
        else:
            heapq.heappush(self._heap, (due, task.task_id))
            if due < self._timer_at:
                self._arm(due)

    def on_cache_change(self, prefix: str, ident: str, msg: object) -> None:
        if prefix == "nodes/":
            self._wake.set()
        elif prefix == "tasks/":
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
            for task_id in list(self.cache.tasks_in(pb.PENDING)):
                self._track(self.cache.tasks[task_id].msg)
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

    def _arm(self, due: float) -> None:
        if self._timer:
            self._timer.cancel()
        self._timer_at = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._wake.set()

    def _collect_due(self) -> list[pb.TaskExecution]:
        now = time.time()
        while self._heap and self._heap[0][0] <= now + 0.0005:
            _, task_id = heapq.heappop(self._heap)
            self._ready.add(task_id)
        if self._heap and self._heap[0][0] < self._timer_at:
            self._arm(self._heap[0][0])
        due: list[pb.TaskExecution] = []
        for task_id in list(self._ready):
            rec = self.cache.tasks.get(task_id)
            if rec is None or rec.msg.state != pb.PENDING:
                self._ready.discard(task_id)
            elif records.seconds(rec.msg.due_time) <= now + 0.0005:
                due.append(rec.msg)
        return due

    async def pass_once(self) -> None:
        self.passes += 1
        due_tasks = self._collect_due()
        if not due_tasks:
            return
        due_tasks.sort(key=lambda t: (records.seconds(t.due_time), t.task_id))
        plan = sc.place(snapshot(self.cache, self.gateway), [to_request(t) for t in due_tasks])
        by_id = {t.task_id: t for t in due_tasks}
        for pre in plan.preemptions:
            await self._preempt(pre)
        await asyncio.gather(*(self._assign(p) for p in plan.placements))
        for u in plan.unplaced:
            t = by_id[u.task_id]
            if t.reason != u.reason:
                await self.writer.update(u.task_id, functools.partial(_set_reason, reason=u.reason), fenced=True)

    async def _preempt(self, pre: sc.Preemption) -> None:
        """Requeue each victim as a new attempt (history: PREEMPTED), then kill its copy."""
        for victim in pre.victims:
            old = self.cache.tasks.get(victim)
            if old is None or old.msg.state not in records.ACTIVE or old.msg.node_id != pre.node_id:
                continue
            stale = pb.TaskExecution()
            stale.CopyFrom(old.msg)

            def requeue(t: pb.TaskExecution, node_id: str = pre.node_id, by: str = pre.for_task) -> pb.TaskExecution | None:
                if t.state not in records.ACTIVE or t.node_id != node_id:
                    return None
                return records.next_attempt(t, pb.PREEMPTED, f"preempted on {node_id} for {by}")

            if await self.writer.update(victim, requeue, fenced=True) is not None:
                self.gateway.send_stop(stale, pb.PREEMPTED, f"preempted for {pre.for_task}")
                log.info("preempted %s on %s for %s", victim, pre.node_id, pre.for_task)

    async def _assign(self, p: sc.Placement) -> None:
        def mutate(t: pb.TaskExecution) -> pb.TaskExecution | None:
            if t.state != pb.PENDING or t.stop_requested:
                return None
            t.state = pb.ASSIGNED
            t.node_id = p.node_id
            t.reason = ""
            return t

        self._ready.discard(p.task_id)
        async with self._sem:
            # the gateway sends the committed assignment to the node (see Gateway._on_cache_change)
            await self.writer.update(p.task_id, mutate, fenced=True)


def _set_reason(t: pb.TaskExecution, reason: str) -> pb.TaskExecution | None:
    if t.state != pb.PENDING or t.reason == reason:
        return None
    t.reason = reason
    return t
