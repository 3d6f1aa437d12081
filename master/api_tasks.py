"""TaskService: submit, stop, get, list, watch, logs, retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.duration_pb2 import Duration

from corral.errors import (
    CorralError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    from_code,
)
from corral.tls import TlsFiles
from corral.v1 import api_pb2, api_pb2_grpc
from corral.v1 import types_pb2 as pb

from . import authz, keys, lifecycle, permissions, records, validate
from .api_templates import resolve_template, template_id_of
from .auth import Authenticator, api_method, api_stream
from .cache import Cache
from .election import current_leader
from .gateway import Gateway
from .leadership import Leadership
from .quotas import Admission
from .request_ids import RequestIds, request_id
from .store import Cmp, EtcdStore, Put
from .taskops import TaskWriter

MAX_PAGE = 1000
SORT_SUBSET = 10_000  # a filtered list sorts its index below this size, else walks the order
MAX_BATCH = 1000      # tasks per SubmitTasks call
MAX_STREAM = 100_000  # tasks per SubmitTaskStream
MAX_STREAM_BYTES = 128 * 1024 * 1024  # and their bytes: one call cannot carry gigabytes
LOG_CHUNK = 64 * 1024


def _create_ops(task: pb.TaskExecution, user: pb.User, lease: int) -> tuple[list[Cmp], list[Put]]:
    """Create-if-absent of the task and of its idempotency key, which expires with `lease`
    (23-24 hours: a retried submission within a day finds its first task; the store does
    not keep every key ever used)."""
    compares = [Cmp(keys.task(task.task_id), 0)]
    ops = [Put(keys.task(task.task_id), task.SerializeToString())]
    if task.idempotency_key:
        idem = keys.idempotency(user.user_id, task.idempotency_key)
        compares.append(Cmp(idem, 0))
        ops.append(Put(idem, task.task_id.encode(), lease=lease))
    return compares, ops


def _page_key(token: str) -> tuple[int, str] | None:
    """A page token is the (submit time ns, task id) of the previous page's last task."""
    if not token:
        return None
    ns, sep, task_id = token.partition(":")
    if not sep or not ns.isdigit() or not task_id:
        raise InvalidArgument("page_token: not a token returned by ListTasks")
    return int(ns), task_id


class TaskServicer(api_pb2_grpc.TaskServiceServicer):
    def __init__(
        self, store: EtcdStore, cache: Cache, auth: Authenticator, writer: TaskWriter, gateway: Gateway, leadership: Leadership,
        *, tls: TlsFiles | None = None,
    ) -> None:
        self.tls = tls
        self.store = store
        self.cache = cache
        self.auth = auth
        self.writer = writer
        self.gateway = gateway
        self.leadership = leadership
        self.requests = RequestIds(store)

    def build_task(self, request: api_pb2.SubmitTaskRequest, user: pb.User) -> pb.TaskExecution:
        if request.template_id:
            template, _ = resolve_template(self.cache, request.template_id)
            authz.check_write(user, template.owner, f"template {template.name or template.template_id}")
            spec = validate.merge_spec(template, request.spec)
            spec.template_id = template.template_id
        else:
            spec = pb.TaskTemplate()
            spec.CopyFrom(request.spec)
        validate.check_run_spec(spec, "spec")
        permissions.check_spec(user, spec)
        validate.apply_defaults(spec)
        if len(request.idempotency_key) > 128:
            raise InvalidArgument("idempotency_key: at most 128 characters")
        if len(request.name) > 128:
            raise InvalidArgument("name: at most 128 characters")
        now = time.time()
        due = max(now, records.seconds(request.run_at)) if request.HasField("run_at") else now
        return pb.TaskExecution(
            task_id=records.new_task_id(),
            template_id=spec.template_id,
            user_id=user.user_id,
            state=pb.PENDING,
            attempt=1,
            submit_time=records.ts(now),
            due_time=records.ts(due),
            name=request.name or spec.name,
            spec=spec,
            idempotency_key=request.idempotency_key,
            reason="waiting for its time" if due > now else "waiting to be placed",
        )

    @api_method
    async def SubmitTask(self, request, context, user):  # type: ignore[override]
        task = self.build_task(request, user)
        adm = Admission(user.user_id)
        self.auth.quotas.admit(user, task.spec, adm)
        try:
            task, revision = await self._create(task, user)
            if revision:
                await self.cache.wait_revision(revision)
        finally:
            self.auth.quotas.release(adm)
        return task

    @api_method
    async def SubmitTasks(self, request, context, user):  # type: ignore[override]
        if len(request.tasks) > MAX_BATCH:
            raise InvalidArgument(f"tasks: at most {MAX_BATCH} per call ({len(request.tasks)} given); use SubmitTaskStream for more")
        return await self._submit_many(list(request.tasks), user)

    @api_method
    async def SubmitTaskStream(self, request_iterator, context, user):  # type: ignore[override]
        """Take tasks as they stream in and commit them in batches meanwhile."""
        results: list[asyncio.Future[api_pb2.SubmitTasksResponse]] = []
        chunk: list[api_pb2.SubmitTaskRequest] = []
        count = size = 0
        async for req in request_iterator:
            count += 1
            size += req.ByteSize()
            if count > MAX_STREAM:
                raise InvalidArgument(f"tasks: at most {MAX_STREAM} per stream; open another stream for more")
            if size > MAX_STREAM_BYTES:
                raise InvalidArgument(f"tasks: at most {MAX_STREAM_BYTES >> 20} MiB of requests per stream; open another stream for more")
            chunk.append(req)
            if len(chunk) == MAX_BATCH:
                results.append(asyncio.ensure_future(self._submit_many(chunk, user)))
                chunk = []
        if chunk:
            results.append(asyncio.ensure_future(self._submit_many(chunk, user)))
        out = api_pb2.SubmitTasksResponse()
        for part in await asyncio.gather(*results):
            out.results.extend(part.results)
            out.accepted += part.accepted
        return out

    async def _submit_many(self, requests: list[api_pb2.SubmitTaskRequest], user: pb.User) -> api_pb2.SubmitTasksResponse:
        """Validate each task on its own, then create the valid ones side by side: the
        group committer puts them into a few large transactions."""
        resp = api_pb2.SubmitTasksResponse()
        pending: list[tuple[api_pb2.SubmitResult, pb.TaskExecution]] = []
        adm = Admission(user.user_id)
        try:
            for req in requests:
                r = resp.results.add()
                try:
                    task = self.build_task(req, user)
                    self.auth.quotas.admit(user, task.spec, adm)
                    pending.append((r, task))
                except CorralError as e:
                    r.code, r.error = e.code.value[0], str(e)
            return await self._commit_many(resp, pending, user)
        finally:
            self.auth.quotas.release(adm)

    async def _commit_many(
        self, resp: api_pb2.SubmitTasksResponse, pending: list[tuple[api_pb2.SubmitResult, pb.TaskExecution]], user: pb.User,
    ) -> api_pb2.SubmitTasksResponse:
        lease = await self.requests.lease() if any(t.idempotency_key for _, t in pending) else 0
        writes = [_create_ops(task, user, lease) for _, task in pending]
        commit = self.writer.commit
        if commit is not None:
            done = await commit.txn_many(writes)
        else:
            done = list(await asyncio.gather(*(self.store.txn(c, o) for c, o in writes), return_exceptions=True))
        revision = 0
        for (r, task), got in zip(pending, done, strict=True):
            if isinstance(got, BaseException):
                raise got
            if got.succeeded:
                r.task_id = task.task_id
                resp.accepted += 1
                revision = max(revision, got.revision)
                continue
            try:  # a repeated idempotency key: the first task's id
                existing, _ = await self._existing(task, user)
                r.task_id = existing.task_id
                resp.accepted += 1
            except CorralError as e:
                r.code, r.error = e.code.value[0], str(e)
        if revision:
            await self.cache.wait_revision(revision)
        return resp

    async def _create(self, task: pb.TaskExecution, user: pb.User) -> tuple[pb.TaskExecution, int]:
        """Create one task (create-if-absent, with its idempotency key in the same
        transaction); the task and the revision to wait for (0: it existed already)."""
        compares, ops = _create_ops(task, user, await self.requests.lease() if task.idempotency_key else 0)
        commit = self.writer.commit
        result = await (commit.txn(compares, ops) if commit is not None else self.store.txn(compares, ops))
        if not result.succeeded:
            return await self._existing(task, user)
        return task, result.revision

    async def _existing(self, task: pb.TaskExecution, user: pb.User) -> tuple[pb.TaskExecution, int]:
        """The task an earlier submission with the same idempotency key created."""
        kv = await self.store.get(keys.idempotency(user.user_id, task.idempotency_key)) if task.idempotency_key else None
        if kv is None:
            raise FailedPrecondition("task id collision; submit again")
        existing, _ = await self.writer.load(kv.value.decode())
        return existing, 0

    @api_method
    async def GetTask(self, request, context, user):  # type: ignore[override]
        if request.consistent:
            await self.cache.sync()
        validate.check_id("task_id", request.task_id)
        task, _ = await self.writer.load(request.task_id)
        authz.check_read(user, task.user_id, f"task {task.task_id}")
        return task

    @api_method
    async def ListTasks(self, request, context, user):  # type: ignore[override]
        if request.consistent:
            await self.cache.sync()
        size = min(request.page_size or 100, MAX_PAGE)
        after = _page_key(request.page_token)
        tasks = self.cache.tasks
        if request.template_id:  # a name works as in SubmitTask; a deleted template's id still filters
            request.template_id = template_id_of(self.cache, request.template_id)

        everyone = authz.can_read_all(user)

        def wanted(t: pb.TaskExecution) -> bool:
            return (
                (everyone or t.user_id == user.user_id)
                and (not request.state or t.state == request.state)
                and (not request.node_id or t.node_id == request.node_id)
                and (not request.template_id or t.template_id == request.template_id)
            )

        ids: set[str] | None = None
        if request.template_id or request.state:
            ids = self.cache.by_template.get(request.template_id, set()) if request.template_id else self.cache.tasks_in(request.state)
        if not everyone:  # a user's own tasks: their index, when it is the smaller set
            own = self.cache.by_user.get(user.user_id, set())
            if ids is None or len(own) < len(ids):
                ids = own
        if ids is not None and len(ids) <= SORT_SUBSET:
            # a small filtered index: sort just that subset
            order = sorted(((tasks[i].msg.submit_time.ToNanoseconds(), i) for i in ids if i in tasks), reverse=True)
            if after is not None:
                order = [k for k in order if k < after]
            keys_iter = iter(order)
        else:
            # newest first straight from the ordered index: no sort, however many tasks
            keys_iter = self.cache.task_order.irange(maximum=after, inclusive=(True, False), reverse=True) if after else reversed(self.cache.task_order)
        page: list[pb.TaskExecution] = []
        last: tuple[int, str] | None = None
        more = False
        for key in keys_iter:
            rec = tasks.get(key[1])
            if rec is None or not wanted(rec.msg):
                continue
            if len(page) == size:
                more = True
                break
            page.append(rec.msg)
            last = key
        nxt = f"{last[0]}:{last[1]}" if more and last is not None else ""
        return api_pb2.ListTasksResponse(tasks=page, next_page_token=nxt)

    @api_method
    async def StopTask(self, request, context, user):  # type: ignore[override]
        validate.check_id("task_id", request.task_id)
        grace = request.grace_period if request.HasField("grace_period") else Duration(seconds=10)

        def mutate(t: pb.TaskExecution) -> pb.TaskExecution | None:
            authz.check_write(user, t.user_id, f"task {t.task_id}")
            if t.state in records.TERMINAL:
                raise FailedPrecondition(
                    f"task {t.task_id} already finished ({records.state_name(t.state)}); nothing to stop"
                )
            reason = "stopped by user before it started" if t.state == pb.PENDING else f"stopped by {user.user_id}"
            return lifecycle.stop_requested(t, reason, now=time.time(), grace=grace)

        task = await self.writer.update(request.task_id, mutate)
        assert task is not None  # the gateway sees the committed stop and tells the node
        return task

    @api_method
    async def RetryTask(self, request, context, user):  # type: ignore[override]
        validate.check_id("task_id", request.task_id)
        rid = request_id(context)
        current, _ = await self.writer.load(request.task_id)
        authz.check_write(user, current.user_id, f"task {current.task_id}")
        if await self.requests.seen(user.user_id, rid):
            return (await self.writer.load(request.task_id))[0]

        def mutate(t: pb.TaskExecution) -> pb.TaskExecution | None:
            if t.state not in records.TERMINAL:
                raise FailedPrecondition(
                    f"task {t.task_id} is {records.state_name(t.state)}; only a finished task can be retried"
                )
            return lifecycle.retried(t, user.user_id, now=time.time())

        guard = await self.requests.guard(user.user_id, rid, request.task_id)
        try:
            return await self.writer.update(request.task_id, mutate, guard=guard)
        except FailedPrecondition:
            if await self.requests.seen(user.user_id, rid):  # a concurrent copy of this call won
                return (await self.writer.load(request.task_id))[0]
            raise

    @api_stream
    async def WatchTasks(self, request, context, user) -> AsyncIterator[api_pb2.TaskEvent]:  # type: ignore[override]
        queue: asyncio.Queue[api_pb2.TaskEvent] = asyncio.Queue(maxsize=10_000)
        everyone = authz.can_read_all(user)
        if request.template_id:
            request.template_id = template_id_of(self.cache, request.template_id)
        if request.task_id:
            rec = self.cache.tasks.get(request.task_id)
            if rec is None:
                raise NotFound(f"task {request.task_id} not found")
            authz.check_read(user, rec.msg.user_id, f"task {request.task_id}")

        def on_change(prefix: str, ident: str, msg: object) -> None:
            if prefix != keys.TASKS:
                return
            if request.task_id and ident != request.task_id:
                return
            if msg is None:
                if not everyone and not request.task_id:
                    return  # whose it was is gone with it
                ev = api_pb2.TaskEvent(task=pb.TaskExecution(task_id=ident), deleted=True)
            else:
                assert isinstance(msg, pb.TaskExecution)
                if request.template_id and msg.template_id != request.template_id:
                    return
                if not everyone and msg.user_id != user.user_id:
                    return
                ev = api_pb2.TaskEvent(task=msg)
            try:
                queue.put_nowait(ev)
            except asyncio.QueueFull:
                pass

        unlisten = self.cache.listen(on_change)
        try:
            if request.task_id:
                rec = self.cache.tasks.get(request.task_id)
                if rec is None:
                    raise NotFound(f"task {request.task_id} not found")
                yield api_pb2.TaskEvent(task=rec.msg)
            while True:
                yield await queue.get()
        finally:
            unlisten()

    async def _logs_from_leader(self, request: api_pb2.TaskLogsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[api_pb2.LogChunk]:
        current = await current_leader(self.store)
        if current is None:
            raise Unavailable("no leader elected right now; try again")
        member = records.parse(api_pb2.Member(), current[0], "the leader key")
        if member is None:
            raise Unavailable("the leader's record cannot be read right now; try again")
        auth = [(k, v) for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
        channel = grpc.aio.secure_channel(member.address, self.tls.channel_credentials()) if self.tls else grpc.aio.insecure_channel(member.address)
        async with channel as ch:
            stub = api_pb2_grpc.TaskServiceStub(ch)
            try:
                async for chunk in stub.TaskLogs(request, metadata=auth):
                    yield chunk
            except grpc.aio.AioRpcError as e:
                raise from_code(e.code(), e.details() or "") from None

    @api_stream
    async def TaskLogs(self, request, context, user) -> AsyncIterator[api_pb2.LogChunk]:  # type: ignore[override]
        validate.check_id("task_id", request.task_id)
        if request.offset < 0:
            raise InvalidArgument("offset: must not be negative")
        offset = request.offset
        first, _ = await self.writer.load(request.task_id)  # NOT_FOUND early
        authz.check_read(user, first.user_id, f"task {first.task_id}")
        if first.node_id and not self.gateway.connected(first.node_id) and not self.leadership.is_leader():
            # the node's stream is held by the leader: read through it
            async for chunk in self._logs_from_leader(request, context):
                yield chunk
            return
        while True:
            task = self.cache.tasks[request.task_id].msg
            finished = task.state in records.TERMINAL
            if task.node_id:
                got = await self.gateway.read_logs(task.node_id, task.task_id, offset, LOG_CHUNK)
                if got.data:
                    yield api_pb2.LogChunk(data=got.data, offset=offset, mark_offsets=got.mark_offsets, mark_times=got.mark_times)
                    offset += len(got.data)
                    continue
            if finished or not request.follow:
                return
            await asyncio.sleep(0.25)
