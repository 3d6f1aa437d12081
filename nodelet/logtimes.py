"""When each part of a task's output was written: `output.times` beside `output.log`, one
`<byte offset> <unix time>` line per write (a write is what one read of the task's pipe
or the container's log stream returned, at most 64 KiB). It lets `corral logs
--timestamps` and `--since` say when a line was written without changing the output itself.
Cheap: a task printing a line a second adds one short line a second; nothing is indexed
past the log's cap."""

from __future__ import annotations

from pathlib import Path

SUFFIX = ".times"


def path_for(log: str | Path) -> Path:
    return Path(log).with_suffix(SUFFIX)


def line(offset: int, when: float) -> bytes:
    return f"{offset} {when:.6f}\n".encode()


def read(log: str | Path, start: int, end: int) -> list[tuple[int, float]]:
    """The marks for output bytes [start, end): every write that began inside, and the last
    one before `start` (the time of the line `start` is in). None if no index exists."""
    try:
        text = path_for(log).read_bytes().decode("ascii", "replace")
    except OSError:
        return []
    before: tuple[int, float] | None = None
    out: list[tuple[int, float]] = []
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) != 2:
            continue  # cut short by a kill
        try:
            off, when = int(parts[0]), float(parts[1])
        except ValueError:
            continue
        if off < start:
            before = (off, when)
        elif off < end:
            out.append((off, when))
    return ([before] if before else []) + out

