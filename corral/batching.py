"""Coalescing of queued stream messages into one batch message.

A nodelet stream carries many small messages (start, status, acknowledgement). Each gRPC
stream write and read costs tens of microseconds of the sender's and receiver's event loop,
whatever its size, so a sender whose stream is busy sends everything that queued up
meanwhile as one NodeletBatch or MasterBatch. When the stream is idle a message goes alone,
at once: batching adds no wait.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from corral.v1 import nodelet_pb2 as npb

MAX_MESSAGES = 512  # messages per batch
MAX_BYTES = 1 << 20  # a batch stays well under gRPC's default 4 MiB receive limit


class _Sized(Protocol):
    def ByteSize(self) -> int: ...


M = TypeVar("M", bound=_Sized)


def nodelet_batch(msgs: list[npb.NodeletMessage]) -> npb.NodeletMessage:
    return npb.NodeletMessage(batch=npb.NodeletBatch(messages=msgs))


def master_batch(msgs: list[npb.MasterMessage]) -> npb.MasterMessage:
    return npb.MasterMessage(batch=npb.MasterBatch(messages=msgs))


def unbatch(msg: npb.NodeletMessage | npb.MasterMessage) -> Sequence[npb.NodeletMessage | npb.MasterMessage]:
    """The messages a received message stands for, in order (itself, unless a batch)."""
    return msg.batch.messages if msg.WhichOneof("msg") == "batch" else (msg,)


class Drainer(Generic[M]):
    """Takes the next message and whatever else is queued behind it, within the limits, as
    one message to write (`wrap` makes the batch). A message that would push a batch over
    `max_bytes` is held back and opens the next one."""

    def __init__(
        self, queue: asyncio.Queue[M], wrap: Callable[[list[M]], M], *, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES,
    ) -> None:
        self.queue = queue
        self.wrap = wrap
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._held: M | None = None

    async def next(self) -> M:
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = await self.queue.get()
        if self.queue.empty():
            return first
        out = [first]
        size = first.ByteSize()
        while len(out) < self.max_messages and not self.queue.empty():
            msg = self.queue.get_nowait()
            size += msg.ByteSize()
            if size > self.max_bytes:
                self._held = msg
                break
            out.append(msg)
        return out[0] if len(out) == 1 else self.wrap(out)


def _lease_message(msg: object) -> bool:
    """Heartbeats and their acknowledgements (and a registration's answer): what keeps a
    node's lease alive."""
    which = msg.WhichOneof("msg")  # type: ignore[attr-defined]
    return which in ("heartbeat", "heartbeat_ack", "registered")


class LeaseFirstQueue(asyncio.Queue):  # type: ignore[type-arg]
    """A stream's send queue in which heartbeats and their acknowledgements go before
    everything else queued. Why: when thousands of starts or statuses queue up on a busy
    stream, a heartbeat behind them made its round trip longer than the node lease; the
    node then refused every start as read too late (LOST, and a new attempt: more starts),
    and the backlog fed itself. The order of the other messages is kept."""

    # one deque (asyncio.Queue's qsize and empty read it directly), the urgent ones at its front
    _queue: collections.deque[object]  # made by asyncio.Queue._init
    _urgent = 0

    def _put(self, item: object) -> None:
        if _lease_message(item):
            self._queue.insert(self._urgent, item)  # behind the urgent ones already queued
            self._urgent += 1
        else:
            self._queue.append(item)

    def _get(self) -> object:
        if self._urgent:
            self._urgent -= 1
        return self._queue.popleft()
