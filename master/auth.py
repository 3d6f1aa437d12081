"""Bearer-token authentication, and the one wrapper every API method runs through.

`api_method` authenticates the caller, passes the User to the method, and translates
CorralError into a gRPC status with its sentence (unexpected exceptions become INTERNAL
with a log line, never a stack trace to the caller). Cancellation passes through.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from corral.errors import CorralError, DeadlineExceeded, PermissionDenied, Unauthenticated
from corral.tls import peer_identity
from corral.v1 import types_pb2 as pb

from . import authz, keys, masking, metrics, records
from .audit import AuditLog
from .cache import Cache
from .quotas import Quotas
from .store import Cmp, EtcdStore, Put

log = logging.getLogger("corral.auth")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret(token_id: str) -> str:
    """A bearer token: its id (so `token revoke` can name it) and 32 random bytes."""
    return f"crl_{token_id}_{secrets.token_urlsafe(32)}"


def token_label(value: str) -> str:
    """A token given by its secret is named by its id part, never the secret."""
    return "_".join(value.split("_", 2)[:2]) + "_…" if value.startswith("crl_") else value


# Masters call each other (the log proxy) with their own certificate: they act for a user
# the first master has already authorized.
MASTER_PRINCIPAL = pb.User(user_id="master", name="master", roles=["admin"])


class Authenticator:
    """Who is calling: a bearer token (a Token record, or the bootstrap admin's), or under
    mutual TLS a client certificate (OU=client, CN=user id). A nodelet certificate speaks
    only the nodelet protocol."""

    def __init__(self, cache: Cache, audit: AuditLog | None = None, quotas: Quotas | None = None) -> None:
        self.cache = cache
        self.audit = audit
        self.quotas = quotas or Quotas(cache)

    async def authenticate_nodelet(self, context: grpc.aio.ServicerContext) -> str:
        """A nodelet stream: a nodelet certificate under mutual TLS (the gateway then checks
        it names the node), a node token, or an admin's token. Returns the node id the
        credential is bound to ("" when it may register any node: certificate or admin)."""
        identity = peer_identity(context)
        if identity is not None and identity[1] == "nodelet":
            return ""
        token = _bearer(context)
        if token:
            await self._ready()
            rec = self._token_record(token)
            if rec is not None and rec.node_id:
                return rec.node_id
        user = await self._authenticate(context, identity)
        if authz.role_of(user) != authz.ADMIN:
            raise PermissionDenied(f"registering a node needs a node token, a nodelet certificate or an admin's token, not {user.user_id}'s")
        return ""

    async def authenticate(self, context: grpc.aio.ServicerContext) -> pb.User:
        identity = peer_identity(context)
        if identity is not None and identity[1] == "nodelet":
            raise PermissionDenied(f"a nodelet certificate ({identity[0]}) may only speak the nodelet protocol")
        return await self._authenticate(context, identity)

    async def _ready(self) -> None:
        if not self.cache.ready.is_set():
            await asyncio.wait_for(self.cache.ready.wait(), 10)

    def _token_record(self, token: str) -> pb.Token | None:
        """The live Token record of a bearer secret (None: unknown, revoked or expired)."""
        token_id = self.cache.tokens_by_hash.get(hash_token(token))
        rec = self.cache.tokens.get(token_id) if token_id is not None else None
        if rec is None:
            return None
        if rec.msg.HasField("expire_time") and rec.msg.expire_time.ToNanoseconds() < time.time_ns():
            raise Unauthenticated(f"token {rec.msg.token_id} expired")
        return rec.msg

    async def _authenticate(self, context: grpc.aio.ServicerContext, identity: tuple[str, str] | None) -> pb.User:
        token = _bearer(context)
        await self._ready()
        if not token:
            if identity is not None and identity[1] == "master":
                return MASTER_PRINCIPAL
            if identity is not None and identity[1] == "client":
                rec = self.cache.users.get(identity[0])
                if rec is None:
                    raise Unauthenticated(f"client certificate {identity[0]!r} names no user; an admin can create that user (CreateUser)")
                return rec.msg
            raise Unauthenticated("no token: send the metadata 'authorization: Bearer <token>' (or, over TLS, a client certificate)")
        user_id = self.cache.users_by_token.get(hash_token(token))
        if user_id is None:
            tok = self._token_record(token)
            if tok is None:
                raise Unauthenticated("the token is not valid (unknown or revoked)")
            if tok.node_id:
                raise PermissionDenied(f"token {tok.token_id} is node {tok.node_id}'s credential: it may only speak the nodelet protocol")
            user_id = tok.user_id
        user = self.cache.users.get(user_id)
        if user is None:
            raise Unauthenticated(f"the token's user {user_id!r} no longer exists")
        return user.msg


def _bearer(context: grpc.aio.ServicerContext) -> str:
    token = ""
    for k, v in context.invocation_metadata() or ():
        if k == "authorization" and isinstance(v, str) and v.lower().startswith("bearer "):
            token = v[7:].strip()
    return token


async def ensure_bootstrap_admin(store: EtcdStore, token: str, uid_range: tuple[int, int]) -> None:
    """Make `token` the admin user's token (created on first start, with its own uid)."""
    from . import uids

    kv = await store.get(keys.user("admin"))
    user = pb.User(user_id="admin", name="admin", roles=["admin"], token_hash=hash_token(token))
    if kv is not None:
        old = records.parse(pb.User(), kv.value, kv.key) or pb.User(user_id="admin", name="admin", roles=["admin"])
        if old.token_hash == user.token_hash:
            return
        old.token_hash = user.token_hash  # keep its uid, quota and creation time
        user = old
    if user.uid:
        await store.txn([Cmp(keys.user("admin"), kv.mod_revision if kv else 0)], [Put(keys.user("admin"), user.SerializeToString())])
    else:
        await uids.create_user(store, keys.user("admin"), user, uid_range, [Cmp(keys.user("admin"), kv.mod_revision if kv else 0)], [])


async def _abort(context: grpc.aio.ServicerContext, err: Exception) -> None:
    if isinstance(err, CorralError):
        await context.abort(err.code, str(err))
    log.exception("internal error", exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}")


# A unary call may take this long on the master before it is cut off (the SDK sets its own
# deadlines too; this bounds a call from a client that set none).
UNARY_DEADLINE = 60.0
STREAM_UPLOAD_DEADLINE = 900.0  # a client-streaming call (up to 100,000 tasks)
_TARGET_FIELDS = ("task_id", "template_id", "node_id", "user_id", "token_id")


def _target(request: Any, result: Any) -> str:
    """What a mutation acted on, for the audit line."""
    for msg in (result, getattr(result, "user", None), getattr(result, "token", None), request, getattr(request, "template", None)):
        if msg is None or not hasattr(msg, "DESCRIPTOR"):
            continue
        for name in _TARGET_FIELDS:
            if name in msg.DESCRIPTOR.fields_by_name and getattr(msg, name):
                return token_label(str(getattr(msg, name)))
    return ""


def _detail(result: Any) -> str:
    accepted = getattr(result, "accepted", None)
    if isinstance(accepted, int) and hasattr(result, "results"):
        return f"{accepted} of {len(result.results)} tasks accepted"
    return ""


def _status_name(err: BaseException) -> str:
    if isinstance(err, CorralError):
        return err.code.name
    if isinstance(err, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


def _audit(self: Any, user: pb.User | None, method: str, request: Any, result: Any, err: BaseException | None,
           context: grpc.aio.ServicerContext) -> None:
    audit = self.auth.audit
    if audit is None or method not in authz.MUTATIONS:
        return
    if user is not None:
        who = user.user_id
    else:
        identity = peer_identity(context)
        who = f"cert:{identity[0]}" if identity else "anonymous"
    detail = str(err)[:200] if err is not None else _detail(result)
    audit.record(who, method, _target(request if not hasattr(request, "__aiter__") else None, result),
                 "OK" if err is None else _status_name(err), detail, context.peer() or "")


def api_method(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a unary servicer method `fn(self, request, context, user)`: authenticate,
    authorize by the role table, bound its time, mask secrets in the answer, audit it."""
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        user: pb.User | None = None
        started, code = time.perf_counter(), "OK"
        try:
            user = await self.auth.authenticate(context)
            authz.authorize(method, user)
            limit = STREAM_UPLOAD_DEADLINE if hasattr(request, "__aiter__") else UNARY_DEADLINE
            try:
                async with asyncio.timeout(limit):  # no extra task per call, unlike wait_for
                    result = await fn(self, request, context, user)
            except TimeoutError:
                raise DeadlineExceeded(f"{method} took longer than {limit:.0f}s on the master; try again") from None
            _audit(self, user, method, request, result, None, context)
            return masking.response(result)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = "ABORTED"
            raise
        except Exception as e:  # noqa: BLE001 - translated once, here
            code = e.code.name if isinstance(e, CorralError) else "INTERNAL"
            _audit(self, user, method, request, None, e, context)
            await _abort(context, e)
        finally:
            metrics.RPC_SECONDS.labels(method, code).observe(time.perf_counter() - started)

    return wrapper


def api_stream(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap a server-streaming servicer method `fn(self, request, context, user)` (reads only)."""
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            user = await self.auth.authenticate(context)
            authz.authorize(method, user)
            async for item in fn(self, request, context, user):
                yield masking.response(item)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # noqa: BLE001
            await _abort(context, e)

    return wrapper
