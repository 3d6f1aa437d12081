"""Client request ids: the SDK sends `corral-request-id` with every mutation and keeps it
across its retries; a mutation that creates something records the id in the same etcd
transaction, so a retried or concurrently repeated call returns the first result instead
of doing the work twice.

The records expire: they are bound to leases granted per hour with a day's TTL, so each
lives between 23 and 24 hours without any clean-up loop. Submissions' idempotency keys
use the same leases: a key is honoured for at least 23 hours, then forgotten.
"""

from __future__ import annotations

import asyncio
import re
import time

import grpc

from . import keys
from .store import Cmp, EtcdStore, Put

LEASE_TTL = 24 * 3600
ROTATE_EVERY = 3600.0
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def request_id(context: grpc.aio.ServicerContext) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == "corral-request-id" and isinstance(v, str) and _ID_RE.match(v):
            return v
    return ""


class RequestIds:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self._lease = 0
        self._granted = 0.0
        self._lock = asyncio.Lock()

    async def lease(self) -> int:
        """A lease that expires 23-24 hours from now (shared by everything written within
        the hour): request ids and idempotency keys are bound to it."""
        async with self._lock:
            if not self._lease or time.monotonic() - self._granted > ROTATE_EVERY:
                self._lease = await self.store.grant_lease(LEASE_TTL)
                self._granted = time.monotonic()
            return self._lease

    def key(self, user_id: str, rid: str) -> str:
        return f"{keys.REQUESTS}{user_id}/{rid}"

    async def guard(self, user_id: str, rid: str, result_id: str) -> tuple[list[Cmp], list[Put]]:
        """The compare and put that make a creation happen once per request id."""
        if not rid:
            return [], []
        k = self.key(user_id, rid)
        return [Cmp(k, 0)], [Put(k, result_id.encode(), lease=await self.lease())]

    async def seen(self, user_id: str, rid: str) -> str | None:
        """The result id recorded for this request id, if the work was done already."""
        if not rid:
            return None
        kv = await self.store.get(self.key(user_id, rid))
        return kv.value.decode() if kv is not None else None
