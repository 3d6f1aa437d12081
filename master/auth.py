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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from corral.errors import CorralError, Unauthenticated
from corral.v1 import types_pb2 as pb

from . import keys
from .cache import Cache
from .store import Cmp, EtcdStore, Put

log = logging.getLogger("corral.auth")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def authenticate(self, context: grpc.aio.ServicerContext) -> pb.User:
        token = ""
        for k, v in context.invocation_metadata() or ():
            if k == "authorization" and isinstance(v, str) and v.lower().startswith("bearer "):
                token = v[7:].strip()
        if not token:
            raise Unauthenticated("no token: pass --token or set CORRAL_TOKEN")
        if not self.cache.ready.is_set():
            await asyncio.wait_for(self.cache.ready.wait(), 10)
        user_id = self.cache.users_by_token.get(hash_token(token))
        if user_id is None:
            raise Unauthenticated("the token is not valid")
        return self.cache.users[user_id].msg


async def ensure_bootstrap_admin(store: EtcdStore, token: str) -> None:
    """Make `token` the admin user's token (created on first start)."""
    user = pb.User(user_id="admin", name="admin", roles=["admin"], token_hash=hash_token(token))
    kv = await store.get(keys.user("admin"))
    if kv is not None:
        old = pb.User()
        old.ParseFromString(kv.value)
        if old.token_hash == user.token_hash:
            return
    await store.txn(
        [Cmp(keys.user("admin"), kv.mod_revision if kv else 0)],
        [Put(keys.user("admin"), user.SerializeToString())],
    )


async def _abort(context: grpc.aio.ServicerContext, err: Exception) -> None:
    if isinstance(err, CorralError):
        await context.abort(err.code, str(err))
    log.exception("internal error", exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}")


def api_method(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a unary servicer method `fn(self, request, context, user)`."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            user = await self.auth.authenticate(context)
            return await fn(self, request, context, user)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # noqa: BLE001 - translated once, here
            await _abort(context, e)

    return wrapper


def api_stream(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap a server-streaming servicer method `fn(self, request, context, user)`."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            user = await self.auth.authenticate(context)
            async for item in fn(self, request, context, user):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # noqa: BLE001
            await _abort(context, e)

    return wrapper
