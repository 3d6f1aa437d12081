"""TemplateService: thin servicer over the store; names are unique through a name index."""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import functools
import time

import grpc
from google.protobuf import field_mask_pb2

from corral.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from corral.v1 import api_pb2, api_pb2_grpc
from corral.v1 import types_pb2 as pb

from . import authz, cron_plan, keys, lifecycle, permissions, records, validate
from .auth import Authenticator, api_method
from .cache import Cache
from .cron import Schedule
from .cron_loop import cron_key, write_skips
from .request_ids import RequestIds, request_id
from .store import Cmp, Delete, EtcdStore, Put
from .taskops import TaskWriter

EARLY_FIRE_WAIT = 3.0  # seconds an answer waits for nodes to confirm early fires will not start


def with_next_fires(t: pb.TaskTemplate, count: int = 5) -> pb.TaskTemplate:
    """The template with its next fire instants filled in (output only)."""
    del t.next_fires[:]
    if t.cron_schedule and not t.suspended:
        for f in Schedule(t.cron_schedule, t.time_zone).next_after(dt.datetime.now(dt.UTC), count):
            t.next_fires.add().FromDatetime(f)
    return t


# Fields an update mask may not name, and what to do instead.
NOT_UPDATABLE = {
    "template_id": "it is the template's identity",
    "name": "a template cannot be renamed; create a new one",
    "owner": "it is the template's owner",
    "create_time": "it is set by the server",
    "update_time": "it is set by the server",
    "next_fires": "it is output only",
    "suspended": "use PauseTemplate or ResumeTemplate (`corral template pause|resume`)",
    "suspend_reason": "it is set by the server; ResumeTemplate clears it",
}


def apply_mask(dest: pb.TaskTemplate, src: pb.TaskTemplate, paths: list[str]) -> None:
    """Copy the fields named by `paths` from `src` into `dest` (a repeated or map field is
    replaced, not appended to); INVALID_ARGUMENT naming a path that is not a field."""
    for path in paths:
        desc = pb.TaskTemplate.DESCRIPTOR
        parts = path.split(".")
        for i, part in enumerate(parts):
            f = desc.fields_by_name.get(part)
            if f is None:
                near = difflib.get_close_matches(part, [x.name for x in desc.fields], n=1, cutoff=0.6)
                hint = f" (did you mean {'.'.join([*parts[:i], near[0]])!r}?)" if near else ""
                raise InvalidArgument(f"update_mask: {path!r} is not a field of {desc.name}{hint}")
            if i < len(parts) - 1:
                if f.message_type is None or f.message_type.GetOptions().map_entry or f.is_repeated:
                    raise InvalidArgument(f"update_mask: {path!r}: {part} has no fields to select")
                desc = f.message_type
        if parts[0] in NOT_UPDATABLE:
            raise InvalidArgument(f"update_mask: {path!r} cannot be updated: {NOT_UPDATABLE[parts[0]]}")
    mask = field_mask_pb2.FieldMask(paths=paths)
    mask.MergeMessage(src, dest, replace_message_field=True, replace_repeated_field=True)


def resolve_template(cache: Cache, ref: str) -> tuple[pb.TaskTemplate, int]:
    """A template by id or name (NOT_FOUND otherwise), with its mod revision."""
    if not ref:
        raise InvalidArgument("template_id: must not be empty")
    rec = cache.templates.get(ref)
    if rec is None and ref in cache.template_names:
        rec = cache.templates.get(cache.template_names[ref])
    if rec is None:
        raise NotFound(f"template {ref[:80]!r} not found")
    return rec.msg, rec.rev


def template_id_of(cache: Cache, ref: str) -> str:
    """The id a filter means: `ref` itself when it is a template's id (or no template's
    name: the runs of a deleted template keep its id), else the id of the template it names."""
    if ref in cache.templates or ref not in cache.template_names:
        return ref
    return cache.template_names[ref]


def _resolve_for(cache: Cache, ref: str, user: pb.User, *, write: bool) -> tuple[pb.TaskTemplate, int]:
    """The template, if this user may see it (or, with `write`, change it)."""
    t, rev = resolve_template(cache, ref)
    check = authz.check_write if write else authz.check_read
    check(user, t.owner, f"template {t.name}")
    return t, rev


class TemplateServicer(api_pb2_grpc.TemplateServiceServicer):
    def __init__(self, store: EtcdStore, cache: Cache, auth: Authenticator, writer: TaskWriter) -> None:
        self.writer = writer
        self.store = store
        self.cache = cache
        self.auth = auth
        self.requests = RequestIds(store)

    @api_method
    async def CreateTemplate(self, request, context: grpc.aio.ServicerContext, user: pb.User):  # type: ignore[override]
        t = pb.TaskTemplate()
        t.CopyFrom(request.template)
        del t.next_fires[:]  # output only
        if not t.name:
            raise InvalidArgument("template.name: must not be empty")
        validate.check_name("template.name", t.name)
        if t.template_id:
            validate.check_id("template.template_id", t.template_id)
        else:
            t.template_id = records.new_template_id()
        validate.check_run_spec(t, "template")
        permissions.check_spec(user, t, "template")
        validate.apply_defaults(t)
        t.owner = user.user_id
        self.auth.quotas.check_store(user)
        self.auth.quotas.check_stored(user, 1, t.ByteSize())
        now = records.ts(time.time())
        t.create_time.CopyFrom(now)
        t.update_time.CopyFrom(now)
        rid = request_id(context)
        guard = await self.requests.guard(user.user_id, rid, t.template_id)
        result = await self.store.txn(
            [Cmp(keys.template(t.template_id), 0), Cmp(keys.template_name(t.name), 0), *guard[0]],
            [
                Put(keys.template(t.template_id), t.SerializeToString()),
                Put(keys.template_name(t.name), t.template_id.encode()),
                *guard[1],
            ],
        )
        if not result.succeeded:
            first = await self.requests.seen(user.user_id, rid)
            if first is not None:  # this same request already created it
                await self.cache.sync()
                return resolve_template(self.cache, first)[0]
            raise AlreadyExists(f"a template named {t.name!r} (or with id {t.template_id!r}) already exists")
        await self.cache.wait_revision(result.revision)
        return with_next_fires(t)

    @api_method
    async def GetTemplate(self, request, context, user):  # type: ignore[override]
        if request.consistent:
            await self.cache.sync()
        t = pb.TaskTemplate()
        t.CopyFrom(_resolve_for(self.cache, request.template_id, user, write=False)[0])
        return with_next_fires(t)

    @api_method
    async def UpdateTemplate(self, request, context, user):  # type: ignore[override]
        ref = request.template.template_id or request.template.name
        old, rev = _resolve_for(self.cache, ref, user, write=True)
        t = pb.TaskTemplate()
        if request.update_mask.paths:
            t.CopyFrom(old)
            paths = list(request.update_mask.paths)
            apply_mask(t, request.template, paths)
            # a limit that only followed its request (the default) follows the new request
            for req, lim in (("cpu_request", "cpu_limit"), ("mem_request", "mem_limit")):
                if req in paths and lim not in paths and getattr(old, lim) == getattr(old, req):
                    setattr(t, lim, 0)
        else:
            t.CopyFrom(request.template)
        del t.next_fires[:]  # output only
        t.template_id = old.template_id
        if t.name and t.name != old.name:
            raise InvalidArgument("template.name: a template cannot be renamed; create a new one")
        t.name = old.name
        validate.check_run_spec(t, "template")
        owner = self.cache.users.get(old.owner)
        if owner is not None:  # the owner's permissions, not the editor's: its runs are the owner's
            permissions.check_spec(owner.msg, t, "template")
        validate.apply_defaults(t)
        t.owner = old.owner
        t.create_time.CopyFrom(old.create_time)
        now = time.time()
        t.update_time.CopyFrom(records.ts(now))
        rescheduled = (t.cron_schedule, t.time_zone) != (old.cron_schedule, old.time_zone)
        for _ in range(5):  # the cron loop may write the cron state meanwhile: read it again
            cmps = [Cmp(keys.template(t.template_id), rev)]
            puts = [Put(keys.template(t.template_id), t.SerializeToString())]
            if rescheduled and t.cron_schedule:
                # the new schedule starts now: nothing is owed for its instants before the update
                kv = await self.store.get(cron_key(t.template_id))
                st = pb.CronState()
                if kv is not None and records.parse(st, kv.value, kv.key) is None:
                    st = pb.CronState()
                st.last_scheduled = int(now)
                cmps.append(Cmp(cron_key(t.template_id), kv.mod_revision if kv else 0))
                puts.append(Put(cron_key(t.template_id), st.SerializeToString()))
            result = await self.store.txn(cmps, puts)
            current = self.cache.templates.get(t.template_id)
            if result.succeeded or current is None or current.rev != rev:
                break
        if not result.succeeded:
            raise InvalidArgument("template changed concurrently; get it again and retry")
        await self.cache.wait_revision(result.revision)
        if rescheduled:
            await self._skip_early_fires(t.template_id, "skipped: the template's schedule changed before this instant", before=now)
        return with_next_fires(t)

    @api_method
    async def DeleteTemplate(self, request, context, user):  # type: ignore[override]
        t, rev = _resolve_for(self.cache, request.template_id, user, write=True)
        result = await self.store.txn(
            [Cmp(keys.template(t.template_id), rev)],
            [Delete(keys.template(t.template_id)), Delete(keys.template_name(t.name))],
        )
        if not result.succeeded:
            raise NotFound(f"template {request.template_id!r} changed or was deleted meanwhile")
        await self.cache.wait_revision(result.revision)
        await self._skip_early_fires(t.template_id, "skipped: its template was deleted before this instant")
        return api_pb2.DeleteTemplateResponse(template_id=t.template_id)

    async def _set_suspended(self, ref: str, suspended: bool, *, skip_missed: bool = False) -> pb.TaskTemplate:
        """Pause or resume. Resuming records each instant that passed while paused as
        SKIPPED ("suspended") and restarts the schedule from now; with `skip_missed` False the
        cron loop owes them per the misfire policy instead. The records go first, in chunks
        (cron_loop.write_skips); the last transaction unpauses the template, and holds only
        if neither it nor its cron state changed meanwhile."""
        for _ in range(5):
            old, rev = resolve_template(self.cache, ref)
            t = pb.TaskTemplate()
            t.CopyFrom(old)
            t.suspended = suspended
            t.suspend_reason = ""
            t.update_time.CopyFrom(records.ts(time.time()))
            cmps = [Cmp(keys.template(t.template_id), rev)]
            puts = [Put(keys.template(t.template_id), t.SerializeToString())]
            if skip_missed:
                kv = await self.store.get(cron_key(t.template_id))
                st = pb.CronState()
                if kv is not None and records.parse(st, kv.value, kv.key) is None:
                    st = pb.CronState()  # unreadable: as if never fired (the loop re-creates nothing that exists)
                now = time.time()
                last = st.last_scheduled or int(records.seconds(t.create_time) or now)
                plan = cron_plan.suspended(t, Schedule(t.cron_schedule, t.time_zone), last, now)
                ok, cron_rev = await write_skips(self.store.txn, t, st, kv.mod_revision if kv else 0, plan.skip, plan.older, now, [])
                if not ok:
                    await self.cache.sync()
                    continue
                st.last_scheduled = max(st.last_scheduled, int(now))
                cmps.append(Cmp(cron_key(t.template_id), cron_rev))
                puts.append(Put(cron_key(t.template_id), st.SerializeToString()))
            result = await self.store.txn(cmps, puts)
            if result.succeeded:
                await self.cache.wait_revision(result.revision)
                return with_next_fires(t)
            await self.cache.sync()
        raise InvalidArgument("template changed concurrently; try again")

    @api_method
    async def PauseTemplate(self, request, context, user):  # type: ignore[override]
        t, _ = _resolve_for(self.cache, request.template_id, user, write=True)
        if not t.cron_schedule:
            raise FailedPrecondition(f"template {t.name} has no cron_schedule; there is nothing to pause")
        paused = await self._set_suspended(t.template_id, True)
        await self._skip_early_fires(paused.template_id, "suspended: the template was paused before this instant")
        return paused

    async def _skip_early_fires(self, template_id: str, reason: str, *, before: float = 0.0) -> None:
        """Fires created ahead of their instant (the look-ahead) that have not started end
        SKIPPED with `reason`, and the answer waits (up to EARLY_FIRE_WAIT) until each is
        final — its node confirmed it never starts — so a paused, deleted or rescheduled
        template runs nothing after the answer. A node that does not answer in time may
        still start its copy at the instant; that run is then stopped, and ends STOPPED."""
        now = time.time()
        early = [run.task_id for run in self.cache.tasks_of(template_id)
                 if run.state in (pb.PENDING, pb.ASSIGNED) and records.seconds(run.due_time) > now
                 and not (before and records.seconds(run.submit_time) >= before)]  # (fires of a new schedule stay)
        for task_id in early:
            await self.writer.update(task_id, functools.partial(lifecycle.skipped_before_start, reason=reason, now=time.time()))
        deadline = time.monotonic() + EARLY_FIRE_WAIT
        while early and time.monotonic() < deadline:
            early = [i for i in early if (rec := self.cache.tasks.get(i)) is not None and rec.msg.state not in records.TERMINAL]
            if early:
                await asyncio.sleep(0.01)

    @api_method
    async def ResumeTemplate(self, request, context, user):  # type: ignore[override]
        t, _ = _resolve_for(self.cache, request.template_id, user, write=True)
        if not t.cron_schedule:
            raise FailedPrecondition(f"template {t.name} has no cron_schedule; there is nothing to resume")
        return await self._set_suspended(t.template_id, False, skip_missed=not request.run_missed)

    @api_method
    async def NextTemplateFires(self, request, context, user):  # type: ignore[override]
        t, _ = _resolve_for(self.cache, request.template_id, user, write=False)
        if not t.cron_schedule:
            raise FailedPrecondition(f"template {t.name} has no cron_schedule")
        count = request.count or 5
        if not 1 <= count <= 100:
            raise InvalidArgument("count: between 1 and 100")
        sched = Schedule(t.cron_schedule, t.time_zone)
        fires = sched.next_after(dt.datetime.now(dt.UTC), count)
        resp = api_pb2.NextTemplateFiresResponse(time_zone=t.time_zone or "UTC")
        for f in fires:
            resp.utc.add().FromDatetime(f)
            resp.local.append(f.astimezone(sched.tz).isoformat())
        return resp

    @api_method
    async def TemplateHistory(self, request, context, user):  # type: ignore[override]
        t, _ = _resolve_for(self.cache, request.template_id, user, write=False)
        limit = request.limit or 20
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit: between 1 and 1000")
        runs = sorted(self.cache.tasks_of(t.template_id), key=lambda x: (records.seconds(x.due_time), x.task_id), reverse=True)
        resp = api_pb2.TemplateHistoryResponse(runs=runs[:limit])
        kv = await self.store.get(keys.CRON + t.template_id)
        if kv is not None and records.parse(resp.state, kv.value, kv.key) is None:
            resp.ClearField("state")
        launched = [r for r in runs if r.state != pb.SKIPPED]
        if launched:
            resp.last_fire.CopyFrom(launched[0].due_time)
        ok = [r for r in runs if r.state == pb.SUCCEEDED]
        if ok:
            resp.last_success.CopyFrom(ok[0].finish_time)
        if t.cron_schedule and not t.suspended:
            nxt = Schedule(t.cron_schedule, t.time_zone).next_after(dt.datetime.now(dt.UTC), 1)
            if nxt:
                resp.next_fire.FromDatetime(nxt[0])
        return resp

    @api_method
    async def ListTemplates(self, request, context, user):  # type: ignore[override]
        if request.consistent:
            await self.cache.sync()
        items = sorted((r for r in self.cache.templates.values() if authz.visible(user, r.msg.owner)), key=lambda r: r.msg.name)
        return api_pb2.ListTemplatesResponse(templates=[r.msg for r in items])
