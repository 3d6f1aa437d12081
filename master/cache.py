"""The master's watch-fed cache of every record under the store prefix.

One etcd watch feeds dictionaries of templates, tasks, nodes and users, plus the indexes
the loops need (tasks by state, tasks by node). Readers see a consistent prefix of etcd's
history; `wait_revision` lets a writer read its own write. Listeners are called for every
change so the scheduler and the watch API wake without polling.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from corral.errors import Unavailable
from corral.v1 import types_pb2 as pb

from . import keys, records
from .store import KV, Compacted, EtcdStore

log = logging.getLogger("corral.cache")

M = TypeVar("M", bound=Message)


@dataclass(slots=True)
class Rec(Generic[M]):
    msg: M
    rev: int
    created: int = 0  # etcd create revision: the order records were first committed in


class Packed:
    """A task record kept as its etcd bytes and parsed on each read of `.msg`.

    A parsed TaskExecution holds about 1.25 KB (its own arena) against ~150 bytes
    serialized, and a large store is mostly records nobody touches often: finished tasks
    kept for history, tasks due later. Only assigned and running tasks, which the leader
    reads on every report, stay parsed. Each read parses a new copy (0.5 µs), so `.msg`
    is never shared or changed in place.
    """

    __slots__ = ("raw", "rev", "created")

    def __init__(self, raw: bytes, rev: int = 0, created: int = 0) -> None:
        self.raw = raw
        self.rev = rev
        self.created = created

    @property
    def msg(self) -> pb.TaskExecution:
        m = pb.TaskExecution()
        m.ParseFromString(self.raw)
        return m


TaskRec = Rec[pb.TaskExecution] | Packed


def editable(rec: TaskRec) -> pb.TaskExecution:
    """A copy of the record the caller may change (a packed record parses to a new one)."""
    if isinstance(rec, Packed):
        return rec.msg
    copy = pb.TaskExecution()
    copy.CopyFrom(rec.msg)
    return copy

Listener = Callable[[str, str, Message | None], None]

_KINDS: dict[str, type[Message]] = {
    keys.TEMPLATES: pb.TaskTemplate,
    keys.TASKS: pb.TaskExecution,
    keys.NODES: pb.NodeInfo,
    keys.USERS: pb.User,
    keys.TOKENS: pb.Token,
}


class Cache:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.templates: dict[str, Rec[pb.TaskTemplate]] = {}
        self.tasks: dict[str, TaskRec] = {}
        self.nodes: dict[str, Rec[pb.NodeInfo]] = {}
        self.users: dict[str, Rec[pb.User]] = {}
        self.template_names: dict[str, str] = {}
        self.users_by_token: dict[str, str] = {}  # the bootstrap admin's token hash
        self.tokens: dict[str, Rec[pb.Token]] = {}
        self.tokens_by_hash: dict[str, str] = {}
        # per user: (tasks, cpu, memory) of unfinished tasks, what quotas are checked against
        self.usage: dict[str, tuple[int, int, int]] = {}
        # per user: [records, bytes] of everything their work keeps stored: tasks of any
        # state with their idempotency keys, and templates (the storage quota)
        self.stored: dict[str, list[int]] = {}
        self.by_state: dict[int, set[str]] = {}
        self.by_node: dict[str, set[str]] = {}
        self.by_template: dict[str, set[str]] = {}
        self.by_user: dict[str, set[str]] = {}
        # every task by (submit time ns, id): ListTasks pages newest first without sorting
        self.task_order = SortedList()
        # finished tasks by (finish time ns, id): retention takes the oldest without a scan
        self.finished = SortedList()
        self.revision = 0
        self.ready = asyncio.Event()
        self._listeners: list[Listener] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by revision
        self._seq = 0

    def listen(self, fn: Listener) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    async def wait_revision(self, revision: int, timeout: float = 5.0) -> None:
        """Return once the cache has applied `revision` (a writer's read-your-write)."""
        if self.revision >= revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (revision, self._seq, fut))
        await asyncio.wait_for(fut, timeout)

    async def sync(self) -> None:
        """Catch up with etcd's latest revision (what a `consistent` read waits for)."""
        await self.wait_revision(await self.store.current_revision())

    def tasks_of(self, template_id: str) -> list[pb.TaskExecution]:
        """Every task record of one template (through the index, not a scan)."""
        return [self.tasks[i].msg for i in self.by_template.get(template_id, ()) if i in self.tasks]

    def tasks_in(self, state: int) -> set[str]:
        return self.by_state.get(state, set())

    async def run(self) -> None:
        """Keep the cache in step with etcd until cancelled; re-list after a broken watch."""
        relist = True
        while True:
            try:
                if relist:
                    kvs, revision = await self.store.range("")
                    self._resync(kvs, notify=self.ready.is_set())
                    await self._advance(revision)
                    self.ready.set()
                    relist = False
                # resume right after the last applied revision: no event is missed
                async for rev, events in self.store.watch("", self.revision + 1):
                    for ev in events:
                        self._apply(ev.key, ev.value, ev.mod_revision, notify=True, created=ev.create_revision)
                    await self._advance(rev)
            except Compacted as e:
                log.warning("cache: %s; re-listing", e)
                relist = True
            except Unavailable as e:
                log.warning("cache: %s; resuming the watch", e)
                await asyncio.sleep(0.2)

    def _resync(self, kvs: list[KV], *, notify: bool) -> None:
        """Make the cache equal a fresh listing, telling listeners about every difference."""
        if not notify:
            self._reset()
            for kv in kvs:
                self._apply(kv.key, kv.value, kv.mod_revision, notify=False, created=kv.create_revision)
            return
        listed = {kv.key for kv in kvs}
        for kv in kvs:
            if self._rev_of(kv.key) != kv.mod_revision:
                self._apply(kv.key, kv.value, kv.mod_revision, notify=True, created=kv.create_revision)
        for prefix, table in ((keys.TEMPLATES, self.templates), (keys.TASKS, self.tasks), (keys.NODES, self.nodes), (keys.USERS, self.users), (keys.TOKENS, self.tokens)):
            for ident in list(table):
                if prefix + ident not in listed:
                    self._apply(prefix + ident, None, 0, notify=True)

    def _rev_of(self, key: str) -> int:
        for prefix, table in ((keys.TEMPLATES, self.templates), (keys.TASKS, self.tasks), (keys.NODES, self.nodes), (keys.USERS, self.users), (keys.TOKENS, self.tokens)):
            if key.startswith(prefix):
                rec = table.get(key[len(prefix) :])
                return rec.rev if rec is not None else -1
        return -1

    async def _advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            while self._waiters and self._waiters[0][0] <= revision:
                _, _, fut = heapq.heappop(self._waiters)
                if not fut.done():
                    fut.set_result(None)

    def _reset(self) -> None:
        for d in (self.templates, self.tasks, self.nodes, self.users, self.tokens):
            d.clear()
        self.template_names.clear()
        self.users_by_token.clear()
        self.tokens_by_hash.clear()
        self.usage.clear()
        self.stored.clear()
        self.by_state.clear()
        self.by_node.clear()
        self.by_template.clear()
        self.by_user.clear()
        self.task_order.clear()
        self.finished.clear()

    def _apply(self, key: str, value: bytes | None, rev: int, *, notify: bool, created: int = 0) -> None:
        prefix = next((p for p in _KINDS if key.startswith(p)), None)
        if prefix is None:
            return
        cls = _KINDS[prefix]
        ident = key[len(prefix) :]
        msg: Message | None = None
        if value is not None:
            msg = cls()
            try:
                msg.ParseFromString(value)
            except DecodeError:
                log.error("cache: undecodable record at %s", key)
                return
        if prefix == keys.TASKS:
            self._index_task(ident, msg, value)  # type: ignore[arg-type]
        elif prefix == keys.TEMPLATES:
            old = self.templates.pop(ident, None)
            if old is not None:
                self.template_names.pop(old.msg.name, None)
                self._store(old.msg.owner, -1, -old.msg.ByteSize())
            if msg is not None:
                self.templates[ident] = Rec(msg, rev)  # type: ignore[arg-type]
                self.template_names[msg.name] = ident  # type: ignore[attr-defined]
                self._store(msg.owner, 1, len(value) if value is not None else msg.ByteSize())  # type: ignore[attr-defined]
        elif prefix == keys.NODES:
            self._put(self.nodes, ident, msg, rev)
        elif prefix == keys.USERS:
            old_user = self.users.get(ident)
            if old_user is not None:
                self.users_by_token.pop(old_user.msg.token_hash, None)
            self._put(self.users, ident, msg, rev)
            if msg is not None and msg.token_hash:  # type: ignore[attr-defined]
                self.users_by_token[msg.token_hash] = ident  # type: ignore[attr-defined]
        elif prefix == keys.TOKENS:
            old_token = self.tokens.get(ident)
            if old_token is not None:
                self.tokens_by_hash.pop(old_token.msg.token_hash, None)
            self._put(self.tokens, ident, msg, rev)
            if msg is not None:
                self.tokens_by_hash[msg.token_hash] = ident  # type: ignore[attr-defined]
        if prefix == keys.TASKS and msg is not None:
            rec = self.tasks[ident]
            rec.rev = rev
            rec.created = created
        if notify:
            for fn in list(self._listeners):
                try:
                    fn(prefix, ident, msg)
                except Exception:
                    log.exception("cache listener failed")

    @staticmethod
    def _put(d: dict, ident: str, msg: Message | None, rev: int) -> None:  # type: ignore[type-arg]
        if msg is None:
            d.pop(ident, None)
        else:
            d[ident] = Rec(msg, rev)

    def _store(self, user_id: str, records: int, size: int) -> None:
        held = self.stored.setdefault(user_id, [0, 0])
        held[0] += records
        held[1] += size
        if held[0] <= 0:
            del self.stored[user_id]

    @staticmethod
    def _stored_size(ident: str, msg: pb.TaskExecution, size: int) -> int:
        """A task's stored bytes: its record, plus its idempotency key (key and value)."""
        if msg.idempotency_key:
            size += len(keys.idempotency(msg.user_id, msg.idempotency_key)) + len(ident)
        return size

    def _use(self, t: pb.TaskExecution, sign: int) -> None:
        n, cpu, mem = self.usage.get(t.user_id, (0, 0, 0))
        n += sign
        if n <= 0:
            self.usage.pop(t.user_id, None)
        else:
            self.usage[t.user_id] = (n, cpu + sign * t.spec.cpu_request, mem + sign * t.spec.mem_request)

    def _index_task(self, ident: str, msg: pb.TaskExecution | None, raw: bytes | None = None) -> None:
        old_rec = self.tasks.pop(ident, None)
        if old_rec is not None:
            old = old_rec.msg
            if msg is None or msg.submit_time != old.submit_time:
                self.task_order.discard((old.submit_time.ToNanoseconds(), ident))
            self.by_state.get(old.state, set()).discard(ident)
            if old.node_id:
                self.by_node.get(old.node_id, set()).discard(ident)
            if old.template_id:
                self.by_template.get(old.template_id, set()).discard(ident)
            self.by_user.get(old.user_id, set()).discard(ident)
            if old.state in records.TERMINAL:
                self.finished.discard((old.finish_time.ToNanoseconds(), ident))
            else:
                self._use(old, -1)
            old_size = len(old_rec.raw) if isinstance(old_rec, Packed) else old.ByteSize()
            self._store(old.user_id, -1, -self._stored_size(ident, old, old_size))
        if msg is None:
            return
        self._store(msg.user_id, 1, self._stored_size(ident, msg, len(raw) if raw is not None else msg.ByteSize()))
        if msg.state in records.TERMINAL:
            self.finished.add((msg.finish_time.ToNanoseconds(), ident))
        else:
            self._use(msg, 1)
        self.tasks[ident] = Rec(msg, 0) if msg.state in records.ACTIVE or raw is None else Packed(raw)
        if old_rec is None or msg.submit_time != old.submit_time:
            self.task_order.add((msg.submit_time.ToNanoseconds(), ident))
        self.by_state.setdefault(msg.state, set()).add(ident)
        if msg.node_id:
            self.by_node.setdefault(msg.node_id, set()).add(ident)
        if msg.template_id:
            self.by_template.setdefault(msg.template_id, set()).add(ident)
        self.by_user.setdefault(msg.user_id, set()).add(ident)
