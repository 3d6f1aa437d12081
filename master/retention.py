"""The leader's retention loop: finished task records older than the retention period are
deleted, in batches, so etcd and every master's cache stay bounded however long the
cluster runs. (Cron templates also keep at most `history_limit` finished runs; see
cron_loop.) etcd's own history is compacted by etcd (`--auto-compaction-retention`).

Each delete compares the record's revision, so a task retried meanwhile is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time

from corral.errors import CorralError

from . import keys
from .audit import AuditLog
from .cache import Cache
from .group_commit import GroupCommit
from .leadership import Leadership
from .store import Cmp, Delete

log = logging.getLogger("corral.retention")

BATCH = 200        # deletes per write (each its own compare)
EVERY = 60.0       # seconds between sweeps


class Retention:
    def __init__(self, cache: Cache, commit: GroupCommit, leadership: Leadership, *, keep: float, audit: AuditLog | None = None) -> None:
        self.audit = audit  # its oldest records beyond its bound are trimmed here too
        self.cache = cache
        self.commit = commit
        self.leadership = leadership
        self.keep = keep  # seconds; 0 keeps everything
        self.deleted = 0

    def expired(self, now: float) -> list[tuple[str, int]]:
        """(task id, revision) of finished tasks that ended before now − keep."""
        cutoff_ns = int((now - self.keep) * 1e9)
        out = []
        # oldest first, from the cache's finish-time index: no scan of every finished task
        # (from 1 ns: a task without a finish time is kept, as before)
        for _, task_id in self.cache.finished.irange(minimum=(1, ""), maximum=(cutoff_ns, "")):
            rec = self.cache.tasks.get(task_id)
            if rec is not None:
                out.append((task_id, rec.rev))
        return out

    async def sweep(self) -> int:
        old = self.expired(time.time())
        fence = self.leadership.fence()
        done = 0
        for i in range(0, len(old), BATCH):
            batch = old[i : i + BATCH]
            results = await self.commit.txn_many([([Cmp(keys.task(t), rev), *fence], [Delete(keys.task(t))]) for t, rev in batch])
            done += sum(1 for r in results if not isinstance(r, BaseException) and r.succeeded)
        self.deleted += done
        if done:
            log.info("retention: deleted %d finished tasks older than %.0fs", done, self.keep)
        return done

    async def run(self) -> None:
        await self.cache.ready.wait()
        while True:
            try:
                if self.keep > 0:
                    await self.sweep()
                if self.audit is not None and (trimmed := await self.audit.trim()):
                    log.info("retention: trimmed %d audit records beyond the newest %d", trimmed, self.audit.keep)
            except CorralError as e:
                log.warning("retention sweep: %s", e)
            await asyncio.sleep(max(1.0, min(EVERY, self.keep / 2)) if self.keep > 0 else EVERY)
