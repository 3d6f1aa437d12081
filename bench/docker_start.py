"""Docker start benchmark: a `true` container through corral vs a bare `docker run --rm` of
the same image, measured in the same run.

  * submit → RUNNING and submit → SUCCEEDED through corral (docker driver), p50/p99;
  * `docker run --rm IMAGE true` wall time, p50/p99, and the ratio corral/bare;
  * containers started per second with 4 concurrent starts, through corral.
`--quick` takes fewer samples; `--json` prints the figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

from _common import local_cluster, pct, print_table

from corral.client import Client
from corral.testimage import ensure_image
from corral.v1 import types_pb2 as pb


def secs(ts: object) -> float:
    return ts.ToNanoseconds() / 1e9  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--samples", type=int, default=0, help="sequential samples of each (default 30, quick 8)")
    args = ap.parse_args()
    n = args.samples or (8 if args.quick else 30)
    burst = 12 if args.quick else 40
    image = ensure_image()
    with local_cluster("bench-docker", driver="docker") as (addr, token, _):
        c = Client(addr, token)
        spec = pb.TaskTemplate(driver=pb.DOCKER, image=image, run_script="true")
        c.wait_task(c.submit_task(spec=spec).task_id, timeout=60)  # type: ignore[attr-defined]  # warm-up
        to_running, to_done, bare = [], [], []
        for i in range(n):
            t = c.submit_task(spec=spec)  # type: ignore[attr-defined]
            final = c.wait_task(t.task_id, timeout=60)
            if final.state != pb.SUCCEEDED:
                raise RuntimeError(f"{t.task_id}: {pb.TaskState.Name(final.state)} {final.reason}")
            to_running.append(secs(final.start_time) - secs(final.submit_time))
            to_done.append(secs(final.finish_time) - secs(final.submit_time))
            t0 = time.perf_counter()
            subprocess.run(["docker", "run", "--rm", "--network", "none", image, "true"], check=True, capture_output=True)
            bare.append(time.perf_counter() - t0)
            print(f"  sample {i + 1}: corral →RUNNING {to_running[-1] * 1000:.0f} ms, →SUCCEEDED {to_done[-1] * 1000:.0f} ms; docker run {bare[-1] * 1000:.0f} ms", file=sys.stderr)
        # 4 concurrent starters
        ids: list[str] = []
        lock = threading.Lock()

        def starter(k: int) -> None:
            cc = Client(addr, token)
            for _ in range(burst // 4):
                t = cc.submit_task(spec=spec)  # type: ignore[attr-defined]
                cc.wait_task(t.task_id, timeout=120)
                with lock:
                    ids.append(t.task_id)
            cc.close()

        t0 = time.perf_counter()
        threads = [threading.Thread(target=starter, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rate = len(ids) / (time.perf_counter() - t0)
        c.close()
    figures = {
        "samples": n,
        "corral_submit_to_running_ms_p50": round(pct(to_running, 50) * 1000, 1),
        "corral_submit_to_running_ms_p99": round(pct(to_running, 99) * 1000, 1),
        "corral_submit_to_succeeded_ms_p50": round(pct(to_done, 50) * 1000, 1),
        "corral_submit_to_succeeded_ms_p99": round(pct(to_done, 99) * 1000, 1),
        "docker_run_rm_ms_p50": round(pct(bare, 50) * 1000, 1),
        "docker_run_rm_ms_p99": round(pct(bare, 99) * 1000, 1),
        "ratio_succeeded_vs_docker_run_p50": round(pct(to_done, 50) / pct(bare, 50), 3),
        "ratio_succeeded_vs_docker_run_p99": round(pct(to_done, 99) / pct(bare, 99), 3),
        "containers_per_s_4_concurrent": round(rate, 2),
        "spread_docker_run_ms": [round(min(bare) * 1000, 1), round(max(bare) * 1000, 1)],
        "median_corral_succeeded_ms": round(statistics.median(to_done) * 1000, 1),
    }
    rows = [
        ("corral submit → RUNNING", f"p50 {figures['corral_submit_to_running_ms_p50']:.0f} ms", f"p99 {figures['corral_submit_to_running_ms_p99']:.0f} ms"),
        ("corral submit → SUCCEEDED", f"p50 {figures['corral_submit_to_succeeded_ms_p50']:.0f} ms", f"p99 {figures['corral_submit_to_succeeded_ms_p99']:.0f} ms"),
        ("docker run --rm (same image)", f"p50 {figures['docker_run_rm_ms_p50']:.0f} ms", f"p99 {figures['docker_run_rm_ms_p99']:.0f} ms"),
        ("ratio corral SUCCEEDED / docker run", f"p50 {figures['ratio_succeeded_vs_docker_run_p50']:.2f}", f"p99 {figures['ratio_succeeded_vs_docker_run_p99']:.2f}"),
        ("containers/s, 4 concurrent (corral)", f"{figures['containers_per_s_4_concurrent']:.2f}", f"{burst} containers"),
    ]
    print_table(("figure", "value", "spread"), rows)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
