"""The `corral` command line, generated from the proto service descriptors.

Every public RPC is `corral <service> <verb>`: the service name without "Service", the
method name without the resource noun, in kebab-case (TaskService.SubmitTask → `corral task
submit`, NodeService.CordonNode → `corral node cordon`). Flags come from the request
fields: scalars and enums as `--field-name`, durations as `30s`, times as RFC 3339, a
message field as `-f FILE` (YAML or JSON), and a first `*_id` field as a positional
argument. A few commands add everyday flags on top (`task submit --command ... --wait`,
`task logs -f`), and `submit`, `stop` and `logs` are shortcuts for the task commands.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import difflib
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

from google.protobuf import descriptor as _d
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from corral import units
from corral.errors import CorralError, DeadlineExceeded, InvalidArgument, Unauthenticated
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

from . import output, specfile
from .sdk import TERMINAL, Client, RpcMethod, rpc_methods

Handler = Callable[[Client, argparse.Namespace], int]
# protobuf hands out either the pure-Python or the upb descriptor class; both have this surface
FieldDesc: TypeAlias = Any


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def group_of(m: RpcMethod) -> str:
    return kebab(m.service.removesuffix("Service"))


# Methods whose leading id may be left out ("" means yourself).
OPTIONAL_POSITIONAL = {"CreateToken", "ListTokens"}

VERB_OVERRIDES = {"NextTemplateFires": "next", "SubmitTasks": "submit-batch"}


def verb_of(m: RpcMethod) -> str:
    if m.name in VERB_OVERRIDES:
        return VERB_OVERRIDES[m.name]
    noun = m.service.removesuffix("Service")
    verb = m.name
    for n in (noun + "s", noun):
        if n in verb and verb != n:
            verb = verb.replace(n, "", 1)
            break
    return kebab(verb)


def command_of(m: RpcMethod) -> tuple[str, str]:
    return group_of(m), verb_of(m)


# ---- generic request building ---------------------------------------------------------------


def _positional(m: RpcMethod) -> FieldDesc | None:
    fields = m.input.DESCRIPTOR.fields
    if fields and fields[0].name.endswith("_id") and fields[0].type == _d.FieldDescriptor.TYPE_STRING:
        return fields[0]
    return None


def _is_message(f: FieldDesc, name: str) -> bool:
    return f.message_type is not None and f.message_type.full_name == name


def add_request_flags(p: argparse.ArgumentParser, m: RpcMethod, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    pos = _positional(m)
    for f in m.input.DESCRIPTOR.fields:
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if pos is not None and f is pos:
            p.add_argument(f.name, nargs="?", metavar=f.name.upper(), help=f"the {f.name.replace('_', ' ')}")
            continue
        if _is_message(f, "google.protobuf.Duration"):
            p.add_argument(flag, dest=f.name, metavar="DURATION", help=f"{f.name} (e.g. 30s, 5m)")
        elif _is_message(f, "google.protobuf.Timestamp"):
            p.add_argument(flag, dest=f.name, metavar="TIME", help=f"{f.name} (RFC 3339, e.g. 2026-01-02T15:04:05Z)")
        elif f.message_type is not None:
            if not any(a.dest == "file" for a in p._actions):
                p.add_argument("-f", "--file", dest="file", metavar="FILE", help=f"{f.name} as a YAML or JSON file in the proto's field names ('-' for stdin)")
        elif f.is_repeated:
            if f.type == _d.FieldDescriptor.TYPE_STRING:
                singular = flag.removesuffix("s") if flag.endswith("permissions") else flag
                p.add_argument(singular, dest=f.name, action="append", metavar="VALUE", help=f"{f.name.replace('_', ' ')} (repeatable)")
            continue
        elif f.type == _d.FieldDescriptor.TYPE_BOOL:
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=f.name.replace("_", " "))
        elif f.enum_type is not None:
            _enum_flag(p, flag, [v.name for v in f.enum_type.values if v.number != 0], f.name.replace("_", " "), dest=f.name)
        elif f.type in (_d.FieldDescriptor.TYPE_STRING,):
            # `--template ID` reads better than `--template-id ID`; both work
            aliases = [flag, flag.removesuffix("-id")] if f.name.endswith("_id") else [flag]
            p.add_argument(*aliases, dest=f.name, help=f.name.replace("_", " "))
        elif f.name.endswith("_cpu"):
            p.add_argument(flag, dest=f.name, type=_cpu_flag(flag), metavar="CPU", help=f"{f.name.replace('_', ' ')} (e.g. 2 or 500m)")
        elif f.name.endswith(("_memory", "_bytes")):
            p.add_argument(flag, dest=f.name, type=_mem_flag(flag), metavar="SIZE", help=f"{f.name.replace('_', ' ')} (e.g. 512Mi, 8Gi)")
        elif f.type in (_d.FieldDescriptor.TYPE_DOUBLE, _d.FieldDescriptor.TYPE_FLOAT):
            p.add_argument(flag, dest=f.name, type=_unit(_number, flag, "2.5"), metavar="NUMBER", help=f.name.replace("_", " "))
        else:
            p.add_argument(flag, dest=f.name, type=_whole(flag, "10"), metavar="N", help=f.name.replace("_", " "))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


def build_request(m: RpcMethod, args: argparse.Namespace) -> Message:
    req = m.input()
    for f in m.input.DESCRIPTOR.fields:
        value = getattr(args, f.name, None)
        if f.message_type is not None and not _is_message(f, "google.protobuf.Duration") and not _is_message(f, "google.protobuf.Timestamp"):
            path = getattr(args, "file", None)
            if path and f.message_type.full_name == "corral.v1.TaskTemplate":
                getattr(req, f.name).CopyFrom(specfile.load_template(path))
            continue
        if value is None:
            continue
        if f.is_repeated:
            getattr(req, f.name).extend(value)
        elif _is_message(f, "google.protobuf.Duration"):
            getattr(req, f.name).CopyFrom(_duration(value, f.name))
        elif _is_message(f, "google.protobuf.Timestamp"):
            getattr(req, f.name).CopyFrom(_timestamp(value, f.name))
        elif f.enum_type is not None:
            setattr(req, f.name, f.enum_type.values_by_name[value].number)
        else:
            setattr(req, f.name, value)
    return req


def _duration(text: str, field: str) -> Duration:
    try:
        secs = units.parse_duration(text)
    except ValueError as e:
        raise InvalidArgument(f"{field}: {e}") from None
    d = Duration()
    d.FromNanoseconds(int(secs * 1e9))
    return d


def _timestamp(text: str, field: str) -> Timestamp:
    try:
        when = units.parse_time(text)
    except ValueError as e:
        raise InvalidArgument(f"{field}: {e}") from None
    t = Timestamp()
    t.FromDatetime(when)
    return t


def _print(msg: Message, args: argparse.Namespace) -> None:
    print(output.render(msg, args.output))


def generic(m: RpcMethod) -> Handler:
    def run(client: Client, args: argparse.Namespace) -> int:
        pos = _positional(m)
        if pos is not None and not getattr(args, pos.name, None) and m.name not in OPTIONAL_POSITIONAL:
            raise InvalidArgument(f"{pos.name}: required (give it as the first argument)")
        req = build_request(m, args)
        result = client.call(m, req)
        if m.server_streaming:
            for item in result:
                _print(item, args)
                sys.stdout.flush()
            return 0
        _print(result, args)
        return 0

    return run


# ---- everyday commands on top of the generated ones ------------------------------------------


def _logs_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("task_id", nargs="?", metavar="TASK_ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing output as it is written, until the task ends")
    p.add_argument("--tail", type=int, metavar="N", help="start with the last N lines of what is there")
    p.add_argument("--since", metavar="WHEN", help="only lines written since then: a duration back from now (10m) or an RFC 3339 time")
    p.add_argument("-t", "--timestamps", action="store_true", help="start each line with when it was written (UTC, from the node)")
    p.add_argument("--offset", type=int, default=0, help="start at this byte offset")


def _unit(parse: Callable[[str], Any], flag: str, example: str) -> Callable[[str], Any]:
    """An argparse type that names the flag and shows an example when the value is wrong."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            msg = str(e)
            raise argparse.ArgumentTypeError(msg if "(try" in msg or "(e.g." in msg else f"{msg} (e.g. {flag} {example})") from None

    convert.__name__ = flag  # argparse names the type in some messages
    return convert


def _whole(flag: str, example: str, lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"not a whole number: {text!r} (e.g. {flag} {example})") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{value} is out of range: {lo} to {hi} (e.g. {flag} {example})" if hi is not None
                             else f"must be {lo} or more (e.g. {flag} {example})")
        return value

    return _unit(parse, flag, example)


def _enum_flag(p: argparse.ArgumentParser, flag: str, names: list[str], help_text: str, dest: str | None = None) -> None:
    """An enum flag: any case accepted, the valid values listed in --help and in the error."""
    upper = names[0].isupper()
    p.add_argument(flag, dest=dest, type=str.upper if upper else str.lower, choices=names, metavar="|".join(names),
                   help=f"{help_text} ({', '.join(names)}; any case)")


def _cpu_flag(flag: str) -> Callable[[str], Any]:
    return _unit(units.parse_cpu, flag, "0.5")


def _mem_flag(flag: str) -> Callable[[str], Any]:
    return _unit(units.parse_memory, flag, "64Mi")


def _dur_flag(flag: str) -> Callable[[str], Any]:
    return _unit(units.parse_duration, flag, "30s")


def _spec_flags(p: argparse.ArgumentParser, *, template: bool) -> None:
    """The flags that set a task's spec: `task submit` and `template create|update`."""
    p.add_argument("-f", "--file", help="the spec as a YAML or JSON file in TaskTemplate field names, e.g. from "
                   "`corral template get NAME -o yaml` (units: 0.5 or 500m cpu, 64Mi, 30s); flags override it")
    p.add_argument("-c", "--command", help="shell command or script to run, by /bin/sh -c (stored as run_script)")
    p.add_argument("--cpu", type=_cpu_flag("--cpu"), metavar="CPU", help="cpu request in cores or millicores, e.g. 0.5 or 500m (the limit defaults to it)")
    p.add_argument("--cpu-limit", type=_cpu_flag("--cpu-limit"), metavar="CPU", help="cpu limit if above the request")
    p.add_argument("--memory", type=_mem_flag("--memory"), metavar="SIZE", help="memory request and limit, e.g. 64Mi or 1G")
    p.add_argument("--memory-limit", type=_mem_flag("--memory-limit"), metavar="SIZE", help="memory limit if above the request")
    p.add_argument("--pids", type=_whole("--pids", "512", lo=1), metavar="N", help="max processes (default 512)")
    p.add_argument("--timeout", type=_dur_flag("--timeout"), metavar="DURATION", help="kill the task after this long, e.g. 30s or 1h30m (TIMED_OUT)")
    _enum_flag(p, "--driver", ["process", "docker"], "how to run it (default process)")
    p.add_argument("--image", help="container image (docker driver)")
    p.add_argument("--workdir", "--working-dir", dest="working_dir", metavar="DIR",
                   help="directory on the node to start in (default: the task's private /tmp); the node's files are read-only to the task")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable (repeatable)")
    p.add_argument("--secret-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable whose value is secret: the task gets it, every API answer shows <secret> (repeatable)")
    _enum_flag(p, "--network", ["none", "host", "bridge"], "none (default: an empty network namespace), host, or bridge (docker)")
    p.add_argument("--user", help="run as: your own uid (default), root or another numeric uid (each needs a permission an admin grants)")
    p.add_argument("--priority", type=_whole("--priority", "50", 0, 100), metavar="0-100", help="0-100; higher may preempt lower")
    p.add_argument("--retries", type=_whole("--retries", "3", lo=1), metavar="N", help="attempts in all when its node is lost (default 3)")
    p.add_argument("--ordering-key", metavar="KEY", help="tasks sharing this key run one at a time, in submission order")
    p.add_argument("--starting-deadline", type=_dur_flag("--starting-deadline"), metavar="DURATION",
                   help="end SKIPPED if it cannot start within this long after its due time")
    if template:
        p.add_argument("--schedule", metavar="CRON", help="cron schedule: 5 fields, 6 with seconds last, or @hourly/@daily/…, e.g. '*/5 * * * *'")
        p.add_argument("--time-zone", metavar="ZONE", help="IANA time zone for the schedule, e.g. Europe/Berlin (default UTC)")
        _enum_flag(p, "--misfire-policy", [v.name for v in pb.MisfirePolicy.DESCRIPTOR.values if v.number], "instants missed while no leader ran")
        _enum_flag(p, "--concurrency-policy", [v.name for v in pb.ConcurrencyPolicy.DESCRIPTOR.values if v.number], "an instant whose previous run still runs")
        p.add_argument("--history-limit", type=_whole("--history-limit", "10", lo=0), metavar="N", help="finished runs kept")
        _enum_flag(p, "--on-lost", ["retry", "end"], "an attempt that was LOST")


# flag dest → the TaskTemplate field it sets (for an update's field mask)
_FLAG_FIELDS = {
    "command": "run_script", "cpu": "cpu_request", "cpu_limit": "cpu_limit", "memory": "mem_request",
    "memory_limit": "mem_limit", "pids": "pids_limit", "timeout": "timeout", "driver": "driver", "image": "image",
    "working_dir": "working_dir", "network": "network", "user": "user", "priority": "priority",
    "retries": "retry.max_attempts", "ordering_key": "ordering_key", "starting_deadline": "starting_deadline",
    "schedule": "cron_schedule", "time_zone": "time_zone", "misfire_policy": "misfire_policy",
    "concurrency_policy": "concurrency_policy", "history_limit": "history_limit", "on_lost": "on_lost",
}


def _spec_from_args(args: argparse.Namespace) -> tuple[pb.TaskTemplate, list[str]]:
    """The spec the flags (over -f's file) describe, and the fields the flags set."""
    spec = specfile.load_template(args.file) if getattr(args, "file", None) else pb.TaskTemplate()
    paths: list[str] = []
    for dest, field in _FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        paths.append(field)
        if field in ("timeout", "starting_deadline"):
            getattr(spec, field).FromNanoseconds(int(value * 1e9))
        elif field == "driver":
            spec.driver = pb.DOCKER if value == "docker" else pb.PROCESS
        elif field == "retry.max_attempts":
            spec.retry.max_attempts = value
        elif field in ("misfire_policy", "concurrency_policy"):
            setattr(spec, field, getattr(pb, value))
        else:
            setattr(spec, field, value)
    if getattr(args, "cpu", None) is not None and spec.cpu_request <= 0:
        raise InvalidArgument("--cpu: must be more than 0 (e.g. --cpu 0.5)")
    if getattr(args, "memory", None) is not None and spec.mem_request <= 0:
        raise InvalidArgument("--memory: must be more than 0 (e.g. --memory 64Mi)")
    for flag, items in (("--env", getattr(args, "env", [])), ("--secret-env", getattr(args, "secret_env", []))):
        for kv in items:
            if "=" not in kv:
                raise InvalidArgument(f"{flag}: expected KEY=VALUE, e.g. {flag} LEVEL=debug")
            k, v = kv.split("=", 1)
            spec.env[k] = v
            if flag == "--secret-env" and k not in spec.secret_env:
                spec.secret_env.append(k)
            paths.append("env")
            if flag == "--secret-env":
                paths.append("secret_env")
    return spec, list(dict.fromkeys(paths))


def _submit_flags(p: argparse.ArgumentParser) -> None:
    _spec_flags(p, template=False)
    p.add_argument("--template", dest="template_id", metavar="NAME", help="run this template (name or id); other flags override its fields")
    p.add_argument("--name", help="a name for the task")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", "--run-at", dest="run_at", metavar="TIME", help="do not start before this RFC 3339 time")
    when.add_argument("--in", dest="run_in", type=_dur_flag("--in"), metavar="DURATION", help="start after this delay, e.g. 30s")
    p.add_argument("--idempotency-key", help="a repeated submit with the same key returns the first task")
    p.add_argument(
        "--from-file", metavar="TASKS.JSONL",
        help="submit many tasks: one JSON object per line, a SubmitTaskRequest or a bare spec ('-' for stdin); prints one task id per line",
    )
    p.add_argument("--wait", action="store_true", help="follow the task to its end; exit non-zero unless it SUCCEEDED")


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    from corral.v1 import api_pb2

    if getattr(args, "from_file", None):
        return submit_from_file(client, args)
    spec, _ = _spec_from_args(args)
    req = api_pb2.SubmitTaskRequest(template_id=args.template_id or "", spec=spec, name=args.name or "", idempotency_key=args.idempotency_key or "")
    if args.run_at:
        req.run_at.CopyFrom(_timestamp(args.run_at, "--at"))
    elif args.run_in is not None:
        req.run_at.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.run_in))
    if not req.template_id and not spec.run_script.strip():
        raise InvalidArgument("--command: the command must not be empty (or give --template)")
    task = client.submit_task(req)  # type: ignore[attr-defined]
    if args.output == "table":
        print(task.task_id)
    else:
        _print(task, args)
    sys.stdout.flush()
    if args.wait:
        return follow(client, task.task_id, args)
    return 0


FROM_FILE_CHUNK = 10_000  # tasks per SubmitTaskStream call


def submit_from_file(client: Client, args: argparse.Namespace) -> int:
    """`--from-file tasks.jsonl`: stream the tasks in chunks, a progress line on stderr,
    the accepted ids on stdout, a sentence per rejected line; non-zero if any was rejected."""
    path = args.from_file
    try:
        f = sys.stdin if path == "-" else open(path)  # noqa: SIM115 - closed below
    except OSError as e:
        raise InvalidArgument(f"--from-file: cannot read {path}: {e.strerror}") from None
    tty = sys.stderr.isatty()
    accepted = rejected = 0
    line_no = 0
    started = time.monotonic()

    def send(chunk: list[tuple[int, Any]]) -> None:
        nonlocal accepted, rejected
        resp = client.submit_many([r for _, r in chunk])
        for (n, _), res in zip(chunk, resp.results, strict=True):
            if res.code == 0:
                accepted += 1
                print(res.task_id)
            else:
                rejected += 1
                print(f"{path}:{n}: {res.error}", file=sys.stderr)
        rate = (accepted + rejected) / max(1e-9, time.monotonic() - started)
        sys.stderr.write(("\r\033[K" if tty else "") + f"submitted {accepted + rejected:,} tasks ({rate:,.0f}/s)" + ("" if tty else "\n"))
        sys.stderr.flush()

    chunk: list[tuple[int, Any]] = []
    with f:
        for line in f:
            line_no += 1
            if not line.strip():
                continue
            chunk.append((line_no, specfile.parse_request_line(line, f"{path}:{line_no}")))
            if len(chunk) == FROM_FILE_CHUNK:
                send(chunk)
                chunk = []
    if chunk:
        send(chunk)
    if tty:
        sys.stderr.write("\n")
    print(f"{accepted:,} accepted, {rejected:,} rejected", file=sys.stderr)
    return 1 if rejected else 0


def follow(client: Client, task_id: str, args: argparse.Namespace) -> int:
    """Follow a task with a live status line on stderr; 0 only if it SUCCEEDED."""
    tty = sys.stderr.isatty()
    last = ""
    final: pb.TaskExecution | None = None
    for ev in client.watch_tasks(task_id=task_id):  # type: ignore[attr-defined]
        t = ev.task
        line = f"{t.task_id}: {pb.TaskState.Name(t.state)}"
        if t.node_id:
            line += f" on {t.node_id}"
        if t.attempt > 1:
            line += f" (attempt {t.attempt})"
        if t.reason:
            line += f" — {t.reason}"
        if line != last:
            sys.stderr.write(("\r\033[K" if tty else "") + line + ("" if tty else "\n"))
            sys.stderr.flush()
            last = line
        if t.state in TERMINAL:
            final = t
            break
    if tty:
        sys.stderr.write("\n")
    if final is None:
        return 1
    if final.state == pb.SUCCEEDED:
        return 0
    sys.stderr.write(f"task {task_id} ended {pb.TaskState.Name(final.state)}" + (f" (exit code {final.exit_code})" if final.state == pb.FAILED else "") + "\n")
    return 1


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    if not args.task_id:
        raise InvalidArgument("task_id: required (give it as the first argument)")
    out = sys.stdout.buffer
    tail = getattr(args, "tail", None)
    if tail is not None and tail < 0:
        raise InvalidArgument("--tail: must be 0 or more lines")
    since = _since(args.since) if getattr(args, "since", None) else None
    stamps = bool(getattr(args, "timestamps", False))

    def emit(lines: Any) -> None:
        for when, line in lines:
            if since is not None and when is not None and when < since:
                continue
            if stamps:
                out.write((dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                           if when else "-").encode() + b" ")
            out.write(line)
            out.flush()

    offset = args.offset or 0
    if tail is not None:
        # what is there now, to print its last N lines; then on from where it ended
        have = list(client.task_logs(task_id=args.task_id, offset=offset))  # type: ignore[attr-defined]
        offset += sum(len(c.data) for c in have)
        lines = list(_timed_lines(have))
        emit(lines[-tail:] if tail else [])
        if not args.follow:
            return 0
    chunks = client.task_logs(task_id=args.task_id, follow=bool(args.follow), offset=offset)  # type: ignore[attr-defined]
    if since is None and not stamps:
        for chunk in chunks:  # as it comes: a partial line too
            out.write(chunk.data)
            out.flush()
        return 0
    emit(_timed_lines(chunks))
    return 0


def _since(text: str) -> float:
    """--since: a duration back from now (10m) or an RFC 3339 time."""
    try:
        return time.time() - units.parse_duration(text)
    except (InvalidArgument, ValueError):
        t = _timestamp(text, "--since")
        return float(t.seconds + t.nanos / 1e9)


def _timed_lines(chunks: Any) -> Any:
    """(time, line) for each line of the output: the time its first byte was written, from
    the node's record of when each part was written (None for output from before it kept
    one). A last line without a newline comes when the output ends."""
    marks: list[tuple[int, float]] = []
    pending, start = b"", -1
    for chunk in chunks:
        marks += [m for m in zip(chunk.mark_offsets, chunk.mark_times, strict=False) if not marks or m[0] > marks[-1][0]]
        if start < 0:
            start = chunk.offset
        pending += chunk.data
        while (i := pending.find(b"\n")) >= 0:
            line, pending = pending[: i + 1], pending[i + 1 :]
            yield _time_at(marks, start), line
            start += len(line)
    if pending:
        yield _time_at(marks, start), pending


def _time_at(marks: list[tuple[int, float]], offset: int) -> float | None:
    """The time of the last write that began at or before `offset` (marks are in order)."""
    i = bisect.bisect_right(marks, (offset, float("inf")))
    return marks[i - 1][1] if i else None


def _event_line(ev: api_pb2.TaskEvent) -> str:
    t = ev.task
    when = time.strftime("%H:%M:%S", time.localtime())
    if ev.deleted:
        return f"{when}  {t.task_id}  deleted"
    parts = [when, t.task_id, pb.TaskState.Name(t.state)]
    if t.node_id:
        parts.append(f"on {t.node_id}")
    if t.attempt > 1:
        parts.append(f"attempt {t.attempt}")
    if t.state == pb.FAILED:
        parts.append(f"exit code {t.exit_code}")
    if t.reason:
        parts.append(f"— {t.reason}")
    return "  ".join(parts)


def _matches(ev: api_pb2.TaskEvent, args: argparse.Namespace) -> bool:
    t = ev.task
    state = getattr(args, "state", None)
    node = getattr(args, "node_id", None)
    if state and (ev.deleted or pb.TaskState.Name(t.state) != state):
        return False
    return not (node and t.node_id != node)


def watch_events(client: Client, args: argparse.Namespace, task_id: str = "") -> int:
    """Print task changes as they happen (one line each, or one JSON object with -o json);
    following one task, end with its end: exit 0 if it SUCCEEDED, 1 otherwise."""
    final: pb.TaskExecution | None = None
    template = getattr(args, "template_id", "") or ""
    for ev in client.watch_tasks(task_id=task_id, template_id="" if task_id else template):  # type: ignore[attr-defined]
        if not task_id and not _matches(ev, args):
            continue
        if args.output == "table":
            print(_event_line(ev))
        elif args.output == "json":  # one object per line, for a stream
            print(json_format.MessageToJson(ev, indent=None, preserving_proto_field_name=True))
        else:
            print(output.render(ev, args.output) + "\n---")
        sys.stdout.flush()
        if task_id and (ev.deleted or ev.task.state in TERMINAL):
            final = ev.task
            break
    if not task_id:
        return 0
    return 0 if final is not None and final.state == pb.SUCCEEDED else 1


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    return watch_events(client, args, args.task_id or "")


def cmd_list_tasks(m: RpcMethod) -> Handler:
    listing = generic(m)

    def run(client: Client, args: argparse.Namespace) -> int:
        code = listing(client, args)
        if not args.watch:
            return code
        print("-- following changes (Ctrl-C to stop)", file=sys.stderr, flush=True)
        return watch_events(client, args)

    return run


def cmd_stop(client: Client, args: argparse.Namespace) -> int:
    if not args.task_id:
        raise InvalidArgument("task_id: required (give it as the first argument)")
    req = build_request(_METHODS[("task", "stop")], args)
    task = client.stop_task(req)  # type: ignore[attr-defined]
    if task.state not in TERMINAL and not args.no_wait:
        grace = units.parse_duration(args.grace_period) if args.grace_period else 10.0
        try:
            task = client.wait_task(task.task_id, timeout=grace + 15)
        except DeadlineExceeded:
            sys.stderr.write(f"task {task.task_id}: stop requested; it has not ended yet\n")
    if args.output == "table":
        print(f"{task.task_id} {pb.TaskState.Name(task.state)}")
    else:
        _print(task, args)
    return 0


def cmd_template_write(m: RpcMethod) -> Handler:
    """`template create` from a file and/or flags; `template update NAME --flag …` changes
    just the fields given (a field mask), `update -f FILE` every field the file format has
    (the pause state stays: pause and resume change it)."""
    def run(client: Client, args: argparse.Namespace) -> int:
        t, paths = _spec_from_args(args)
        if args.name:
            t.name = args.name
        if m.name == "CreateTemplate":
            if not t.name:
                raise InvalidArgument("--name: a template needs a name (in the file or --name)")
            result = client.call(m, template=t)
        else:
            ref = args.template_id or t.name
            if not ref:
                raise InvalidArgument("template_id: required (give the template's name or id as the first argument)")
            t.template_id, t.name = ref, ""
            if args.file:
                paths = [f.name for f in pb.TaskTemplate.DESCRIPTOR.fields if f.name not in (*specfile.READ_ONLY, "name")]
            elif not paths:
                raise InvalidArgument("nothing to update: give the fields to change as flags (e.g. --schedule '0 3 * * *') or the whole template with -f FILE")
            result = client.call(m, template=t, update_mask=field_mask_pb2.FieldMask(paths=paths))
        _print(result, args)
        return 0

    return run


def _template_flags(p: argparse.ArgumentParser, update: bool) -> None:
    if update:
        p.add_argument("template_id", nargs="?", metavar="TEMPLATE", help="template name or id")
    else:
        p.add_argument("--name", help="template name (unique)")
    _spec_flags(p, template=True)
    if update:
        p.set_defaults(name=None)


_METHODS: dict[tuple[str, str], RpcMethod] = {}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=str.lower, choices=["table", "json", "yaml", "id"], default="table",
                   help="table (default), json or yaml (what `-f` reads back), or id: just the ids, one per line, for scripts")
    p.add_argument("--addr", default=None, help="comma-separated master addresses (env CORRAL_ADDR, default 127.0.0.1:7070)")
    p.add_argument("--token", default=None, help="bearer token (env CORRAL_TOKEN)")


class Parser(argparse.ArgumentParser):
    """argparse with a suggestion for a misspelled command, verb or enum value."""

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            near = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1, cutoff=0.5)
            if near:
                message += f"; did you mean {near[0]!r}?"
        # one line, as kubectl and nomad do: the whole usage would bury the sentence
        self.exit(2, f"error: {message.removeprefix('argument ')} (see `{self.prog} --help`)\n")


def suggest_flags(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """`unrecognized arguments: --shedule (did you mean --schedule?)`."""
    flags = [o for a in parser._actions for o in a.option_strings]
    parts = []
    for x in extras:
        near = difflib.get_close_matches(x.split("=", 1)[0], flags, n=1, cutoff=0.6) if x.startswith("-") else []
        parts.append(f"{x} (did you mean {near[0]}?)" if near else x)
    return "unrecognized arguments: " + " ".join(parts)


def build_parser(extra: dict[str, tuple[str, Callable[[list[str]], int]]] | None = None) -> argparse.ArgumentParser:
    from corral import __version__

    top = Parser(
        prog="corral",
        description="corral: run tasks once or on a schedule on a fleet of nodes.",
        epilog="Start a local cluster with `corral dev`; then `corral submit --command 'echo hi' --wait`. "
               "Shell completion: `corral completion bash` (or zsh) prints the script to source.",
    )
    top.add_argument("--version", action="version", version=f"corral {__version__}")
    sub = top.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    for name, (help_text, _) in (extra or {}).items():
        sub.add_parser(name, help=help_text, add_help=False)
    groups: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
    for m in rpc_methods():
        group, verb = command_of(m)
        _METHODS[(group, verb)] = m
        if group not in groups:
            gp = sub.add_parser(group, help=f"{m.service} commands")
            groups[group] = gp.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=Parser)
        doc = (m.descriptor.GetOptions() and "") or ""
        p = groups[group].add_parser(verb, help=_help_for(m) or doc, description=_help_for(m))
        handler: Handler
        if (group, verb) == ("task", "submit"):
            _submit_flags(p)
            handler = cmd_submit
        elif (group, verb) in (("template", "create"), ("template", "update")):
            _template_flags(p, update=verb == "update")
            handler = cmd_template_write(m)
        elif (group, verb) == ("task", "logs"):
            _logs_flags(p)
            handler = cmd_logs
        elif (group, verb) == ("task", "watch"):
            p.add_argument("task_id", nargs="?", metavar="TASK_ID",
                           help="follow this task and exit with its end (0 if it SUCCEEDED); without it, follow all you may see")
            p.add_argument("--template-id", "--template", dest="template_id", help="only this template's tasks")
            _enum_flag(p, "--state", [v.name for v in pb.TaskState.DESCRIPTOR.values if v.number], "only changes to this state")
            p.add_argument("--node-id", "--node", dest="node_id", help="only tasks on this node")
            handler = cmd_watch
        elif (group, verb) == ("task", "list"):
            add_request_flags(p, m)
            p.add_argument("-w", "--watch", action="store_true", help="after the list, print changes as they happen (filters apply)")
            handler = cmd_list_tasks(m)
        elif (group, verb) == ("template", "next"):
            p.add_argument("template_id", nargs="?", metavar="TEMPLATE_ID", help="template id or name")
            p.add_argument("-n", "--count", type=int, default=5, help="how many instants (default 5)")
            handler = generic(m)
        elif (group, verb) == ("task", "stop"):
            add_request_flags(p, m)
            p.add_argument("--no-wait", action="store_true", help="return once the stop is recorded")
            handler = cmd_stop
        else:
            add_request_flags(p, m)
            handler = generic(m)
        _common(p)
        p.set_defaults(_handler=handler, _parser=p)
    # shortcuts
    for short, (group, verb) in {"submit": ("task", "submit"), "stop": ("task", "stop"), "logs": ("task", "logs")}.items():
        p = sub.add_parser(short, help=f"same as `corral {group} {verb}`")
        if short == "submit":
            _submit_flags(p)
            p.set_defaults(_handler=cmd_submit)
        elif short == "logs":
            _logs_flags(p)
            p.set_defaults(_handler=cmd_logs)
        else:
            add_request_flags(p, _METHODS[("task", "stop")])
            p.add_argument("--no-wait", action="store_true")
            p.set_defaults(_handler=cmd_stop)
        p.set_defaults(_parser=p)
        _common(p)
    return top


_HELP = {
    "CreateTemplate": "create a task template from a file or flags",
    "GetTemplate": "show a template (by id or name)",
    "UpdateTemplate": "replace a template's fields",
    "DeleteTemplate": "delete a template",
    "ListTemplates": "list templates",
    "SubmitTask": "submit a one-off task; prints its id",
    "StopTask": "stop a task (SIGTERM, then SIGKILL after the grace period)",
    "GetTask": "show a task, with why it is pending",
    "ListTasks": "list tasks, newest first",
    "WatchTasks": "stream task changes",
    "TaskLogs": "print a task's output",
    "RetryTask": "run a finished task again as a new attempt",
    "ListNodes": "list nodes with their allocation",
    "GetNode": "show one node",
    "CordonNode": "stop placing tasks on a node",
    "UncordonNode": "allow placing tasks on a node again",
    "DrainNode": "cordon a node and let its tasks finish",
    "DeleteNode": "forget a DOWN node with no tasks left (its host was removed); revokes its node tokens",
    "ClusterStatus": "leader, members, node and task counts",
    "PauseTemplate": "stop firing a cron template",
    "ResumeTemplate": "fire again (missed instants are skipped unless --run-missed)",
    "NextTemplateFires": "the next instants a schedule fires at, in its zone and UTC",
    "TemplateHistory": "a cron template's recent runs, counters and next fire",
    "SubmitTasks": "submit up to 1,000 tasks from a file ({tasks: [...]}); for more use `task submit --from-file`",
    "CreateUser": "create a user (--role admin|operator|user, --permission, quotas); prints its first token once",
    "ListUsers": "list users with their uids, roles, permissions and quotas",
    "UpdateUser": "grant or revoke permissions (--grant run_as_root|run_as_uid|host_network) and change quotas",
    "DeleteUser": "delete a user and revoke their tokens (their tasks stay)",
    "CreateToken": "create a bearer token (yours, as admin anyone's, or with --node-id a node's credential); the secret is printed once",
    "RevokeToken": "revoke a token by id or secret; refused from the next call on",
    "ListTokens": "list tokens (ids, owners, expiry; never secrets)",
    "ListAudit": "the audit log, newest first: who changed what, and the result",
}


def _help_for(m: RpcMethod) -> str:
    return _HELP.get(m.name, m.name)


def run(argv: list[str], extra: dict[str, tuple[str, Callable[[list[str]], int]]] | None = None) -> int:
    parser = build_parser(extra)
    try:
        import argcomplete

        argcomplete.autocomplete(parser)  # exits here when the shell asks for completions
    except ImportError:
        pass
    if argv and extra and argv[0] in extra:
        return extra[argv[0]][1](argv[1:])
    args, extras = parser.parse_known_args(argv)
    if extras:
        (getattr(args, "_parser", None) or parser).error(suggest_flags(getattr(args, "_parser", None) or parser, extras))
    if not getattr(args, "_handler", None):
        parser.print_help()
        return 2
    client = Client(args.addr, args.token)
    try:
        return args._handler(client, args)
    except Unauthenticated as e:
        hint = "" if (args.token or os.environ.get("CORRAL_TOKEN")) else \
            " (pass --token or set CORRAL_TOKEN; `corral dev` writes it to .corral-dev/env: `source .corral-dev/env`)"
        sys.stderr.write(f"error: {e}{hint}\n")
        return 1
    except CorralError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv)


