"""Cron lateness benchmark: how late scheduled runs start (start_time − due_time).

On a local cluster (etcd, one master, one nodelet, process driver, as `corral dev`):
  * idle: N templates (default 100) firing every second for S seconds (default 30);
  * loaded: the same while one-off submissions arrive at R per second (default 500) from a
    separate process (due in an hour, so the load is the submit path: API, etcd, cache);
  * loaded, runs (`--load-runs`): the same one-off load due now, so it runs on the node
    beside the scheduled runs; prints the one-off tasks' submit→running and how many did
    not succeed exactly once (one-off work may wait; it must not be lost);
  * baseline: an APScheduler 3 AsyncIOScheduler in one process with the same N per-second
    cron jobs, measured in the same run (a single-process lower bound: a function call, no
    etcd, no placement, no process start). Its lateness is the job's start time minus the
    whole second it was due at.
The first 2 s of each round are warm-up and not counted. Runs that did not start (SKIPPED,
or never started) are counted beside the lateness figures. Prints medians and spreads over
the rounds; `--json` adds one JSON object as the last line; `--quick` takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import secrets
import statistics
import sys
import time

from _common import local_cluster, pct, print_table

from corral.client import AsyncClient, Client
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

WARMUP = 2.0


def _load_worker(addr: str, token: str, rate: float, seconds: float, q: mp.Queue, runs: bool = False) -> None:  # type: ignore[type-arg]
    """Submit one-off tasks at `rate` per second (bounded in count and time): due in an hour,
    or with `runs` due now (they run on the node beside the scheduled runs)."""

    async def run() -> list[str]:
        c = AsyncClient(addr, token)
        due = int(time.time()) + 3600
        spec = pb.TaskTemplate(run_script="true", cpu_request=5, mem_request=4 << 20, pids_limit=16) if runs else pb.TaskTemplate(run_script="true")
        ids: list[str] = []
        sent = 0
        t0 = time.perf_counter()
        inflight: set[asyncio.Task[object]] = set()
        limit = int(rate * seconds)
        while sent < limit and time.perf_counter() - t0 < seconds:
            target = int((time.perf_counter() - t0) * rate)
            while sent < min(target, limit) and len(inflight) < 256:
                req = api_pb2.SubmitTaskRequest(spec=spec) if runs else api_pb2.SubmitTaskRequest(spec=spec, run_at={"seconds": due})
                task = asyncio.create_task(c.submit_task(req))  # type: ignore[attr-defined]
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                task.add_done_callback(lambda t: ids.append(t.result().task_id) if not t.exception() else None)
                sent += 1
            await asyncio.sleep(0.002)
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        await c.close()
        return ids if runs else ["" for _ in range(sent)]

    q.put(asyncio.run(run()))


def corral_round(addr: str, token: str, n: int, seconds: float, load_rate: float, load_runs: bool = False) -> dict[str, object]:
    c = Client(addr, token)
    tag = secrets.token_hex(3)
    ids = []
    for i in range(n):
        t = c.create_template(template=pb.TaskTemplate(  # type: ignore[attr-defined]
            name=f"late-{tag}-{i}", run_script="true", cron_schedule="* * * * * *", cpu_request=5, cpu_limit=500, mem_request=4 << 20, pids_limit=32,
        ))
        ids.append(t.template_id)
    began = time.time()
    loader = None
    q: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    if load_rate:
        loader = mp.get_context("spawn").Process(target=_load_worker, args=(addr, token, load_rate, seconds, q, load_runs))
        loader.start()
    time.sleep(seconds)
    ended = time.time()
    for tid in ids:
        c.pause_template(template_id=tid)  # type: ignore[attr-defined]
    submitted = 0
    load_ids: list[str] = []
    if loader is not None:
        load_ids = q.get(timeout=120)
        submitted = len(load_ids)
        loader.join(30)
    runs: list[pb.TaskExecution] = []
    deadline = time.monotonic() + 90
    for tid in ids:
        while True:
            got = list(c.list_tasks(template_id=tid, page_size=1000).tasks)  # type: ignore[attr-defined]
            if all(t.state in (pb.SUCCEEDED, pb.FAILED, pb.SKIPPED, pb.STOPPED, pb.LOST, pb.TIMED_OUT, pb.OOM_KILLED) for t in got) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        runs += got
    for tid in ids:
        c.delete_template(template_id=tid)  # type: ignore[attr-defined]
    one_off_ms: list[float] = []
    one_off_lost = 0
    if load_runs:  # every one-off task must end (none lost); how long each waited to run
        deadline = time.monotonic() + 300
        for task_id in load_ids:
            while True:
                t = c.get_task(task_id=task_id)  # type: ignore[attr-defined]
                if t.state in (pb.SUCCEEDED, pb.FAILED, pb.LOST, pb.STOPPED, pb.TIMED_OUT, pb.OOM_KILLED) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if t.state != pb.SUCCEEDED or t.attempt != 1:
                one_off_lost += 1
            elif t.start_time.seconds:
                one_off_ms.append((t.start_time.ToNanoseconds() - t.submit_time.ToNanoseconds()) / 1e6)
    c.close()
    window = [t for t in runs if began + WARMUP <= t.due_time.ToNanoseconds() / 1e9 <= ended - 1]
    started = [t for t in window if t.start_time.seconds]
    late_ms = [(t.start_time.ToNanoseconds() - t.due_time.ToNanoseconds()) / 1e6 for t in started]
    expected = n * len(range(math.ceil(began + WARMUP), math.floor(ended - 1) + 1))
    return {
        "late_ms": late_ms,
        "instants": len(window),
        "expected_instants": expected,
        "not_started": len(window) - len(started),
        "submitted_per_s": submitted / seconds if load_rate else 0.0,
        "one_off_ms": one_off_ms,
        "one_off_not_succeeded": one_off_lost,
    }


def _aps_worker(n: int, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    async def run() -> list[float]:
        late: list[float] = []
        began = time.time()

        async def job() -> None:
            now = time.time()
            if now >= began + WARMUP:
                late.append((now - math.floor(now)) * 1000)

        sched = AsyncIOScheduler(timezone="UTC")
        for i in range(n):
            sched.add_job(job, "cron", second="*", id=f"j{i}", max_instances=10, misfire_grace_time=5)
        sched.start()
        await asyncio.sleep(seconds)
        sched.shutdown(wait=False)
        return late

    q.put(asyncio.run(run()))


def aps_round(n: int, seconds: float) -> dict[str, object]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=_aps_worker, args=(n, seconds, q))
    p.start()
    late = q.get(timeout=seconds + 60)
    p.join(30)
    return {"late_ms": late, "instants": len(late), "expected_instants": len(late), "not_started": 0, "submitted_per_s": 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one 10 s round of each (about a minute)")
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures as the last line")
    ap.add_argument("--templates", type=int, default=100, help="per-second templates (default 100)")
    ap.add_argument("--seconds", type=float, default=0, help="length of one round (default 30, quick 10)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds of each kind (default 2, quick 1)")
    ap.add_argument("--load", type=float, default=500, help="one-off submissions/s in the loaded rounds (default 500)")
    ap.add_argument("--load-runs", action="store_true",
                    help="add a round where the one-off tasks are due now and run on the node too; prints their submit→running")
    args = ap.parse_args()
    secs = args.seconds or (10.0 if args.quick else 30.0)
    rounds = args.rounds or (1 if args.quick else 2)
    n = args.templates

    results: dict[str, list[dict[str, object]]] = {"corral idle": [], "corral loaded": [], "APScheduler idle": []}
    kinds: list[tuple[str, float, bool]] = [("corral idle", 0.0, False), ("corral loaded", args.load, False)]
    if args.load_runs:
        results["corral loaded, runs"] = []
        kinds.append(("corral loaded, runs", args.load, True))
    with local_cluster("bench-cron") as (addr, token, _):
        print(f"corral bench cron_lateness: {n} per-second templates, {rounds} × {secs:.0f}s rounds", file=sys.stderr)
        for r in range(rounds):
            for kind, load, load_runs in kinds:
                res = corral_round(addr, token, n, secs, load, load_runs)
                results[kind].append(res)
                lat = res["late_ms"]
                print(f"  round {r + 1} {kind}: {len(lat)} runs, p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, "  # type: ignore[arg-type]
                      f"not started {res['not_started']}, load {res['submitted_per_s']:.0f}/s", file=sys.stderr)
                if load_runs:
                    oo = res["one_off_ms"]
                    print(f"    one-off submit→running: {len(oo)} ran, p50 {pct(oo, 50):.0f} ms, p99 {pct(oo, 99):.0f} ms, "  # type: ignore[arg-type]
                          f"not succeeded {res['one_off_not_succeeded']}", file=sys.stderr)
    for r in range(rounds):
        res = aps_round(n, secs)
        results["APScheduler idle"].append(res)
        lat = res["late_ms"]
        print(f"  round {r + 1} APScheduler: {len(lat)} runs, p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms", file=sys.stderr)  # type: ignore[arg-type]

    figures: dict[str, object] = {"templates": n, "seconds": secs, "rounds": rounds, "load_per_s": args.load}
    rows = []
    for kind, rs in results.items():
        all_lat = [x for r in rs for x in r["late_ms"]]  # type: ignore[attr-defined]
        p50s = [pct(r["late_ms"], 50) for r in rs]  # type: ignore[arg-type]
        p99s = [pct(r["late_ms"], 99) for r in rs]  # type: ignore[arg-type]
        key = kind.lower().replace(",", "").replace(" ", "_")
        f = {
            "runs": len(all_lat),
            "expected_instants": sum(int(r["expected_instants"]) for r in rs),  # type: ignore[call-overload]
            "not_started": sum(int(r["not_started"]) for r in rs),  # type: ignore[call-overload]
            "p50_ms": round(statistics.median(p50s), 3),
            "p99_ms": round(statistics.median(p99s), 3),
            "max_ms": round(max(all_lat), 3) if all_lat else float("nan"),
            "p99_ms_runs": [round(x, 3) for x in p99s],
            "load_achieved_per_s": round(statistics.median(float(r["submitted_per_s"]) for r in rs), 1),  # type: ignore[arg-type]
        }
        figures[key] = f
        rows.append((
            kind, f"{f['runs']:,} / {f['expected_instants']:,}", str(f["not_started"]), f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}",
            f"{f['max_ms']:.2f}", "–".join(f"{x:.2f}" for x in (min(p99s), max(p99s))) if p99s else "",
            f"{f['load_achieved_per_s']:.0f}" if kind.startswith("corral loaded") else "",
        ))
        oo = [x for r in rs for x in r.get("one_off_ms", [])]  # type: ignore[attr-defined]
        if kind == "corral loaded, runs":
            f["one_off_ran"] = len(oo)
            f["one_off_not_succeeded"] = sum(int(r["one_off_not_succeeded"]) for r in rs)  # type: ignore[call-overload]
            f["one_off_submit_to_running_p50_ms"] = round(pct(oo, 50), 1)
            f["one_off_submit_to_running_p99_ms"] = round(pct(oo, 99), 1)
    base = figures["apscheduler_idle"]["p99_ms"]  # type: ignore[index]
    for kind in ("corral_idle", "corral_loaded"):
        figures[kind]["p99_ratio_to_apscheduler"] = round(figures[kind]["p99_ms"] / base, 2) if base else None  # type: ignore[index]
    print_table(("lateness (start − due)", "runs / instants", "not started", "p50 ms", "p99 ms", "max ms", "p99 spread", "load/s"), rows)
    print(f"p99 ratio to APScheduler: idle {figures['corral_idle']['p99_ratio_to_apscheduler']}, "  # type: ignore[index]
          f"loaded {figures['corral_loaded']['p99_ratio_to_apscheduler']}")  # type: ignore[index]
    lr = figures.get("corral_loaded_runs")
    if isinstance(lr, dict):
        print(f"one-off tasks run beside them: {lr['one_off_ran']:,} ran, {lr['one_off_not_succeeded']} did not succeed once, "
              f"submit→running p50 {lr['one_off_submit_to_running_p50_ms']:.0f} ms, p99 {lr['one_off_submit_to_running_p99_ms']:.0f} ms")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
