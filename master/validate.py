"""Input validation: every rule names the field it checks and says why (INVALID_ARGUMENT)."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from croniter import croniter

from corral.errors import InvalidArgument
from corral.v1 import types_pb2 as pb

from . import cron

MAX_SCRIPT = 100 * 1024
MAX_SKIP_RECORDS = 100_000
MAX_CPU = 1024 * 1000            # 1,024 cores in millicores
MAX_MEMORY = 16 * 1024**4        # 16 TiB
MAX_PIDS = 1 << 22
MAX_TIMEOUT = 366 * 86400
MAX_ENV = 256
MAX_ENV_BYTES = 32 * 1024
MAX_LABELS = 64
MAX_ARGS = 1024
MAX_CONSTRAINTS = 64
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
DEFAULT_CPU = 100                # 0.1 core
DEFAULT_MEMORY = 64 * 1024**2    # 64 MiB
DEFAULT_PIDS = 512
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
CONSTRAINT_OPS = {"=", "!=", "in", "not_in", "exists"}


def _bad(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {why}")


def check_id(field: str, value: str) -> None:
    if not value:
        raise _bad(field, "must not be empty")
    if not ID_RE.match(value):
        raise _bad(field, f"{value[:80]!r} is not a valid id (letters, digits, _.@:- ; at most 128)")


def check_name(field: str, value: str) -> None:
    if not NAME_RE.match(value):
        raise _bad(field, f"{value[:80]!r} is not a valid name (letters, digits, _.- ; at most 63, starting with a letter or digit)")


def check_schedule(spec: pb.TaskTemplate) -> None:
    if spec.cron_schedule:
        if len(spec.cron_schedule) > 256 or not croniter.is_valid(spec.cron_schedule):
            raise _bad("cron_schedule", f"{spec.cron_schedule[:80]!r} is not a valid cron expression (five fields, or six with seconds last, or @hourly/@daily/...)")
    if spec.time_zone:
        try:
            zoneinfo.ZoneInfo(spec.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _bad("time_zone", f"{spec.time_zone[:80]!r} is not a known IANA time zone (e.g. Europe/Berlin)") from None
    if spec.cron_schedule:
        sched = cron.Schedule(spec.cron_schedule, spec.time_zone)
        if not sched.next_after(dt.datetime.now(dt.UTC), 1):
            raise _bad("cron_schedule", f"{spec.cron_schedule[:80]!r} never fires within the next {cron.HORIZON_YEARS} years "
                       "(a date that does not exist, such as February 30th?); corral accepts schedules that fire at least that often")


def check_run_spec(spec: pb.TaskTemplate, field: str = "spec") -> None:
    """Rules for what a task runs and with what; defaults are applied by `apply_defaults`."""
    f = field + "."
    if spec.driver == pb.DOCKER:
        if not spec.image:
            raise _bad(f + "image", "required for the docker driver")
    elif spec.driver not in (pb.DRIVER_UNSPECIFIED, pb.PROCESS):
        raise _bad(f + "driver", f"unknown driver {spec.driver}")
    if not spec.run_script.strip() and not (spec.driver == pb.DOCKER and spec.args):
        raise _bad(f + "run_script", "the command must not be empty")
    if len(spec.run_script.encode()) > MAX_SCRIPT:
        raise _bad(f + "run_script", f"is {len(spec.run_script.encode())} bytes; at most {MAX_SCRIPT} (100 kB)")
    if "\x00" in spec.run_script:
        raise _bad(f + "run_script", "must not contain NUL bytes")
    for name, value, limit in (
        ("cpu_request", spec.cpu_request, MAX_CPU),
        ("cpu_limit", spec.cpu_limit, MAX_CPU),
        ("mem_request", spec.mem_request, MAX_MEMORY),
        ("mem_limit", spec.mem_limit, MAX_MEMORY),
        ("pids_limit", spec.pids_limit, MAX_PIDS),
    ):
        if value < 0:
            raise _bad(f + name, f"must be positive, got {value}")
        if value > limit:
            raise _bad(f + name, f"{value} is beyond the largest allowed ({limit})")
    if spec.cpu_request and spec.cpu_limit and spec.cpu_limit < spec.cpu_request:
        raise _bad(f + "cpu_limit", "must not be below cpu_request")
    if spec.mem_request and spec.mem_limit and spec.mem_limit < spec.mem_request:
        raise _bad(f + "mem_limit", "must not be below mem_request")
    if 0 < (spec.mem_limit or spec.mem_request) < 4 * 1024**2:
        raise _bad(f + "mem_request", "at least 4Mi is needed to start a task")
    t = spec.timeout.seconds + spec.timeout.nanos / 1e9
    if t < 0 or t > MAX_TIMEOUT:
        raise _bad(f + "timeout", f"must be between 0 and {MAX_TIMEOUT} seconds")
    d = spec.starting_deadline.seconds + spec.starting_deadline.nanos / 1e9
    if d < 0 or d > MAX_TIMEOUT:
        raise _bad(f + "starting_deadline", f"must be between 0 and {MAX_TIMEOUT} seconds")
    if spec.ordering_key and not ID_RE.match(spec.ordering_key):
        raise _bad(f + "ordering_key", f"{spec.ordering_key[:80]!r} is not a valid key (letters, digits, _.@:- ; at most 128)")
    if len(spec.env) > MAX_ENV:
        raise _bad(f + "env", f"at most {MAX_ENV} variables")
    if sum(len(k) + len(v) for k, v in spec.env.items()) > MAX_ENV_BYTES:
        raise _bad(f + "env", f"at most {MAX_ENV_BYTES} bytes in all")
    for k, v in spec.env.items():
        if not ENV_NAME_RE.match(k):
            raise _bad(f + "env", f"{k[:60]!r} is not a valid variable name")
        if "\x00" in v:
            raise _bad(f + "env", f"the value of {k} must not contain NUL bytes")
    for name in spec.secret_env:
        if name not in spec.env:
            raise _bad(f + "secret_env", f"{name[:60]!r} is not in env; list the names of env entries whose values are secret")
    if len(spec.labels) > MAX_LABELS:
        raise _bad(f + "labels", f"at most {MAX_LABELS} labels")
    for k, v in spec.labels.items():
        if not k or len(k) > 63 or len(v) > 256:
            raise _bad(f + "labels", f"{k[:60]!r}: keys 1-63 characters, values at most 256")
    if len(spec.args) > MAX_ARGS or sum(len(a) for a in spec.args) > MAX_SCRIPT:
        raise _bad(f + "args", f"at most {MAX_ARGS} arguments and {MAX_SCRIPT} bytes in all")
    if any("\x00" in a for a in spec.args):
        raise _bad(f + "args", "must not contain NUL bytes")
    for name, value, limit in (("image", spec.image, 512), ("working_dir", spec.working_dir, 4096)):
        if len(value) > limit:
            raise _bad(f + name, f"at most {limit} characters")
    if spec.network not in ("", "none", "host", "bridge"):
        raise _bad(f + "network", f"{spec.network[:40]!r}: use none (the default), host, or bridge (docker only)")
    if spec.network == "bridge" and spec.driver != pb.DOCKER:
        raise _bad(f + "network", "bridge needs the docker driver; a process task has none (its own empty network) or host")
    if len(spec.constraints) > MAX_CONSTRAINTS or any(len(c.values) > 256 for c in spec.constraints):
        raise _bad(f + "constraints", f"at most {MAX_CONSTRAINTS} constraints of at most 256 values each")
    if spec.user not in ("", "root", "nobody") and not re.match(r"^[0-9]{1,9}$", spec.user):
        raise _bad(f + "user", f"{spec.user[:40]!r}: use root, nobody or a numeric uid")
    if not 0 <= spec.priority <= 100:
        raise _bad(f + "priority", "must be between 0 and 100")
    for c in spec.constraints:
        if c.op not in CONSTRAINT_OPS:
            raise _bad(f + "constraints", f"op {c.op[:20]!r} is not one of {sorted(CONSTRAINT_OPS)}")
        if not c.key:
            raise _bad(f + "constraints", "key must not be empty")
    if spec.on_disconnect not in ("", "kill", "keep"):
        raise _bad(f + "on_disconnect", f"{spec.on_disconnect[:40]!r}: use kill (the default) or keep")
    if spec.on_lost not in ("", "retry", "end"):
        raise _bad(f + "on_lost", f"{spec.on_lost[:40]!r}: use retry (the default) or end")
    if not 0 <= spec.max_skip_records <= MAX_SKIP_RECORDS:
        raise _bad(f + "max_skip_records", f"{spec.max_skip_records}: from 0 (the default, 1000) to {MAX_SKIP_RECORDS}")
    if spec.placement not in ("", "binpack", "spread"):
        raise _bad(f + "placement", f"{spec.placement[:40]!r}: use binpack or spread")
    if spec.gang and not 2 <= spec.gang_size <= 10_000:
        raise _bad(f + "gang_size", "a gang needs between 2 and 10000 tasks")
    if len(spec.gang) > 128:
        raise _bad(f + "gang", "at most 128 characters")
    if spec.retry.max_attempts < 0 or spec.retry.max_attempts > 100:
        raise _bad(f + "retry.max_attempts", "must be between 0 and 100")
    check_schedule(spec)


def apply_defaults(spec: pb.TaskTemplate) -> None:
    if spec.driver == pb.DRIVER_UNSPECIFIED:
        spec.driver = pb.PROCESS
    if not spec.cpu_request:
        spec.cpu_request = spec.cpu_limit or DEFAULT_CPU
    if not spec.cpu_limit:
        spec.cpu_limit = spec.cpu_request
    if not spec.mem_request:
        spec.mem_request = spec.mem_limit or DEFAULT_MEMORY
    if not spec.mem_limit:
        spec.mem_limit = spec.mem_request
    if not spec.pids_limit:
        spec.pids_limit = DEFAULT_PIDS


def merge_spec(base: pb.TaskTemplate, override: pb.TaskTemplate) -> pb.TaskTemplate:
    """The template's spec with every field the override sets replaced (maps merged)."""
    out = pb.TaskTemplate()
    out.CopyFrom(base)
    for fd, value in override.ListFields():
        if fd.name in ("template_id", "name", "owner", "create_time", "update_time"):
            continue
        if fd.name == "secret_env":  # a secret stays secret whatever the override says
            out.secret_env.extend(n for n in value if n not in out.secret_env)
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(out, fd.name).update(value)
        elif fd.is_repeated:
            field = getattr(out, fd.name)
            del field[:]
            field.extend(value)
        elif fd.message_type is not None:
            getattr(out, fd.name).CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out
