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


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} msg={quote(record.getMessage())}"
        # structured fields: log.info("...", extra={"fields": {"who": "alice", ...}})
        for k, v in (getattr(record, "fields", None) or {}).items():
            line += f" {k}={quote(v)}"
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
