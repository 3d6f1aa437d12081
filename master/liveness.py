"""Node liveness (leader only): a node silent past the heartbeat timeout goes DOWN, and each
of its tasks gets a new attempt elsewhere (or ends LOST when its attempts are used up).

It hears of nodes through `heard` (the gateway calls it for every message a node sends),
not by looking into the gateway. Deadlines start with a full grace period when the loop
starts, so a new leader never marks healthy nodes DOWN before they had time to reconnect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from corral.v1 import types_pb2 as pb

from . import keys, lifecycle
from .cache import Cache
from .leadership import Leadership
from .store import Cmp, EtcdStore, Put
from .taskops import TaskWriter

log = logging.getLogger("corral.liveness")

RECONNECT_GRACE = 5.0  # ≥ the nodelet's maximum reconnect backoff (nodelet/agent.py)


class Liveness:
    def __init__(
        self,
        store: EtcdStore,
        cache: Cache,
        writer: TaskWriter,
        leadership: Leadership,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.cache = cache
        self.writer = writer
        self.leadership = leadership
        self.timeout = timeout
        self.last_seen: dict[str, float] = {}  # node → monotonic time of its last message

    def heard(self, node_id: str) -> None:
        """A node said something (registered, or sent any message on its stream)."""
        self.last_seen[node_id] = time.monotonic()

    async def run(self) -> None:
        await self.cache.ready.wait()
        # Nodes not heard from since this loop started get the timeout plus the nodelets'
        # longest reconnect backoff, so a master restart or failover never marks them DOWN.
        started = time.monotonic()
        while True:
            await asyncio.sleep(min(0.25, self.timeout / 4))
            now = time.monotonic()
            for node_id, rec in list(self.cache.nodes.items()):
                if rec.msg.state == pb.DOWN:
                    continue
                seen = self.last_seen.get(node_id, 0.0)
                if seen < started:
                    seen = started + RECONNECT_GRACE
                if now - seen > self.timeout:
                    await self.mark_down(node_id, f"no heartbeat for {now - seen:.1f}s")

    async def mark_down(self, node_id: str, reason: str) -> None:
        rec = self.cache.nodes.get(node_id)
        if rec is None:
            return
        node = pb.NodeInfo()
        node.CopyFrom(rec.msg)
        node.state = pb.DOWN
        result = await self.store.txn(
            [Cmp(keys.node(node_id), rec.rev), *self.leadership.fence()],
            [Put(keys.node(node_id), node.SerializeToString())],
        )
        if not result.succeeded:
            return
        await self.cache.wait_revision(result.revision)
        log.warning("node %s DOWN: %s", node_id, reason)
        for task_id in list(self.cache.by_node.get(node_id, ())):
            await self.writer.update(task_id, functools.partial(lifecycle.lost, node_id=node_id, reason=reason), fenced=True)
