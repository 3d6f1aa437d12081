"""Scorers: each rates a feasible node for a task on one criterion, as a number in [0, 100]."""

from __future__ import annotations

from .model import Node, Resources, TaskRequest


def _fraction_used_after(capacity: int, free: int, request: int) -> float:
    if capacity <= 0:
        return 1.0
    used = capacity - free + request
    return min(max(used / capacity, 0.0), 1.0)


def score_binpack(node: Node, task: TaskRequest, free: Resources) -> float:
    """Best fit: prefer the node left fullest after placement (mean of cpu and memory)."""
    cpu = _fraction_used_after(node.allocatable.cpu, free.cpu, task.request.cpu)
    mem = _fraction_used_after(node.allocatable.memory, free.memory, task.request.memory)
    return 100.0 * (cpu + mem) / 2.0
