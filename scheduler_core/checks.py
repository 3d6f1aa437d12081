"""Feasibility checks: each looks at one concern and returns None (fits) or a short reason.

A check gets the node as it would be with this pass's earlier placements (the "proposed"
overlay), never mutates it, and never looks at anything else.
"""

from __future__ import annotations

from collections.abc import Callable

from .model import Node, Resources, TaskRequest

Check = Callable[[Node, TaskRequest, Resources], str | None]


def check_ready(node: Node, task: TaskRequest, free: Resources) -> str | None:
    if not node.ready:
        return "node not ready"
    if not node.schedulable:
        return "node cordoned or draining"
    return None


def check_driver(node: Node, task: TaskRequest, free: Resources) -> str | None:
    if task.driver not in node.drivers:
        return f"driver {task.driver} not available"
    return None


def check_cpu(node: Node, task: TaskRequest, free: Resources) -> str | None:
    if task.request.cpu > free.cpu:
        return "cpu exhausted"
    return None


def check_memory(node: Node, task: TaskRequest, free: Resources) -> str | None:
    if task.request.memory > free.memory:
        return "memory exhausted"
    return None


def check_pids(node: Node, task: TaskRequest, free: Resources) -> str | None:
    if task.request.pids > free.pids:
        return "pids exhausted"
    return None


def check_constraints(node: Node, task: TaskRequest, free: Resources) -> str | None:
    for c in task.constraints:
        value = node.label(c.key)
        ok: bool
        if c.op == "=":
            ok = value is not None and value == (c.values[0] if c.values else "")
        elif c.op == "!=":
            ok = value != (c.values[0] if c.values else "")
        elif c.op == "in":
            ok = value is not None and value in c.values
        elif c.op == "not_in":
            ok = value not in c.values
        elif c.op == "exists":
            ok = value is not None
        else:
            ok = False
        if not ok:
            shown = ",".join(c.values)
            return f"constraint {c.key} {c.op} {shown}".rstrip() + " not met"
    return None


__all__ = [
    "Check",
    "check_constraints",
    "check_cpu",
    "check_driver",
    "check_memory",
    "check_pids",
    "check_ready",
]
