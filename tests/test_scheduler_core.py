"""scheduler_core: each check and scorer, the explanation sentence, and properties of place()."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.scheduler_core import Constraint, Node, Plan, Resources, Snapshot, TaskRequest, place
from corral.scheduler_core.checks import (
    check_constraints,
    check_cpu,
    check_driver,
    check_memory,
    check_pids,
    check_ready,
)
from corral.scheduler_core.scoring import score_binpack

GiB = 1024**3


def node(nid: str, cpu: int = 4000, mem: int = 8 * GiB, **kw: object) -> Node:
    return Node(nid, Resources(cpu, mem, 1000), **kw)  # type: ignore[arg-type]


def task(tid: str, cpu: int = 100, mem: int = 64 * 1024**2, **kw: object) -> TaskRequest:
    return TaskRequest(tid, Resources(cpu, mem, 10), **kw)  # type: ignore[arg-type]


def test_checks_pass_and_reject_with_reasons() -> None:
    n = node("n")
    f = n.free
    assert check_ready(n, task("t"), f) is None
    assert check_ready(node("n", ready=False), task("t"), f) == "node not ready"
    assert check_ready(node("n", schedulable=False), task("t"), f) == "node cordoned or draining"
    assert check_driver(n, task("t", driver="docker"), f) == "driver docker not available"
    assert check_driver(n, task("t"), f) is None
    assert check_cpu(n, task("t", cpu=4001), f) == "cpu exhausted"
    assert check_cpu(n, task("t", cpu=4000), f) is None
    assert check_memory(n, task("t", mem=8 * GiB + 1), f) == "memory exhausted"
    assert check_pids(n, TaskRequest("t", Resources(1, 1, 1001)), f) == "pids exhausted"
    labelled = node("n", labels=(("zone", "a"),))
    assert check_constraints(labelled, task("t", constraints=(Constraint("zone", "=", ("a",)),)), f) is None
    assert check_constraints(labelled, task("t", constraints=(Constraint("zone", "=", ("b",)),)), f) == "constraint zone = b not met"
    assert check_constraints(labelled, task("t", constraints=(Constraint("zone", "in", ("a", "b")),)), f) is None
    assert check_constraints(labelled, task("t", constraints=(Constraint("zone", "not_in", ("a",)),)), f) is not None
    assert check_constraints(labelled, task("t", constraints=(Constraint("ssd", "exists"),)), f) is not None
    assert check_constraints(labelled, task("t", constraints=(Constraint("ssd", "!=", ("yes",)),)), f) is None


def test_binpack_score_prefers_fuller_node_and_stays_in_range() -> None:
    empty = node("e")
    half = Node("h", Resources(4000, 8 * GiB, 1000), allocated=Resources(2000, 4 * GiB, 0))
    t = task("t", cpu=1000, mem=GiB)
    assert score_binpack(half, t, half.free) > score_binpack(empty, t, empty.free)
    for n in (empty, half, node("z", cpu=0, mem=0)):
        assert 0.0 <= score_binpack(n, t, n.free) <= 100.0


def test_best_fit_fills_one_node_first() -> None:
    snap = Snapshot((node("a", cpu=1000, mem=GiB), node("b", cpu=1000, mem=GiB)))
    plan = place(snap, [task(f"t{i}", cpu=300, mem=200 * 1024**2) for i in range(4)])
    nodes = [p.node_id for p in plan.placements]
    assert nodes[:3] == [nodes[0]] * 3 and nodes[3] != nodes[0]


def test_explanation_for_memory() -> None:
    snap = Snapshot((node("a", mem=23 * GiB), node("b", mem=8 * GiB)))
    plan = place(snap, [task("big", mem=64 * GiB)])
    assert not plan.placements
    (u,) = plan.unplaced
    assert u.reason == "no node has 64 GiB free: largest has 23 GiB"
    assert dict(u.rejections) == {"memory exhausted": 2}


def test_explanation_mixed_and_empty() -> None:
    snap = Snapshot((node("a", labels=(("zone", "a"),)), node("b", cpu=10, labels=(("zone", "b"),)), node("c", ready=False)))
    plan = place(snap, [task("t", cpu=100, constraints=(Constraint("zone", "=", ("b",)),))])
    assert plan.unplaced[0].reason.startswith("no node fits: ")
    assert "1 node: constraint zone = b not met" in plan.unplaced[0].reason
    assert "1 node: node not ready" in plan.unplaced[0].reason
    assert "1 node: cpu exhausted" in plan.unplaced[0].reason
    assert place(Snapshot(()), [task("t")]).unplaced[0].reason == "no nodes registered"


def test_priority_goes_first() -> None:
    snap = Snapshot((node("a", cpu=1000),))
    plan = place(snap, [task("low", cpu=800), task("high", cpu=800, priority=50)])
    assert [p.task_id for p in plan.placements] == ["high"]


nodes_st = st.lists(
    st.builds(
        lambda i, cpu, mem, ready: Node(f"n{i}", Resources(cpu, mem, 100), ready=ready),
        st.integers(0, 10_000), st.integers(0, 8000), st.integers(0, 16 * GiB), st.booleans(),
    ),
    max_size=12, unique_by=lambda n: n.node_id,
)
tasks_st = st.lists(
    st.builds(
        lambda i, cpu, mem, prio: TaskRequest(f"t{i}", Resources(cpu, mem, 1), priority=prio),
        st.integers(0, 10_000), st.integers(1, 4000), st.integers(1, 8 * GiB), st.integers(0, 3),
    ),
    max_size=40, unique_by=lambda t: t.task_id,
)


@settings(max_examples=200, deadline=None)
@given(nodes_st, tasks_st)
def test_never_overcommits_and_is_deterministic(nodes: list[Node], tasks: list[TaskRequest]) -> None:
    snap = Snapshot(tuple(nodes))
    before = copy.deepcopy(snap)
    plan = place(snap, tasks)
    assert snap == before, "place() must not mutate its snapshot"
    assert plan == place(snap, tasks), "same input, same plan"
    by_node = {n.node_id: n for n in nodes}
    reqs = {t.task_id: t.request for t in tasks}
    used: dict[str, Resources] = {}
    for p in plan.placements:
        used[p.node_id] = used.get(p.node_id, Resources()) + reqs[p.task_id]
        assert by_node[p.node_id].ready
    for nid, u in used.items():
        cap = by_node[nid].allocatable
        assert u.cpu <= cap.cpu and u.memory <= cap.memory and u.pids <= cap.pids
    placed = {p.task_id for p in plan.placements} | {u.task_id for u in plan.unplaced}
    assert placed == {t.task_id for t in tasks}


@settings(max_examples=200, deadline=None)
@given(nodes_st, st.integers(1, 4000), st.integers(1, 8 * GiB))
def test_a_task_that_fits_somewhere_is_placed(nodes: list[Node], cpu: int, mem: int) -> None:
    t = TaskRequest("t", Resources(cpu, mem, 1))
    plan: Plan = place(Snapshot(tuple(nodes)), [t])
    fits = any(n.ready and n.free.cpu >= cpu and n.free.memory >= mem for n in nodes)
    assert bool(plan.placements) == fits


def test_scheduler_core_imports_no_io() -> None:
    banned = {"grpc", "aetcd", "asyncio", "docker", "socket", "threading", "time", "random", "subprocess", "psutil"}
    root = Path(__file__).resolve().parent.parent / "scheduler_core"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            names: list[str] = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                names = [n.module or ""] if n.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                assert top not in banned, f"{path.name} imports {name}"
                assert not name.startswith("corral"), f"{path.name} imports {name}"
