"""`place(snapshot, pending)`: the pure, deterministic placement pass.

Order: priority (higher first), then weighted fair share between users (a user's k-th
task waits behind every other user's k-th, scaled by weight), then submission order; the
members of a gang go together, all or none.

For each task the checks of `pipeline` run node by node; the first failing check's reason
is counted; feasible nodes are scored by the strategy's scorers and the best wins (ties:
lowest node id). Work stays small on big clusters:
  * equivalence classes: tasks with the same requirements share static verdicts, the set
    of nodes already found too full (free capacity only shrinks within a pass), and a
    "fits nowhere" verdict;
  * a candidate limit: above `exhaustive_below` nodes, only the first max(2, log2 n)
    feasible nodes are scored, taken in order of free memory from a sorted index (tightest
    first for bin-packing, emptiest first for spread).
A task that fits nowhere may preempt: the smallest set of strictly lower-priority tasks on
one node is evicted (reported in the plan; the caller stops and requeues them).
Placements made earlier in the pass live in an overlay; the snapshot is never mutated.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from .checks import Use, use_of
from .model import (
    Node,
    PlaceConfig,
    Placement,
    Plan,
    Preemption,
    Resources,
    Snapshot,
    TaskRequest,
    Unplaced,
)
from .pipeline import DYNAMIC_CHECKS, SCORERS, STATIC_CHECKS
from .units import cores, gib


def _cpu_bucket(cpu: int) -> int:
    """Bucket b holds 2^b - 1 <= cpu < 2^(b+1) - 1; a task needing c looks at buckets
    >= _cpu_bucket(c) (the lowest of them may still hold nodes short of c)."""
    return max(cpu + 1, 1).bit_length() - 1


def queue_order(pending: Sequence[TaskRequest], config: PlaceConfig) -> list[int]:
    """Indices of `pending` in placement order (see module doc)."""
    weights = dict(config.user_weights)
    seen: Counter[str] = Counter()
    keys: list[tuple[int, float, int]] = []
    for i, t in enumerate(pending):
        seen[t.user_id] += 1
        keys.append((-t.priority, seen[t.user_id] / max(weights.get(t.user_id, 1.0), 1e-9), i))
    order = sorted(range(len(pending)), key=keys.__getitem__)
    # a gang moves together, at its first member's place
    out: list[int] = []
    done: set[str] = set()
    members: dict[str, list[int]] = {}
    for i in order:
        if pending[i].gang:
            members.setdefault(pending[i].gang, []).append(i)
    for i in order:
        g = pending[i].gang
        if not g:
            out.append(i)
        elif g not in done:
            done.add(g)
            out.extend(members[g])
    return out


class Placer:
    """One pass over one snapshot: call `place_one` per task (or use `place`)."""

    def __init__(self, snapshot: Snapshot, config: PlaceConfig | None = None) -> None:
        self.config = config or PlaceConfig()
        self.nodes: list[Node] = sorted(snapshot.nodes, key=lambda n: n.node_id)
        self.uses: list[Use] = [use_of(n) for n in self.nodes]
        self.evicted: list[set[str]] = [set() for _ in self.nodes]
        n = len(self.nodes)
        self.limited = n > self.config.exhaustive_below
        self.k = self.config.candidates or max(2, math.ceil(math.log2(max(n, 2))))
        self.scorers = SCORERS[self.config.strategy]
        # the free-memory index, split into buckets by free cpu (bucket b holds nodes with
        # 2^b - 1 <= free cpu < 2^(b+1) - 1): a task skips whole buckets without the cpu it needs
        self._index: dict[int, list[tuple[int, int]]] = {}
        for i, u in enumerate(self.uses):
            self._index.setdefault(_cpu_bucket(u.free.cpu), []).append((u.free.memory, i))
        for lst in self._index.values():
            lst.sort()
        self._static: dict[tuple[object, ...], list[str | None]] = {}
        self._full: dict[tuple[object, ...], dict[int, str]] = {}
        self._nowhere: dict[tuple[object, ...], Unplaced] = {}
        self._failed: dict[tuple[object, ...], list[tuple[Resources, Unplaced]]] = {}
        self.placements: list[Placement] = []
        self.unplaced: list[Unplaced] = []
        self.preemptions: list[Preemption] = []
        self.rejections: Counter[str] = Counter()

    # -- the overlay --------------------------------------------------------------------------

    def _set_free(self, i: int, free: Resources) -> None:
        before = self.uses[i].free
        old = (before.memory, i)
        lst = self._index.get(_cpu_bucket(before.cpu), [])
        j = bisect.bisect_left(lst, old)
        if j < len(lst) and lst[j] == old:
            del lst[j]
        bisect.insort(self._index.setdefault(_cpu_bucket(free.cpu), []), (free.memory, i))
        self.uses[i].free = free

    def _take(self, i: int, task: TaskRequest) -> None:
        self._set_free(i, self.uses[i].free - task.request)
        if self.uses[i].starts > 0 and not task.scheduled:
            self.uses[i].starts -= 1
        if task.template_id:
            t = self.uses[i].templates
            t[task.template_id] = t.get(task.template_id, 0) + 1

    def _give_back(self, i: int, request: Resources, template_id: str) -> None:
        self._set_free(i, self.uses[i].free + request)
        if template_id and self.uses[i].templates.get(template_id):
            self.uses[i].templates[template_id] -= 1
        # room grew: verdicts cached on "too full" no longer hold
        self._full.clear()
        self._nowhere.clear()
        self._failed.clear()

    # -- one task -----------------------------------------------------------------------------

    def _static_verdicts(self, task: TaskRequest) -> list[str | None]:
        key = (task.driver, task.constraints)
        verdicts = self._static.get(key)
        if verdicts is None:
            verdicts = []
            for node, use in zip(self.nodes, self.uses, strict=True):
                reason = None
                for _, check in STATIC_CHECKS:
                    reason = check(node, task, use)
                    if reason is not None:
                        break
                verdicts.append(reason)
            self._static[key] = verdicts
        return verdicts

    def _candidates(self, task: TaskRequest) -> Iterator[int]:
        if not self.limited:
            yield from range(len(self.nodes))
            return
        need = _cpu_bucket(task.request.cpu)
        buckets = sorted(self._index)
        if (task.strategy or self.config.strategy) == "spread":
            merged = heapq.merge(*(reversed(self._index[b]) for b in buckets if b >= need), key=lambda e: -e[0])
            for _, i in merged:
                yield i
        else:
            starts = {b: bisect.bisect_left(self._index[b], (task.request.memory, -1)) for b in buckets if b >= need}
            # tightest memory first across the buckets with enough cpu (best fit)
            for _, i in heapq.merge(*(itertools.islice(self._index[b], s, None) for b, s in starts.items())):
                yield i
            for b, s in starts.items():  # too little memory: only to count rejections
                for _, i in itertools.islice(self._index[b], s):
                    yield i
        for b in buckets:  # too little cpu: only to count rejections
            if b < need:
                for _, i in self._index[b]:
                    yield i

    def _search(self, task: TaskRequest) -> tuple[int | None, float, Counter[str]]:
        static = self._static_verdicts(task)
        cls = task.class_key()
        full = self._full.setdefault(cls, {})
        rejected: Counter[str] = Counter()
        best: tuple[float, int] | None = None
        feasible = 0
        req = task.request
        plain = not task.distinct_nodes  # the common case: resources decide alone
        uses, nodes = self.uses, self.nodes
        scorers = SCORERS[task.strategy] if task.strategy else self.scorers
        deferred: list[int] = []  # plain rejections, named only if the task fits nowhere
        for i in self._candidates(task):
            reason = static[i] or full.get(i)
            if reason is None:
                use = uses[i]
                f = use.free
                if plain:
                    # fast path: the dynamic checks pass exactly when every resource fits
                    if not (req.cpu <= f.cpu and req.memory <= f.memory and req.pids <= f.pids and (use.starts != 0 or task.scheduled)):
                        deferred.append(i)
                        continue
                else:
                    for _, check in DYNAMIC_CHECKS:
                        reason = check(nodes[i], task, use)
                        if reason is not None:
                            full[i] = reason
                            break
            if reason is not None:
                rejected[reason] += 1
                continue
            score = 0.0
            for _, s, w in scorers:
                score += w * s(nodes[i], task, uses[i])
            if best is None or score > best[0] or (score == best[0] and i < best[1]):
                best = (score, i)
            feasible += 1
            if self.limited and feasible >= self.k:
                break
        if best is None:
            for i in deferred:
                for _, check in DYNAMIC_CHECKS:
                    reason = check(nodes[i], task, uses[i])
                    if reason is not None:
                        full[i] = reason
                        rejected[reason] += 1
                        break
            return None, 0.0, rejected
        return best[1], best[0], rejected

    def place_one(self, task: TaskRequest) -> Placement | Unplaced:
        """Place one task on the overlay (or explain why not, or preempt for it)."""
        cls = task.class_key()
        known = self._nowhere.get(cls)
        if known is None and not task.distinct_nodes:
            known = self._dominated(task)
        if known is not None and not (self.config.preempt and task.priority > 0):
            u = Unplaced(task.task_id, known.rejections, known.reason)
            self.unplaced.append(u)
            self.rejections.update(dict(u.rejections))
            return u
        i, score, rejected = self._search(task)
        if i is None and self.config.preempt and task.priority > 0:
            i = self._preempt_for(task)
            if i is not None:
                score = sum(w * s(self.nodes[i], task, self.uses[i]) for _, s, w in SCORERS[task.strategy or self.config.strategy])
        if i is None:
            u = Unplaced(task.task_id, tuple(sorted(rejected.items())), explain(task, self.nodes, self.uses, rejected))
            self._nowhere[cls] = u
            if not task.distinct_nodes:
                failed = self._failed.setdefault((task.driver, task.constraints, task.scheduled), [])
                if len(failed) < 32:
                    failed.append((task.request, u))
            self.unplaced.append(u)
            self.rejections.update(rejected)
            return u
        self._take(i, task)
        p = Placement(task.task_id, self.nodes[i].node_id, score)
        self.placements.append(p)
        return p

    def _dominated(self, task: TaskRequest) -> Unplaced | None:
        """A task at least as large as one that already fit nowhere fits nowhere either
        (room only shrinks within a pass): reuse that verdict without a search."""
        for request, verdict in self._failed.get((task.driver, task.constraints, task.scheduled), ()):
            if request.fits_in(task.request):
                return verdict
        return None

    def _preempt_for(self, task: TaskRequest) -> int | None:
        """The node where evicting the fewest strictly lower-priority tasks makes room."""
        static = self._static_verdicts(task)
        best: tuple[int, int, str, int, list[str]] | None = None
        for i, node in enumerate(self.nodes):
            if static[i] is not None:
                continue
            use = self.uses[i]
            lower = sorted(
                (r for r in node.running if r.priority < task.priority and r.task_id not in self.evicted[i]),
                key=lambda r: (r.priority, -r.request.memory, -r.request.cpu, r.task_id),
            )
            free = use.free
            chosen: list[str] = []
            prio_sum = 0
            for r in lower:
                if task.request.fits_in(free):
                    break
                free = free + r.request
                chosen.append(r.task_id)
                prio_sum += r.priority
            if not chosen or not task.request.fits_in(free):
                continue
            cand = (len(chosen), prio_sum, node.node_id, i, chosen)
            if best is None or cand[:3] < best[:3]:
                best = cand
        if best is None:
            return None
        _, _, node_id, i, victims = best
        by_id = {r.task_id: r for r in self.nodes[i].running}
        for v in victims:
            self.evicted[i].add(v)
            self._give_back(i, by_id[v].request, by_id[v].template_id)
        self.preemptions.append(Preemption(node_id, task.task_id, tuple(victims)))
        return i

    def place_gang(self, members: Sequence[TaskRequest]) -> bool:
        """All members, or none (the overlay is rolled back when one does not fit)."""
        saved = [(i, u.free, dict(u.templates)) for i, u in enumerate(self.uses)]
        saved_evicted = [set(e) for e in self.evicted]
        marks = (len(self.placements), len(self.unplaced), len(self.preemptions), Counter(self.rejections))
        results = [self.place_one(t) for t in members]
        if all(isinstance(r, Placement) for r in results):
            return True
        # roll back: restore the overlay, keep one explanation per member
        failed = next(r for r in results if isinstance(r, Unplaced))
        del self.placements[marks[0] :]
        del self.unplaced[marks[1] :]
        del self.preemptions[marks[2] :]
        self.rejections = marks[3]
        for i, free, templates in saved:
            if self.uses[i].free != free:
                self._set_free(i, free)
            self.uses[i].templates = templates
        self.evicted = saved_evicted
        self._full.clear()
        self._nowhere.clear()
        self._failed.clear()
        for t in members:
            self.unplaced.append(Unplaced(t.task_id, failed.rejections, f"gang {t.gang}: not all {len(members)} tasks fit ({failed.reason})"))
        return False

    def plan(self) -> Plan:
        return Plan(tuple(self.placements), tuple(self.unplaced), dict(self.rejections), tuple(self.preemptions))


def place(
    snapshot: Snapshot, pending: Sequence[TaskRequest], *, config: PlaceConfig | None = None
) -> Plan:
    placer = Placer(snapshot, config)
    order = queue_order(pending, placer.config)
    k = 0
    while k < len(order):
        if len(placer.placements) >= placer.config.max_placements:
            break
        t = pending[order[k]]
        if t.gang:
            members = []
            while k < len(order) and pending[order[k]].gang == t.gang:
                members.append(pending[order[k]])
                k += 1
            placer.place_gang(members)
            continue
        placer.place_one(t)
        k += 1
    return placer.plan()


def explain(task: TaskRequest, nodes: Iterable[Node], uses: Sequence[Use], rejected: Counter[str]) -> str:
    """One sentence on why a task fits nowhere, e.g. "no node has 64 GiB free: largest has 23 GiB"."""
    nodes = list(nodes)
    if not nodes:
        return "no nodes registered"
    if len(rejected) == 1:
        (only,) = rejected
        usable = [u.free for n, u in zip(nodes, uses, strict=True) if n.ready and n.schedulable]
        if only == "memory exhausted" and usable:
            largest = max(f.memory for f in usable)
            return f"no node has {gib(task.request.memory)} free: largest has {gib(max(largest, 0))}"
        if only == "cpu exhausted" and usable:
            largest = max(f.cpu for f in usable)
            return f"no node has {cores(task.request.cpu)} free: largest has {cores(max(largest, 0))}"
    parts = [f"{count} node{'s' if count != 1 else ''}: {why}" for why, count in sorted(rejected.items())]
    return "no node fits: " + "; ".join(parts)
