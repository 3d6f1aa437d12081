"""The placement policy in one place: the checks in the order they run (cheap and static
first) and the scorers with their weights per strategy. Read this file to know how corral
places a task."""

from __future__ import annotations

from collections.abc import Callable

from .checks import (
    Check,
    Use,
    check_constraints,
    check_cpu,
    check_distinct,
    check_driver,
    check_memory,
    check_pids,
    check_ready,
    check_starts,
)
from .model import Node, TaskRequest
from .scoring import score_anti_affinity, score_binpack, score_spread

Scorer = Callable[[Node, TaskRequest, Use], float]

# static: depend on the node and the task only; a pass remembers them per equivalence class
STATIC_CHECKS: tuple[tuple[str, Check], ...] = (
    ("ready", check_ready),
    ("driver", check_driver),
    ("constraints", check_constraints),
)
# dynamic: depend on what earlier placements of the pass used
DYNAMIC_CHECKS: tuple[tuple[str, Check], ...] = (
    ("distinct", check_distinct),
    ("memory", check_memory),
    ("cpu", check_cpu),
    ("pids", check_pids),
    ("starts", check_starts),
)
CHECKS = STATIC_CHECKS + DYNAMIC_CHECKS

SCORERS: dict[str, tuple[tuple[str, Scorer, float], ...]] = {
    "binpack": (("binpack", score_binpack, 1.0), ("anti_affinity", score_anti_affinity, 0.1)),
    "spread": (("spread", score_spread, 1.0), ("anti_affinity", score_anti_affinity, 0.5)),
}
