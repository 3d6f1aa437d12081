"""Faults under a stream of tasks: a leader killed with -9, a short etcd outage, a network
partition between a nodelet and the masters. Every task appends "<task> <attempt> <time>"
to a marker file on the host while it runs (as root: the one kind of task that may write
the host's files); the checker reads those markers, not corral's records: no acknowledged
task lost, no two attempts of one task overlapping in time, nothing running after its
record is final, and every node READY again without restarting anything.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from corral import procs
from corral.client import Client
from corral.v1 import types_pb2 as pb

from harness import Cluster, kill9, wait_for

pytestmark = pytest.mark.integration

LOOP = ('end=$(( $(date +%s) + {secs} )); while [ "$(date +%s)" -lt "$end" ]; do '
        'echo "$CORRAL_TASK_ID $CORRAL_ATTEMPT $(date +%s.%N)" >> {out}; sleep 0.1; done')


def spans(path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(task, attempt) → (first, last) marker time."""
    return {(k[0], int(k[1])): v for k, v in procs.marker_spans(path, 3).items()}


def check(c: Client, ids: list[str], out: Path) -> list[pb.TaskExecution]:
    """Every task finished SUCCEEDED; attempts of one task never overlapped; no marker
    after a task's record became final."""
    finals = [c.wait_task(i, timeout=90) for i in ids]
    s = spans(out)
    for t in finals:
        assert t.state == pb.SUCCEEDED, t
        mine = sorted((a, span) for (task, a), span in s.items() if task == t.task_id)
        assert mine and mine[-1][0] == t.attempt, (t.task_id, mine)
        for (_, (_, end)), (_, (start, _)) in zip(mine, mine[1:], strict=False):
            assert end < start, f"{t.task_id}: attempts overlap ({mine})"
        assert mine[-1][1][1] <= t.finish_time.ToNanoseconds() / 1e9 + 0.05, f"{t.task_id} ran after its record was final"
    return finals


def test_leader_kill9_under_load_keeps_running_work_and_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    for i in range(3):
        cluster.start_master(i, heartbeat_timeout=10)
    cluster.start_nodelet("a", cpus="8", memory="4Gi")
    c = cluster.client()
    out = tmp_path / "markers"
    spec = pb.TaskTemplate(run_script=LOOP.format(secs=5, out=out), user="root", cpu_request=100, mem_request=16 << 20)
    ids = [c.submit_task(spec=spec).task_id for _ in range(6)]  # type: ignore[attr-defined]
    wait_for(lambda: all(c.get_task(task_id=i).state == pb.RUNNING for i in ids), 30, what="all RUNNING")
    kill9(cluster.leader())
    ids += [c.submit_task(spec=spec).task_id for _ in range(6)]  # type: ignore[attr-defined]
    finals = check(c, ids, out)
    assert [t.attempt for t in finals] == [1] * len(ids), "a failover kills nothing: the node lease outlasts it"
    wait_for(lambda: c.get_node(node_id=cluster.node_id("a")).state == pb.READY, 20, what="node READY")  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["kill9", "sigstop", "member-kill9"])
def test_a_short_etcd_outage_kills_no_running_work(tmp_path: Path, fault: str) -> None:
    """etcd killed and started again, or paused (SIGSTOP) and let go, for 2 s: shorter than
    the node lease, so running tasks run through it, and nothing runs twice. With a
    three-member etcd, one member (the first, which the masters most likely talk to)
    killed and started again 2 s later: the store stays up, nothing may even pause."""
    if fault == "member-kill9":
        members = procs.start_etcd_cluster(tmp_path / "etcd", tmp_path / "logs")
        etcd = members[0]
        endpoints = ",".join(m.info["endpoint"] for m in members)
    else:
        etcd = procs.start_etcd(tmp_path / "etcd", tmp_path / "logs")
        members, endpoints = [etcd], etcd.info["endpoint"]
    cluster = Cluster(endpoints, tmp_path, "etcd-outage")
    try:
        cluster.start_master(heartbeat_timeout=10)
        cluster.start_nodelet("a")
        c = cluster.client()
        out = tmp_path / "markers"
        spec = pb.TaskTemplate(run_script=LOOP.format(secs=8, out=out), user="root", cpu_request=100, mem_request=16 << 20)
        ids = [c.submit_task(spec=spec).task_id for _ in range(3)]  # type: ignore[attr-defined]
        wait_for(lambda: all(c.get_task(task_id=i).state == pb.RUNNING for i in ids), 30, what="all RUNNING")
        if fault in ("kill9", "member-kill9"):
            etcd.kill9()
            time.sleep(2.0)
            etcd.respawn()
            procs.wait_port("127.0.0.1", int(etcd.info["endpoint"].rsplit(":", 1)[1]), etcd, 30)
        else:
            etcd.popen.send_signal(signal.SIGSTOP)
            time.sleep(2.0)
            etcd.popen.send_signal(signal.SIGCONT)
        finals = check(c, ids, out)
        assert [t.attempt for t in finals] == [1] * len(ids), "shorter than the node lease: nothing was killed"
        s = spans(out)
        for i in ids:  # the markers never paused for long: the task ran through the outage
            times = sorted(float(line.split()[2]) for line in out.read_text().splitlines() if line.startswith(i + " ") and len(line.split()) == 3)
            assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 1.0, (i, s)
        after = c.submit_task(spec=pb.TaskTemplate(run_script="true"))  # type: ignore[attr-defined]
        assert c.wait_task(after.task_id, timeout=60).state == pb.SUCCEEDED
        if fault == "member-kill9":
            wait_for(lambda: sum(e.healthy for e in c.cluster_status().etcd) == 3, 30, what="the member healthy again")
    finally:
        cluster.stop()
        for m in members:
            m.stop()


def test_a_partitioned_node_s_task_ends_before_its_next_attempt_and_the_node_returns(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()  # heartbeat timeout 6 s: node lease 4.2 s
    proxy = procs.Blackhole(cluster.addr)
    try:
        node_a = cluster.node_id("a")
        cluster.node_ids.add(node_a)
        cluster.nodelets["a"] = procs.start_nodelet(proxy.addr, cluster.node_token(node_a), cluster.run_dir, node_id=node_a,
                                                    cpus="2", memory="2Gi")
        cluster.wait_node_ready(node_a)
        c = cluster.client()
        out = tmp_path / "markers"
        t = c.submit_task(spec=pb.TaskTemplate(run_script=LOOP.format(secs=25, out=out), user="root"))  # type: ignore[attr-defined]
        wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 30, what="RUNNING on a")
        cluster.start_nodelet("b")
        proxy.cut.set()
        cut_at = time.time()
        wait_for(lambda: (x := c.get_task(task_id=t.task_id)).attempt == 2 and x.state == pb.RUNNING, 40, what="attempt 2 RUNNING")
        wait_for(lambda: spans(out).get((t.task_id, 2)), 10, what="attempt 2 markers")
        time.sleep(0.5)
        s = spans(out)
        assert s[(t.task_id, 1)][1] < s[(t.task_id, 2)][0], f"the copies overlapped: {s}"
        assert s[(t.task_id, 1)][1] - cut_at < 6.0, "attempt 1 was killed on its node by the lease"
        proxy.cut.clear()  # the partition heals: node a comes back by itself
        wait_for(lambda: c.get_node(node_id=node_a).state == pb.READY, 40, what="node a READY again")  # type: ignore[attr-defined]
        time.sleep(1.0)
        s = spans(out)
        assert s[(t.task_id, 1)][1] < s[(t.task_id, 2)][0], "attempt 1 came back after the partition"
        c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]
        assert c.wait_task(t.task_id, timeout=30).state == pb.STOPPED
    finally:
        proxy.close()

