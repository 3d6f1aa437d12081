"""Per-user quotas: tasks held at once, cpu and memory they request, submissions per second.

What a user holds is the cache's per-user usage of unfinished tasks (pending, assigned,
running) plus what this master has admitted but not yet seen committed, so concurrent
submissions on one master cannot overshoot. Masters admit independently: across masters
the overshoot is bounded by what is in flight at once. The rate limit is a token bucket
per user on each master (one second of burst).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from corral import units
from corral.errors import ResourceExhausted
from corral.v1 import types_pb2 as pb

from .cache import Cache


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
    released: bool = False


class Quotas:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._reserved: dict[str, list[int]] = {}
        self._buckets: dict[str, _Bucket] = {}

    def held(self, user_id: str) -> tuple[int, int, int]:
        used = self.cache.usage.get(user_id, (0, 0, 0))
        res = self._reserved.get(user_id, (0, 0, 0))
        return used[0] + res[0], used[1] + res[1], used[2] + res[2]

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
        self._take_rate(user, time.monotonic())
        res = self._reserved.setdefault(user.user_id, [0, 0, 0])
        res[0] += 1
        res[1] += spec.cpu_request
        res[2] += spec.mem_request
        adm.tasks += 1
        adm.cpu += spec.cpu_request
        adm.memory += spec.mem_request

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
        if res[0] <= 0:
            del self._reserved[adm.user_id]
