"""Chaos benchmark: a random schedule of faults under a steady stream of tasks, checked from
the tasks' own marker files (not corral's records).

The cluster: one etcd, three masters, two nodelets. Tasks arrive at `--rate` per second;
each runs 1-3 s as root and appends "<task> <attempt> <time>" to a marker file every 100 ms.
Every `--every` seconds one fault, at random: kill -9 of the leader (restarted 3 s later),
SIGSTOP of a nodelet for 8-12 s, kill -9 of a nodelet (restarted 5 s later), kill -9 of etcd
(restarted 2 s later). (A partition is tried in tests/test_faults.py with one master: with
several, a nodelet follows the leader's redirect around a proxy, so it needs network
namespaces to cut.)

Afterwards, with every fault healed, it waits for every acknowledged task to end, and
prints: faults injected, tasks acknowledged, lost (acknowledged, never SUCCEEDED), attempts
that overlapped in time and the largest overlap, markers written after a task's record was
final, and how long each node took to be READY after its fault ended.
`--quick` runs 60 s; the default 300 s. `--json` prints the figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import pct, print_table

from corral import procs
from corral.client import Client
from corral.nodelet import cgroups
from corral.v1 import types_pb2 as pb

LOOP = ('end=$(( $(date +%s) + {secs} )); while [ "$(date +%s)" -lt "$end" ]; do '
        'echo "$CORRAL_TASK_ID $CORRAL_ATTEMPT $(date +%s.%N)" >> {out}; sleep 0.1; done')


class Chaos:
    def __init__(self, tmp: Path, timeout: float) -> None:
        self.tmp = tmp
        self.token = secrets.token_urlsafe(16)
        self.etcd = procs.start_etcd(tmp / "etcd", tmp / "logs")
        self.ports = [procs.free_port() for _ in range(3)]
        self.addr = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.masters = [
            procs.start_master(self.etcd.info["endpoint"], self.token, tmp, name=f"m{i}", listen=f"127.0.0.1:{p}",
                               extra=["--heartbeat-timeout", str(timeout), "--log-level", "warning"])
            for i, p in enumerate(self.ports)
        ]
        self.client = Client(self.addr, self.token, timeout=20)
        self.nodelets: dict[str, procs.Proc] = {}
        for node in ("chaos-a", "chaos-b"):
            secret = procs.node_token(self.addr, self.token, node)
            self.nodelets[node] = procs.start_nodelet(self.addr, secret, tmp, node_id=node, cpus="4", memory="4Gi",
                                                      extra=["--log-level", "warning"])
        self.wait_ready(60)

    def wait_ready(self, bound: float) -> dict[str, float]:
        """Seconds until each node was READY again (bounded)."""
        start = time.monotonic()
        left = set(self.nodelets)
        took: dict[str, float] = {}
        while left and time.monotonic() - start < bound:
            try:
                for n in self.client.list_nodes().nodes:  # type: ignore[attr-defined]
                    if n.node_id in left and n.state == pb.READY:
                        took[n.node_id] = time.monotonic() - start
                        left.discard(n.node_id)
            except Exception:  # noqa: BLE001 - a master may be down right now
                pass
            time.sleep(0.2)
        for n in left:
            took[n] = float("inf")
        return took

    def leader(self) -> procs.Proc:
        address = self.client.cluster_status().leader.address  # type: ignore[attr-defined]
        return next(m for m in self.masters if m.alive() and m.info["address"] == address)

    # ---- faults: each returns when healed --------------------------------------------------

    def fault(self, kind: str, rng: random.Random) -> None:
        node = rng.choice(sorted(self.nodelets))
        if kind == "leader-kill9":
            m = self.leader()
            m.kill9()
            time.sleep(3)
            m.respawn()
        elif kind == "nodelet-stop":
            self.nodelets[node].popen.send_signal(signal.SIGSTOP)
            time.sleep(rng.uniform(8, 12))
            self.nodelets[node].popen.send_signal(signal.SIGCONT)
        elif kind == "nodelet-kill9":
            self.nodelets[node].kill9()
            time.sleep(5)
            self.nodelets[node].respawn()
        elif kind == "etcd-kill9":
            self.etcd.kill9()
            time.sleep(2)
            self.etcd.respawn()

    def close(self) -> None:
        self.client.close()
        for n in self.nodelets.values():
            n.popen.send_signal(signal.SIGCONT)
            n.stop()
        for m in self.masters:
            m.stop()
        self.etcd.stop()
        for node in self.nodelets:
            cgroups.remove_node(node)


def spans(path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    return {(k[0], int(k[1])): v for k, v in procs.marker_spans(path, 3).items()}


KINDS = ["leader-kill9", "nodelet-stop", "nodelet-kill9", "etcd-kill9"]


def run(seconds: float, rate: float, every: float, timeout: float, seed: int, kinds: list[str] = KINDS) -> dict[str, object]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="corral-chaos-") as d:
        tmp = Path(d)
        out = tmp / "markers"
        chaos = Chaos(tmp, timeout)
        acked: list[str] = []
        refused = 0
        stop = threading.Event()

        def submit() -> None:
            nonlocal refused
            c = Client(chaos.addr, chaos.token, timeout=20)
            try:
                while not stop.is_set():
                    spec = pb.TaskTemplate(run_script=LOOP.format(secs=rng.randint(1, 3), out=out), user="root", cpu_request=100, mem_request=16 << 20)
                    try:
                        acked.append(c.submit_task(spec=spec).task_id)  # type: ignore[attr-defined]
                    except Exception:  # noqa: BLE001 - not acknowledged: not counted
                        refused += 1
                    stop.wait(1 / rate)
            finally:
                c.close()

        submitter = threading.Thread(target=submit, daemon=True)
        faults: list[tuple[str, float]] = []
        recovery: list[float] = []
        try:
            submitter.start()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(min(every, max(0.0, end - time.monotonic())))
                if time.monotonic() >= end:
                    break
                kind = rng.choice(kinds)
                began = time.monotonic()
                chaos.fault(kind, rng)
                faults.append((kind, time.time() - (time.monotonic() - began)))
                recovery += [t for t in chaos.wait_ready(60).values()]
                print(f"  fault {len(faults)}: {kind}, ready again after {max(recovery[-2:]):.1f}s", file=sys.stderr)
            stop.set()
            submitter.join(30)
            finals = {}
            for task_id in acked:
                try:
                    finals[task_id] = chaos.client.wait_task(task_id, timeout=120)
                except Exception:  # noqa: BLE001 - counted as lost below
                    pass
        finally:
            stop.set()
            chaos.close()
        s = spans(out)
        lost = [i for i in acked if i not in finals or finals[i].state != pb.SUCCEEDED]
        overlaps: list[float] = []
        after_final = 0
        by_task: dict[str, list[tuple[int, tuple[float, float]]]] = {}
        for (task_id, attempt), span in s.items():
            by_task.setdefault(task_id, []).append((attempt, span))
        for task_id, attempts in by_task.items():
            attempts.sort()
            for (a1, (_, end1)), (a2, (start2, _)) in zip(attempts, attempts[1:], strict=False):
                if end1 >= start2:
                    overlaps.append(end1 - start2)
                    f = finals.get(task_id)
                    hist = [(h.attempt, h.node_id, pb.TaskState.Name(h.state), h.reason) for h in f.history] if f else []
                    near = [k for k, at in faults if at <= start2][-1:] if faults else []
                    print(f"  overlap {task_id}: attempt {a1} until {end1:.2f}, attempt {a2} from {start2:.2f}; "
                          f"last fault before: {near}; history {hist}", file=sys.stderr)
            final = finals.get(task_id)
            if final is not None and final.finish_time.seconds and attempts[-1][1][1] > final.finish_time.ToNanoseconds() / 1e9 + 0.05:
                after_final += 1
        return {
            "seconds": seconds, "faults": len(faults), "fault_kinds": sorted({k for k, _ in faults}),
            "acknowledged": len(acked), "refused": refused, "lost": len(lost), "lost_ids": lost[:10],
            "overlapping": len(overlaps), "largest_overlap_s": max(overlaps, default=0.0), "ran_after_final": after_final,
            "recovery_p50_s": pct([r for r in recovery if r != float("inf")], 50),
            "recovery_max_s": max(recovery, default=0.0),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 s instead of 300 s")
    ap.add_argument("--seconds", type=float, default=0, help="how long to inject faults")
    ap.add_argument("--rate", type=float, default=2.0, help="tasks submitted per second (default 2)")
    ap.add_argument("--every", type=float, default=8.0, help="seconds between faults (default 8)")
    ap.add_argument("--heartbeat-timeout", type=float, default=6.0, help="the masters' --heartbeat-timeout (default 6)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: from the clock)")
    ap.add_argument("--faults", default=",".join(KINDS), help=f"which faults to draw from (default {','.join(KINDS)})")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    seconds = args.seconds or (60.0 if args.quick else 300.0)
    seed = args.seed or int(time.time())
    print(f"corral bench chaos: {seconds:.0f}s of faults every {args.every:g}s, {args.rate:g} tasks/s, seed {seed}", file=sys.stderr)
    kinds = [k for k in args.faults.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        ap.error(f"--faults: use some of {', '.join(KINDS)}")
    r = run(seconds, args.rate, args.every, args.heartbeat_timeout, seed, kinds)
    print_table(
        ["faults", "kinds", "acknowledged", "lost", "overlapping", "largest overlap s", "ran after final", "ready again p50 s", "max s"],
        [[str(r["faults"]), ",".join(r["fault_kinds"]), str(r["acknowledged"]), str(r["lost"]), str(r["overlapping"]),  # type: ignore[arg-type]
          f"{r['largest_overlap_s']:.3f}", str(r["ran_after_final"]), f"{r['recovery_p50_s']:.1f}", f"{r['recovery_max_s']:.1f}"]],
    )
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
