"""Node rate benchmark: completed isolated tasks per second on one node.

Each task is `true` run by the process driver as the nodelet runs it — its own cgroups
(cpu, memory, pids limits), new pid, mount, ipc, uts and network namespaces, read-only
host, its own /tmp, an unprivileged uid, output captured — prepared, released and waited
for with up to `--inflight` tasks at once (the nodelet's prepare pool is 8 wide). No
master: this is the node's own ceiling. Beside it, in the same run, the bare baseline:
`subprocess.Popen(["/bin/sh", "-c", "true"])` with the same number in flight.

Variants (`--variants`): `slots` (the default driver: a task's wrapper is forked inside a
slot whose cgroups were joined once), `no-slots` (a cgroup made and joined per task, as
before slots). Prints medians and spreads over the rounds and the ratio of each to the
bare baseline measured in the same round; `--json` adds one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import pct, print_table

from corral.nodelet import cgroups
from corral.nodelet.process_driver import ProcessDriver
from corral.v1 import types_pb2 as pb


async def driver_round(driver: ProcessDriver, tasks: int, inflight: int, work: Path) -> dict[str, float]:
    sem = asyncio.Semaphore(inflight)
    failed = 0
    per_task: list[float] = []

    async def one(i: int) -> None:
        nonlocal failed
        async with sem:
            t0 = time.perf_counter()
            task = pb.TaskExecution(task_id=f"rate-{i}", attempt=1, spec=pb.TaskTemplate(
                run_script="true", user="65534", cpu_request=100, mem_request=32 << 20, pids_limit=32))
            prep = await driver.prepare(task, work / f"t{i}")
            handle = await driver.launch(prep)
            outcome = await driver.wait(handle)
            if outcome.state != pb.SUCCEEDED:
                failed += 1
            per_task.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    elapsed = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    return {"rate": tasks / elapsed, "failed": failed, "p50_ms": pct(per_task, 50), "p99_ms": pct(per_task, 99)}


def popen_round(tasks: int, inflight: int) -> dict[str, float]:
    running: list[tuple[subprocess.Popen[bytes], float]] = []
    per_task: list[float] = []
    failed = 0
    t0 = time.perf_counter()
    started = 0
    while started < tasks or running:
        while started < tasks and len(running) < inflight:
            running.append((subprocess.Popen(["/bin/sh", "-c", "true"], stdout=subprocess.DEVNULL), time.perf_counter()))
            started += 1
        p, t = running.pop(0)
        if p.wait() != 0:
            failed += 1
        per_task.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - t0
    return {"rate": tasks / elapsed, "failed": failed, "p50_ms": pct(per_task, 50), "p99_ms": pct(per_task, 99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="tasks per round (default 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--inflight", type=int, default=16, help="tasks in flight at once (default 16)")
    ap.add_argument("--variants", default="slots,no-slots", help="driver variants, comma-separated (slots, no-slots)")
    ap.add_argument("--quick", action="store_true", help="one round of 300 tasks")
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures as the last line")
    args = ap.parse_args()
    tasks, rounds = (300, 1) if args.quick else (args.tasks, args.rounds)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    node = f"bench-rate-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="corral-rate-"))
    drivers = {v: ProcessDriver(f"{node}-{v}", slots=8 if v == "slots" else 0, hide=[str(work)]) for v in variants}
    for d in drivers.values():
        d.cluster_id = "bench"
    results: dict[str, list[dict[str, float]]] = {"bare Popen": [], **{f"corral {v}": [] for v in variants}}
    print(f"corral bench node_rate: {tasks} tasks × {rounds} rounds, {args.inflight} in flight", file=sys.stderr)
    try:
        for r in range(rounds):
            res = popen_round(tasks, args.inflight)
            results["bare Popen"].append(res)
            print(f"  round {r + 1} bare Popen: {res['rate']:.0f}/s", file=sys.stderr)
            for v, d in drivers.items():
                res = asyncio.run(driver_round(d, tasks, args.inflight, work / v))
                res["ratio"] = res["rate"] / results["bare Popen"][-1]["rate"]
                results[f"corral {v}"].append(res)
                print(f"  round {r + 1} corral {v}: {res['rate']:.0f}/s ({res['ratio']:.2f} of bare), failed {res['failed']:.0f}, "
                      f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms", file=sys.stderr)
    finally:
        for v, d in drivers.items():
            if d.slots is not None:
                d.slots.close()
            d.spawner.close()
            cgroups.remove_node(f"{node}-{v}")
        shutil.rmtree(work, ignore_errors=True)
    figures: dict[str, object] = {"tasks": tasks, "rounds": rounds, "inflight": args.inflight}
    rows = []
    for kind, rs in results.items():
        rates = [x["rate"] for x in rs]
        f = {
            "rate_per_s": round(statistics.median(rates), 1), "rate_spread": [round(min(rates), 1), round(max(rates), 1)],
            "failed": sum(int(x["failed"]) for x in rs), "p50_ms": round(statistics.median(x["p50_ms"] for x in rs), 2),
            "p99_ms": round(statistics.median(x["p99_ms"] for x in rs), 2),
            "ratio_to_bare": round(statistics.median(x.get("ratio", 1.0) for x in rs), 3),
        }
        figures[kind.replace(" ", "_")] = f
        rows.append((kind, f"{f['rate_per_s']:.0f}", f"{min(rates):.0f}–{max(rates):.0f}", f"{f['ratio_to_bare']:.2f}",
                     str(f["failed"]), f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}"))
    print_table(("completed tasks", "per s", "spread", "ratio to bare", "failed", "p50 ms (prepare→end)", "p99 ms"), rows)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
