"""Per-user quotas: tasks held at once, cpu and memory they request, submissions per second,
and storage: the records (tasks of every state, templates) and bytes a user keeps in the
store. Plus one cluster-wide guard: new work is refused once the store is 80% full, so the
state changes of work already accepted always have room (an etcd at its quota refuses
every write, for everyone).

What a user holds is the cache's per-user usage of unfinished tasks (pending, assigned,
running) plus what this master has admitted but not yet seen committed, so concurrent
submissions on one master cannot overshoot. Masters admit independently: across masters
the overshoot is bounded by what is in flight at once. The rate limit is a token bucket
per user on each master (one second of burst).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from corral import units
from corral.errors import ResourceExhausted
from corral.v1 import types_pb2 as pb

from . import authz
from .cache import Cache
from .store import EtcdStore

log = logging.getLogger("corral.quotas")

STORE_HIGH_WATER = 0.8   # of the store's quota: above it, new work is refused
STORE_POLL = 5.0         # seconds between looks at the store's size


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class Admission:
    """What one call reserved; `release` it once its writes are committed and cached."""

    user_id: str
    tasks: int = 0
    cpu: int = 0
    memory: int = 0
    size: int = 0
    released: bool = False


class Quotas:
    def __init__(self, cache: Cache, *, user_max_records: int = 0, user_max_bytes: int = 0, store_quota: int = 0) -> None:
        self.cache = cache
        self.user_max_records = user_max_records  # defaults for user-role accounts
        self.user_max_bytes = user_max_bytes
        self.store_quota = store_quota            # etcd's --quota-backend-bytes; 0: unknown
        self.store_size = 0                       # the largest member's db size, last seen
        self._reserved: dict[str, list[int]] = {}
        self._buckets: dict[str, _Bucket] = {}

    def held(self, user_id: str) -> tuple[int, int, int]:
        used = self.cache.usage.get(user_id, (0, 0, 0))
        res = self._reserved.get(user_id, (0, 0, 0, 0))
        return used[0] + res[0], used[1] + res[1], used[2] + res[2]

    def storage_limits(self, user: pb.User) -> tuple[int, int]:
        """(records, bytes) the user may keep stored; 0 = no limit. A user's own quota wins;
        else user-role accounts get the master's defaults, admins and operators none."""
        q = user.quota
        plain = authz.role_of(user) == authz.USER
        return (q.max_stored_records or (self.user_max_records if plain else 0),
                q.max_stored_bytes or (self.user_max_bytes if plain else 0))

    def check_store(self, user: pb.User) -> None:
        """RESOURCE_EXHAUSTED while the store is above its high-water mark."""
        if self.store_quota and self.store_size > STORE_HIGH_WATER * self.store_quota:
            raise ResourceExhausted(
                f"the cluster's store is {self.store_size / self.store_quota:.0%} full ({units.format_memory(self.store_size)} "
                f"of {units.format_memory(self.store_quota)}); new work is refused until finished tasks are deleted "
                "(--retention, history_limit) and etcd is defragmented; work already accepted goes on")

    def check_stored(self, user: pb.User, records: int, size: int) -> None:
        """RESOURCE_EXHAUSTED unless the user may store `records` more records of `size` bytes."""
        max_records, max_bytes = self.storage_limits(user)
        if not (max_records or max_bytes):
            return
        have = self.cache.stored.get(user.user_id, (0, 0))
        res = self._reserved.get(user.user_id, (0, 0, 0, 0))
        if max_records and have[0] + res[0] + records > max_records:
            raise ResourceExhausted(
                f"quota: {user.user_id} keeps {have[0] + res[0]:,} records stored (tasks of every state and templates); "
                f"max_stored_records is {max_records:,}. Finished tasks are deleted after the retention period; "
                "a template's history_limit keeps fewer runs")
        if max_bytes and have[1] + res[3] + size > max_bytes:
            raise ResourceExhausted(
                f"quota: {user.user_id}'s stored records take {units.format_memory(have[1] + res[3])}; "
                f"max_stored_bytes is {units.format_memory(max_bytes)}")

    async def watch_store(self, store: EtcdStore) -> None:
        """Keep `store_size` current (every master, all the time: followers admit too)."""
        while True:
            try:
                sizes = [int(m["db_size"]) for m in await store.endpoint_health() if m.get("healthy")]  # type: ignore[call-overload]
                if sizes:
                    self.store_size = max(sizes)
            except Exception as e:  # noqa: BLE001 - a missed look keeps the last figure
                log.debug("store size: %s", e)
            await asyncio.sleep(STORE_POLL)

    def _take_rate(self, user: pb.User, now: float) -> None:
        rate = user.quota.max_submit_rate
        if rate <= 0:
            return
        burst = max(1.0, rate)
        b = self._buckets.get(user.user_id)
        if b is None:
            b = self._buckets[user.user_id] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if b.tokens < 1.0:
            raise ResourceExhausted(f"quota: {user.user_id} may submit at most {rate:g} tasks per second (max_submit_rate); slow down and retry")
        b.tokens -= 1.0

    def admit(self, user: pb.User, spec: pb.TaskTemplate, adm: Admission) -> None:
        """Reserve room for one more task of `spec`, or raise RESOURCE_EXHAUSTED naming the
        limit it would pass."""
        q = user.quota
        if q.max_tasks or q.max_cpu or q.max_memory:
            tasks, cpu, mem = self.held(user.user_id)
            if q.max_tasks and tasks + 1 > q.max_tasks:
                raise ResourceExhausted(f"quota: {user.user_id} already has {tasks} unfinished tasks; max_tasks is {q.max_tasks}")
            if q.max_cpu and cpu + spec.cpu_request > q.max_cpu:
                raise ResourceExhausted(
                    f"quota: {user.user_id}'s unfinished tasks would request {units.format_cpu(cpu + spec.cpu_request)} cpu; "
                    f"max_cpu is {units.format_cpu(q.max_cpu)}")
            if q.max_memory and mem + spec.mem_request > q.max_memory:
                raise ResourceExhausted(
                    f"quota: {user.user_id}'s unfinished tasks would request {units.format_memory(mem + spec.mem_request)} memory; "
                    f"max_memory is {units.format_memory(q.max_memory)}")
        size = spec.ByteSize() + 200  # the task record around its spec, roughly
        self.check_store(user)
        self.check_stored(user, 1, size)
        self._take_rate(user, time.monotonic())
        res = self._reserved.setdefault(user.user_id, [0, 0, 0, 0])
        res[0] += 1
        res[1] += spec.cpu_request
        res[2] += spec.mem_request
        res[3] += size
        adm.tasks += 1
        adm.cpu += spec.cpu_request
        adm.memory += spec.mem_request
        adm.size += size

    def release(self, adm: Admission) -> None:
        if adm.released or not adm.tasks:
            return
        adm.released = True
        res = self._reserved.get(adm.user_id)
        if res is None:
            return
        res[0] -= adm.tasks
        res[1] -= adm.cpu
        res[2] -= adm.memory
        res[3] -= adm.size
        if res[0] <= 0:
            del self._reserved[adm.user_id]
