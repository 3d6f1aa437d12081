"""NodeService and ClusterService: node records merged with live session figures."""

from __future__ import annotations

import os
from collections import Counter

from corral import __version__
from corral.errors import FailedPrecondition, NotFound
from corral.v1 import api_pb2, api_pb2_grpc
from corral.v1 import types_pb2 as pb

from . import keys, records, validate
from .auth import Authenticator, api_method
from .cache import Cache
from .election import current_leader
from .gateway import Gateway
from .leadership import Always, Leadership
from .store import Cmp, Delete, EtcdStore, Put


def node_view(cache: Cache, gateway: Gateway, node_id: str) -> pb.NodeInfo:
    rec = cache.nodes.get(node_id)
    if rec is None:
        raise NotFound(f"node {node_id} not found")
    n = pb.NodeInfo()
    n.CopyFrom(rec.msg)
    cpu = mem = pids = running = 0
    for task_id in cache.by_node.get(node_id, ()):
        t = cache.tasks.get(task_id)
        if t is not None and t.msg.state in records.ACTIVE:
            cpu += t.msg.spec.cpu_request
            mem += t.msg.spec.mem_request
            pids += t.msg.spec.pids_limit
            running += 1
    n.allocated.CopyFrom(pb.Resources(cpu=cpu, memory=mem, pids=pids))
    n.running_tasks = running
    s = gateway.sessions.get(node_id)
    if s is not None:
        n.used.CopyFrom(s.used)
        if s.last_heard:
            n.last_heartbeat.CopyFrom(records.ts(s.last_heard))
    return n


class NodeServicer(api_pb2_grpc.NodeServiceServicer):
    def __init__(self, store: EtcdStore, cache: Cache, auth: Authenticator, gateway: Gateway) -> None:
        self.store = store
        self.cache = cache
        self.auth = auth
        self.gateway = gateway

    @api_method
    async def ListNodes(self, request, context, user):  # type: ignore[override]
        if request.consistent:
            await self.cache.sync()
        return api_pb2.ListNodesResponse(nodes=[node_view(self.cache, self.gateway, n) for n in sorted(self.cache.nodes)])

    @api_method
    async def GetNode(self, request, context, user):  # type: ignore[override]
        if request.consistent:
            await self.cache.sync()
        validate.check_id("node_id", request.node_id)
        return node_view(self.cache, self.gateway, request.node_id)

    async def _set_state(self, node_id: str, state: int) -> pb.NodeInfo:
        validate.check_id("node_id", node_id)
        for _ in range(5):
            rec = self.cache.nodes.get(node_id)
            if rec is None:
                raise NotFound(f"node {node_id} not found")
            if rec.msg.state == pb.DOWN and state != pb.READY:
                raise FailedPrecondition(f"node {node_id} is DOWN")
            n = pb.NodeInfo()
            n.CopyFrom(rec.msg)
            n.state = state
            result = await self.store.txn([Cmp(keys.node(node_id), rec.rev)], [Put(keys.node(node_id), n.SerializeToString())])
            if result.succeeded:
                await self.cache.wait_revision(result.revision)
                return node_view(self.cache, self.gateway, node_id)
        raise FailedPrecondition(f"node {node_id} keeps changing; try again")

    @api_method
    async def CordonNode(self, request, context, user):  # type: ignore[override]
        return await self._set_state(request.node_id, pb.CORDONED)

    @api_method
    async def UncordonNode(self, request, context, user):  # type: ignore[override]
        return await self._set_state(request.node_id, pb.READY)

    @api_method
    async def DrainNode(self, request, context, user):  # type: ignore[override]
        return await self._set_state(request.node_id, pb.DRAINING)

    @api_method
    async def DeleteNode(self, request, context, user):  # type: ignore[override]
        """Forget a node whose host is gone, so `node list` shows the fleet as it is. Only a
        node that cannot be running anything may go: DOWN (its lease ran out, so its nodelet
        has killed its tasks), not connected, and with no task still ASSIGNED or RUNNING on
        it (those are first found LOST and replaced)."""
        node_id = request.node_id
        validate.check_id("node_id", node_id)
        rec = self.cache.nodes.get(node_id)
        if rec is None:
            raise NotFound(f"node {node_id} not found")
        if rec.msg.state != pb.DOWN:
            raise FailedPrecondition(
                f"node {node_id} is {pb.NodeState.Name(rec.msg.state)}; only a DOWN node can be deleted "
                "(stop its nodelet, e.g. deploy/ansible/remove-nodelet.yml, and wait for the heartbeat timeout)"
            )
        s = self.gateway.sessions.get(node_id)
        if s is not None and not s.closed:
            raise FailedPrecondition(f"node {node_id} is connected to this master; stop its nodelet first")
        active = [t for t in self.cache.by_node.get(node_id, ()) if (r := self.cache.tasks.get(t)) is not None and r.msg.state in records.ACTIVE]
        if active:
            raise FailedPrecondition(f"node {node_id} still has {len(active)} assigned or running task(s), e.g. {active[0]}; wait until they are found LOST")
        tokens = [tid for tid, t in self.cache.tokens.items() if t.msg.node_id == node_id]
        ops = [Delete(keys.node(node_id)), *(Delete(keys.token(tid)) for tid in tokens)]
        result = await self.store.txn([Cmp(keys.node(node_id), rec.rev)], ops)
        if not result.succeeded:
            raise FailedPrecondition(f"node {node_id} changed meanwhile (it may have registered again); look and try again")
        await self.cache.wait_revision(result.revision)
        return api_pb2.DeleteNodeResponse(node_id=node_id, tokens_revoked=len(tokens))


class ClusterServicer(api_pb2_grpc.ClusterServiceServicer):
    def __init__(
        self, store: EtcdStore, cache: Cache, auth: Authenticator, leadership: Leadership, *, name: str, address: str, etcd: list[str]
    ) -> None:
        self.store = store
        self.leader_loops: object = None
        self.cache = cache
        self.auth = auth
        self.leadership = leadership
        self.me = api_pb2.Member(name=name, address=address, pid=os.getpid(), version=__version__)
        self.etcd = etcd
        self.cluster_id = ""  # set by the master at start

    @api_method
    async def ClusterStatus(self, request, context, user):  # type: ignore[override]
        nodes = Counter(pb.NodeState.Name(r.msg.state) for r in self.cache.nodes.values())
        tasks = {pb.TaskState.Name(s): len(ids) for s, ids in self.cache.by_state.items() if ids}
        resp = api_pb2.ClusterStatusResponse(
            etcd_endpoints=self.store.endpoints, nodes_by_state=dict(nodes), tasks_by_state=tasks, version=__version__,
            cluster_id=self.cluster_id,
        )
        current = await current_leader(self.store)
        if current is not None and records.parse(resp.leader, current[0], "the leader key") is not None:
            resp.leader_term = current[1]
        elif isinstance(self.leadership, Always):
            resp.leader.CopyFrom(self.me)
        for ep in await self.store.endpoint_health():
            resp.etcd.add(**ep)  # type: ignore[arg-type]
        kvs, _ = await self.store.range(keys.MEMBERS)
        for kv in kvs:
            if (member := records.parse(api_pb2.Member(), kv.value, kv.key)) is not None:
                resp.members.append(member)
        if not resp.members:
            resp.members.append(self.me)
        return resp
