"""Scorers: each rates a feasible node for a task on one criterion, as a number in [0, 100]."""

from __future__ import annotations

from .checks import Use
from .model import Node, TaskRequest


def _used_after(capacity: int, free: int, request: int) -> float:
    if capacity <= 0:
        return 1.0
    return min(max((capacity - free + request) / capacity, 0.0), 1.0)


def score_binpack(node: Node, task: TaskRequest, use: Use) -> float:
    """Best fit: prefer the node left fullest after placement (mean of cpu and memory)."""
    cpu = _used_after(node.allocatable.cpu, use.free.cpu, task.request.cpu)
    mem = _used_after(node.allocatable.memory, use.free.memory, task.request.memory)
    return 100.0 * (cpu + mem) / 2.0


def score_spread(node: Node, task: TaskRequest, use: Use) -> float:
    """Least allocated: prefer the node left emptiest (the opposite of bin-packing)."""
    return 100.0 - score_binpack(node, task, use)


def score_anti_affinity(node: Node, task: TaskRequest, use: Use) -> float:
    """Prefer nodes running fewer tasks of the same template (100 = none there)."""
    if not task.template_id:
        return 100.0
    same = use.templates.get(task.template_id, 0)
    return 100.0 / (1 + same)
