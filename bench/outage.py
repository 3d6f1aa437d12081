"""Outage audit: every master down at once for a while, then started again, under
per-second templates with each misfire policy; each scheduled instant audited.

The cluster: one etcd, two masters, one nodelet. Templates (all "* * * * * *", each run
0.3 s as root, appending "<template> <instant> <attempt> <time>" to a marker file):
RUN_ONCE, SKIP, RUN_ALL, and RUN_ALL with a 5 s starting deadline. After `--before`
seconds both masters are killed (-9); `--outage` seconds later (default 120, `--quick` 30)
both start again; `--after` seconds on, every template is paused and the audit runs.

Per template, over every instant from its first run to the pause: how many instants; how
many the markers show executed; SKIPPED records (one by one, and instants inside a range
record); instants with no record at all (missing); instants executed twice (markers);
instants recorded SKIPPED that the markers show executed; and how late the runs after the
outage started. Also: seconds from the masters' restart until the nodelet registered with
the new leader. `--json` adds one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

from _common import pct, print_table

from corral import procs
from corral.client import Client
from corral.nodelet import cgroups
from corral.v1 import types_pb2 as pb

POLICIES = {
    "run_once": dict(misfire_policy=pb.RUN_ONCE),
    "skip": dict(misfire_policy=pb.SKIP),
    "run_all": dict(misfire_policy=pb.RUN_ALL),
    "run_all_deadline_5s": dict(misfire_policy=pb.RUN_ALL, starting_deadline={"seconds": 5}),
}
MARK = 'echo "$CORRAL_TEMPLATE_ID $(date -d "$CORRAL_SCHEDULED_TIME" +%s) $CORRAL_ATTEMPT $(date +%s.%N)" >> {out}'


def run(before: float, outage: float, after: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="corral-outage-") as d:
        tmp = Path(d)
        out = tmp / "markers"
        token = secrets.token_urlsafe(16)
        etcd = procs.start_etcd(tmp / "etcd", tmp / "logs")
        ports = [procs.free_port() for _ in range(2)]
        addr = ",".join(f"127.0.0.1:{p}" for p in ports)
        masters = [procs.start_master(etcd.info["endpoint"], token, tmp, name=f"m{i}", listen=f"127.0.0.1:{p}",
                                      extra=["--log-level", "warning"]) for i, p in enumerate(ports)]
        node = "outage-a"
        nodelet = procs.start_nodelet(addr, procs.node_token(addr, token, node), tmp, node_id=node, cpus="4", memory="4Gi")
        client = Client(addr, token, timeout=20)
        try:
            while not any(n.node_id == node and n.state == pb.READY for n in client.list_nodes().nodes):  # type: ignore[attr-defined]
                time.sleep(0.2)
            ids = {}
            for name, policy in POLICIES.items():
                t = client.create_template(template=pb.TaskTemplate(  # type: ignore[attr-defined]
                    name=name, cron_schedule="* * * * * *", user="root",
                    run_script=f"{MARK.format(out=out)}; sleep 0.3", **policy))
                ids[t.template_id] = name
            time.sleep(before)
            registered = nodelet.log_tail(100_000).count("registered with")
            down_at = time.time()
            for m in masters:
                m.kill9()
            print(f"  masters killed; down for {outage:.0f}s", file=sys.stderr)
            time.sleep(outage)
            back = time.monotonic()
            back_wall = time.time()
            for m in masters:
                m.respawn()
            rejoin = float("inf")
            while time.monotonic() - back < 120:
                if nodelet.log_tail(100_000).count("registered with") > registered:
                    rejoin = time.monotonic() - back
                    break
                time.sleep(0.05)
            print(f"  nodelet registered again after {rejoin:.1f}s", file=sys.stderr)
            time.sleep(after)
            for tid in ids:
                client.pause_template(template_id=tid)  # type: ignore[attr-defined]
            time.sleep(3)
            rows = {}
            for tid, name in ids.items():
                runs = list(client.list_tasks(template_id=tid, page_size=10_000).tasks)  # type: ignore[attr-defined]
                rows[name] = audit(tid, runs, out, down_at, back_wall)
        finally:
            client.close()
            nodelet.stop()
            for m in masters:
                m.stop()
            etcd.stop()
            cgroups.remove_node(node)
    return {"outage_s": outage, "rejoin_s": rejoin, "templates": rows}


def audit(tid: str, runs: list[pb.TaskExecution], out: Path, down_at: float, back_at: float) -> dict[str, object]:
    executed: collections.Counter[int] = collections.Counter()
    started: dict[int, float] = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        parts = line.split()
        if len(parts) == 4 and parts[0] == tid:
            instant = int(parts[1])
            executed[instant] += 1
            started[instant] = min(started.get(instant, float("inf")), float(parts[3]))
    single: dict[int, pb.TaskExecution] = {}
    ranges: list[tuple[int, int]] = []
    for r in runs:
        if r.HasField("range_end"):
            ranges.append((r.due_time.seconds, r.range_end.seconds))
        else:
            single[r.due_time.seconds] = r
    first = min([*executed, *single], default=0)
    last = max([*executed, *single], default=0)
    instants = range(first, last + 1)
    in_range = [i for i in instants if any(a <= i <= b for a, b in ranges)]
    skipped = [i for i in instants if i in single and single[i].state == pb.SKIPPED]
    missing = [i for i in instants if i not in single and i not in in_range]
    twice = [i for i in instants if executed[i] > 1]
    skipped_ran = [i for i in skipped if executed[i]]
    late = [started[i] - i for i in instants if i in started and i >= back_at]
    return {
        "instants": len(instants), "executed": sum(1 for i in instants if executed[i]), "skipped": len(skipped),
        "in_range_record": len(in_range), "missing": len(missing), "missing_ids": missing[:5],
        "executed_twice": len(twice), "skipped_but_ran": len(skipped_ran),
        "late_after_p50_s": pct(late, 50), "late_after_max_s": max(late, default=float("nan")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 30 s outage instead of 120 s")
    ap.add_argument("--outage", type=float, default=0, help="seconds with every master down (default 120)")
    ap.add_argument("--before", type=float, default=8, help="seconds of runs before the outage (default 8)")
    ap.add_argument("--after", type=float, default=15, help="seconds of runs after the restart (default 15)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    outage = args.outage or (30.0 if args.quick else 120.0)
    print(f"corral bench outage: every master down for {outage:.0f}s under per-second templates", file=sys.stderr)
    r = run(args.before, outage, args.after)
    print(f"nodelet registered with the new leader {r['rejoin_s']:.1f}s after the masters started again")
    print_table(
        ["misfire policy", "instants", "executed", "SKIPPED", "in a range record", "missing", "executed twice",
         "SKIPPED but ran", "late after p50 s", "max s"],
        [[name, str(a["instants"]), str(a["executed"]), str(a["skipped"]), str(a["in_range_record"]), str(a["missing"]),
          str(a["executed_twice"]), str(a["skipped_but_ran"]), f"{a['late_after_p50_s']:.3f}", f"{a['late_after_max_s']:.3f}"]
         for name, a in r["templates"].items()],  # type: ignore[attr-defined]
    )
    if args.json:
        print(json.dumps(r, default=str))


if __name__ == "__main__":
    main()
