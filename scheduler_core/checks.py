"""Feasibility checks: each looks at one concern and returns None (fits) or a short reason.

A check gets the node, the task and the node's `Use` in this pass (free resources and task
counts per template, including earlier placements of the pass); it never mutates them.
Checks marked static depend only on the node and the task, so a pass can remember their
verdict per equivalence class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .model import Node, Resources, TaskRequest


@dataclass(slots=True)
class Use:
    """A node as this pass sees it: what is free and how many tasks of each template."""

    free: Resources
    templates: dict[str, int] = field(default_factory=dict)
    starts: int = -1  # start room left in this pass (Node.start_room); -1: no limit


Check = Callable[[Node, TaskRequest, Use], str | None]


def use_of(node: Node) -> Use:
    counts: dict[str, int] = {}
    for r in node.running:
        if r.template_id:
            counts[r.template_id] = counts.get(r.template_id, 0) + 1
    return Use(node.free, counts, node.start_room)


def check_ready(node: Node, task: TaskRequest, use: Use) -> str | None:
    if not node.ready:
        return "node not ready"
    if not node.schedulable:
        return "node cordoned or draining"
    return None


def check_driver(node: Node, task: TaskRequest, use: Use) -> str | None:
    if task.driver not in node.drivers:
        return f"driver {task.driver} not available"
    return None


def check_constraints(node: Node, task: TaskRequest, use: Use) -> str | None:
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


def check_distinct(node: Node, task: TaskRequest, use: Use) -> str | None:
    if task.distinct_nodes and task.template_id and use.templates.get(task.template_id, 0) > 0:
        return f"already runs a task of template {task.template_id}"
    return None


def check_cpu(node: Node, task: TaskRequest, use: Use) -> str | None:
    if task.request.cpu > use.free.cpu:
        return "cpu exhausted"
    return None


def check_memory(node: Node, task: TaskRequest, use: Use) -> str | None:
    if task.request.memory > use.free.memory:
        return "memory exhausted"
    return None


def check_pids(node: Node, task: TaskRequest, use: Use) -> str | None:
    if task.request.pids > use.free.pids:
        return "pids exhausted"
    return None


def check_starts(node: Node, task: TaskRequest, use: Use) -> str | None:
    if use.starts == 0 and not task.scheduled:
        return "node busy starting tasks (at its measured prepare rate)"
    return None


__all__ = [
    "Check",
    "Use",
    "check_constraints",
    "check_cpu",
    "check_distinct",
    "check_driver",
    "check_memory",
    "check_pids",
    "check_ready",
    "check_starts",
    "use_of",
]
