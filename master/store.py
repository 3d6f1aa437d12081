"""The storage interface of the master, and its etcd implementation (aetcd underneath).

Everything the master persists goes through `Store`: point reads, prefix reads, one
multi-operation transaction primitive (compare-and-swap on mod revision, create-if-absent),
and prefix watches that deliver each etcd revision's events as one batch. Keeping the
surface this small lets the HA issue add fencing (one more compare in every leader
transaction) in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from aetcd import rpc

from corral import channels
from corral.errors import Unavailable
from corral.tls import TlsFiles

log = logging.getLogger("corral.store")


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    key: str
    value: bytes | None  # None for a delete
    mod_revision: int
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Cmp:
    """A transaction guard: the key's mod revision equals `mod_revision` (0 = key absent).

    With `create=True` the compare is on the key's create revision instead: the fencing
    token of a leader (its election key is unchanged since it won)."""

    key: str
    mod_revision: int
    create: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int


class Compacted(Unavailable):
    """A watch asked for history etcd has compacted away: re-list, then watch again."""


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


def channel_target(endpoints: str) -> str:
    """gRPC target for one `host:port`, or for a comma-separated list of `ip:port` members
    (gRPC then fails over between them by itself)."""
    eps = [e.strip() for e in endpoints.split(",") if e.strip()]
    if len(eps) == 1:
        return eps[0]
    return "ipv4:" + ",".join(eps)


class EtcdStore:
    """The master's storage over etcd (aetcd's generated stubs on our own channel), every key
    under `prefix`. `endpoints` is `host:port` or a comma-separated list of members.

    Over TLS with several members, one channel balances over all of them and checks every
    member's certificate against one name, `server_name` (gRPC has no per-address names):
    `localhost`, which corral pki puts in every etcd-server certificate, unless the
    operator's own CA chose another name common to the members."""

    def __init__(
        self, endpoints: str, prefix: str = "/corral/", timeout: float = 5.0, *, tls: TlsFiles | None = None,
        server_name: str = "localhost",
    ) -> None:
        self.tls = tls
        self.server_name = server_name
        self.endpoint = endpoints
        self.endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        self.prefix = prefix
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    async def connect(self, wait: float = 30.0) -> None:
        """Connect and wait until etcd answers (raises Unavailable after `wait` seconds)."""
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
        ]
        if self.tls is not None and len(self.endpoints) > 1:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        self._channel = channels.aio_channel(channel_target(self.endpoint), self.tls, options)
        self._kvstub = rpc.KVStub(self._channel)
        self._leasestub = rpc.LeaseStub(self._channel)
        self._maintenance = rpc.MaintenanceStub(self._channel)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                await self._kv().Range(
                    rpc.RangeRequest(key=b"/", limit=1, serializable=True), timeout=2
                )
                return
            except grpc.aio.AioRpcError as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise Unavailable(f"etcd at {self.endpoint} does not answer: {e.details()}") from e
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _kv(self) -> rpc.KVStub:
        return self._kvstub

    def _k(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _strip(self, key: bytes) -> str:
        return key.decode()[len(self.prefix) :]

    async def _call(self, coro_fn, *args):  # type: ignore[no-untyped-def]
        try:
            return await coro_fn(*args, timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"etcd: {e.code().name}: {e.details()}") from e

    async def current_revision(self) -> int:
        """etcd's latest revision (a linearizable read of one key)."""
        resp = await self._call(self._kv().Range, rpc.RangeRequest(key=self._k("\x00"), limit=1))
        return int(resp.header.revision)

    async def get(self, key: str) -> KV | None:
        resp = await self._call(self._kv().Range, rpc.RangeRequest(key=self._k(key)))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return KV(key, kv.value, kv.mod_revision, kv.create_revision)

    async def range(self, prefix: str, limit: int = 0, *, keys_only: bool = False, newest_first: bool = False) -> tuple[list[KV], int]:
        """Keys under `prefix` in key order (or reversed), at most `limit` (0 = all), and the
        revision the read was served at."""
        start = self._k(prefix)
        end = _prefix_end(start)
        out: list[KV] = []
        revision = 0
        page = 2000 if limit == 0 else min(limit, 2000)
        order = rpc.RangeRequest.DESCEND if newest_first else rpc.RangeRequest.NONE
        while True:
            req = rpc.RangeRequest(key=start, range_end=end, limit=page, revision=revision, keys_only=keys_only,
                                   sort_target=rpc.RangeRequest.KEY, sort_order=order)
            resp = await self._call(self._kv().Range, req)
            revision = revision or resp.header.revision
            for kv in resp.kvs:
                out.append(KV(self._strip(kv.key), kv.value, kv.mod_revision, kv.create_revision))
            if not resp.more or not resp.kvs or (limit and len(out) >= limit):
                return (out[:limit] if limit else out), revision
            if newest_first:
                end = resp.kvs[-1].key
            else:
                start = resp.kvs[-1].key + b"\x00"

    async def count(self, prefix: str) -> int:
        start = self._k(prefix)
        resp = await self._call(self._kv().Range, rpc.RangeRequest(key=start, range_end=_prefix_end(start), count_only=True))
        return int(resp.count)

    async def txn(self, compares: Sequence[Cmp], ops: Sequence[Put | Delete]) -> TxnResult:
        """Apply `ops` atomically if every compare holds."""
        cmp = []
        for c in compares:
            if c.create:
                cmp.append(rpc.Compare(key=self._k(c.key), target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=c.mod_revision))
            else:
                cmp.append(rpc.Compare(key=self._k(c.key), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=c.mod_revision))
        success = []
        for op in ops:
            if isinstance(op, Put):
                success.append(rpc.RequestOp(request_put=rpc.PutRequest(key=self._k(op.key), value=op.value, lease=op.lease)))
            else:
                success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._k(op.key))))
        resp = await self._call(self._kv().Txn, rpc.TxnRequest(compare=cmp, success=success))
        return TxnResult(resp.succeeded, resp.header.revision)

    async def revisions(self, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(mod revision, create revision) of each present key, read in one round trip."""
        ranges = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self._k(k), keys_only=True)) for k in keys]
        resp = await self._call(self._kv().Txn, rpc.TxnRequest(success=ranges))
        found: dict[str, tuple[int, int]] = {}
        for k, r in zip(keys, resp.responses, strict=True):
            for kv in r.response_range.kvs:
                found[k] = (kv.mod_revision, kv.create_revision)
        return found

    async def first_created(self, prefix: str, before: int = 0) -> tuple[KV | None, int]:
        """The key under `prefix` with the lowest create revision; with `before`, the key
        created last before that revision (an election candidate's predecessor)."""
        start = self._k(prefix)
        req = rpc.RangeRequest(
            key=start, range_end=_prefix_end(start), limit=1, sort_target=rpc.RangeRequest.CREATE,
            sort_order=rpc.RangeRequest.DESCEND if before else rpc.RangeRequest.ASCEND,
            max_create_revision=before - 1 if before else 0,
        )
        resp = await self._call(self._kv().Range, req)
        if not resp.kvs:
            return None, resp.header.revision
        kv = resp.kvs[0]
        return KV(self._strip(kv.key), kv.value, kv.mod_revision, kv.create_revision), resp.header.revision

    async def grant_lease(self, ttl: int) -> int:
        resp = await self._call(self._leasestub.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl))
        return int(resp.ID)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; returns the remaining TTL (0 when etcd says the lease is
        gone). No answer is Unavailable, not an expiry: the lease may well be alive."""
        call = self._leasestub.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=self._timeout)
        try:
            reply = await call.read()
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"etcd keepalive: {e.code().name}: {e.details()}") from e
        finally:
            call.cancel()
        if reply is grpc.aio.EOF:
            raise Unavailable("etcd keepalive: the stream ended without an answer")
        return int(reply.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(self._leasestub.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id))

    async def endpoint_health(self, timeout: float = 1.0) -> list[dict[str, object]]:
        """Ask each configured member for its status, one short connection each."""

        def channel(ep: str) -> grpc.aio.Channel:
            if self.tls is not None:
                return grpc.aio.secure_channel(ep, self.tls.channel_credentials())
            return grpc.aio.insecure_channel(ep)

        async def one(ep: str) -> dict[str, object]:
            async with channel(ep) as ch:
                try:
                    r = await rpc.MaintenanceStub(ch).Status(rpc.StatusRequest(), timeout=timeout)
                except grpc.aio.AioRpcError as e:
                    return {"endpoint": ep, "healthy": False, "error": f"{e.code().name}: {e.details()}"}
                return {"endpoint": ep, "healthy": True, "version": r.version, "db_size": r.dbSize, "is_leader": r.leader == r.header.member_id}

        return list(await asyncio.gather(*(one(ep) for ep in self.endpoints)))

    async def put(self, key: str, value: bytes) -> int:
        return (await self.txn([], [Put(key, value)])).revision

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[tuple[int, list[Event]]]:
        """Yield (revision, events) for every change under `prefix` from `start_revision` on:
        `revision` is how far the events so far are complete (see below).

        Raises Unavailable when the stream breaks; the caller re-lists and watches again.
        """
        key = self._k(prefix)
        create = rpc.WatchCreateRequest(
            key=key, range_end=_prefix_end(key), start_revision=start_revision, progress_notify=True
        )
        stub = rpc.WatchStub(self._channel)
        queue: asyncio.Queue[rpc.WatchRequest | None] = asyncio.Queue()
        await queue.put(rpc.WatchRequest(create_request=create))

        async def requests() -> AsyncIterator[rpc.WatchRequest]:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item

        call = stub.Watch(requests())
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise Compacted(f"watch fell behind compaction at {resp.compact_revision}")
                if resp.canceled:
                    raise Unavailable(f"watch canceled: {resp.cancel_reason}")
                if resp.created and not resp.events:
                    continue  # its header is etcd's current revision, not what was sent: no progress
                events = [
                    Event(
                        self._strip(ev.kv.key),
                        None if ev.type == rpc.Event.DELETE else ev.kv.value,
                        ev.kv.mod_revision,
                        ev.kv.create_revision,
                    )
                    for ev in resp.events
                ]
                # Progress is the last event actually delivered: a watch resuming far behind
                # gets its backlog over several responses, each headed with the *current*
                # revision, and resuming after that header would skip what had not come yet.
                # An empty response (a progress notification) does vouch for its header.
                yield (events[-1].mod_revision if events else resp.header.revision), events
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"etcd watch: {e.code().name}: {e.details()}") from e
        finally:
            await queue.put(None)
            call.cancel()
