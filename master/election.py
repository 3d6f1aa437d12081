"""Leader election on etcd, after etcd's own concurrency recipe (session.go, election.go).

A `Session` is a lease kept alive by a background thread; its `lost` event is set when the
lease cannot be refreshed before it would expire. An `Election` is a key prefix plus a session:
each candidate creates `<prefix><lease id>` bound to its lease, candidates queue by create
revision, and each waits only for its predecessor's key to go (no thundering herd). The
winner's key create revision is its fencing token: every leader write compares it, so a
deposed leader — paused past its lease, partitioned — can change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator

from corral.errors import Unavailable

from .store import Cmp, Delete, EtcdStore, Put

log = logging.getLogger("corral.election")

PREFIX = "election/"


class Session:
    """A lease, kept alive by a thread of its own with its own event loop and etcd channel:
    a master whose main loop is busy (thousands of nodelet streams, a burst of
    submissions) must not lose its lease, and with it leadership and every stream, because
    a refresh waited behind that work. (A stopped or dead process still loses it.)"""

    def __init__(self, store: EtcdStore, ttl: int) -> None:
        self.store = store
        self.ttl = max(1, int(ttl))
        self.lease = 0
        self.lost = asyncio.Event()
        # monotonic instant before which the lease is surely alive in etcd (the ttl counted
        # from before the call that granted or refreshed it): node leases are renewed only
        # while this holds, so a paused or cut-off leader stops renewing them on its own
        self.valid_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def valid(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self.valid_until

    async def start(self) -> None:
        asked = time.monotonic()
        self.lease = await self.store.grant_lease(self.ttl)
        self.valid_until = asked + self.ttl
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._keepalive_thread, args=(loop,), name=f"lease-{self.lease:x}", daemon=True)
        self._thread.start()

    def _keepalive_thread(self, main: asyncio.AbstractEventLoop) -> None:
        try:
            asyncio.run(self._keepalive())
        finally:
            with contextlib.suppress(RuntimeError):  # the main loop is closed already
                main.call_soon_threadsafe(self.lost.set)

    async def _keepalive(self) -> None:
        store = EtcdStore(self.store.endpoint, self.store.prefix, tls=self.store.tls, server_name=self.store.server_name)
        expires = time.monotonic() + self.ttl
        try:
            await store.connect(wait=self.ttl)
            while not self._stop.is_set():
                if await asyncio.to_thread(self._stop.wait, self.ttl / 3):  # closed meanwhile
                    return
                try:
                    asked = time.monotonic()
                    remaining = await asyncio.wait_for(store.keepalive(self.lease), self.ttl / 3)
                except Exception as e:  # noqa: BLE001 - any failed refresh: retry until the lease would expire
                    if time.monotonic() >= expires:
                        log.warning("session lease %x lost: %r", self.lease, e)
                        return
                    continue
                if remaining <= 0:
                    log.warning("session lease %x expired", self.lease)
                    return
                expires = time.monotonic() + remaining
                self.valid_until = asked + remaining
        finally:
            await store.close()

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
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
