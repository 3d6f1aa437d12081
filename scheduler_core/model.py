"""Immutable inputs and outputs of placement. No I/O, no proto types: plain data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Resources:
    """cpu in millicores, memory in bytes, pids as a count."""

    cpu: int = 0
    memory: int = 0
    pids: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.pids + other.pids)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.pids - other.pids)


@dataclass(frozen=True, slots=True)
class Constraint:
    """A rule on node labels; op is one of =, !=, in, not_in, exists."""

    key: str
    op: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    allocatable: Resources
    allocated: Resources = Resources()
    ready: bool = True
    schedulable: bool = True  # False when cordoned or draining
    drivers: frozenset[str] = frozenset({"process"})
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def free(self) -> Resources:
        return self.allocatable - self.allocated

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class TaskRequest:
    task_id: str
    request: Resources
    driver: str = "process"
    constraints: tuple[Constraint, ...] = ()
    priority: int = 0
    template_id: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class PlaceConfig:
    """Knobs of the pipeline. Weights live in pipeline.SCORERS."""

    max_placements: int = 10_000


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    node_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A task that fits nowhere, with per-check rejection counts and one readable sentence."""

    task_id: str
    rejections: tuple[tuple[str, int], ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    placements: tuple[Placement, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()
    rejections: dict[str, int] = field(default_factory=dict)
