"""Parsing and printing of the human units users type: cpu, memory sizes, durations, times.

cpu is stored in millicores (`0.5`, `500m`, `2` → 500, 500, 2000); memory in bytes (`64Mi`,
`1G`, `1048576`); durations in seconds (`30s`, `5m`, `1h30m`, `1.5`).
"""

from __future__ import annotations

import datetime as dt
import re

_MEM_SUFFIX = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_DUR_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_cpu(text: str | int | float) -> int:
    """Millicores from `0.5`, `500m` or `2` (cores unless the `m` suffix says millicores).
    Raises ValueError with an example on anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a cpu amount: {text!r} (try 0.5, 500m or 2)")
    if isinstance(text, int | float):
        return round(float(text) * 1000)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(m?)\s*", text)
    if not m:
        raise ValueError(f"not a cpu amount: {text!r} (try 0.5, 500m or 2)")
    if m.group(2):
        return round(float(m.group(1)))
    return round(float(m.group(1)) * 1000)


def parse_memory(text: str | int | float) -> int:
    """Bytes from `64Mi`, `1G`, `512k` or a plain number of bytes."""
    if isinstance(text, bool):
        raise ValueError(f"not a memory size: {text!r} (try 64Mi, 1G or a number of bytes)")
    if isinstance(text, int | float):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _MEM_SUFFIX:
        raise ValueError(f"not a memory size: {text!r} (try 64Mi, 1G or a number of bytes)")
    return int(float(m.group(1)) * _MEM_SUFFIX[m.group(2).lower()])


def parse_duration(text: str | int | float) -> float:
    """Seconds from `30s`, `5m`, `1h30m`, `250ms` or a plain number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = text.strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ms|s|m|h|d)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"not a duration: {text!r} (try 30s, 5m or 1h30m)")
    return sum(float(n) * _DUR_UNIT[u] for n, u in parts)


def parse_time(text: str) -> dt.datetime:
    """An aware UTC datetime from RFC 3339 (`2026-01-02T03:04:05Z`, offsets allowed)."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r} (try 2026-01-02T15:04:05Z)") from None
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone offset (add Z for UTC)")
    return value.astimezone(dt.UTC)


def format_memory(n: int) -> str:
    """Bytes as a short binary size: 67108864 → 64Mi."""
    for unit, size in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size:
            v = n / size
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return f"{n}B"


def format_cpu(millis: int) -> str:
    """Millicores as cores: 500 → 0.5, 2000 → 2."""
    v = millis / 1000
    return f"{v:g}"


def format_cpu_exact(millis: int) -> str:
    """Millicores in the form `parse_cpu` reads back to the same number: whole cores as
    `2`, anything else as `500m` (no float rounding on the way back)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory_exact(n: int) -> str:
    """Bytes in the largest binary unit that divides them (`64Mi`), else plain bytes, so
    `parse_memory` reads back the same number."""
    for unit, size in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def format_duration_exact(seconds: float) -> str:
    """Seconds as `1h30m`, `45s` or `1.5s`, which `parse_duration` reads back exactly."""
    if seconds != int(seconds) or seconds < 60:
        return f"{seconds:g}s"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.3g}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
