"""Structured logging: one event per line, `key=value` pairs, for every process of corral."""

from __future__ import annotations

import logging
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


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
