"""What a user may ask of a node beyond the defaults, and whom a task runs as.

By default a task runs as its owner's own uid (allocated when the user was created, see
uids.py), with no capabilities, no host network and nothing of the host writable. Each
widening is a permission an admin grants per user (`corral user update alice --grant
host_network`); admins hold all of them. The checks run twice: when a task or template
is submitted (so the caller hears the refusal at once) and when the leader sends a task to
its node (`run_as`), so a permission revoked later, or a deleted owner, stops it there.
"""

from __future__ import annotations

from corral.errors import InvalidArgument, PermissionDenied
from corral.v1 import types_pb2 as pb

from . import authz

RUN_AS_ROOT = "run_as_root"    # spec.user "root" (or "0"): root with every capability
RUN_AS_UID = "run_as_uid"      # spec.user another numeric uid than the owner's own (or "nobody")
HOST_NETWORK = "host_network"  # spec.network "host": the node's network stack
ALL = (RUN_AS_ROOT, RUN_AS_UID, HOST_NETWORK)
NOBODY = 65534


def check_names(names: list[str], field: str) -> None:
    for n in names:
        if n not in ALL:
            raise InvalidArgument(f"{field}: {n[:40]!r} is not a permission; use {', '.join(ALL)}")


def has(user: pb.User, permission: str) -> bool:
    return authz.role_of(user) == authz.ADMIN or permission in user.permissions


def _needed(user: pb.User, spec: pb.TaskTemplate) -> tuple[int, str]:
    """(uid to run as, the permission it takes or "")."""
    wanted = spec.user
    if wanted in ("", str(user.uid)):
        return user.uid, ""
    if wanted in ("root", "0"):
        return 0, RUN_AS_ROOT
    if wanted == "nobody":
        return NOBODY, RUN_AS_UID
    return int(wanted), RUN_AS_UID


def check_spec(owner: pb.User, spec: pb.TaskTemplate, field: str = "spec") -> None:
    """PERMISSION_DENIED, naming the permission, unless `owner` may run `spec` as written."""
    _, perm = _needed(owner, spec)
    if perm and not has(owner, perm):
        what = "run as root" if perm == RUN_AS_ROOT else f"run as uid {spec.user}"
        raise PermissionDenied(f"{field}.user: {owner.user_id} may not {what} (needs the {perm} permission, granted by an admin)")
    if spec.network == "host" and not has(owner, HOST_NETWORK):
        raise PermissionDenied(f"{field}.network: {owner.user_id} may not use the host network (needs the {HOST_NETWORK} permission, granted by an admin)")


def run_as(owner: pb.User | None, user_id: str, spec: pb.TaskTemplate) -> tuple[int, str]:
    """(uid, "") for a task its owner may run now, else (-1, why it may not start)."""
    if owner is None:
        return -1, f"its owner {user_id} no longer exists"
    if owner.uid <= 0:
        return -1, f"its owner {user_id} has no uid yet; a master assigns one at start"
    try:
        check_spec(owner, spec)
    except PermissionDenied as e:
        return -1, f"refused at start: {e}"
    return _needed(owner, spec)[0], ""
