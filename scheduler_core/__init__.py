"""Pure placement: feasibility checks, scoring and a plan. No I/O, clocks or threads."""

from .model import (
    Constraint,
    Node,
    PlaceConfig,
    Placement,
    Plan,
    Preemption,
    Resources,
    Running,
    Snapshot,
    TaskRequest,
    Unplaced,
)
from .place import Placer, explain, place, queue_order

__all__ = [
    "Constraint",
    "Node",
    "PlaceConfig",
    "Placement",
    "Placer",
    "Plan",
    "Preemption",
    "Resources",
    "Running",
    "Snapshot",
    "TaskRequest",
    "Unplaced",
    "explain",
    "place",
    "queue_order",
]
