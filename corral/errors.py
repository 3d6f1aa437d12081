"""The one error hierarchy of corral, and its single mapping to and from gRPC codes.

Servers raise these from domain code; the API layer turns them into a gRPC status with
the message as the human sentence. The SDK turns a status back into the same class, so a
caller catches `NotFound` whichever side raised it.
"""

from __future__ import annotations

import grpc


class CorralError(Exception):
    """Base of every error corral reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgument(CorralError):
    """Bad input; the message names the field and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CorralError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CorralError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(CorralError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(CorralError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(CorralError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(CorralError):
    """The request is valid but the record is in the wrong state for it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(CorralError):
    """Retryable: a master, etcd or a node cannot be reached right now."""

    code = grpc.StatusCode.UNAVAILABLE


class Aborted(CorralError):
    """A concurrent change won; retry the whole operation."""

    code = grpc.StatusCode.ABORTED


class DeadlineExceeded(CorralError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(CorralError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[CorralError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        FailedPrecondition,
        Unavailable,
        Aborted,
        DeadlineExceeded,
        Internal,
    )
}


def from_code(code: grpc.StatusCode, message: str) -> CorralError:
    """The CorralError subclass for a gRPC status code (CorralError for unmapped codes)."""
    cls = _BY_CODE.get(code, CorralError)
    err = cls(message)
    if cls is CorralError:
        err.code = code
    return err
