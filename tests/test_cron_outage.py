"""Every master down at once, then started again: the nodelet finds the new leader within
seconds (never marked DOWN for having been slow to find it), and what it ran before and
during the outage is applied as it ended: nothing runs twice. Evidence: marker lines the
runs write on the host ("<task> <attempt> <time>"), not corral's records."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from corral.v1 import types_pb2 as pb

from harness import Cluster, kill9, wait_for

pytestmark = pytest.mark.integration

OUTAGE = 30.0  # seconds; gRPC's default reconnect backoff would be at ~16 s per try by then
MARK = 'echo "$CORRAL_TASK_ID $CORRAL_ATTEMPT $(date +%s.%N)" >> {out}'


def _attempts(out: Path) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = collections.defaultdict(set)
    for line in out.read_text().splitlines() if out.exists() else []:
        parts = line.split()
        if len(parts) == 3:
            seen[parts[0]].add(int(parts[1]))
    return seen


def test_after_every_master_was_down_the_node_rejoins_at_once_and_nothing_runs_twice(cluster: Cluster, tmp_path: Path) -> None:
    for slot in (0, 1):
        cluster.start_master(slot)  # heartbeat timeout 6 s: a new leader gives nodes 6 + 5 s
    cluster.start_nodelet("a")
    nodelet = cluster.nodelets["a"]
    c = cluster.client()
    out = tmp_path / "markers"
    script = f"{MARK.format(out=out)}; sleep 0.3; {MARK.format(out=out)}"
    ticks = {
        c.create_template(template=pb.TaskTemplate(name=name, cron_schedule="* * * * * *", user="root", run_script=script,
                                                   **policy)).template_id: name
        for name, policy in {"tick": {}, "tick-all-5s": dict(misfire_policy=pb.RUN_ALL, starting_deadline={"seconds": 5})}.items()
    }
    one_off = c.submit_task(spec=pb.TaskTemplate(run_script=f"{MARK.format(out=out)}; sleep 2; {MARK.format(out=out)}", user="root"))
    wait_for(lambda: c.get_task(task_id=one_off.task_id).state == pb.RUNNING, 20, what="the one-off RUNNING")
    time.sleep(0.5)

    registered = nodelet.log_tail(10_000).count("registered with")
    for m in [m for m in cluster.masters if m.alive()]:
        kill9(m)
    time.sleep(OUTAGE)
    back = time.monotonic()
    for slot in (0, 1):
        cluster.start_master(slot)
    wait_for(lambda: nodelet.log_tail(10_000).count("registered with") > registered, 30, what="the nodelet registered again")
    rejoin = time.monotonic() - back
    print(f"nodelet registered again {rejoin:.1f}s after the masters were started")
    assert rejoin < 11.0, f"the nodelet took {rejoin:.1f}s to find the new leader; liveness gives it 11 s"

    done = c.wait_task(one_off.task_id, timeout=30)
    assert done.state == pb.SUCCEEDED and done.attempt == 1, f"its outcome, kept through the outage, is applied: {done}"
    time.sleep(3)
    for tid in ticks:
        c.pause_template(template_id=tid)
    time.sleep(2)
    executed = _attempts(out)
    twice = {t: a for t, a in executed.items() if len(a) > 1}
    assert not twice, f"ran more than once: {twice}"
    for tid, name in ticks.items():  # each instant from the first to the last: exactly one outcome
        runs = {r.due_time.seconds: r for r in c.list_tasks(template_id=tid, page_size=1000).tasks}
        instants = range(min(runs), max(runs) + 1)
        missing = [i for i in instants if i not in runs]
        assert not missing, f"{name}: instants with no record: {missing}"
        ran_but_skipped = [i for i in instants if runs[i].state == pb.SKIPPED and runs[i].task_id in executed]
        assert not ran_but_skipped, f"{name}: recorded SKIPPED, yet ran: {ran_but_skipped}"
        not_run = [i for i in instants if runs[i].state == pb.SUCCEEDED and runs[i].task_id not in executed]
        assert not not_run, f"{name}: recorded SUCCEEDED without a marker: {not_run}"
    logs = "\n".join(m.log_tail(2000) for m in cluster.masters[-2:])
    assert " DOWN" not in logs, "a node was marked DOWN after the restart"
