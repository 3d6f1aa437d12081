"""The audit log: every mutation as one structured line, and kept in etcd, bounded.

Each record is logged at once (logger ``corral.audit``, one logfmt line: who, what,
target, result, detail) and
buffered; the buffer is written to etcd every half second in one transaction, so auditing
a stream of 10,000 submissions costs a few puts, not 10,000. A master that crashes loses
at most the last half second of etcd copies; its log lines are already out. The leader
trims the oldest records beyond `keep`.

Records never carry secret values: `detail` is a sentence the methods write, never a spec.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from corral.v1 import types_pb2 as pb

from . import keys, records
from .store import Delete, EtcdStore, Put

log = logging.getLogger("corral.audit")
log.setLevel(logging.INFO)  # audit lines are written whatever --log-level says

FLUSH_EVERY = 0.5   # seconds between etcd writes of the buffer
MAX_BUFFER = 10_000  # records waiting for etcd; beyond it the oldest are dropped (and counted)
PUTS_PER_TXN = 128


class AuditLog:
    def __init__(self, store: EtcdStore, master: str, *, keep: int = 100_000) -> None:
        self.store = store
        self.master = master
        self.keep = keep
        self._buffer: list[pb.AuditRecord] = []
        self._seq = itertools.count()
        self.dropped = 0
        self.written = 0

    def record(self, who: str, what: str, target: str, result: str, detail: str = "", peer: str = "") -> pb.AuditRecord:
        now = time.time()
        rec = pb.AuditRecord(
            time=records.ts(now), who=who, what=what, target=target[:256], result=result,
            detail=detail[:512], master=self.master, peer=peer,
        )
        log.info("audit", extra={"fields": {
            "who": who, "what": what, "target": rec.target, "result": result, "detail": rec.detail,
            "master": self.master, "peer": peer,
        }})
        self._buffer.append(rec)
        if len(self._buffer) > MAX_BUFFER:
            del self._buffer[: len(self._buffer) - MAX_BUFFER]
            self.dropped += 1
        return rec

    def _key(self, rec: pb.AuditRecord) -> str:
        return f"{keys.AUDIT}{rec.time.ToNanoseconds():020d}-{self.master}-{next(self._seq)}"

    async def flush(self) -> None:
        batch, self._buffer = self._buffer, []
        for i in range(0, len(batch), PUTS_PER_TXN):
            part = batch[i : i + PUTS_PER_TXN]
            try:
                await self.store.txn([], [Put(self._key(r), r.SerializeToString()) for r in part])
                self.written += len(part)
            except Exception as e:  # noqa: BLE001 - keep them for the next round
                log.warning("audit: could not write %d records to etcd: %s", len(batch) - i, e)
                self._buffer[:0] = batch[i:]
                return

    async def run(self) -> None:
        """Flush the buffer to etcd until cancelled (every master runs this)."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                if self._buffer:
                    await self.flush()
        finally:
            if self._buffer:
                await asyncio.shield(self.flush())

    async def trim(self) -> int:
        """Delete the oldest records beyond `keep` (the leader calls this)."""
        extra = await self.store.count(keys.AUDIT) - self.keep
        if extra <= 0:
            return 0
        old, _ = await self.store.range(keys.AUDIT, extra, keys_only=True)
        for i in range(0, len(old), 512):
            await self.store.txn([], [Delete(kv.key) for kv in old[i : i + 512]])
        return len(old)

    async def list(self, limit: int, who: str = "", target: str = "") -> list[pb.AuditRecord]:
        """Newest first, filtered; reads at most `keep` records."""
        out: list[pb.AuditRecord] = []
        kvs, _ = await self.store.range(keys.AUDIT, self.keep if who or target else limit, newest_first=True)
        for kv in kvs:
            rec = pb.AuditRecord()
            rec.ParseFromString(kv.value)
            if (who and rec.who != who) or (target and rec.target != target):
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out
