"""End-to-end benchmark on a local cluster (etcd, one master, one nodelet, as `corral dev`).

Measures, in one run:
  * submit latency and submit→RUNNING latency (p50/p99) over N sequential one-off tasks;
  * durable submissions/s from 64 concurrent clients (2 processes × 32 in flight),
    tasks due in an hour so only the submit path is timed;
  * raw etcd put throughput with 64 concurrent puts of a same-sized record, and the ratio.
Prints a table of medians and spreads over several rounds; `--json` adds one JSON object
as the last line. `--quick` finishes in under a minute. `--tls` measures the same again on
a cluster with mutual TLS (a fresh `corral pki` CA) and reports the overhead ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import time

from _common import local_cluster, pct, print_table

from corral.client import AsyncClient, Client
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb


def sequential(addr: str, token: str, n: int) -> tuple[list[float], list[float]]:
    c = Client(addr, token)
    submit_ms, start_ms = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        t = c.submit_task(spec=pb.TaskTemplate(run_script="true"))  # type: ignore[attr-defined]
        submit_ms.append((time.perf_counter() - t0) * 1000)
        final = c.wait_task(t.task_id, timeout=60)
        if final.state != pb.SUCCEEDED:
            raise RuntimeError(f"task {t.task_id} ended {pb.TaskState.Name(final.state)}: {final.reason}")
        sub = final.submit_time.ToNanoseconds() / 1e9
        start = final.start_time.ToNanoseconds() / 1e9
        start_ms.append((start - sub) * 1000)
    c.close()
    return submit_ms, start_ms


def _submit_worker(addr: str, token: str, inflight: int, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> tuple[int, list[float]]:
        c = AsyncClient(addr, token)
        due = int(time.time()) + 3600
        req_spec = pb.TaskTemplate(run_script="echo queued")
        lat: list[float] = []
        count = 0
        stop_at = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal count
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await c.submit_task(api_pb2.SubmitTaskRequest(spec=req_spec, run_at={"seconds": due}))  # type: ignore[attr-defined]
                lat.append((time.perf_counter() - t0) * 1000)
                count += 1

        await asyncio.gather(*(one() for _ in range(inflight)))
        await c.close()
        return count, lat

    q.put(asyncio.run(run()))


def concurrent_submits(addr: str, token: str, seconds: float, procs_n: int = 2, inflight: int = 32) -> tuple[float, list[float]]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    ps = [ctx.Process(target=_submit_worker, args=(addr, token, inflight, seconds, q)) for _ in range(procs_n)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    results = [q.get(timeout=seconds + 120) for _ in ps]
    elapsed = time.perf_counter() - t0
    for p in ps:
        p.join(30)
    total = sum(r[0] for r in results)
    lat = [x for r in results for x in r[1]]
    # elapsed includes process start-up; use the measuring window for the rate
    return total / seconds, lat if elapsed else lat


def etcd_puts(endpoint: str, seconds: float, concurrency: int = 64, size: int = 400, per_txn: int = 1) -> float:
    """Raw etcd: puts per second from `concurrency` writers, `per_txn` puts per transaction."""
    from corral.master.store import EtcdStore, Put

    async def run() -> float:
        from corral.tls import tls_files

        # over TLS when the cluster's etcd is (CORRAL_ETCD_* set by local_cluster(tls=True))
        store = EtcdStore(endpoint, prefix=f"/bench-raw-{secrets.token_hex(3)}/", tls=tls_files(flags="--etcd"))
        await store.connect()
        value = os.urandom(size)
        count = 0
        stop_at = time.perf_counter() + seconds

        async def one(i: int) -> None:
            nonlocal count
            j = 0
            while time.perf_counter() < stop_at:
                await store.txn([], [Put(f"k{i}-{j}-{k}", value) for k in range(per_txn)])
                j += 1
                count += per_txn

        await asyncio.gather(*(one(i) for i in range(concurrency)))
        await store.close()
        return count / seconds

    return asyncio.run(run())


def measure(n: int, secs: float, rounds: int, *, tls: bool) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """Sequential latencies and concurrent throughput rounds on a fresh local cluster."""
    with local_cluster("bench-node", tls=tls) as (addr, token, etcd_endpoint):
        kind = "mutual TLS" if tls else "plaintext"
        print(f"corral bench e2e ({kind}): {n} sequential tasks, {rounds} × {secs:.0f}s throughput rounds", file=sys.stderr)
        submit_ms, start_ms = sequential(addr, token, n)
        rates, raw_rates, lat_all = [], [], []
        for r in range(rounds):
            rate, lat = concurrent_submits(addr, token, secs)
            raw = etcd_puts(etcd_endpoint, secs)
            rates.append(rate)
            raw_rates.append(raw)
            lat_all += lat
            print(f"  round {r + 1}: corral {rate:,.0f} submits/s, raw etcd {raw:,.0f} puts/s", file=sys.stderr)
    return submit_ms, start_ms, rates, raw_rates, lat_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer tasks and shorter rounds (under a minute)")
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures as the last line")
    ap.add_argument("--tasks", type=int, default=0, help="sequential tasks (default 200, quick 50)")
    ap.add_argument("--seconds", type=float, default=0, help="length of one throughput round (default 10, quick 3)")
    ap.add_argument("--rounds", type=int, default=0, help="throughput rounds (default 3, quick 2)")
    ap.add_argument("--tls", action="store_true", help="measure again on a cluster with mutual TLS and report the overhead")
    args = ap.parse_args()
    n = args.tasks or (50 if args.quick else 200)
    secs = args.seconds or (3.0 if args.quick else 10.0)
    rounds = args.rounds or (2 if args.quick else 3)

    submit_ms, start_ms, rates, raw_rates, lat_all = measure(n, secs, rounds, tls=False)

    def spread(xs: list[float]) -> str:
        return f"{min(xs):,.0f}–{max(xs):,.0f}"

    figures = {
        "sequential_tasks": n,
        "submit_latency_ms_p50": round(pct(submit_ms, 50), 3),
        "submit_latency_ms_p99": round(pct(submit_ms, 99), 3),
        "submit_to_running_ms_p50": round(pct(start_ms, 50), 3),
        "submit_to_running_ms_p99": round(pct(start_ms, 99), 3),
        "concurrent_clients": 64,
        "submits_per_s_median": round(statistics.median(rates), 1),
        "submits_per_s_runs": [round(x, 1) for x in rates],
        "concurrent_submit_latency_ms_p50": round(pct(lat_all, 50), 3),
        "concurrent_submit_latency_ms_p99": round(pct(lat_all, 99), 3),
        "raw_etcd_puts_per_s_median": round(statistics.median(raw_rates), 1),
        "raw_etcd_puts_per_s_runs": [round(x, 1) for x in raw_rates],
        "ratio_submits_to_raw_puts": round(statistics.median(rates) / statistics.median(raw_rates), 3),
    }
    rows = [
        ("submit latency (sequential)", f"p50 {figures['submit_latency_ms_p50']:.2f} ms", f"p99 {figures['submit_latency_ms_p99']:.2f} ms"),
        ("submit → RUNNING (sequential)", f"p50 {figures['submit_to_running_ms_p50']:.2f} ms", f"p99 {figures['submit_to_running_ms_p99']:.2f} ms"),
        ("submits/s, 64 concurrent", f"median {figures['submits_per_s_median']:,.0f}", f"runs {spread(rates)}"),
        ("submit latency, 64 concurrent", f"p50 {figures['concurrent_submit_latency_ms_p50']:.2f} ms", f"p99 {figures['concurrent_submit_latency_ms_p99']:.2f} ms"),
        ("raw etcd puts/s, 64 concurrent", f"median {figures['raw_etcd_puts_per_s_median']:,.0f}", f"runs {spread(raw_rates)}"),
        ("ratio corral / raw etcd", f"{figures['ratio_submits_to_raw_puts']:.2f}", ""),
    ]
    if args.tls:
        t_submit, t_start, t_rates, _, t_lat = measure(n, secs, rounds, tls=True)
        figures.update({
            "tls_submit_latency_ms_p50": round(pct(t_submit, 50), 3),
            "tls_submit_latency_ms_p99": round(pct(t_submit, 99), 3),
            "tls_submits_per_s_median": round(statistics.median(t_rates), 1),
            "tls_submits_per_s_runs": [round(x, 1) for x in t_rates],
            "tls_concurrent_submit_latency_ms_p50": round(pct(t_lat, 50), 3),
            "tls_concurrent_submit_latency_ms_p99": round(pct(t_lat, 99), 3),
            "tls_throughput_ratio": round(statistics.median(t_rates) / statistics.median(rates), 3),
            "tls_latency_ratio_p50": round(pct(t_submit, 50) / pct(submit_ms, 50), 3),
        })
        rows += [
            ("submit latency (sequential), mutual TLS", f"p50 {figures['tls_submit_latency_ms_p50']:.2f} ms", f"p99 {figures['tls_submit_latency_ms_p99']:.2f} ms"),
            ("submits/s, 64 concurrent, mutual TLS", f"median {figures['tls_submits_per_s_median']:,.0f}", f"runs {spread(t_rates)}"),
            ("submit latency, 64 concurrent, mutual TLS", f"p50 {figures['tls_concurrent_submit_latency_ms_p50']:.2f} ms",
             f"p99 {figures['tls_concurrent_submit_latency_ms_p99']:.2f} ms"),
            ("TLS / plaintext", f"throughput {figures['tls_throughput_ratio']:.2f}", f"latency p50 {figures['tls_latency_ratio_p50']:.2f}"),
        ]
    print_table(("figure", "value", "spread"), rows)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
