"""Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) over a list of masters.

Every public RPC is a method named after it in snake_case (`submit_task`, `get_task`,
`list_tasks`, `create_template`, ...), taking either a request message or its fields as
keyword arguments. Errors arrive as the classes of `corral.errors`. UNAVAILABLE is retried
on the next master with backoff; `submit_task` gets an idempotency key when the caller
gives none, so a retried submission never runs twice.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message

from corral import channels
from corral.errors import CorralError, DeadlineExceeded, Unavailable, from_code
from corral.tls import TlsFiles, tls_files
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED, pb.TIMED_OUT, pb.STOPPED, pb.LOST, pb.SKIPPED}
DEFAULT_ADDR = "127.0.0.1:7070"
RETRIES = 4
ATTEMPT_TIMEOUT = 5.0  # one master may hang (paused, partitioned): try the next after this
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024), *channels.RECONNECT]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class RpcMethod:
    service: str                  # "TaskService"
    name: str                     # "SubmitTask"
    snake: str                    # "submit_task"
    input: type[Message]
    output: type[Message]
    server_streaming: bool
    descriptor: _descriptor.MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.descriptor.containing_service.full_name}/{self.name}"


def _message_class(desc: _descriptor.Descriptor) -> type[Message]:
    module = api_pb2 if desc.file.name.endswith("api.proto") else pb
    return getattr(module, desc.name)  # type: ignore[no-any-return]


def rpc_methods() -> list[RpcMethod]:
    """Every public RPC, from the proto descriptors (the CLI and SDK are built from this)."""
    out = []
    for service in api_pb2.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            if m.client_streaming:
                continue  # SubmitTaskStream: see submit_many
            out.append(
                RpcMethod(
                    service.name, m.name, snake(m.name), _message_class(m.input_type),
                    _message_class(m.output_type), m.server_streaming, m,
                )
            )
    return out


METHODS = {m.snake: m for m in rpc_methods()}


def _addresses(addr: str | Sequence[str] | None) -> list[str]:
    if addr is None:
        addr = os.environ.get("CORRAL_ADDR", DEFAULT_ADDR)
    if isinstance(addr, str):
        addr = addr.split(",")
    out = [_with_port(a.strip()) for a in addr if a.strip()]
    return out or [DEFAULT_ADDR]


def _with_port(addr: str) -> str:
    """`host` and `[::1]` mean corral's port 7070 (gRPC itself would dial 443)."""
    if "://" in addr or addr.startswith("unix:"):
        return addr
    host = addr.rsplit("]", 1)[-1] if addr.startswith("[") else addr
    return addr if ":" in host else f"{addr}:{DEFAULT_ADDR.rsplit(':', 1)[1]}"


def _translate(e: grpc.RpcError, addr: str) -> CorralError:
    code = e.code()  # type: ignore[attr-defined]
    details = e.details() or code.name  # type: ignore[attr-defined]
    low = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and ("failed to connect" in low or "connection refused" in low or "unreachable" in low):
        details = f"cannot reach a master at {addr} ({details})"
    return from_code(code, details)


def _retryable(err: CorralError, masters: int) -> bool:
    """UNAVAILABLE always; a deadline too when another master may answer (a hung master)."""
    return isinstance(err, Unavailable) or (isinstance(err, DeadlineExceeded) and masters > 1)


MUTATIONS = ("Create", "Update", "Delete", "Submit", "Stop", "Retry", "Cordon", "Uncordon", "Drain")


def _request_metadata(method: RpcMethod) -> tuple[tuple[str, str], ...]:
    """One id per call, kept across retries: the master does a creation once per id."""
    return (("corral-request-id", uuid.uuid4().hex),) if method.name.startswith(MUTATIONS) else ()


def _build(method: RpcMethod, request: Message | None, fields: dict[str, Any]) -> Message:
    if request is None:
        request = method.input(**fields)
    elif fields:
        raise TypeError("pass a request message or keyword fields, not both")
    if method.name == "SubmitTask" and not request.idempotency_key:  # type: ignore[attr-defined]
        request.idempotency_key = uuid.uuid4().hex  # type: ignore[attr-defined]
    return request


class _Masters:
    """What both clients share: the master list, the token, and the per-attempt deadline."""

    def __init__(
        self, addr: str | Sequence[str] | None = None, token: str | None = None, timeout: float = 30.0, tls: TlsFiles | None = None
    ) -> None:
        self.addresses = _addresses(addr)
        self.token = token if token is not None else os.environ.get("CORRAL_TOKEN", "")
        self.timeout = timeout
        # mutual TLS: the CA, a client certificate and its key (`corral pki issue client`);
        # default from CORRAL_TLS_CA / CORRAL_TLS_CERT / CORRAL_TLS_KEY
        self.tls = tls if tls is not None else tls_files()
        self._current = 0

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _attempt_timeout(self, timeout: float | None) -> float:
        total = timeout or self.timeout
        return min(total, ATTEMPT_TIMEOUT) if len(self.addresses) > 1 else total


class Client(_Masters):
    """Blocking client. `Client("a:7070,b:7070", token="...")`; defaults from CORRAL_ADDR/CORRAL_TOKEN."""

    def __init__(
        self, addr: str | Sequence[str] | None = None, token: str | None = None, timeout: float = 30.0, tls: TlsFiles | None = None
    ) -> None:
        super().__init__(addr, token, timeout, tls)
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, addr: str) -> grpc.Channel:
        if addr not in self._channels:
            self._channels[addr] = (
                grpc.secure_channel(addr, self.tls.channel_credentials(), options=CHANNEL_OPTIONS)
                if self.tls else grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
            )
        return self._channels[addr]

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: RpcMethod, request: Message | None = None, *, timeout: float | None = None, **fields: Any) -> Any:
        req = _build(method, request, fields)
        extra = _request_metadata(method)
        delay = 0.1
        last: CorralError | None = None
        for attempt in range(RETRIES * len(self.addresses)):
            addr = self.addresses[self._current % len(self.addresses)]
            ch = self._channel(addr)
            try:
                if method.server_streaming:
                    stream = ch.unary_stream(method.path, request_serializer=method.input.SerializeToString, response_deserializer=method.output.FromString)
                    return _SyncStream(stream(req, metadata=self._metadata(), timeout=timeout), addr)
                unary = ch.unary_unary(method.path, request_serializer=method.input.SerializeToString, response_deserializer=method.output.FromString)
                return unary(req, metadata=self._metadata() + extra, timeout=self._attempt_timeout(timeout))
            except grpc.RpcError as e:
                last = _translate(e, addr)
                if not _retryable(last, len(self.addresses)):
                    raise last from None
                self._current += 1
                if attempt + 1 < RETRIES * len(self.addresses):
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        assert last is not None
        raise last

    def submit_many(self, requests: Iterable[api_pb2.SubmitTaskRequest], *, timeout: float | None = None) -> api_pb2.SubmitTasksResponse:
        """Submit any number of tasks over one client stream (SubmitTaskStream); one result
        per task, in order. Each request without an idempotency key gets one, so the whole
        stream is retried on the next master if this one is unreachable, without doubles."""
        reqs = _with_keys(requests)
        last: CorralError | None = None
        for _ in range(RETRIES * len(self.addresses)):
            addr = self.addresses[self._current % len(self.addresses)]
            call = _stream_submit(self._channel(addr))
            try:
                return call(iter(reqs), metadata=self._metadata(), timeout=timeout)  # type: ignore[no-any-return]
            except grpc.RpcError as e:
                last = _translate(e, addr)
                if not _retryable(last, len(self.addresses)):
                    raise last from None
                self._current += 1
                time.sleep(0.2)
        assert last is not None
        raise last

    def wait_task(self, task_id: str, timeout: float | None = None) -> pb.TaskExecution:
        """Block until the task ends; returns its final record (DeadlineExceeded on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                for ev in self.call(METHODS["watch_tasks"], task_id=task_id, timeout=remaining):
                    if ev.task.state in TERMINAL:
                        return ev.task  # type: ignore[no-any-return]
            except DeadlineExceeded:
                raise DeadlineExceeded(f"task {task_id} did not finish within {timeout}s") from None
            except Unavailable:
                self._current += 1  # that master is gone: follow from the next one
                time.sleep(0.2)
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(f"task {task_id} did not finish within {timeout}s")


class _SyncStream:
    """A server stream whose errors arrive as corral errors."""

    def __init__(self, call: Any, addr: str) -> None:
        self._call = call
        self._addr = addr

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as e:
            raise _translate(e, self._addr) from None

    def cancel(self) -> None:
        self._call.cancel()


class AsyncClient(_Masters):
    """asyncio client with the same methods as `Client`, as coroutines (streams: async iterators)."""

    def __init__(
        self, addr: str | Sequence[str] | None = None, token: str | None = None, timeout: float = 30.0, tls: TlsFiles | None = None
    ) -> None:
        super().__init__(addr, token, timeout, tls)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, addr: str) -> grpc.aio.Channel:
        if addr not in self._channels:
            self._channels[addr] = (
                grpc.aio.secure_channel(addr, self.tls.channel_credentials(), options=CHANNEL_OPTIONS)
                if self.tls else grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
            )
        return self._channels[addr]

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: RpcMethod, request: Message | None = None, *, timeout: float | None = None, **fields: Any) -> Any:
        req = _build(method, request, fields)
        if method.server_streaming:
            return self._stream(method, req, timeout)
        extra = _request_metadata(method)
        delay = 0.1
        last: CorralError | None = None
        for attempt in range(RETRIES * len(self.addresses)):
            addr = self.addresses[self._current % len(self.addresses)]
            unary = self._channel(addr).unary_unary(method.path, request_serializer=method.input.SerializeToString, response_deserializer=method.output.FromString)
            try:
                return await unary(req, metadata=self._metadata() + extra, timeout=self._attempt_timeout(timeout))
            except grpc.RpcError as e:
                last = _translate(e, addr)
                if not _retryable(last, len(self.addresses)):
                    raise last from None
                self._current += 1
                if attempt + 1 < RETRIES * len(self.addresses):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        assert last is not None
        raise last

    async def _stream(self, method: RpcMethod, req: Message, timeout: float | None) -> AsyncIterator[Any]:
        addr = self.addresses[self._current % len(self.addresses)]
        stream = self._channel(addr).unary_stream(method.path, request_serializer=method.input.SerializeToString, response_deserializer=method.output.FromString)
        try:
            async for item in stream(req, metadata=self._metadata(), timeout=timeout):
                yield item
        except grpc.RpcError as e:
            raise _translate(e, addr) from None

    async def submit_many(self, requests: Iterable[api_pb2.SubmitTaskRequest], *, timeout: float | None = None) -> api_pb2.SubmitTasksResponse:
        """As Client.submit_many."""
        reqs = _with_keys(requests)
        last: CorralError | None = None
        for _ in range(RETRIES * len(self.addresses)):
            addr = self.addresses[self._current % len(self.addresses)]
            call = _stream_submit(self._channel(addr))
            try:
                return await call(iter(reqs), metadata=self._metadata(), timeout=timeout)  # type: ignore[no-any-return]
            except grpc.RpcError as e:
                last = _translate(e, addr)
                if not _retryable(last, len(self.addresses)):
                    raise last from None
                self._current += 1
                await asyncio.sleep(0.2)
        assert last is not None
        raise last

    async def wait_task(self, task_id: str, timeout: float | None = None) -> pb.TaskExecution:
        async def follow() -> pb.TaskExecution:
            while True:
                try:
                    async for ev in await self.call(METHODS["watch_tasks"], task_id=task_id):
                        if ev.task.state in TERMINAL:
                            return ev.task  # type: ignore[no-any-return]
                except Unavailable:
                    self._current += 1
                    await asyncio.sleep(0.2)

        try:
            return await asyncio.wait_for(follow(), timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"task {task_id} did not finish within {timeout}s") from None


STREAM_SUBMIT = "/corral.v1.TaskService/SubmitTaskStream"


def _stream_submit(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """The SubmitTaskStream call on a channel (sync or asyncio)."""
    return channel.stream_unary(
        STREAM_SUBMIT, request_serializer=api_pb2.SubmitTaskRequest.SerializeToString,
        response_deserializer=api_pb2.SubmitTasksResponse.FromString,
    )


def _with_keys(requests: Iterable[api_pb2.SubmitTaskRequest]) -> list[api_pb2.SubmitTaskRequest]:
    out = []
    for r in requests:
        if not r.idempotency_key:
            copy = api_pb2.SubmitTaskRequest()
            copy.CopyFrom(r)
            copy.idempotency_key = uuid.uuid4().hex
            r = copy
        out.append(r)
    return out


def _bind(method: RpcMethod) -> None:
    def sync_method(self: Client, request: Message | None = None, **fields: Any) -> Any:
        return self.call(method, request, **fields)

    async def async_method(self: AsyncClient, request: Message | None = None, **fields: Any) -> Any:
        return await self.call(method, request, **fields)

    doc = f"{method.service}.{method.name}: {method.input.__name__} → {'stream of ' if method.server_streaming else ''}{method.output.__name__}"
    sync_method.__name__ = async_method.__name__ = method.snake
    sync_method.__doc__ = async_method.__doc__ = doc
    setattr(Client, method.snake, sync_method)
    setattr(AsyncClient, method.snake, async_method)


for _m in METHODS.values():
    _bind(_m)
