"""Leader election on etcd, after etcd's own concurrency recipe (session.go, election.go).

A `Session` is a lease kept alive in the background; its `lost` event is set when the lease
cannot be refreshed before it would expire. An `Election` is a key prefix plus a session:
each candidate creates `<prefix><lease id>` bound to its lease, candidates queue by create
revision, and each waits only for its predecessor's key to go (no thundering herd). The
winner's key create revision is its fencing token: every leader write compares it, so a
deposed leader — paused past its lease, partitioned — can change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from corral.errors import Unavailable

from .store import Cmp, Delete, EtcdStore, Put

log = logging.getLogger("corral.election")

PREFIX = "election/"


class Session:
    def __init__(self, store: EtcdStore, ttl: int) -> None:
        self.store = store
        self.ttl = max(1, int(ttl))
        self.lease = 0
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.lease = await self.store.grant_lease(self.ttl)
        self._task = asyncio.create_task(self._keepalive())

    async def _keepalive(self) -> None:
        expires = time.monotonic() + self.ttl
        try:
            while True:
                await asyncio.sleep(self.ttl / 3)
                try:
                    remaining = await asyncio.wait_for(self.store.keepalive(self.lease), self.ttl / 3)
                except (Unavailable, TimeoutError) as e:
                    if time.monotonic() >= expires:
                        log.warning("session lease %x lost: %s", self.lease, e)
                        return
                    continue
                if remaining <= 0:
                    log.warning("session lease %x expired", self.lease)
                    return
                expires = time.monotonic() + remaining
        finally:
            self.lost.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.lease:
            with contextlib.suppress(Unavailable):
                await self.store.revoke_lease(self.lease)


class Election:
    def __init__(self, store: EtcdStore, session: Session, prefix: str = PREFIX) -> None:
        self.store = store
        self.session = session
        self.prefix = prefix
        self.key = f"{prefix}{session.lease:x}"
        self.revision = 0  # create revision of our key: the fencing token once we lead
        self.leading = False

    async def campaign(self, value: bytes) -> None:
        """Queue as a candidate and return once this session leads."""
        result = await self.store.txn([Cmp(self.key, 0)], [Put(self.key, value, lease=self.session.lease)])
        kv = await self.store.get(self.key)
        if kv is None:
            raise Unavailable("election key vanished: the session lease expired")
        self.revision = kv.create_revision
        del result
        while True:
            pred, rev = await self.store.first_created(self.prefix, before=self.revision)
            if pred is None:
                self.leading = True
                return
            await self._wait_gone(pred.key, rev)

    async def _wait_gone(self, key: str, revision: int) -> None:
        async for _, events in self.store.watch(key, revision + 1):
            if any(ev.key == key and ev.value is None for ev in events):
                return

    def fence(self) -> list[Cmp]:
        return [Cmp(self.key, self.revision, create=True)]

    async def proclaim(self, value: bytes) -> bool:
        """Change the leader's announced value without another election (False if no
        longer the leader)."""
        if not self.leading:
            return False
        result = await self.store.txn(self.fence(), [Put(self.key, value, lease=self.session.lease)])
        return result.succeeded

    async def observe(self) -> AsyncIterator[tuple[bytes, int] | None]:
        """Yield the leader (value, create revision) now and after every change; None while
        there is none."""
        last: tuple[bytes, int] | None = None
        first = True
        while True:
            kv, rev = await self.store.first_created(self.prefix)
            current = None if kv is None else (kv.value, kv.create_revision)
            if first or current != last:
                yield current
                first, last = False, current
            async for _ in self.store.watch(self.prefix, rev + 1):
                break  # any change under the prefix: look again

    async def resign(self) -> None:
        """Give up leadership now (the next candidate takes over without waiting for a lease)."""
        self.leading = False
        if self.revision:
            with contextlib.suppress(Unavailable):
                await self.store.txn([Cmp(self.key, self.revision, create=True)], [Delete(self.key)])

    async def leader(self) -> tuple[str, bytes, int] | None:
        """(key, value, create revision) of the current leader, or None."""
        kv, _ = await self.store.first_created(self.prefix)
        return None if kv is None else (kv.key, kv.value, kv.create_revision)


async def current_leader(store: EtcdStore, prefix: str = PREFIX) -> tuple[bytes, int] | None:
    kv, _ = await store.first_created(prefix)
    return None if kv is None else (kv.value, kv.create_revision)
