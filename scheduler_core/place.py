"""`place(snapshot, pending)`: the pure, deterministic placement pass.

Tasks are taken in priority order (higher first, then the order given). For each task every
node runs the checks of `pipeline.CHECKS`; the first failing check's reason is counted; the
feasible nodes are scored by `pipeline.SCORERS` and the best wins (ties: lowest node id).
Placements made earlier in the pass live in an overlay of allocated resources, never in the
snapshot, which is not mutated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .model import Node, PlaceConfig, Placement, Plan, Resources, Snapshot, TaskRequest, Unplaced
from .pipeline import CHECKS, SCORERS
from .units import cores, gib


def place(
    snapshot: Snapshot, pending: Sequence[TaskRequest], *, config: PlaceConfig | None = None
) -> Plan:
    config = config or PlaceConfig()
    free: dict[str, Resources] = {n.node_id: n.free for n in snapshot.nodes}
    nodes = sorted(snapshot.nodes, key=lambda n: n.node_id)
    order = sorted(range(len(pending)), key=lambda i: (-pending[i].priority, i))
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    totals: Counter[str] = Counter()
    for i in order:
        task = pending[i]
        if len(placements) >= config.max_placements:
            break
        best: tuple[float, str] | None = None
        rejected: Counter[str] = Counter()
        for node in nodes:
            f = free[node.node_id]
            reason = _first_rejection(node, task, f)
            if reason is not None:
                rejected[reason] += 1
                continue
            score = sum(w * s(node, task, f) for _, s, w in SCORERS)
            if best is None or score > best[0]:
                best = (score, node.node_id)
        if best is None:
            totals.update(rejected)
            unplaced.append(
                Unplaced(task.task_id, tuple(sorted(rejected.items())), explain(task, nodes, free, rejected))
            )
            continue
        score, node_id = best
        free[node_id] = free[node_id] - task.request
        placements.append(Placement(task.task_id, node_id, score))
    return Plan(tuple(placements), tuple(unplaced), dict(totals))


def _first_rejection(node: Node, task: TaskRequest, free: Resources) -> str | None:
    for _, check in CHECKS:
        reason = check(node, task, free)
        if reason is not None:
            return reason
    return None


def explain(
    task: TaskRequest,
    nodes: Iterable[Node],
    free: dict[str, Resources],
    rejected: Counter[str],
) -> str:
    """One sentence on why a task fits nowhere, e.g. "no node has 64 GiB free: largest has 23 GiB"."""
    nodes = list(nodes)
    if not nodes:
        return "no nodes registered"
    if len(rejected) == 1:
        (only,) = rejected
        usable = [free[n.node_id] for n in nodes if n.ready and n.schedulable]
        if only == "memory exhausted" and usable:
            largest = max(f.memory for f in usable)
            return f"no node has {gib(task.request.memory)} free: largest has {gib(max(largest, 0))}"
        if only == "cpu exhausted" and usable:
            largest = max(f.cpu for f in usable)
            return f"no node has {cores(task.request.cpu)} free: largest has {cores(max(largest, 0))}"
    parts = [f"{count} node{'s' if count != 1 else ''}: {why}" for why, count in sorted(rejected.items())]
    return "no node fits: " + "; ".join(parts)
