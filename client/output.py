"""How the CLI prints records: readable tables by default, JSON or YAML with `-o`.

JSON and YAML use the proto field names and enum names (`"state": "SUCCEEDED"`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from corral import units
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

DEFAULT_ATTEMPTS = 3  # retry.max_attempts when the spec leaves it 0


def to_dict(msg: Message) -> dict[str, Any]:
    """The message in proto field names, a template's units as files write them (`100m`,
    `64Mi`, `5m`), so a template printed with -o yaml or -o json can be read back."""
    from .specfile import to_human

    d = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    out: dict[str, Any] = to_human(msg.DESCRIPTOR, d)
    return out


def ids(msg: Message) -> list[str]:
    """The ids a record or a list carries, for `-o id` (scripts): a list's items' ids, a
    record's own `*_id`, or the id of the record an answer wraps (CreateTokenResponse)."""
    fields = msg.DESCRIPTOR.fields
    for f in fields:  # a record: its own id
        if f.name.endswith("_id") and f.type == f.TYPE_STRING and getattr(msg, f.name):
            return [getattr(msg, f.name)]
    for f in fields:  # an answer that wraps one record
        if f.message_type is not None and not f.is_repeated and msg.HasField(f.name):
            found = ids(getattr(msg, f.name))
            if found:
                return found
    for f in fields:  # a list
        if f.message_type is not None and f.is_repeated and not f.message_type.GetOptions().map_entry:
            return [i for item in getattr(msg, f.name) for i in ids(item)[:1]]
    return []


def render(msg: Message, fmt: str) -> str:
    if fmt == "id":
        return "\n".join(ids(msg))
    if fmt == "json":
        return json.dumps(to_dict(msg), indent=2, ensure_ascii=False)
    if fmt == "yaml":
        return yaml.safe_dump(to_dict(msg), sort_keys=False).rstrip()
    return table(msg)


def _secs(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


def _ago(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return units.format_duration(max(0.0, time.time() - _secs(ts))) + " ago"


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _kv(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in pairs if v != "")


def _duration(t: pb.TaskExecution) -> str:
    if not t.start_time.seconds:
        return "-"
    end = _secs(t.finish_time) if t.finish_time.seconds else time.time()
    return units.format_duration(max(0.0, end - _secs(t.start_time)))


def task_rows(tasks: Sequence[pb.TaskExecution]) -> str:
    rows = [
        [
            t.task_id, t.name or "-", pb.TaskState.Name(t.state), t.node_id or "-", str(t.attempt),
            str(t.exit_code) if t.state in (pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED) else "-",
            _ago(t.submit_time), _duration(t), (t.reason or "")[:60],
        ]
        for t in tasks
    ]
    return _grid(["TASK ID", "NAME", "STATE", "NODE", "ATTEMPT", "EXIT", "SUBMITTED", "RAN", "REASON"], rows)


def lateness(t: pb.TaskExecution) -> str:
    """start − due, the figure a scheduled run is judged by."""
    if not (t.start_time.seconds and t.due_time.seconds):
        return "-"
    late = _secs(t.start_time) - _secs(t.due_time)
    return f"{late * 1000:.1f}ms" if abs(late) < 10 else units.format_duration(late)


def history_rows(runs: Sequence[pb.TaskExecution]) -> str:
    """One line per scheduled instant: its outcome, how late it started, and why."""
    rows = [
        [t.due_time.ToJsonString() if t.due_time.seconds else "-", t.task_id, pb.TaskState.Name(t.state), t.node_id or "-", lateness(t), (t.reason or "")[:70]]
        for t in runs
    ]
    return _grid(["DUE (UTC)", "TASK ID", "OUTCOME", "NODE", "LATE", "REASON"], rows)


def task_detail(t: pb.TaskExecution) -> str:
    s = t.spec
    pairs = [
        ("Task", t.task_id), ("Name", t.name), ("State", pb.TaskState.Name(t.state)), ("Reason", t.reason),
        ("Template", t.template_id), ("User", t.user_id), ("Node", t.node_id),
        ("Attempt", f"{t.attempt} of {s.retry.max_attempts or DEFAULT_ATTEMPTS}"),
        ("Driver", pb.Driver.Name(s.driver) + (f", image {s.image}" if s.image else "")),
        ("Exit code", str(t.exit_code) if t.state in (pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED) else ""),
        ("Submitted", t.submit_time.ToJsonString() if t.submit_time.seconds else ""),
        ("Due", t.due_time.ToJsonString() if t.due_time.seconds else ""),
        ("Started", t.start_time.ToJsonString() if t.start_time.seconds else ""),
        ("Late", lateness(t) if t.due_time.seconds and t.start_time.seconds else ""),
        ("Finished", t.finish_time.ToJsonString() if t.finish_time.seconds else ""),
        ("Ran for", _duration(t) if t.start_time.seconds else ""),
        ("Resources", f"cpu {units.format_cpu(s.cpu_request)} (limit {units.format_cpu(s.cpu_limit)}), memory {units.format_memory(s.mem_request)} (limit {units.format_memory(s.mem_limit)}), pids {s.pids_limit}"),
        ("Timeout", units.format_duration(s.timeout.seconds + s.timeout.nanos / 1e9) if s.timeout.seconds or s.timeout.nanos else ""),
        ("Command", s.run_script if len(s.run_script) < 200 else s.run_script[:200] + "…"),
    ]
    out = _kv(pairs)
    if t.history:
        rows = [[str(h.attempt), h.node_id or "-", pb.TaskState.Name(h.state), h.reason[:70]] for h in t.history]
        out += "\n\nEarlier attempts:\n" + _grid(["ATTEMPT", "NODE", "STATE", "REASON"], rows)
    return out


def template_state(t: pb.TaskTemplate) -> str:
    """active, paused (by a user) or suspended (by corral, with why); `-` without a schedule."""
    if not t.cron_schedule:
        return "-"
    if t.suspend_reason:
        return f"suspended: {t.suspend_reason}"
    return "paused" if t.suspended else "active"


def template_rows(ts: Sequence[pb.TaskTemplate]) -> str:
    rows = [
        [t.template_id, t.name, template_state(t)[:40], t.cron_schedule or "-", units.format_cpu(t.cpu_request),
         units.format_memory(t.mem_request), pb.Driver.Name(t.driver), (t.run_script.splitlines() or [""])[0][:40]]
        for t in ts
    ]
    return _grid(["TEMPLATE ID", "NAME", "STATE", "SCHEDULE", "CPU", "MEMORY", "DRIVER", "COMMAND"], rows)


def _dur(d: Any) -> str:
    return units.format_duration_exact(d.seconds + d.nanos / 1e9) if d.seconds or d.nanos else ""


def template_detail(t: pb.TaskTemplate) -> str:
    return _kv([
        ("Template", t.template_id), ("Name", t.name), ("State", template_state(t) if t.cron_schedule else ""),
        ("Owner", t.owner), ("Driver", pb.Driver.Name(t.driver)),
        ("Image", t.image), ("CPU", f"{units.format_cpu(t.cpu_request)} (limit {units.format_cpu(t.cpu_limit)})"),
        ("Memory", f"{units.format_memory(t.mem_request)} (limit {units.format_memory(t.mem_limit)})"),
        ("Schedule", f"{t.cron_schedule} ({t.time_zone or 'UTC'})" if t.cron_schedule else ""),
        ("Next fires", ", ".join(f.ToJsonString() for f in t.next_fires[:3])),
        ("Policies", f"misfire {pb.MisfirePolicy.Name(t.misfire_policy or pb.RUN_ONCE)}, "
                     f"concurrency {pb.ConcurrencyPolicy.Name(t.concurrency_policy or pb.ALLOW)}, "
                     f"on lost {t.on_lost or 'retry'}" + (f", starting deadline {_dur(t.starting_deadline)}" if _dur(t.starting_deadline) else "")
                     if t.cron_schedule else ""),
        ("Timeout", _dur(t.timeout)),
        ("Working dir", t.working_dir),
        ("Command", t.run_script),
    ])


def node_rows(nodes: Sequence[pb.NodeInfo]) -> str:
    rows = [
        [n.node_id, pb.NodeState.Name(n.state),
         f"{units.format_cpu(n.allocated.cpu)}/{units.format_cpu(n.allocatable.cpu)}",
         f"{units.format_memory(n.allocated.memory)}/{units.format_memory(n.allocatable.memory)}",
         str(n.running_tasks), ",".join(n.drivers) or "-", _ago(n.last_heartbeat)]
        for n in nodes
    ]
    return _grid(["NODE", "STATE", "CPU (ALLOC/TOTAL)", "MEMORY (ALLOC/TOTAL)", "TASKS", "DRIVERS", "HEARTBEAT"], rows)


def cluster_detail(s: api_pb2.ClusterStatusResponse) -> str:
    return _kv([
        ("Leader", f"{s.leader.name} {s.leader.address} (pid {s.leader.pid})"),
        ("Members", ", ".join(f"{m.name}@{m.address}" for m in s.members)),
        ("Term", str(s.leader_term) if s.leader_term else ""),
        ("etcd", ", ".join(f"{e.endpoint} ({'leader, ' if e.is_leader else ''}{'healthy ' + e.version + ', db ' + units.format_memory(e.db_size) if e.healthy else 'DOWN: ' + e.error})" for e in s.etcd) or ", ".join(s.etcd_endpoints)),
        ("Nodes", ", ".join(f"{k} {v}" for k, v in sorted(s.nodes_by_state.items())) or "none"),
        ("Tasks", ", ".join(f"{k} {v}" for k, v in sorted(s.tasks_by_state.items())) or "none"),
        ("Version", s.version),
    ])


def _quota(q: pb.Quota) -> str:
    parts = [f"tasks {q.max_tasks}" if q.max_tasks else "", f"cpu {units.format_cpu(q.max_cpu)}" if q.max_cpu else "",
             f"memory {units.format_memory(q.max_memory)}" if q.max_memory else "",
             f"{q.max_submit_rate:g}/s" if q.max_submit_rate else "",
             f"stored {q.max_stored_records:,} records" if q.max_stored_records else "",
             f"stored {units.format_memory(q.max_stored_bytes)}" if q.max_stored_bytes else ""]
    return ", ".join(p for p in parts if p) or "-"


def user_rows(users: Sequence[pb.User]) -> str:
    return _grid(["USER", "ROLE", "UID", "PERMISSIONS", "QUOTA", "CREATED"],
                 [[u.user_id, ",".join(u.roles), str(u.uid or "-"), ",".join(u.permissions) or "-", _quota(u.quota),
                   _ago(u.create_time) if u.create_time.seconds else "-"] for u in users])


def token_rows(tokens: Sequence[pb.Token]) -> str:
    return _grid(["TOKEN ID", "USER", "DESCRIPTION", "CREATED", "EXPIRES"],
                 [[t.token_id, t.user_id, t.description or "-", _ago(t.create_time),
                   t.expire_time.ToJsonString() if t.expire_time.seconds else "never"] for t in tokens])


def secret_note(secret: str) -> str:
    return f"\nToken (shown only this once; pass it as --token or CORRAL_TOKEN):\n{secret}"


def table(msg: Message) -> str:
    if isinstance(msg, api_pb2.ListUsersResponse):
        return user_rows(msg.users)
    if isinstance(msg, pb.User):
        return user_rows([msg])
    if isinstance(msg, api_pb2.CreateUserResponse):
        return user_rows([msg.user]) + "\n" + secret_note(msg.secret)
    if isinstance(msg, api_pb2.ListTokensResponse):
        return token_rows(msg.tokens)
    if isinstance(msg, api_pb2.CreateTokenResponse):
        return token_rows([msg.token]) + "\n" + secret_note(msg.secret)
    if isinstance(msg, api_pb2.RevokeTokenResponse):
        return f"revoked {msg.token.token_id} ({msg.token.user_id})"
    if isinstance(msg, api_pb2.ListAuditResponse):
        return _grid(["TIME", "WHO", "WHAT", "TARGET", "RESULT", "DETAIL"],
                     [[r.time.ToJsonString(), r.who, r.what, r.target or "-", r.result, r.detail or ""] for r in msg.records])
    if isinstance(msg, pb.TaskExecution):
        return task_detail(msg)
    if isinstance(msg, api_pb2.ListTasksResponse):
        more = f"\n(more: --page-token {msg.next_page_token})" if msg.next_page_token else ""
        return task_rows(msg.tasks) + more
    if isinstance(msg, pb.TaskTemplate):
        return template_detail(msg)
    if isinstance(msg, api_pb2.ListTemplatesResponse):
        return template_rows(msg.templates)
    if isinstance(msg, api_pb2.ListNodesResponse):
        return node_rows(msg.nodes)
    if isinstance(msg, pb.NodeInfo):
        return node_rows([msg])
    if isinstance(msg, api_pb2.ClusterStatusResponse):
        return cluster_detail(msg)
    if isinstance(msg, api_pb2.DeleteTemplateResponse):
        return f"deleted template {msg.template_id}"
    if isinstance(msg, api_pb2.NextTemplateFiresResponse):
        return _grid([f"LOCAL ({msg.time_zone})", "UTC"], [[loc, u.ToJsonString()] for loc, u in zip(msg.local, msg.utc, strict=True)])
    if isinstance(msg, api_pb2.TemplateHistoryResponse):
        head = _kv([
            ("Fired", str(msg.state.fired)), ("Skipped", str(msg.state.skipped)),
            ("Last skip", msg.state.last_skip_reason),
            ("Last fire", msg.last_fire.ToJsonString() if msg.last_fire.seconds else "-"),
            ("Last success", msg.last_success.ToJsonString() if msg.last_success.seconds else "-"),
            ("Next fire", msg.next_fire.ToJsonString() if msg.next_fire.seconds else "-"),
        ])
        return head + "\n\n" + history_rows(msg.runs)
    if isinstance(msg, api_pb2.TaskEvent):
        t = msg.task
        return f"{time.strftime('%H:%M:%S')}  {t.task_id}  {'DELETED' if msg.deleted else pb.TaskState.Name(t.state)}  {t.node_id or '-'}  {t.reason}"
    return yaml.safe_dump(to_dict(msg), sort_keys=False).rstrip() or "ok"
