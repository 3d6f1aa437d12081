"""Who may do what: one table of every public RPC and the roles that may call it, and the
ownership rules the methods apply to records.

Three roles, as Nomad's and Kubernetes' operators expect them:

- ``admin``: everything, on everyone's records;
- ``operator``: reads everything (tasks, templates, logs, nodes, users, audit) and
  cordons, uncordons and drains nodes; submits and changes nothing else;
- ``user``: submits tasks and manages templates, and sees and touches only their own.

The table is checked before a method runs (`authorize`); the record-level rules
(`check_read`, `check_write`, `visible`) are called by the methods, which know the records.
Keeping both here lets one test walk every RPC × role.
"""

from __future__ import annotations

from corral.errors import PermissionDenied
from corral.v1 import types_pb2 as pb

ADMIN = "admin"
OPERATOR = "operator"
USER = "user"
ROLES = (ADMIN, OPERATOR, USER)

_EVERYONE = frozenset(ROLES)
_ADMIN = frozenset({ADMIN})
_OPERATORS = frozenset({ADMIN, OPERATOR})
_WRITERS = frozenset({ADMIN, USER})

# Every public RPC. A user's calls on records are limited to their own by the method.
POLICY: dict[str, frozenset[str]] = {
    # TemplateService
    "CreateTemplate": _WRITERS,
    "GetTemplate": _EVERYONE,
    "UpdateTemplate": _WRITERS,
    "DeleteTemplate": _WRITERS,
    "ListTemplates": _EVERYONE,
    "PauseTemplate": _WRITERS,
    "ResumeTemplate": _WRITERS,
    "NextTemplateFires": _EVERYONE,
    "TemplateHistory": _EVERYONE,
    # TaskService
    "SubmitTask": _WRITERS,
    "SubmitTasks": _WRITERS,
    "SubmitTaskStream": _WRITERS,
    "StopTask": _WRITERS,
    "GetTask": _EVERYONE,
    "ListTasks": _EVERYONE,
    "WatchTasks": _EVERYONE,
    "TaskLogs": _EVERYONE,
    "RetryTask": _WRITERS,
    # NodeService: anyone may look at the fleet; only operators change it
    "ListNodes": _EVERYONE,
    "GetNode": _EVERYONE,
    "CordonNode": _OPERATORS,
    "UncordonNode": _OPERATORS,
    "DrainNode": _OPERATORS,
    "DeleteNode": _OPERATORS,
    # ClusterService
    "ClusterStatus": _EVERYONE,
    # UserService
    "CreateUser": _ADMIN,
    "ListUsers": _OPERATORS,
    "UpdateUser": _ADMIN,
    "DeleteUser": _ADMIN,
    # TokenService: own tokens for everyone, anyone's for an admin (checked by the method)
    "CreateToken": _EVERYONE,
    "RevokeToken": _EVERYONE,
    "ListTokens": _EVERYONE,
    # AuditService
    "ListAudit": _OPERATORS,
}

# Calls that change something: each is written to the audit log.
READS = frozenset({
    "GetTemplate", "ListTemplates", "NextTemplateFires", "TemplateHistory", "GetTask", "ListTasks", "WatchTasks",
    "TaskLogs", "ListNodes", "GetNode", "ClusterStatus", "ListUsers", "ListTokens", "ListAudit",
})
MUTATIONS = frozenset(POLICY) - READS


def role_of(user: pb.User) -> str:
    """The strongest role a user holds ("" if none is known)."""
    for role in ROLES:
        if role in user.roles:
            return role
    return ""


def authorize(method: str, user: pb.User) -> None:
    """PERMISSION_DENIED unless the user's role may call `method` at all."""
    allowed = POLICY.get(method)
    role = role_of(user)
    if allowed is None or role not in allowed:
        who = f"the {role} role" if role else "a user without a role"
        raise PermissionDenied(f"{method}: {who} may not call it ({user.user_id})")


def can_read_all(user: pb.User) -> bool:
    return role_of(user) in (ADMIN, OPERATOR)


def visible(user: pb.User, owner: str) -> bool:
    """Whether a record owned by `owner` shows up in this user's lists and watches."""
    return owner == user.user_id or can_read_all(user)


def check_read(user: pb.User, owner: str, what: str) -> None:
    if not visible(user, owner):
        raise PermissionDenied(f"{what} belongs to another user; {user.user_id} may see only their own")


def check_write(user: pb.User, owner: str, what: str) -> None:
    if owner != user.user_id and role_of(user) != ADMIN:
        raise PermissionDenied(f"{what} belongs to another user; {user.user_id} may change only their own")
