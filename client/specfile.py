"""Template and spec files: YAML or JSON in the proto's field names, with human units.

`cpu_request: 0.5`, `mem_limit: 64Mi`, `timeout: 30s` are accepted and converted to the
integer millicores, bytes and durations the API stores.
"""

from __future__ import annotations

import json
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


def _human(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = ALIASES.get(key, key)
        try:
            if key in CPU_FIELDS and isinstance(value, str | float):
                value = units.parse_cpu(value)
            elif key in MEM_FIELDS and isinstance(value, str | float):
                value = units.parse_memory(value)
            elif key in DURATION_FIELDS and not (isinstance(value, str) and value.endswith("s") and value[:-1].replace(".", "").isdigit()):
                value = f"{units.parse_duration(value)}s"
        except ValueError as e:
            raise InvalidArgument(f"{key}: {e}") from None
        out[key] = value
    return out


def parse_template(text: str, source: str = "file") -> pb.TaskTemplate:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{source}: not valid YAML or JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{source}: expected a mapping of template fields")
    if "template" in data and isinstance(data["template"], dict):
        data = data["template"]
    try:
        return json_format.ParseDict(_human(data), pb.TaskTemplate(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise InvalidArgument(f"{source}: {e}") from None


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
        data = {**data, "spec": _human(data["spec"])}
    try:
        return json_format.ParseDict(data, api_pb2.SubmitTaskRequest(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise InvalidArgument(f"{source}: {e}") from None


def load_template(path: str) -> pb.TaskTemplate:
    try:
        text = Path(path).read_text() if path != "-" else __import__("sys").stdin.read()
    except OSError as e:
        raise InvalidArgument(f"-f: cannot read {path}: {e.strerror}") from None
    return parse_template(text, path)
