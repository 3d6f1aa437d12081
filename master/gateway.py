"""NodeletService: one bidirectional stream per nodelet, and the registry of live sessions.

Up the stream come registration (with every task the nodelet still knows, for
re-adoption), heartbeats, task status and log data; down go start/stop commands, status
acknowledgements, heartbeat acknowledgements (the node lease) and log reads. The gateway
carries these and nothing more: what registrations and statuses mean for the cluster's
records is node_reports.py's (every status committed before it is acknowledged, so a
nodelet resends an outcome until it is durable), and every message is a sign of life
handed to liveness (`on_heard`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.duration_pb2 import Duration

from corral.batching import Drainer, LeaseFirstQueue, master_batch
from corral.errors import AlreadyExists, CorralError, InvalidArgument, PermissionDenied, Unavailable
from corral.tls import peer_identity
from corral.v1 import api_pb2, nodelet_pb2_grpc
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from . import keys, permissions, records
from .auth import Authenticator
from .cache import Cache
from .election import current_leader
from .leadership import Leadership
from .node_reports import NodeReports, check_register, stop_message
from .store import EtcdStore
from .taskops import TaskWriter

log = logging.getLogger("corral.gateway")

# The node lease, as shares of the heartbeat timeout T: a node kills its tasks LEASE·T after
# the last heartbeat a leader acknowledged (SIGKILL after KILL_GRACE·T more); the leader
# declares it DOWN, and starts its tasks elsewhere, only after T without a heartbeat. The
# rest, (1 − LEASE − KILL_GRACE)·T, is the margin for clock-rate drift and slow kills.
LEASE = 0.7
KILL_GRACE = 0.1


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


@dataclass
class NodeSession:
    node_id: str
    peer: str
    outbox: asyncio.Queue[npb.MasterMessage] = field(default_factory=LeaseFirstQueue)
    used: pb.Resources = field(default_factory=pb.Resources)
    task_usage: dict[str, npb.TaskUsage] = field(default_factory=dict)
    logs: dict[str, asyncio.Future[npb.LogData]] = field(default_factory=dict)
    closed: bool = False
    kicked: asyncio.Event = field(default_factory=asyncio.Event)
    last_sent: float = 0.0  # monotonic time of the last message written to the node
    last_heard: float = 0.0  # wall time of the last message from the node (shown as last_heartbeat)
    batches: bool = False  # the nodelet understands MasterBatch
    prepare_per_s: float = 0.0  # the node's measured start rate (heartbeat); 0: not measured
    prepare_p99_ms: float = 0.0
    prepare_waiting: int = 0

    def send(self, msg: npb.MasterMessage) -> None:
        if not self.closed:
            self.outbox.put_nowait(msg)


class Gateway(nodelet_pb2_grpc.NodeletServiceServicer):
    def __init__(
        self,
        store: EtcdStore,
        cache: Cache,
        writer: TaskWriter,
        auth: Authenticator,
        leadership: Leadership,
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
        on_change: Callable[[], None] = lambda: None,
        on_heard: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.cluster_id = ""  # set by the master once it has read it from the store
        self.address = ""  # this master's advertised address, set once it listens
        self.store = store
        self.cache = cache
        self.writer = writer
        self.auth = auth
        self.leadership = leadership
        self.heartbeat_interval = heartbeat_interval
        self.on_change = on_change
        # a heartbeat's prepare figures: (node id, starts/s, p99 ms); the scheduler adapts its lookahead
        self.on_prepare: Callable[[str, float, float], None] = lambda node_id, rate, p99: None
        self.on_heard = on_heard
        self.reports = NodeReports(store, cache, writer, leadership)
        self.sessions: dict[str, NodeSession] = {}
        self._ids = itertools.count(1)
        cache.listen(self._on_cache_change)

    def _on_cache_change(self, prefix: str, ident: str, msg: object) -> None:
        """Dispatch follows committed state: a task committed ASSIGNED to a node whose
        stream this master holds is sent there, and a committed stop request is carried
        to the node running the task, whichever master wrote it."""
        if prefix == keys.TASKS and isinstance(msg, pb.TaskExecution):
            if msg.stop_requested and msg.state in records.ACTIVE:
                self.send_stop(msg, msg.stop_as or pb.STOPPED, msg.reason or "stopped by user")
            elif msg.state == pb.ASSIGNED:
                self.send_start(msg)

    def close_all(self) -> None:
        """Drop every nodelet stream (leadership lost): nodelets find the new leader."""
        for s in list(self.sessions.values()):
            s.kicked.set()

    # ---- used by the API and the leader loops -------------------------------------------

    def connected(self, node_id: str) -> bool:
        s = self.sessions.get(node_id)
        return s is not None and not s.closed

    def prepare_rate(self, node_id: str) -> float:
        """Starts per second the node measured it can prepare; 0 when unknown."""
        s = self.sessions.get(node_id)
        return s.prepare_per_s if s is not None and not s.closed else 0.0

    def send_start(self, task: pb.TaskExecution) -> bool:
        s = self.sessions.get(task.node_id)
        if s is None or s.closed:
            return False
        owner = self.cache.users.get(task.user_id)
        uid, refused = permissions.run_as(owner.msg if owner is not None else None, task.user_id, task.spec)
        run_as = npb.RunAs(uid=permissions.NOBODY, refused=refused) if refused else npb.RunAs(uid=uid)
        s.send(npb.MasterMessage(start=npb.StartTask(task=task, run_as=run_as)))
        return True

    def send_stop(self, task: pb.TaskExecution, state: int, reason: str) -> bool:
        s = self.sessions.get(task.node_id)
        if s is None or s.closed:
            return False
        s.send(stop_message(task, state, reason))
        return True

    async def read_logs(self, node_id: str, task_id: str, offset: int, max_bytes: int) -> npb.LogData:
        s = self.sessions.get(node_id)
        if s is None or s.closed:
            raise Unavailable(f"node {node_id} is not connected; its logs cannot be read now")
        req_id = str(next(self._ids))
        fut: asyncio.Future[npb.LogData] = asyncio.get_running_loop().create_future()
        s.logs[req_id] = fut
        s.send(
            npb.MasterMessage(
                read_logs=npb.ReadLogs(request_id=req_id, task_id=task_id, offset=offset, max_bytes=max_bytes)
            )
        )
        try:
            data = await asyncio.wait_for(fut, 10)
        except TimeoutError:
            raise Unavailable(f"node {node_id} did not answer the log read") from None
        finally:
            s.logs.pop(req_id, None)
        if data.error:
            raise Unavailable(data.error)
        return data

    # ---- the stream ---------------------------------------------------------------------

    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[npb.NodeletMessage], context: grpc.aio.ServicerContext
    ) -> None:
        session: NodeSession | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            bound = await self.auth.authenticate_nodelet(context)
            if not await self._leading_soon():
                await self._redirect(context)
            first = await asyncio.wait_for(anext(aiter(request_iterator)), 30)
            if first.WhichOneof("msg") != "register":
                raise InvalidArgument("the first message on a nodelet stream must be register")
            check_node_identity(peer_identity(context), first.register.node_id)
            if bound and bound != first.register.node_id:
                raise PermissionDenied(f"this token is node {bound}'s credential; it cannot register {first.register.node_id[:80]!r}")
            session = await self._register(first.register, context.peer())
            tasks = [
                asyncio.create_task(self._read(session, request_iterator)),
                asyncio.create_task(self._write(session, context)),
                asyncio.create_task(session.kicked.wait()),  # type: ignore[arg-type]
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[2] in done:
                await self._redirect(context)
            for t in done:
                t.result()
        except (StopAsyncIteration, TimeoutError):
            pass
        except CorralError as e:
            log.warning("nodelet stream %s rejected: %s", context.peer(), e)
            await context.abort(e.code, str(e))
        finally:
            for t in tasks:
                t.cancel()
            if session is not None:
                session.closed = True
                if self.sessions.get(session.node_id) is session:
                    del self.sessions[session.node_id]
                log.info("nodelet %s disconnected", session.node_id)
                self.on_change()

    async def _leading_soon(self, within: float = 2.0) -> bool:
        """Whether this master leads. A master that has just won writes the leader key a moment
        before it starts leading; a nodelet connecting in that gap would be sent back to this
        very address, so then (and only then) wait briefly."""
        if self.leadership.is_leader():
            return True
        current = await current_leader(self.store)
        member = records.parse(api_pb2.Member(), current[0], "the leader key") if current is not None else None
        if member is None or not self.address or member.address != self.address:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.leadership.is_leader():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _redirect(self, context: grpc.aio.ServicerContext) -> None:
        """Tell a nodelet where the leader is (status + `corral-leader` trailing metadata)."""
        current = await current_leader(self.store)
        address = ""
        member = records.parse(api_pb2.Member(), current[0], "the leader key") if current is not None else None
        if member is not None:
            address = member.address
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"not the leader; the leader is {address or 'not elected yet'}",
            trailing_metadata=(("corral-leader", address),),
        )

    async def _read(self, session: NodeSession, request_iterator: AsyncIterator[npb.NodeletMessage]) -> None:
        async for msg in request_iterator:
            node = self.cache.nodes.get(session.node_id)
            if node is not None and node.msg.state == pb.DOWN:
                # silent too long (e.g. paused); its tasks were replaced: make it register
                # again so reconciliation stops the stale copies
                raise Unavailable(f"node {session.node_id} was marked DOWN; register again")
            self.on_heard(session.node_id)
            session.last_heard = time.time()
            kind = msg.WhichOneof("msg")
            if kind == "status":
                await self._on_statuses(session, [msg.status])
            elif kind == "batch":
                statuses = []
                for m in msg.batch.messages:
                    if m.WhichOneof("msg") == "status":
                        statuses.append(m.status)
                    else:
                        self._on_message(session, m)
                await self._on_statuses(session, statuses)
            else:
                self._on_message(session, msg)

    def _on_message(self, session: NodeSession, msg: npb.NodeletMessage) -> None:
        """A heartbeat or log data (statuses are awaited by the caller)."""
        kind = msg.WhichOneof("msg")
        if kind == "heartbeat":
            # Every heartbeat is answered, but only while this master surely leads: the ack
            # renews the node's lease, which keeps its tasks alive (see Registered.lease).
            # (On a busy stream it rides in a batch with the other messages to the node.)
            if self.leadership.lease_valid():
                session.send(npb.MasterMessage(heartbeat_ack=npb.HeartbeatAck(seq=msg.heartbeat.seq)))
            session.used.CopyFrom(msg.heartbeat.used)
            session.task_usage = {u.task_id: u for u in msg.heartbeat.tasks}
            hb = msg.heartbeat
            drained = hb.prepare_waiting < session.prepare_waiting
            session.prepare_per_s, session.prepare_p99_ms, session.prepare_waiting = hb.prepare_per_s, hb.prepare_p99_ms, hb.prepare_waiting
            self.on_prepare(session.node_id, hb.prepare_per_s, hb.prepare_p99_ms)
            if drained:
                self.on_change()  # room to start more: work held back for this node may go now
        elif kind == "log_data":
            fut = session.logs.get(msg.log_data.request_id)
            if fut is not None and not fut.done():
                fut.set_result(msg.log_data)
        else:
            raise InvalidArgument(f"unexpected message on a nodelet stream: {kind}")

    async def _write(self, session: NodeSession, context: grpc.aio.ServicerContext) -> None:
        drainer = Drainer(session.outbox, master_batch) if session.batches else None
        while True:
            await context.write(await (drainer.next() if drainer is not None else session.outbox.get()))
            session.last_sent = time.monotonic()

    async def _register(self, reg: npb.Register, peer: str) -> NodeSession:
        check_register(reg)
        existing = self.sessions.get(reg.node_id)
        if existing is not None and not existing.closed:
            raise AlreadyExists(f"node {reg.node_id} is already connected from {existing.peer}")
        if not self.leadership.lease_valid():  # its Registered renews the node's lease: only a sure leader sends it
            raise Unavailable("this master's leadership is not confirmed right now; try again")
        await self.reports.save_node(reg)
        # only now the session: a registration whose save failed leaves nothing behind
        # (a session left over would refuse the node's next try as "already connected")
        existing = self.sessions.get(reg.node_id)
        if existing is not None and not existing.closed:
            raise AlreadyExists(f"node {reg.node_id} is already connected from {existing.peer}")
        session = NodeSession(reg.node_id, peer, batches=reg.batches)
        self.sessions[reg.node_id] = session
        self.on_heard(reg.node_id)
        session.send(
            npb.MasterMessage(
                registered=npb.Registered(
                    node_id=reg.node_id,
                    heartbeat_interval=_duration(self.heartbeat_interval),
                    lease=_duration(LEASE * self.heartbeat_timeout),
                    kill_grace=_duration(KILL_GRACE * self.heartbeat_timeout),
                    cluster_id=self.cluster_id,
                )
            )
        )
        await self.reports.reconcile(reg, session.send, self.send_start)
        log.info("nodelet %s registered from %s with %d known tasks", reg.node_id, peer, len(reg.tasks))
        self.on_change()
        return session

    async def _on_statuses(self, session: NodeSession, statuses: list[npb.TaskStatus]) -> None:
        if await self.reports.statuses(session.node_id, statuses, session.send):
            self.on_change()


def check_node_identity(identity: tuple[str, str] | None, node_id: str) -> None:
    """Under mutual TLS a nodelet speaks only for the node its certificate names: a nodelet
    certificate (OU=nodelet) whose CN is the node id. Without TLS there is nothing to check."""
    if identity is None:
        return
    cn, ou = identity
    if ou != "nodelet":
        raise PermissionDenied(f"a {ou or 'non-nodelet'} certificate ({cn}) cannot register a node")
    if cn != node_id:
        raise PermissionDenied(f"certificate is for node {cn!r}, not {node_id[:80]!r}")
