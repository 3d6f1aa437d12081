"""Template and spec files: YAML or JSON in the proto's field names, with human units.

`cpu_request: 0.5` (or `500m`, or `1` for one core), `mem_limit: 64Mi` (or bytes),
`timeout: 30s` are accepted and converted to the integer millicores, bytes and durations
the API stores; `to_human` prints them back in the same form, so the output of
`corral template get NAME -o yaml` is a file `template create -f` accepts and makes the
same template from. Fields the server owns (ids, owner, times, pause state) are ignored on
input, with a note, rather than refused: a file that came from `get` works as it is.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from corral import units
from corral.errors import InvalidArgument
from corral.v1 import types_pb2 as pb

CPU_FIELDS = {"cpu_request", "cpu_limit"}
MEM_FIELDS = {"mem_request", "mem_limit"}
DURATION_FIELDS = {"timeout", "starting_deadline"}
ALIASES = {"command": "run_script", "cpu": "cpu_request", "memory": "mem_request", "schedule": "cron_schedule"}
# Written by the server, shown by `get`: ignored in a file, with a note. `suspended` is
# changed by `template pause` / `resume`, which also settle the instants missed meanwhile.
READ_ONLY = ("template_id", "owner", "create_time", "update_time", "next_fires", "suspend_reason", "suspended")

Note = Callable[[str], None]


def _stderr_note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _human(data: dict[str, Any], source: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = ALIASES.get(key, key)
        try:
            if key in CPU_FIELDS and not isinstance(value, dict | list):
                value = units.parse_cpu(value)
            elif key in MEM_FIELDS and not isinstance(value, dict | list):
                value = units.parse_memory(value)
            elif key in DURATION_FIELDS and value is not None:
                value = f"{units.parse_duration(value):.9f}".rstrip("0").rstrip(".") + "s"
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"{source + ': ' if source else ''}{key}: {e}") from None
        out[key] = value
    return out


def to_human(desc: Any, data: Any) -> Any:
    """A message dict (proto field names) with every TaskTemplate's cpu, memory and
    durations in the units files use (`100m`, `64Mi`, `5m`), the inverse of `_human`."""
    if isinstance(data, list):
        return [to_human(desc, x) for x in data]
    if not isinstance(data, dict) or desc is None:
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        f = desc.fields_by_name.get(key)
        if f is None:
            out[key] = value
            continue
        if desc.full_name == pb.TaskTemplate.DESCRIPTOR.full_name:
            if key in CPU_FIELDS:
                value = units.format_cpu_exact(int(value))
            elif key in MEM_FIELDS:
                value = units.format_memory_exact(int(value))
            elif key in DURATION_FIELDS and isinstance(value, str):
                value = units.format_duration_exact(units.parse_duration(value))
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            value = to_human(f.message_type, value)
        out[key] = value
    return out


def _check_fields(data: dict[str, Any], desc: Any, where: str, source: str) -> dict[str, Any]:
    """The mapping with enum names in upper case; an unknown field is refused with the
    snake_case name it most likely meant, a wrong enum value with the valid ones."""
    names = [f.name for f in desc.fields]
    out: dict[str, Any] = {}
    for key, value in data.items():
        f = desc.fields_by_name.get(key) or next((x for x in desc.fields if x.json_name == key), None)
        if f is None:
            near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" (did you mean {where + near[0]!r}?)" if near else f"; fields are: {', '.join(sorted(names))}"
            raise InvalidArgument(f"{source}: unknown field {where + key!r}{hint}")
        if f.enum_type is not None and isinstance(value, str):
            valid = [v.name for v in f.enum_type.values if v.number]
            if value.upper() not in valid and value not in f.enum_type.values_by_name:
                raise InvalidArgument(f"{source}: {where}{f.name}: {value!r} is not one of {', '.join(valid)}")
            value = value.upper() if value.upper() in valid else value
        elif f.message_type is not None and not f.message_type.GetOptions().map_entry \
                and not f.message_type.full_name.startswith("google.protobuf"):
            if f.is_repeated and isinstance(value, list):
                value = [_check_fields(x, f.message_type, f"{where}{f.name}.", source) if isinstance(x, dict) else x for x in value]
            elif isinstance(value, dict):
                value = _check_fields(value, f.message_type, f"{where}{f.name}.", source)
        out[key] = value
    return out


def template_from_dict(data: dict[str, Any], source: str = "file", note: Note = _stderr_note) -> pb.TaskTemplate:
    data = _check_fields({ALIASES.get(k, k): v for k, v in data.items()}, pb.TaskTemplate.DESCRIPTOR, "", source)
    ignored = [k for k in READ_ONLY if k in data]
    if ignored:
        note(f"{source}: ignored read-only field{'s' if len(ignored) > 1 else ''} {', '.join(ignored)}"
             + (" (`corral template pause`/`resume` change suspended)" if "suspended" in ignored else ""))
        data = {k: v for k, v in data.items() if k not in READ_ONLY}
    try:
        return json_format.ParseDict(_human(data, source), pb.TaskTemplate(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise InvalidArgument(f"{source}: {e}") from None


def parse_template(text: str, source: str = "file", note: Note = _stderr_note) -> pb.TaskTemplate:
    try:
        # JSON by its own parser where it is JSON: YAML reads "\ud83d\ude00" as two lone surrogates
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{source}: not valid JSON: {e.msg} (line {e.lineno})") from None
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{source}: not valid YAML or JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{source}: expected a mapping of template fields")
    if "template" in data and isinstance(data["template"], dict):
        data = data["template"]
    return template_from_dict(data, source, note)


REQUEST_FIELDS = {"spec", "template_id", "run_at", "idempotency_key", "name"}


def parse_request_line(line: str, source: str) -> Any:
    """One line of a tasks.jsonl file: a SubmitTaskRequest ({"spec": {...}, "run_at": ...})
    or, when it has none of the request's fields, a bare spec. Human units as in -f."""
    from corral.v1 import api_pb2

    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{source}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{source}: expected a JSON object")
    if not REQUEST_FIELDS & data.keys():
        data = {"spec": data}
    if isinstance(data.get("spec"), dict):
        spec = _check_fields({ALIASES.get(k, k): v for k, v in data["spec"].items()}, pb.TaskTemplate.DESCRIPTOR, "spec.", source)
        data = {**data, "spec": _human(spec, source)}
    try:
        return json_format.ParseDict(data, api_pb2.SubmitTaskRequest(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise InvalidArgument(f"{source}: {e}") from None


def load_template(path: str, note: Note = _stderr_note) -> pb.TaskTemplate:
    try:
        text = Path(path).read_text() if path != "-" else sys.stdin.read()
    except OSError as e:
        raise InvalidArgument(f"-f: cannot read {path}: {e.strerror}") from None
    return parse_template(text, path, note)
