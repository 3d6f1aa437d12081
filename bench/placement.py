"""Placement benchmark for scheduler_core (pure library, one core).

For clusters of 1k, 10k and 50k nodes (8 cpu, 32 GiB each) and 100k pending tasks of
heavy-tailed sizes (lognormal memory, cpu loosely tied to it; fixed seed):
  * placements/s and per-decision p50/p99 (each `Placer.place_one` timed);
  * packing efficiency: tasks placed before the first failure, beside first-fit-decreasing
    computed in the same run and the total-capacity bound (tasks, in order, until their sum
    exceeds the cluster's capacity).
Goals (issue): ≥ 20,000 placements/s at 10k nodes, decision p99 ≤ 2 ms, efficiency ≥ 0.97×FFD.
`--quick`: 1k and 10k nodes, 20k tasks.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

from _common import pct, print_table

from corral.scheduler_core import Node, PlaceConfig, Placer, Resources, Snapshot, TaskRequest

GiB = 1024**3
MiB = 1024**2
NODE = Resources(8000, 32 * GiB, 10_000)


def make_tasks(n: int, seed: int = 42) -> list[TaskRequest]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        mem = int(min(16 * GiB, max(16 * MiB, rnd.lognormvariate(math.log(256 * MiB), 1.1))))
        cpu = int(min(8000, max(10, mem / GiB * 250 * rnd.lognormvariate(0, 0.6))))
        out.append(TaskRequest(f"t{i}", Resources(cpu, mem, 1), user_id=f"u{i % 7}"))
    return out


def ours(n_nodes: int, tasks: list[TaskRequest]) -> tuple[int, int, list[float], float]:
    """(placed before first failure, placed in all, decision times, wall seconds)."""
    snap = Snapshot(tuple(Node(f"n{i:06d}", NODE) for i in range(n_nodes)))
    placer = Placer(snap, PlaceConfig(preempt=False))
    times: list[float] = []
    first_fail = None
    t0 = time.perf_counter()
    for k, t in enumerate(tasks):
        s = time.perf_counter()
        r = placer.place_one(t)
        times.append(time.perf_counter() - s)
        if first_fail is None and not hasattr(r, "node_id"):
            first_fail = k
    wall = time.perf_counter() - t0
    return (first_fail if first_fail is not None else len(tasks)), len(placer.placements), times, wall


def ffd(n_nodes: int, tasks: list[TaskRequest]) -> tuple[int, int]:
    """First-fit decreasing (by memory): (tasks placed before the first failure, in all).
    Leftmost fitting node found through segment trees of max free memory and cpu."""
    size = 1
    while size < n_nodes:
        size *= 2
    mem = [0] * (2 * size)
    cpu = [0] * (2 * size)
    for i in range(n_nodes):
        mem[size + i], cpu[size + i] = NODE.memory, NODE.cpu
    for i in range(size - 1, 0, -1):
        mem[i], cpu[i] = max(mem[2 * i], mem[2 * i + 1]), max(cpu[2 * i], cpu[2 * i + 1])

    def find(i: int, m: int, c: int) -> int:
        if mem[i] < m or cpu[i] < c:
            return -1
        if i >= size:
            return i
        r = find(2 * i, m, c)
        return r if r >= 0 else find(2 * i + 1, m, c)

    placed = 0
    before = -1
    for t in sorted(tasks, key=lambda t: (-t.request.memory, -t.request.cpu)):
        leaf = find(1, t.request.memory, t.request.cpu)
        if leaf < 0:
            if before < 0:
                before = placed
            continue
        mem[leaf] -= t.request.memory
        cpu[leaf] -= t.request.cpu
        j = leaf // 2
        while j:
            mem[j], cpu[j] = max(mem[2 * j], mem[2 * j + 1]), max(cpu[2 * j], cpu[2 * j + 1])
            j //= 2
        placed += 1
    return (placed if before < 0 else before), placed


def capacity_bound(n_nodes: int, tasks: list[TaskRequest]) -> int:
    m = c = 0
    for k, t in enumerate(tasks):
        m += t.request.memory
        c += t.request.cpu
        if m > n_nodes * NODE.memory or c > n_nodes * NODE.cpu:
            return k
    return len(tasks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [1000, 10_000] if args.quick else [1000, 10_000, 50_000]
    n_tasks = 20_000 if args.quick else 100_000
    tasks = make_tasks(n_tasks)
    rows, figures = [], {"tasks": n_tasks, "clusters": {}}
    for n in sizes:
        before, total, times, wall = ours(n, tasks)
        f, f_total = ffd(n, tasks)
        bound = capacity_bound(n, tasks)
        rate = len(times) / wall
        fig = {
            "decisions_per_s": round(rate, 1),
            "placed": total,
            "decision_us_p50": round(pct(times, 50) * 1e6, 1),
            "decision_us_p99": round(pct(times, 99) * 1e6, 1),
            "placed_before_first_failure": before,
            "ffd_before_first_failure": f,
            "capacity_bound": bound,
            "efficiency_vs_ffd": round(before / f, 4) if f else None,
            "ffd_placed_in_all": f_total,
            "placed_in_all_vs_ffd": round(total / f_total, 4) if f_total else None,
        }
        figures["clusters"][str(n)] = fig  # type: ignore[index]
        rows.append((f"{n:,} nodes", f"{rate:,.0f}/s", f"{fig['decision_us_p50']:.0f} µs", f"{fig['decision_us_p99']:.0f} µs", f"{before:,}", f"{f:,}", f"{bound:,}", f"{fig['efficiency_vs_ffd']}", f"{total:,} / {f_total:,}"))
    print_table(("cluster", "decisions", "p50", "p99", "placed≤1st fail", "FFD", "capacity bound", "vs FFD", "placed in all: ours / FFD"), rows)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
