"""Throughput benchmark: durable submissions per second through each API, beside raw etcd.

On a local cluster (etcd and one master, as `corral dev`; no nodelet, tasks due in an hour
so only the submit path is timed), several rounds of:
  * stream: SubmitTaskStream (the SDK's submit_many), 2 processes × 2 streams, chunks of
    5,000 tasks (each with the idempotency key the SDK adds);
  * batch: SubmitTasks, 1,000 tasks per call, 2 processes × 4 calls in flight;
  * unary: SubmitTask from 64 concurrent clients (2 processes × 32 in flight);
  * raw etcd, same run: 64 concurrent single puts, and 8 writers of 128-put transactions
    (records of the same size);
then `corral task list` (first page of 100) timed with every record of the run in etcd.

Then, per fleet size (default 1,000 and 5,000; `--nodes`), on a fresh cluster with that many
simulated nodelets (bench/sim_nodelets.py: real streams, registration and heartbeats,
simulated execution): the leader's CPU and RSS while they heartbeat every second; end-to-end
placements/s (tasks submitted in batches → ASSIGNED committed → the nodelet's RUNNING
committed); and dead-node detection (a quarter of the fleet vanishes at once; time until
all of it is DOWN, with `--heartbeat-timeout 3`).
Prints medians and spreads; `--json` adds one JSON object as the last line; `--quick` is
one short round of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import psutil
from _common import local_cluster, pct, print_table
from e2e import concurrent_submits, etcd_puts

from corral.client import AsyncClient, Client
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

PROCS = 2


def _requests(n: int, due: int) -> list[api_pb2.SubmitTaskRequest]:
    spec = pb.TaskTemplate(run_script="echo queued")
    return [api_pb2.SubmitTaskRequest(spec=spec, run_at={"seconds": due}) for _ in range(n)]


def _worker(kind: str, addr: str, token: str, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    """Submit through one API for `seconds` (bounded), report (accepted, call latencies ms)."""

    async def run() -> tuple[int, list[float], float, float]:
        c = AsyncClient(addr, token)
        due = int(time.time()) + 3600
        accepted = 0
        lat: list[float] = []
        stop_at = time.perf_counter() + seconds
        chunk, inflight = (5000, 2) if kind == "stream" else (1000, 4)

        async def one() -> None:
            nonlocal accepted
            while time.perf_counter() < stop_at:
                reqs = _requests(chunk, due)
                t0 = time.perf_counter()
                if kind == "stream":
                    resp = await c.submit_many(reqs, timeout=120)
                else:
                    resp = await c.submit_tasks(api_pb2.SubmitTasksRequest(tasks=reqs), timeout=120)  # type: ignore[attr-defined]
                lat.append((time.perf_counter() - t0) * 1000)
                accepted += resp.accepted

        began = time.time()
        await asyncio.gather(*(one() for _ in range(inflight)))
        ended = time.time()
        await c.close()
        return accepted, lat, began, ended

    q.put(asyncio.run(run()))


def api_rate(kind: str, addr: str, token: str, seconds: float) -> tuple[float, list[float]]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    ps = [ctx.Process(target=_worker, args=(kind, addr, token, seconds, q)) for _ in range(PROCS)]
    for p in ps:
        p.start()
    results = [q.get(timeout=seconds + 300) for _ in ps]
    for p in ps:
        p.join(30)
    total = sum(r[0] for r in results)
    # from the first call sent to the last answer received, over all processes
    span = max(r[3] for r in results) - min(r[2] for r in results)
    return total / span, [x for r in results for x in r[1]]


def list_first_page(addr: str, token: str, n: int = 20) -> tuple[list[float], int]:
    c = Client(addr, token)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.list_tasks(page_size=100)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - t0) * 1000)
    total = 0
    token_ = ""
    while True:  # count the records through the API (pages of 1,000)
        page = c.list_tasks(page_size=1000, page_token=token_)  # type: ignore[attr-defined]
        total += len(page.tasks)
        token_ = page.next_page_token
        if not token_:
            break
    c.close()
    return out, total


def _status(c: Client) -> tuple[dict[str, int], dict[str, int]]:
    st = c.cluster_status()  # type: ignore[attr-defined]
    return dict(st.nodes_by_state), dict(st.tasks_by_state)


def _wait(what: str, cond, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


def fleet_figures(nodes: int, tasks: int) -> dict[str, object]:
    from sim_nodelets import start_fleet

    with local_cluster(None, master_args=["--heartbeat-timeout", "3"]) as (addr, token, _):
        master = psutil.Process(int(os.environ["CORRAL_BENCH_MASTER_PID"]))
        c = Client(addr, token)
        fleet = start_fleet(addr, token, nodes, procs=4)
        try:
            took = _wait(f"{nodes} nodes READY", lambda: _status(c)[0].get("READY", 0) >= nodes, 300)
            print(f"  {nodes} nodelets registered in {took:.1f}s", file=sys.stderr)
            time.sleep(3)
            master.cpu_percent(None)
            time.sleep(10)
            cpu = master.cpu_percent(None) / 100
            rss = master.memory_info().rss / 2**20
            reqs = [api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script="sim", cpu_request=100, mem_request=64 << 20)) for _ in range(1000)]
            t0 = time.monotonic()
            for _ in range(tasks // 1000):
                c.submit_tasks(tasks=reqs)  # type: ignore[attr-defined]
            try:
                placed = _wait(
                    f"{tasks} tasks started", lambda: sum(v for k, v in _status(c)[1].items() if k in ("RUNNING", "SUCCEEDED")) >= tasks, 180,
                )
            except RuntimeError as e:  # a saturated master: say so, keep the other figures
                print(f"  {e}; leader CPU {master.cpu_percent(None) / 100:.2f} cores", file=sys.stderr)
                return {"nodes": nodes, "leader_cpu_cores": round(cpu, 3), "leader_rss_mib": round(rss, 1), "tasks": tasks,
                        "placements_per_s": float("nan"), "dead_node_detection_s": float("nan"), "dead_nodes": 0, "error": str(e)}
            elapsed = time.monotonic() - t0
            rate = tasks / elapsed
            print(f"  {tasks} tasks submitted, placed and started in {elapsed:.1f}s ({placed:.1f}s after the last submission): {rate:,.0f}/s",
                  file=sys.stderr)
            victim = fleet[-1]
            lost = nodes - (nodes // len(fleet)) * (len(fleet) - 1)
            victim.kill()
            t_kill = time.monotonic()
            detect = _wait(f"{lost} nodes DOWN", lambda: _status(c)[0].get("DOWN", 0) >= lost, 120)
            print(f"  {lost} vanished nodes DOWN after {time.monotonic() - t_kill:.1f}s", file=sys.stderr)
        finally:
            for p in fleet:
                p.kill()
                p.join(10)
            c.close()
    return {"nodes": nodes, "leader_cpu_cores": round(cpu, 3), "leader_rss_mib": round(rss, 1), "placements_per_s": round(rate, 1),
            "tasks": tasks, "dead_node_detection_s": round(detect, 2), "dead_nodes": lost}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round of each (about a minute)")
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures as the last line")
    ap.add_argument("--seconds", type=float, default=0, help="length of one round (default 10, quick 4)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds of each (default 3, quick 1)")
    ap.add_argument("--nodes", default="", help="simulated fleet sizes, comma-separated (default 1000,5000; quick 500)")
    ap.add_argument("--fleet-tasks", type=int, default=0, help="tasks placed per fleet (default 10,000; quick 2,000)")
    args = ap.parse_args()
    secs = args.seconds or (4.0 if args.quick else 10.0)
    rounds = args.rounds or (1 if args.quick else 3)

    runs: dict[str, list[float]] = {k: [] for k in ("stream", "batch", "unary", "raw_puts", "raw_txn_puts")}
    lats: dict[str, list[float]] = {"stream": [], "batch": [], "unary": []}
    with local_cluster(None) as (addr, token, endpoint):
        print(f"corral bench throughput: {rounds} × {secs:.0f}s rounds", file=sys.stderr)
        for r in range(rounds):
            for kind in ("stream", "batch"):
                rate, lat = api_rate(kind, addr, token, secs)
                runs[kind].append(rate)
                lats[kind] += lat
            rate, lat = concurrent_submits(addr, token, secs)
            runs["unary"].append(rate)
            lats["unary"] += lat
            runs["raw_puts"].append(etcd_puts(endpoint, secs))
            runs["raw_txn_puts"].append(etcd_puts(endpoint, secs, concurrency=8, per_txn=128))
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()), file=sys.stderr)
        page_ms, records = list_first_page(addr, token)
        master_rss = psutil.Process(int(os.environ["CORRAL_BENCH_MASTER_PID"])).memory_info().rss / 2**20

    fleets = [fleet_figures(int(n), args.fleet_tasks or (2000 if args.quick else 10_000))
              for n in (args.nodes or ("500" if args.quick else "1000,5000")).split(",") if n.strip()]

    med = {k: statistics.median(v) for k, v in runs.items()}
    figures: dict[str, object] = {
        "rounds": rounds, "seconds": secs,
        **{f"{k}_per_s_median": round(v, 1) for k, v in med.items()},
        **{f"{k}_per_s_runs": [round(x, 1) for x in v] for k, v in runs.items()},
        **{f"{k}_call_ms_p50": round(pct(v, 50), 2) for k, v in lats.items()},
        **{f"{k}_call_ms_p99": round(pct(v, 99), 2) for k, v in lats.items()},
        "stream_ratio_to_raw_txn_puts": round(med["stream"] / med["raw_txn_puts"], 3),
        "batch_ratio_to_raw_txn_puts": round(med["batch"] / med["raw_txn_puts"], 3),
        "unary_ratio_to_raw_puts": round(med["unary"] / med["raw_puts"], 3),
        "list_first_page_ms_p50": round(pct(page_ms, 50), 2),
        "list_first_page_ms_p99": round(pct(page_ms, 99), 2),
        "records": records,
        "master_rss_mib": round(master_rss, 1),
        "master_bytes_per_record": round(master_rss * 2**20 / max(records, 1)),
        "fleets": fleets,
    }

    def spread(xs: list[float]) -> str:
        return f"{min(xs):,.0f}–{max(xs):,.0f}"

    rows = [
        ("stream submit (submit_many)", f"{med['stream']:,.0f}/s", spread(runs["stream"]), f"call p50 {figures['stream_call_ms_p50']} ms (5,000 tasks)",
         f"{figures['stream_ratio_to_raw_txn_puts']:.2f} × raw txn puts"),
        ("batch submit (SubmitTasks)", f"{med['batch']:,.0f}/s", spread(runs["batch"]), f"call p50 {figures['batch_call_ms_p50']} ms (1,000 tasks)",
         f"{figures['batch_ratio_to_raw_txn_puts']:.2f} × raw txn puts"),
        ("unary submit, 64 clients", f"{med['unary']:,.0f}/s", spread(runs["unary"]), f"p50 {figures['unary_call_ms_p50']} ms, p99 {figures['unary_call_ms_p99']} ms",
         f"{figures['unary_ratio_to_raw_puts']:.2f} × raw puts"),
        ("raw etcd puts, 64 concurrent", f"{med['raw_puts']:,.0f}/s", spread(runs["raw_puts"]), "", ""),
        ("raw etcd puts in 128-put txns, 8 writers", f"{med['raw_txn_puts']:,.0f}/s", spread(runs["raw_txn_puts"]), "", ""),
        (f"task list first page ({records:,} records)", f"p50 {figures['list_first_page_ms_p50']} ms", f"p99 {figures['list_first_page_ms_p99']} ms", "", ""),
        (f"master memory ({records:,} records cached)", f"{master_rss:,.0f} MiB RSS", f"{figures['master_bytes_per_record']:,} B/record", "", ""),
    ]
    for f in fleets:
        rows.append((f"{f['nodes']:,} simulated nodelets: placements", f"{f['placements_per_s']:,.0f}/s", f"{f['tasks']:,} tasks",
                     str(f.get("error", "submitted → RUNNING committed"))[:60], ""))
        rows.append((f"{f['nodes']:,} simulated nodelets: leader", f"{f['leader_cpu_cores']:.2f} cores", f"{f['leader_rss_mib']:,.0f} MiB RSS", "heartbeats every 1 s", ""))
        rows.append((f"{f['nodes']:,} simulated nodelets: dead-node detection", f"{f['dead_node_detection_s']:.1f} s", f"{f['dead_nodes']:,} nodes", "--heartbeat-timeout 3", ""))
    print_table(("figure", "median", "spread", "latency", "vs etcd"), rows)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
