"""scheduler_core: each check and scorer, the explanation sentence, and properties of place()."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.scheduler_core import (
    Constraint,
    Node,
    PlaceConfig,
    Plan,
    Resources,
    Running,
    Snapshot,
    TaskRequest,
    place,
)
from corral.scheduler_core.checks import (
    check_constraints,
    check_cpu,
    check_distinct,
    check_driver,
    check_memory,
    check_pids,
    check_ready,
    use_of,
)
from corral.scheduler_core.scoring import score_anti_affinity, score_binpack, score_spread

GiB = 1024**3


def node(nid: str, cpu: int = 4000, mem: int = 8 * GiB, **kw: object) -> Node:
    return Node(nid, Resources(cpu, mem, 1000), **kw)  # type: ignore[arg-type]


def task(tid: str, cpu: int = 100, mem: int = 64 * 1024**2, **kw: object) -> TaskRequest:
    return TaskRequest(tid, Resources(cpu, mem, 10), **kw)  # type: ignore[arg-type]


def test_checks_pass_and_reject_with_reasons() -> None:
    n = node("n")
    f = use_of(n)
    assert check_ready(n, task("t"), f) is None
    assert check_ready(node("n", ready=False), task("t"), f) == "node not ready"
    busy = node("n", running=(Running("r", Resources(1, 1, 1), 0, "tpl"),))
    assert check_distinct(busy, task("t", template_id="tpl", distinct_nodes=True), use_of(busy)) == "already runs a task of template tpl"
    assert check_distinct(busy, task("t", template_id="tpl"), use_of(busy)) is None
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
    assert score_binpack(half, t, use_of(half)) > score_binpack(empty, t, use_of(empty))
    assert score_spread(half, t, use_of(half)) < score_spread(empty, t, use_of(empty))
    crowded = node("c", running=(Running("r1", Resources(1, 1, 1), 0, "tpl"), Running("r2", Resources(1, 1, 1), 0, "tpl")))
    tt = task("t", template_id="tpl")
    assert score_anti_affinity(crowded, tt, use_of(crowded)) < score_anti_affinity(empty, tt, use_of(empty)) == 100.0
    for n in (empty, half, crowded, node("z", cpu=0, mem=0), Node("o", Resources(10, 10, 10), allocated=Resources(20, 20, 0))):
        for s in (score_binpack, score_spread, score_anti_affinity):
            assert 0.0 <= s(n, t, use_of(n)) <= 100.0


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


# ---- strategies, spreading, priorities, fair share, gangs, big clusters --------------------


def test_spread_strategy_and_distinct_nodes() -> None:
    snap = Snapshot(tuple(node(f"n{i}") for i in range(3)))
    plan = place(snap, [task(f"t{i}") for i in range(3)], config=PlaceConfig(strategy="spread"))
    assert len({p.node_id for p in plan.placements}) == 3, "spread puts each on its own node"
    distinct = [task(f"d{i}", template_id="web", distinct_nodes=True) for i in range(4)]
    plan = place(snap, distinct)
    assert len({p.node_id for p in plan.placements}) == 3
    assert [u.task_id for u in plan.unplaced] == ["d3"]
    assert "already runs a task of template web" in plan.unplaced[0].reason


def test_preemption_evicts_the_fewest_strictly_lower_priority_tasks() -> None:
    full_a = node("a", cpu=1000, running=(Running("low1", Resources(500, GiB, 1), 1), Running("low2", Resources(500, GiB, 1), 1)))
    full_a = Node("a", Resources(1000, 8 * GiB, 1000), allocated=Resources(1000, 2 * GiB, 2), running=full_a.running)
    full_b = Node("b", Resources(1000, 8 * GiB, 1000), allocated=Resources(1000, GiB, 1), running=(Running("mid", Resources(1000, GiB, 1), 5),))
    snap = Snapshot((full_a, full_b))
    plan = place(snap, [task("urgent", cpu=400, priority=3)])
    assert [p.node_id for p in plan.placements] == ["a"], "b only has a higher-priority task"
    (pre,) = plan.preemptions
    assert pre.victims == ("low1",) and pre.for_task == "urgent"
    # never evicts equal or higher priority
    assert not place(snap, [task("same", cpu=400, priority=1)]).preemptions
    assert not place(snap, [task("nopre", cpu=400, priority=3)], config=PlaceConfig(preempt=False)).preemptions


def test_fair_share_interleaves_users_by_weight() -> None:
    pending = [task(f"a{i}", user_id="alice") for i in range(6)] + [task(f"b{i}", user_id="bob") for i in range(2)]
    snap = Snapshot((node("n", cpu=400),))  # room for 4 tasks of 100m
    plan = place(snap, pending)
    placed = [p.task_id for p in plan.placements]
    assert placed == ["a0", "b0", "a1", "b1"], "bob's two are not starved by alice's six"
    weighted = place(snap, pending, config=PlaceConfig(user_weights=(("alice", 3.0),)))
    assert [p.task_id for p in weighted.placements] == ["a0", "a1", "a2", "b0"], "three of alice's per one of bob's"


def test_gang_is_all_or_none() -> None:
    snap = Snapshot((node("n", cpu=1000),))
    plan = place(snap, [task("g1", cpu=400, gang="g"), task("g2", cpu=400, gang="g"), task("g3", cpu=400, gang="g"), task("solo", cpu=400)])
    assert [p.task_id for p in plan.placements] == ["solo"]
    assert {u.task_id for u in plan.unplaced} == {"g1", "g2", "g3"}
    assert all(u.reason.startswith("gang g: not all 3 tasks fit") for u in plan.unplaced)
    ok = place(snap, [task("g1", cpu=400, gang="g"), task("g2", cpu=400, gang="g")])
    assert len(ok.placements) == 2


running_st = st.lists(
    st.builds(lambda i, cpu, mem, prio: Running(f"r{i}", Resources(cpu, mem, 1), prio), st.integers(0, 999), st.integers(1, 2000), st.integers(1, 4 * GiB), st.integers(0, 5)),
    max_size=6, unique_by=lambda r: r.task_id,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(running_st, min_size=1, max_size=5), st.integers(1, 6), st.integers(1, 3000), st.integers(1, 6 * GiB))
def test_preemption_properties(running_per_node: list[list[Running]], prio: int, cpu: int, mem: int) -> None:
    nodes = []
    for i, rs in enumerate(running_per_node):
        used = Resources(sum(r.request.cpu for r in rs), sum(r.request.memory for r in rs), len(rs))
        cap = Resources(max(used.cpu, 2000), max(used.memory, 4 * GiB), 100)
        nodes.append(Node(f"n{i}", cap, allocated=used, running=tuple(rs)))
    t = TaskRequest("hi", Resources(cpu, mem, 1), priority=prio)
    plan = place(Snapshot(tuple(nodes)), [t])
    for pre in plan.preemptions:
        node_ = next(n for n in nodes if n.node_id == pre.node_id)
        victims = [r for r in node_.running if r.task_id in pre.victims]
        assert all(v.priority < prio for v in victims), "only strictly lower priority"
        freed = node_.free
        for v in victims:
            freed = freed + v.request
        assert t.request.fits_in(freed), "evicts enough"
        assert [p.node_id for p in plan.placements] == [pre.node_id]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 2)), min_size=1, max_size=40))
def test_queue_order_respects_priority_then_fair_share(items: list[tuple[str, int]]) -> None:
    from corral.scheduler_core import queue_order

    pending = [TaskRequest(f"t{i}", Resources(1, 1, 1), user_id=u, priority=p) for i, (u, p) in enumerate(items)]
    order = queue_order(pending, PlaceConfig())
    prios = [pending[i].priority for i in order]
    assert prios == sorted(prios, reverse=True)
    # within a priority level and one user, submission order is kept
    for u in ("u1", "u2", "u3"):
        for p in range(3):
            idx = [i for i in order if pending[i].user_id == u and pending[i].priority == p]
            assert idx == sorted(idx)


@settings(max_examples=60, deadline=None)
@given(nodes_st, tasks_st, st.sampled_from(["binpack", "spread"]))
def test_candidate_limit_keeps_the_guarantees(nodes: list[Node], tasks: list[TaskRequest], strategy: str) -> None:
    cfg = PlaceConfig(exhaustive_below=2, strategy=strategy)  # force the limited search
    snap = Snapshot(tuple(nodes))
    plan = place(snap, tasks, config=cfg)
    assert plan == place(snap, tasks, config=cfg)
    by_node = {n.node_id: n for n in nodes}
    used: dict[str, Resources] = {}
    reqs = {t.task_id: t.request for t in tasks}
    for p in plan.placements:
        used[p.node_id] = used.get(p.node_id, Resources()) + reqs[p.task_id]
    for nid, u in used.items():
        assert u.fits_in(by_node[nid].allocatable)
    if len(tasks) == 1 and not plan.placements:
        t = tasks[0]
        assert not any(n.ready and t.request.fits_in(n.free) for n in nodes)


def test_per_task_strategy_overrides_the_pass() -> None:
    snap = Snapshot(tuple(node(f"n{i}") for i in range(3)))
    plan = place(snap, [task(f"s{i}", template_id="", strategy="spread") for i in range(3)] + [task(f"b{i}") for i in range(2)])
    spread_nodes = {p.node_id for p in plan.placements if p.task_id.startswith("s")}
    assert len(spread_nodes) == 3
    assert len({p.node_id for p in plan.placements if p.task_id.startswith("b")}) == 1, "the rest still bin-pack"


def test_a_node_takes_no_more_starts_than_its_room_but_runs_due_later_still_go() -> None:
    """Admission by the node's start rate: as-soon-as-possible work beyond a node's start
    room waits (with a reason) or goes to another node; a run due later is never held."""
    snap = Snapshot((node("busy", start_room=2),))
    plan = place(snap, [task(f"now{i}") for i in range(5)] + [task(f"cron{i}", scheduled=True) for i in range(3)])
    placed = sorted(p.task_id for p in plan.placements)
    assert placed == ["cron0", "cron1", "cron2", "now0", "now1"]
    assert {u.task_id for u in plan.unplaced} == {"now2", "now3", "now4"}
    assert all("busy starting tasks" in u.reason for u in plan.unplaced), [u.reason for u in plan.unplaced]
    # with a second node that has room, the rest go there; a node with no figure (-1) has no limit
    plan = place(Snapshot((node("busy", start_room=2), node("other"))), [task(f"now{i}") for i in range(5)])
    where = sorted(p.node_id for p in plan.placements)
    assert len(where) == 5 and where.count("busy") <= 2
    plan = place(Snapshot((node("busy", start_room=0),)), [task("now", cpu=100, distinct_nodes=True, template_id="t")])
    assert not plan.placements and "busy starting tasks" in plan.unplaced[0].reason
