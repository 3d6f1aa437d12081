"""Secret env values never leave the master through the API.

A spec names its secret env entries in `secret_env`; the values are stored (the nodelet
needs them to start the task) but every API answer, list, watch event and history row
shows them as `MASK`. Cached records are shared, so masking copies a record first, and
only when it has something to hide: the common case costs one field check.
"""

from __future__ import annotations

from google.protobuf.message import Message

from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

MASK = "<secret>"


def _mask_spec(spec: pb.TaskTemplate) -> None:
    for name in spec.secret_env:
        if name in spec.env:
            spec.env[name] = MASK


def _needs(msg: Message) -> bool:
    if isinstance(msg, pb.TaskExecution):
        return bool(msg.spec.secret_env)
    if isinstance(msg, pb.TaskTemplate):
        return bool(msg.secret_env)
    if isinstance(msg, api_pb2.TaskEvent):
        return bool(msg.task.spec.secret_env)
    if isinstance(msg, api_pb2.ListTasksResponse):
        return any(t.spec.secret_env for t in msg.tasks)
    if isinstance(msg, api_pb2.ListTemplatesResponse):
        return any(t.secret_env for t in msg.templates)
    if isinstance(msg, api_pb2.TemplateHistoryResponse):
        return any(t.spec.secret_env for t in msg.runs)
    return False


def response(msg: Message) -> Message:
    """`msg` with every secret env value masked (a copy if anything was hidden)."""
    if not _needs(msg):
        return msg
    out = type(msg)()
    out.CopyFrom(msg)
    if isinstance(out, pb.TaskExecution):
        _mask_spec(out.spec)
    elif isinstance(out, pb.TaskTemplate):
        _mask_spec(out)
    elif isinstance(out, api_pb2.TaskEvent):
        _mask_spec(out.task.spec)
    elif isinstance(out, api_pb2.ListTasksResponse):
        for t in out.tasks:
            _mask_spec(t.spec)
    elif isinstance(out, api_pb2.ListTemplatesResponse):
        for tpl in out.templates:
            _mask_spec(tpl)
    elif isinstance(out, api_pb2.TemplateHistoryResponse):
        for t in out.runs:
            _mask_spec(t.spec)
    return out
