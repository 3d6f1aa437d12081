"""The corral Python SDK (`Client`, `AsyncClient`) and the `corral` CLI."""

from corral.errors import (
    AlreadyExists,
    CorralError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

from .sdk import AsyncClient, Client, rpc_methods

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "Client",
    "CorralError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "rpc_methods",
]
