"""The leader's life: register as a member, campaign, run the leader-only loops while the
session holds, stop them the moment it is lost, and campaign again.

Members are `members/<name>` keys bound to the session lease, so `cluster status` lists the
masters that are alive. On shutdown a leader resigns first: the next candidate takes over
without waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from corral.errors import Unavailable
from corral.v1 import api_pb2

from . import keys, metrics
from .election import Election, Session
from .leadership import Elected
from .store import EtcdStore, Put

log = logging.getLogger("corral.leader")

Loop = Callable[[], Coroutine[Any, Any, None]]


class LeaderLoops:
    def __init__(
        self,
        store: EtcdStore,
        leadership: Elected,
        member: api_pb2.Member,
        loops: list[Loop],
        *,
        lease_ttl: int = 2,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.leadership = leadership
        self.member = member
        self.loops = loops
        self.lease_ttl = lease_ttl
        self.on_lost = on_lost
        self.session: Session | None = None
        self.election: Election | None = None
        self.terms = 0

    async def run(self) -> None:
        while True:
            session = Session(self.store, self.lease_ttl)
            try:
                await session.start()
                self.session = session
                await self.store.txn([], [Put(keys.MEMBERS + self.member.name, self.member.SerializeToString(), lease=session.lease)])
                election = Election(self.store, session)
                self.election = election
                if await self._until_lost(session, election.campaign(self.member.SerializeToString())):
                    continue
                self.leadership.won(election)
                self.terms += 1
                metrics.LEADERSHIP.labels("won").inc()
                log.info("%s is the leader (term %d)", self.member.name, election.revision)
                try:
                    await self._until_lost(session, self._run_loops())
                finally:
                    metrics.LEADERSHIP.labels("lost").inc()
                log.warning("%s lost leadership", self.member.name)
            except Unavailable as e:
                log.warning("election: %s", e)
                await asyncio.sleep(0.5)
            except Exception:  # noqa: BLE001 - no store error ends the process: campaign again
                log.exception("leadership ended by an error; campaigning again")
                await asyncio.sleep(1.0)
            finally:
                self.leadership.lost()
                self.on_lost()
                await session.close()

    async def _until_lost(self, session: Session, work: Awaitable[None]) -> bool:
        """Run `work` until it ends or the session is lost; True if the session was lost."""
        task = asyncio.ensure_future(work)
        lost = asyncio.create_task(session.lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
                return False
            return True
        finally:
            for t in (task, lost):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _run_loops(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for loop in self.loops:
                tg.create_task(_supervised(loop))

    async def resign(self) -> None:
        """Hand leadership over now (SIGTERM path)."""
        if self.election is not None and self.election.leading:
            self.leadership.lost()
            await self.election.resign()
            log.info("%s resigned", self.member.name)


async def _supervised(loop: Loop) -> None:
    """Run a leader loop; if it fails (an etcd error, a bad record), log it and start it again
    after a backoff, so one failure never takes the other loops or the process down. Losing
    leadership cancels it as before."""
    backoff = 0.5
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - restarted, with a log line that says why
            log.exception("leader loop %s failed; restarting it in %.1fs", getattr(loop, "__qualname__", loop), backoff)
        await asyncio.sleep(backoff)
        ran = asyncio.get_running_loop().time() - started
        backoff = 0.5 if ran > 30 else min(backoff * 2, 10.0)
