"""Pure placement: feasibility checks, scoring and a plan. No I/O, clocks or threads."""

from .model import (
    Constraint,
    Node,
    PlaceConfig,
    Placement,
    Plan,
    Resources,
    Snapshot,
    TaskRequest,
    Unplaced,
)
from .place import explain, place

__all__ = [
    "Constraint",
    "Node",
    "PlaceConfig",
    "Placement",
    "Plan",
    "Resources",
    "Snapshot",
    "TaskRequest",
    "Unplaced",
    "explain",
    "place",
]
