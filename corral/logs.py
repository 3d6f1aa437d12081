"""Structured logging: one event per line, for every process of corral — `key=value` pairs
(logfmt, the default) or one JSON object (`--log-format json`, for log pipelines)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def quote(value: object) -> str:
    """A logfmt value: bare if it is a simple word, else double-quoted with escapes."""
    text = str(value).replace("\n", " ")
    if text and all(c.isalnum() or c in "-_.:/@+" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_line(created: float, level: str, logger: str, msg: str, fields: dict[str, object] | None = None) -> str:
    """One log line: `ts=… level=… logger=… msg=…` then the structured fields."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    line = f"ts={ts}.{int(created * 1000) % 1000:03d}Z level={level} logger={logger} msg={quote(msg)}"
    for k, v in (fields or {}).items():
        line += f" {k}={quote(v)}"
    return line


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # structured fields: log.info("...", extra={"fields": {"who": "alice", ...}})
        line = format_line(record.created, record.levelname.lower(), record.name, record.getMessage(), getattr(record, "fields", None))
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info).replace("\n", " | "))
        return line


def format_json(created: float, level: str, logger: str, msg: str, fields: dict[str, object] | None = None) -> str:
    """One log line as a JSON object: ts, level, logger, msg, then the structured fields."""
    event: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z",
        "level": level, "logger": logger, "msg": msg,
    }
    for k, v in (fields or {}).items():
        event.setdefault(k, v if isinstance(v, (int, float, bool)) or v is None else str(v))
    return json.dumps(event, ensure_ascii=False)


_format = "logfmt"  # set by setup()


def format_event(created: float, level: str, logger: str, msg: str, fields: dict[str, object] | None = None) -> str:
    """One line in the process's chosen format, for code that writes its own lines (the
    audit log batches them)."""
    return (format_json if _format == "json" else format_line)(created, level, logger, msg, fields)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return format_json(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


FORMATS = ("logfmt", "json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--log-level and --log-format, for the long-running members."""
    p.add_argument("--log-level", default=os.environ.get("CORRAL_LOG_LEVEL", "info"), help="debug, info, warning or error (default info)")
    p.add_argument("--log-format", default=os.environ.get("CORRAL_LOG_FORMAT", "logfmt"), choices=FORMATS,
                   help="logfmt (key=value, the default) or json (one object per line)")


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    global _format
    _format = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
