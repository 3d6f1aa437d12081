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

    def fits_in(self, other: Resources) -> bool:
        return self.cpu <= other.cpu and self.memory <= other.memory and self.pids <= other.pids


@dataclass(frozen=True, slots=True)
class Constraint:
    """A rule on node labels; op is one of =, !=, in, not_in, exists."""

    key: str
    op: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Running:
    """A task already on a node: what preemption may evict and anti-affinity counts."""

    task_id: str
    request: Resources
    priority: int = 0
    template_id: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    allocatable: Resources
    allocated: Resources = Resources()
    ready: bool = True
    schedulable: bool = True  # False when cordoned or draining
    drivers: frozenset[str] = frozenset({"process"})
    labels: tuple[tuple[str, str], ...] = ()
    running: tuple[Running, ...] = ()
    # starts the node can still take now (its measured prepare rate over a short horizon,
    # less the starts it has not begun); -1: no limit known. Only work to run as soon as
    # possible counts: a run due later goes to the node's deadline-first queue ahead of it.
    start_room: int = -1

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
    priority: int = 0           # 0-100; higher goes first and may preempt lower
    template_id: str = ""
    user_id: str = ""           # fair share is between users
    distinct_nodes: bool = False  # never two tasks of this template on one node
    gang: str = ""              # tasks sharing a gang id are placed all or none
    strategy: str = ""          # "binpack" or "spread"; "" = the pass's PlaceConfig.strategy
    scheduled: bool = False     # due later than now (sent ahead of its instant): not held by a node's start room

    def class_key(self) -> tuple[object, ...]:
        """Tasks with equal keys are interchangeable for feasibility (equivalence class)."""
        return (self.request, self.driver, self.constraints, self.template_id if self.distinct_nodes else "", self.strategy, self.scheduled)


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class PlaceConfig:
    """Knobs of one pass. Check order and scorer weights live in pipeline.py."""

    max_placements: int = 100_000
    strategy: str = "binpack"        # or "spread"
    exhaustive_below: int = 200      # clusters this small are searched node by node
    candidates: int = 0              # feasible nodes to score beyond that; 0 = max(2, log2 n)
    preempt: bool = True
    user_weights: tuple[tuple[str, float], ...] = ()  # fair-share weights (default 1)


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    node_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Preemption:
    """`victims` on `node_id` are evicted so that `for_task` fits there."""

    node_id: str
    for_task: str
    victims: tuple[str, ...]


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
    preemptions: tuple[Preemption, ...] = ()
