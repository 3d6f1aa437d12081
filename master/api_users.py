"""UserService, TokenService and AuditService: who may use the cluster, with what.

Tokens are stored as SHA-256 hashes only; the secret is in the create answer and nowhere
else. A revoke or user delete answers only after this master's cache has applied it, so
the very next call on this master is refused; other masters apply the same etcd event
within their watch delay (milliseconds).
"""

from __future__ import annotations

import secrets
import time

from corral.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from corral.v1 import api_pb2, api_pb2_grpc
from corral.v1 import types_pb2 as pb

from . import authz, keys, permissions, records, uids, validate
from .audit import AuditLog
from .auth import Authenticator, api_method, hash_token, new_secret, token_label
from .cache import Cache
from .store import Cmp, Delete, EtcdStore, Put

MAX_TOKENS_PER_USER = 100
MAX_TTL = 10 * 366 * 86400


def _new_token(user_id: str, description: str, ttl: float) -> tuple[pb.Token, str]:
    token_id = secrets.token_hex(6)
    secret = new_secret(token_id)
    now = time.time()
    tok = pb.Token(token_id=token_id, user_id=user_id, token_hash=hash_token(secret), description=description[:200],
                   create_time=records.ts(now))
    if ttl > 0:
        tok.expire_time.CopyFrom(records.ts(now + ttl))
    return tok, secret


def _public(tok: pb.Token) -> pb.Token:
    """A token record as answers show it: without its hash."""
    out = pb.Token()
    out.CopyFrom(tok)
    out.token_hash = ""
    return out


def _check_quota(request: object) -> None:
    """Quota fields of a create or update request: none negative (0 means no limit, or for
    the stored-record limits the master's default)."""
    for name in ("max_tasks", "max_cpu", "max_memory", "max_stored_records", "max_stored_bytes"):
        if getattr(request, name) < 0:
            raise InvalidArgument(f"{name}: must not be negative (0 means no limit)")
    if not 0 <= request.max_submit_rate <= 1e6:  # type: ignore[attr-defined]
        raise InvalidArgument("max_submit_rate: between 0 (no limit) and 1000000 per second")


def _public_user(u: pb.User) -> pb.User:
    out = pb.User()
    out.CopyFrom(u)
    out.token_hash = ""
    return out


class UserServicer(api_pb2_grpc.UserServiceServicer):
    def __init__(self, store: EtcdStore, cache: Cache, auth: Authenticator, *, uid_range: tuple[int, int] = uids.DEFAULT_RANGE) -> None:
        self.store = store
        self.cache = cache
        self.auth = auth
        self.uid_range = uid_range

    @api_method
    async def CreateUser(self, request, context, user):  # type: ignore[override]
        validate.check_id("user_id", request.user_id)
        role = request.role or authz.USER
        if role not in authz.ROLES:
            raise InvalidArgument(f"role: {role[:40]!r} is not one of {', '.join(authz.ROLES)}")
        _check_quota(request)
        if len(request.name) > 128:
            raise InvalidArgument("name: at most 128 characters")
        permissions.check_names(list(request.permissions), "permissions")
        u = pb.User(
            user_id=request.user_id, name=request.name or request.user_id, roles=[role], create_time=records.ts(time.time()),
            quota=pb.Quota(max_tasks=request.max_tasks, max_cpu=request.max_cpu, max_memory=request.max_memory,
                           max_submit_rate=request.max_submit_rate, max_stored_records=request.max_stored_records,
                           max_stored_bytes=request.max_stored_bytes),
            permissions=sorted(set(request.permissions)),
        )
        self.auth.quotas.check_store(user)
        tok, secret = _new_token(u.user_id, "created with the user", 0)
        ok, revision = await uids.create_user(
            self.store, keys.user(u.user_id), u, self.uid_range,
            [Cmp(keys.user(u.user_id), 0)], [Put(keys.token(tok.token_id), tok.SerializeToString())],
        )
        if not ok:
            raise AlreadyExists(f"user {u.user_id} already exists")
        await self.cache.wait_revision(revision)
        return api_pb2.CreateUserResponse(user=u, token=_public(tok), secret=secret)

    @api_method
    async def UpdateUser(self, request, context, user):  # type: ignore[override]
        validate.check_id("user_id", request.user_id)
        permissions.check_names(list(request.grant), "grant")
        permissions.check_names(list(request.revoke), "revoke")
        _check_quota(request)
        for _ in range(5):
            rec = self.cache.users.get(request.user_id)
            if rec is None:
                raise NotFound(f"user {request.user_id} not found")
            u = pb.User()
            u.CopyFrom(rec.msg)
            held = (set(u.permissions) | set(request.grant)) - set(request.revoke)
            del u.permissions[:]
            u.permissions.extend(sorted(held))
            for name in ("max_tasks", "max_cpu", "max_memory", "max_submit_rate", "max_stored_records", "max_stored_bytes"):
                if request.HasField(name):
                    setattr(u.quota, name, getattr(request, name))
            result = await self.store.txn([Cmp(keys.user(u.user_id), rec.rev)], [Put(keys.user(u.user_id), u.SerializeToString())])
            if result.succeeded:
                await self.cache.wait_revision(result.revision)  # applies from the next call on
                return _public_user(u)
            await self.cache.sync()
        raise NotFound(f"user {request.user_id} kept changing meanwhile; try again")

    @api_method
    async def ListUsers(self, request, context, user):  # type: ignore[override]
        return api_pb2.ListUsersResponse(users=[_public_user(r.msg) for _, r in sorted(self.cache.users.items())])

    @api_method
    async def DeleteUser(self, request, context, user):  # type: ignore[override]
        validate.check_id("user_id", request.user_id)
        if request.user_id == user.user_id:
            raise InvalidArgument("user_id: you cannot delete yourself; ask another admin")
        rec = self.cache.users.get(request.user_id)
        if rec is None:
            raise NotFound(f"user {request.user_id} not found")
        tokens = [t for t in self.cache.tokens.values() if t.msg.user_id == request.user_id]
        ops: list[Put | Delete] = [Delete(keys.user(request.user_id))]
        ops += [Delete(keys.token(t.msg.token_id)) for t in tokens]
        result = await self.store.txn([Cmp(keys.user(request.user_id), rec.rev)], ops)
        if not result.succeeded:
            raise NotFound(f"user {request.user_id} changed or was deleted meanwhile; try again")
        await self.cache.wait_revision(result.revision)
        return api_pb2.DeleteUserResponse(tokens_revoked=len(tokens))


class TokenServicer(api_pb2_grpc.TokenServiceServicer):
    def __init__(self, store: EtcdStore, cache: Cache, auth: Authenticator) -> None:
        self.store = store
        self.cache = cache
        self.auth = auth

    def _owner(self, caller: pb.User, user_id: str) -> str:
        """Whose tokens a call is about: the caller's own, or (admin only) anyone's."""
        target = user_id or caller.user_id
        if target != caller.user_id and authz.role_of(caller) != authz.ADMIN:
            raise PermissionDenied(f"only an admin may manage {target}'s tokens")
        return target

    @api_method
    async def CreateToken(self, request, context, user):  # type: ignore[override]
        if request.node_id:
            return await self._create_node_token(request, user)
        target = self._owner(user, request.user_id)
        if target not in self.cache.users:
            raise NotFound(f"user {target} not found")
        if sum(1 for t in self.cache.tokens.values() if t.msg.user_id == target) >= MAX_TOKENS_PER_USER:
            raise InvalidArgument(f"user_id: {target} already has {MAX_TOKENS_PER_USER} tokens; revoke some first")
        if len(request.description) > 200:
            raise InvalidArgument("description: at most 200 characters")
        ttl = request.ttl.seconds + request.ttl.nanos / 1e9
        if not 0 <= ttl <= MAX_TTL:
            raise InvalidArgument(f"ttl: between 0 (never expires) and {MAX_TTL // 86400} days")
        tok, secret = _new_token(target, request.description, ttl)
        result = await self.store.txn([Cmp(keys.token(tok.token_id), 0)], [Put(keys.token(tok.token_id), tok.SerializeToString())])
        if not result.succeeded:
            raise InvalidArgument("token id collision; try again")
        await self.cache.wait_revision(result.revision)
        return api_pb2.CreateTokenResponse(token=_public(tok), secret=secret)

    async def _create_node_token(self, request: api_pb2.CreateTokenRequest, user: pb.User) -> api_pb2.CreateTokenResponse:
        """A node credential: registers only `node_id` and speaks only the nodelet protocol."""
        if authz.role_of(user) != authz.ADMIN:
            raise PermissionDenied("only an admin may create a node token")
        validate.check_id("node_id", request.node_id)
        if request.user_id:
            raise InvalidArgument("user_id: a node token belongs to its node; leave user_id out")
        ttl = request.ttl.seconds + request.ttl.nanos / 1e9
        if not 0 <= ttl <= MAX_TTL:
            raise InvalidArgument(f"ttl: between 0 (never expires) and {MAX_TTL // 86400} days")
        tok, secret = _new_token(f"node:{request.node_id}", request.description or f"node {request.node_id}", ttl)
        tok.node_id = request.node_id
        result = await self.store.txn([Cmp(keys.token(tok.token_id), 0)], [Put(keys.token(tok.token_id), tok.SerializeToString())])
        if not result.succeeded:
            raise InvalidArgument("token id collision; try again")
        await self.cache.wait_revision(result.revision)
        return api_pb2.CreateTokenResponse(token=_public(tok), secret=secret)

    @api_method
    async def RevokeToken(self, request, context, user):  # type: ignore[override]
        ref = request.token_id
        if not ref:
            raise InvalidArgument("token_id: required (the token's id, or the token itself)")
        token_id = self.cache.tokens_by_hash.get(hash_token(ref), ref) if ref.startswith("crl_") else ref
        rec = self.cache.tokens.get(token_id)
        if rec is None:
            raise NotFound(f"token {token_label(token_id)[:40]} not found")
        self._owner(user, rec.msg.user_id)
        result = await self.store.txn([Cmp(keys.token(token_id), rec.rev)], [Delete(keys.token(token_id))])
        if not result.succeeded:
            raise NotFound(f"token {token_id} was revoked meanwhile")
        await self.cache.wait_revision(result.revision)  # refused from the next call on
        return api_pb2.RevokeTokenResponse(token=_public(rec.msg))

    @api_method
    async def ListTokens(self, request, context, user):  # type: ignore[override]
        everyone = request.user_id == "*"
        if everyone and authz.role_of(user) != authz.ADMIN:
            raise PermissionDenied("only an admin may list everyone's tokens")
        target = "" if everyone else self._owner(user, request.user_id)
        toks = sorted((r.msg for r in self.cache.tokens.values() if everyone or r.msg.user_id == target),
                      key=lambda t: (t.user_id, t.create_time.ToNanoseconds()))
        return api_pb2.ListTokensResponse(tokens=[_public(t) for t in toks])


class AuditServicer(api_pb2_grpc.AuditServiceServicer):
    def __init__(self, auth: Authenticator, audit: AuditLog) -> None:
        self.auth = auth
        self.audit = audit

    @api_method
    async def ListAudit(self, request, context, user):  # type: ignore[override]
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit: between 1 and 1000")
        await self.audit.flush()  # this master's latest lines too
        return api_pb2.ListAuditResponse(records=await self.audit.list(limit, request.who[:128], request.target[:256]))
