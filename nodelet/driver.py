"""The one interface every task driver implements, and the records it deals in.

A start returns a `Handle` that carries enough (pid, cgroup, paths, deadline) to re-attach
after the nodelet restarts; `recover` does that instead of starting twice. `wait` resolves
to an `Outcome` once the task has ended and its resources are cleaned up.
"""

from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from corral.v1 import types_pb2 as pb


@dataclass
class Handle:
    task_id: str
    attempt: int
    driver: str
    dir: str
    start_time: float
    deadline: float = 0.0          # absolute unix time; 0 = no timeout
    pid: int = 0
    cgroup: str = ""
    cgroup_version: str = ""
    container_id: str = ""
    stop_state: int = 0            # set when we kill it on purpose: STOPPED, TIMED_OUT or LOST
    stop_reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task_id}#{self.attempt}"

    def save(self) -> None:
        path = Path(self.dir) / "handle.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> Handle:
        return cls(**json.loads((directory / "handle.json").read_text()))


@dataclass
class Outcome:
    state: int               # a terminal pb.TaskState
    exit_code: int
    reason: str
    finish_time: float

    def save(self, directory: Path) -> None:
        tmp = directory / "outcome.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(directory / "outcome.json")

    @classmethod
    def load(cls, directory: Path) -> Outcome | None:
        try:
            return cls(**json.loads((directory / "outcome.json").read_text()))
        except (OSError, ValueError):
            return None


def classify(handle: Handle, code: int, oom: bool, finished: float) -> Outcome:
    """The one mapping of how a task ended to its terminal state, for every driver:
    our own kill (stop, timeout, stale copy) first, then OOM, then the exit code."""
    if handle.stop_state:
        return Outcome(handle.stop_state, code, handle.stop_reason, finished)
    if oom:
        return Outcome(pb.OOM_KILLED, code, "out of memory: killed at its memory limit", finished)
    if code == 0:
        return Outcome(pb.SUCCEEDED, 0, "", finished)
    if code == -1:
        return Outcome(pb.FAILED, -1, "the task ended without an exit code (killed)", finished)
    if code > 128:
        sig = code - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return Outcome(pb.FAILED, code, f"killed by {name}", finished)
    return Outcome(pb.FAILED, code, f"exit code {code}", finished)


class DriverError(Exception):
    """A task could not be started; the message says why (it becomes the task's reason)."""


class Driver(Protocol):
    name: str
    cluster_id: str  # set by the nodelet; "" until it knows (see Registered.cluster_id)

    def fingerprint(self) -> tuple[bool, str]:
        """(healthy, reason when not)."""
        ...

    async def start(self, task: pb.TaskExecution, directory: Path) -> Handle: ...

    async def recover(self, handle: Handle) -> bool:
        """Re-attach to a task started by an earlier nodelet process; False if it is gone."""
        ...

    async def wait(self, handle: Handle) -> Outcome: ...

    async def signal_stop(self, handle: Handle) -> None:
        """Ask the task to end (SIGTERM or the driver's equivalent)."""
        ...

    async def kill(self, handle: Handle) -> None:
        """End the task now (SIGKILL)."""
        ...

    def usage(self, handle: Handle) -> tuple[int, int]:
        """(cpu nanoseconds used so far, memory bytes now)."""
        ...


@runtime_checkable
class PreparingDriver(Protocol):
    """A driver that can do a start's slow part ahead of a task's due time, so only the
    launch happens at the instant."""

    async def prepare(self, task: pb.TaskExecution, directory: Path) -> Any: ...

    def release(self, prepared: Any) -> None:
        """Start the prepared task now; synchronous and cheap (called at the instant)."""
        ...

    async def launch(self, prepared: Any) -> Handle:
        """Track a prepared task, releasing it first if release() was not called."""
        ...

    async def abandon(self, prepared: Any) -> None:
        """Undo a prepare whose task will not launch."""
        ...
