"""The placement policy in one place: the checks in the order they run (cheap first) and the
scorers with their weights. Read this file to know how corral places a task."""

from __future__ import annotations

from collections.abc import Callable

from .checks import (
    Check,
    check_constraints,
    check_cpu,
    check_driver,
    check_memory,
    check_pids,
    check_ready,
)
from .model import Node, Resources, TaskRequest
from .scoring import score_binpack

Scorer = Callable[[Node, TaskRequest, Resources], float]

CHECKS: tuple[tuple[str, Check], ...] = (
    ("ready", check_ready),
    ("driver", check_driver),
    ("constraints", check_constraints),
    ("cpu", check_cpu),
    ("memory", check_memory),
    ("pids", check_pids),
)

SCORERS: tuple[tuple[str, Scorer, float], ...] = (("binpack", score_binpack, 1.0),)
