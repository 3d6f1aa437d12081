"""The audit log: every mutation as one structured line, and kept in etcd, bounded.

Each record becomes one log line on stderr (logger ``corral.audit``, logfmt: who, what,
target, result, detail) within 20 ms, many lines per write, and is written to etcd every
half second, many records per transaction: auditing 2,000 unary submissions a second costs
a few writes, not 2,000 logging calls and puts. A master that crashes loses at most the
last 20 ms of lines and half second of etcd copies. The leader trims the oldest records
beyond `keep`.

Records never carry secret values: `detail` is a sentence the methods write, never a spec.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time

from corral.logs import format_event
from corral.v1 import types_pb2 as pb

from . import keys, records
from .store import Delete, EtcdStore, Put

log = logging.getLogger("corral.audit")
log.setLevel(logging.INFO)  # audit lines are written whatever --log-level says

FLUSH_EVERY = 0.5   # seconds between etcd writes of the buffer
LINE_EVERY = 0.02   # seconds a log line may wait, to be written with others in one write
MAX_BUFFER = 10_000  # records waiting for etcd; beyond it the oldest are dropped (and counted)
PUTS_PER_TXN = 128


# (unix time, who, what, target, result, detail, peer)
Entry = tuple[float, str, str, str, str, str, str]


class AuditLog:
    def __init__(self, store: EtcdStore, master: str, *, keep: int = 100_000) -> None:
        self.store = store
        self.master = master
        self.keep = keep
        self._buffer: list[Entry] = []   # waiting for etcd
        self._lines: list[Entry] = []    # waiting for stderr
        self._line_timer: asyncio.TimerHandle | None = None
        self._seq = itertools.count()
        self.dropped = 0
        self.written = 0

    def record(self, who: str, what: str, target: str, result: str, detail: str = "", peer: str = "") -> None:
        """Note one mutation. Cheap on the caller's path (a tuple appended): the line is
        written within LINE_EVERY, many lines per write, and etcd gets them in batches."""
        e = (time.time(), who, what, target[:256], result, detail[:512], peer)
        self._buffer.append(e)
        if len(self._buffer) > MAX_BUFFER:
            del self._buffer[: len(self._buffer) - MAX_BUFFER]
            self.dropped += 1
        self._lines.append(e)
        if self._line_timer is None:
            try:
                self._line_timer = asyncio.get_running_loop().call_later(LINE_EVERY, self.write_lines)
            except RuntimeError:  # no loop (a tool, a test): write now
                self.write_lines()

    def write_lines(self) -> None:
        self._line_timer = None
        lines, self._lines = self._lines, []
        if not lines or not log.isEnabledFor(logging.INFO):
            return
        text = "".join(
            format_event(t, "info", log.name, "audit", {
                "who": who, "what": what, "target": target, "result": result, "detail": detail, "master": self.master, "peer": peer,
            }) + "\n"
            for t, who, what, target, result, detail, peer in lines
        )
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except OSError:
            pass

    def _record(self, e: Entry) -> tuple[str, bytes]:
        t, who, what, target, result, detail, peer = e
        rec = pb.AuditRecord(time=records.ts(t), who=who, what=what, target=target, result=result, detail=detail, master=self.master, peer=peer)
        return f"{keys.AUDIT}{rec.time.ToNanoseconds():020d}-{self.master}-{next(self._seq)}", rec.SerializeToString()

    async def flush(self) -> None:
        self.write_lines()
        batch, self._buffer = self._buffer, []
        for i in range(0, len(batch), PUTS_PER_TXN):
            part = batch[i : i + PUTS_PER_TXN]
            try:
                await self.store.txn([], [Put(*self._record(e)) for e in part])
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
            rec = records.parse(pb.AuditRecord(), kv.value, kv.key)
            if rec is None or (who and rec.who != who) or (target and rec.target != target):
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out
