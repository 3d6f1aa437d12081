"""What the leader makes of what a node says: its registration (the node record, and the
reconciliation of the tasks it knows against the tasks the cluster gave it) and the
statuses of its tasks (screened, committed through the fenced task writer, acknowledged).

The gateway (gateway.py) carries the streams and hands each message here; what must go
back to the node comes back as messages for the gateway to send. Liveness (liveness.py)
hears of every message separately. Every task transition is a function of lifecycle.py.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from google.protobuf.duration_pb2 import Duration

from corral.errors import InvalidArgument, Unavailable
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from . import keys, lifecycle, metrics, records, validate
from .cache import Cache
from .leadership import Leadership
from .store import Cmp, EtcdStore, Put
from .taskops import TaskWriter

log = logging.getLogger("corral.gateway")

MAX_NODE_CPU = 1_000_000 * 1000
MAX_NODE_MEMORY = 1 << 50
DEFAULT_STOP_GRACE = Duration(seconds=10)
RECONCILE_CHUNK = 512  # a registering node's reports per commit


def check_register(reg: npb.Register) -> None:
    """A registration's fields, before anything is written (InvalidArgument names the field)."""
    validate.check_id("register.node_id", reg.node_id)
    if len(reg.address) > 256:
        raise InvalidArgument("register.address: at most 256 characters")
    cap = reg.capacity
    if not (0 < cap.cpu <= MAX_NODE_CPU and 0 < cap.memory <= MAX_NODE_MEMORY and cap.pids >= 0):
        raise InvalidArgument("register.capacity: cpu and memory must be positive and sane")
    if len(reg.labels) > 64 or len(reg.drivers) > 16 or len(reg.tasks) > 100_000:
        raise InvalidArgument("register: too many labels, drivers or tasks")


def stop_message(task: pb.TaskExecution, state: int, reason: str) -> npb.MasterMessage:
    grace = task.stop_grace if task.HasField("stop_grace") else DEFAULT_STOP_GRACE
    return npb.MasterMessage(
        stop=npb.StopTask(task_id=task.task_id, attempt=task.attempt, grace_period=grace, state=state, reason=reason)
    )


def ack_message(st: npb.TaskStatus) -> npb.MasterMessage:
    return npb.MasterMessage(ack=npb.StatusAck(task_id=st.task_id, attempt=st.attempt, state=st.state))


def screen(cache: Cache, node_id: str, sts: list[npb.TaskStatus]) -> tuple[list[npb.TaskStatus], list[npb.MasterMessage]]:
    """Of one task's statuses (in the order the node sent them), those to commit, and the
    messages to send the node at once: a report on a copy the cluster does not know or has
    replaced is answered here (killed if it runs, else acknowledged and forgotten); a copy
    running though its record is final, or though a stop was asked for, is stopped."""
    valid: list[npb.TaskStatus] = []
    replies: list[npb.MasterMessage] = []
    for st in sts:
        if st.state not in (pb.RUNNING, pb.PREEMPTED, *records.TERMINAL):
            log.warning("node %s sent status with state %s for %s", node_id, st.state, st.task_id)
            continue
        rec = cache.tasks.get(st.task_id)
        if rec is None or rec.msg.node_id != node_id or rec.msg.attempt != st.attempt:
            if st.state == pb.RUNNING:
                stale = pb.TaskExecution(task_id=st.task_id, attempt=st.attempt, node_id=node_id)
                replies.append(stop_message(stale, pb.LOST, "this copy was replaced; the task runs elsewhere"))
            else:
                replies.append(ack_message(st))
            continue
        if st.state == pb.RUNNING and rec.msg.state in records.TERMINAL:
            replies.append(stop_message(rec.msg, rec.msg.state, f"its record is final ({records.state_name(rec.msg.state)})"))
        elif st.state == pb.RUNNING and rec.msg.stop_requested:
            replies.append(stop_message(rec.msg, pb.STOPPED, "stop requested"))
        valid.append(st)
    return valid, replies


class NodeReports:
    def __init__(self, store: EtcdStore, cache: Cache, writer: TaskWriter, leadership: Leadership) -> None:
        self.store = store
        self.cache = cache
        self.writer = writer
        self.leadership = leadership

    async def save_node(self, reg: npb.Register) -> None:
        """The node's record, READY (or still CORDONED/DRAINING), through the fence."""
        for _ in range(5):
            kv = await self.store.get(keys.node(reg.node_id))
            node = pb.NodeInfo()
            if kv is not None and records.parse(node, kv.value, kv.key) is None:
                node = pb.NodeInfo()  # unreadable: written anew
            state = node.state if node.state in (pb.CORDONED, pb.DRAINING) else pb.READY
            new = pb.NodeInfo(
                node_id=reg.node_id,
                address=reg.address,
                capacity=reg.capacity,
                allocatable=reg.capacity,
                labels=reg.labels,
                drivers=reg.drivers,
                driver_health=reg.driver_health,
                state=state,
                registered_time=records.ts(time.time()),
                version=reg.version,
            )
            result = await self.store.txn(
                [Cmp(keys.node(reg.node_id), kv.mod_revision if kv else 0), *self.leadership.fence()],
                [Put(keys.node(reg.node_id), new.SerializeToString())],
            )
            if result.succeeded:
                await self.cache.wait_revision(result.revision)
                return
        raise Unavailable(f"could not record node {reg.node_id}; try again")

    async def reconcile(
        self, reg: npb.Register, send: Callable[[npb.MasterMessage], None], start: Callable[[pb.TaskExecution], object]
    ) -> None:
        """The tasks a registering node knows against those the cluster gave it: its
        reports are taken as statuses; a task placed there and not yet started is sent
        again; one that ran there and the node no longer knows is lost."""
        reported = {st.task_id for st in reg.tasks}
        for i in range(0, len(reg.tasks), RECONCILE_CHUNK):
            await self.statuses(reg.node_id, list(reg.tasks[i:i + RECONCILE_CHUNK]), send)
        for task_id in list(self.cache.by_node.get(reg.node_id, ())):
            rec = self.cache.tasks.get(task_id)
            if rec is None or rec.msg.state not in records.ACTIVE or task_id in reported:
                continue
            if rec.msg.state == pb.ASSIGNED and rec.msg.stop_requested:
                await self.writer.update(task_id, functools.partial(lifecycle.ended_unstarted, now=time.time()), fenced=True)
            elif rec.msg.state == pb.ASSIGNED:
                start(rec.msg)
            else:
                lost = functools.partial(lifecycle.lost, node_id=reg.node_id, reason="the node restarted without it")
                await self.writer.update(task_id, lost, fenced=True)

    async def statuses(self, node_id: str, statuses: list[npb.TaskStatus], send: Callable[[npb.MasterMessage], None]) -> bool:
        """The statuses of one batch: one write per task, so a task's RUNNING and its
        outcome sent together commit together; all the tasks' writes at once; each
        acknowledged only once committed. True if any task ended (capacity freed)."""
        by_task: dict[str, list[npb.TaskStatus]] = {}
        for st in statuses:
            by_task.setdefault(st.task_id, []).append(st)
        screened = []
        for sts in by_task.values():
            valid, replies = screen(self.cache, node_id, sts)
            for m in replies:
                send(m)
            if valid:
                screened.append(valid)
        # a task's first RUNNING (alone or with its outcome) is when it started: observed
        # once it committed, for the lateness histograms
        starting = {v[0].task_id for v in screened
                    if (rec := self.cache.tasks.get(v[0].task_id)) is not None and rec.msg.state == pb.ASSIGNED}
        done = await self.writer.update_many([(v[0].task_id, functools.partial(lifecycle.reported_all, sts=v)) for v in screened], fenced=True)
        for t in done:
            if t is not None and t.task_id in starting:
                metrics.observe_running(t)
        ended = False
        for valid in screened:
            for st in valid:
                send(ack_message(st))
                ended = ended or st.state in records.TERMINAL
        return ended
