"""At most one running copy of a task, under a paused or killed nodelet: the node lease.

Each task appends "<attempt> <time>" to a marker file on the host every 50 ms while it
runs (as root, the one kind of task that may write the host's files). The checker reads
the markers, not corral's records: the last line of attempt 1 must come before the first
line of attempt 2, and nothing of attempt 1 may appear after attempt 2 began.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

import docker
import pytest
from test_driver_conformance import docker_image  # noqa: F401 - the session fixture

from corral import procs
from corral.v1 import types_pb2 as pb

from harness import Cluster, kill9, task_pids, wait_for

pytestmark = pytest.mark.integration

LOOP = 'while :; do echo "$CORRAL_ATTEMPT $(date +%s.%N)" >> {out}; sleep 0.05; done'


def spans(path: Path) -> dict[int, tuple[float, float]]:
    """attempt → (first, last) marker time."""
    return {int(k[0]): v for k, v in procs.marker_spans(path, 2).items()}


def _run(cluster: Cluster, tmp_path: Path, fault: str) -> None:
    cluster.start_master()  # heartbeat timeout 6 s: node lease 4.2 s, kill grace 0.6 s
    cluster.start_nodelet("a")
    c = cluster.client()
    out = tmp_path / "markers"
    t = c.submit_task(spec=pb.TaskTemplate(run_script=LOOP.format(out=out), user="root"))  # type: ignore[attr-defined]
    first = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).state == pb.RUNNING and x, 30, what="RUNNING")
    cluster.start_nodelet("b")  # the only other place it can go
    victim = cluster.nodelets["a"]
    wait_for(lambda: out.exists() and spans(out).get(1), 10, what="attempt 1 markers")
    cut = time.time()
    if fault == "stop":
        victim.popen.send_signal(signal.SIGSTOP)
    else:
        kill9(victim)
    try:
        second = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).attempt == 2 and x.state == pb.RUNNING and x, 40,
                          what="attempt 2 RUNNING")
        assert second.node_id == cluster.node_id("b")
        wait_for(lambda: spans(out).get(2), 10, what="attempt 2 markers")
        time.sleep(0.5)  # ten of attempt 2's markers: a copy of attempt 1 still running would show among them
        s = spans(out)
        # the first copy ended on its own node, its nodelet paused or dead, before the second began
        assert s[1][1] < s[2][0], f"attempt 1 ran until {s[1][1]:.3f}, attempt 2 began at {s[2][0]:.3f}"
        assert not task_pids(first.node_id, first), "nothing of attempt 1 is left in its cgroup"
        assert s[1][1] - cut < 6.0, f"attempt 1 ran {s[1][1] - cut:.1f}s past the fault; the lease is 4.2 s + 0.6 s grace"
    finally:
        if fault == "stop":
            victim.popen.send_signal(signal.SIGCONT)
    time.sleep(1.5)
    s = spans(out)
    assert s[1][1] < s[2][0], "attempt 1 came back"
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]
    final = c.wait_task(t.task_id, timeout=30)
    assert [h.state for h in final.history] == [pb.LOST] and final.history[0].node_id == cluster.node_id("a")


def test_a_paused_nodelet_s_tasks_end_before_their_next_attempt_starts(cluster: Cluster, tmp_path: Path) -> None:
    _run(cluster, tmp_path, "stop")


def test_a_killed_nodelet_s_tasks_end_before_their_next_attempt_starts(cluster: Cluster, tmp_path: Path) -> None:
    _run(cluster, tmp_path, "kill")


def test_a_task_may_opt_out_and_keep_running(cluster: Cluster, tmp_path: Path) -> None:
    """on_disconnect: keep — the copy on the silent node runs on (a second may overlap)."""
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    out = tmp_path / "markers"
    t = c.submit_task(spec=pb.TaskTemplate(run_script=LOOP.format(out=out), user="root", on_disconnect="keep",  # type: ignore[attr-defined]
                                           retry=pb.RetryPolicy(max_attempts=1)))
    first = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).state == pb.RUNNING and x, 30, what="RUNNING")
    victim = cluster.nodelets["a"]
    victim.popen.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.LOST, 30, what="LOST")
        before = spans(out)[1][1]
        time.sleep(1.0)
        assert spans(out)[1][1] > before, "it keeps running past the lease"
        assert task_pids(first.node_id, first)
    finally:
        victim.popen.send_signal(signal.SIGCONT)


def test_a_task_due_while_its_nodelet_is_paused_never_starts_there(cluster: Cluster, tmp_path: Path) -> None:
    """Sent ahead and parked, then its nodelet paused past the timeout: the task goes
    elsewhere; when the nodelet wakes, its timer releases the parked copy, and the wrapper,
    finding the node lease gone, does not let it start."""
    from corral.master import records

    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    out = tmp_path / "markers"
    due = time.time() + 3.0
    t = c.submit_task(spec=pb.TaskTemplate(run_script=LOOP.format(out=out), user="root"), run_at=records.ts(due))  # type: ignore[attr-defined]
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.ASSIGNED, 10, what="ASSIGNED ahead of its instant")
    victim = cluster.nodelets["a"]
    time.sleep(max(0.0, due - 0.4 - time.time()))  # prepared and parked by now
    victim.popen.send_signal(signal.SIGSTOP)
    try:
        cluster.start_nodelet("b")
        wait_for(lambda: (x := c.get_task(task_id=t.task_id)).attempt == 2 and x.state == pb.RUNNING, 40, what="attempt 2 RUNNING")
    finally:
        victim.popen.send_signal(signal.SIGCONT)
    time.sleep(2.0)  # the woken nodelet's timer has fired by now
    s = spans(out)
    assert 1 not in s, f"the parked copy ran after its lease was gone: {s}"
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]


def test_a_start_read_after_the_lease_ran_out_is_not_acted_on(cluster: Cluster, tmp_path: Path) -> None:
    """The leader places a task on a node whose nodelet is paused: the start waits in the
    socket. The node goes DOWN, the task runs elsewhere; when the nodelet wakes it reads
    the stale start, and must not run it (the cluster gave the task to another node)."""
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    out = tmp_path / "markers"
    victim = cluster.nodelets["a"]
    victim.popen.send_signal(signal.SIGSTOP)
    try:
        t = c.submit_task(spec=pb.TaskTemplate(run_script=LOOP.format(out=out), user="root"))  # type: ignore[attr-defined]
        wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.ASSIGNED, 10, what="ASSIGNED to the paused node")
        cluster.start_nodelet("b")
        wait_for(lambda: (x := c.get_task(task_id=t.task_id)).attempt == 2 and x.state == pb.RUNNING, 40, what="attempt 2 RUNNING")
    finally:
        victim.popen.send_signal(signal.SIGCONT)
    wait_for(lambda: c.get_node(node_id=cluster.node_id("a")).state == pb.READY, 30, what="node a READY again")
    time.sleep(2.0)
    s = spans(out)
    assert 1 not in s, f"the stale start ran: {s}"
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]


def _engine_time(text: str) -> float:
    """A Docker engine timestamp (RFC 3339, nanoseconds) as seconds since the epoch."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_a_lost_nodelet_s_containers_end_before_their_next_attempt_starts(
    cluster: Cluster, docker_image: str, fault: str  # noqa: F811
) -> None:
    """The same for containers, which the Docker engine would keep running: the node's
    container watchdog kills them once the lease runs out. Evidence from the engine: the
    first container's FinishedAt comes before the second's StartedAt."""
    cluster.start_master()  # heartbeat timeout 6 s: node lease 4.2 s, kill grace 0.6 s
    cluster.start_nodelet("a")
    c = cluster.client()
    engine = docker.from_env(timeout=30)
    t = c.submit_task(spec=pb.TaskTemplate(driver=pb.DOCKER, image=docker_image, run_script="sleep 600"))  # type: ignore[attr-defined]

    def container(attempt: int) -> object:
        found = engine.containers.list(all=True, filters={"label": [f"corral.task_id={t.task_id}", f"corral.attempt={attempt}"]})
        return found[0] if found else None

    try:
        wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 60, what="RUNNING")
        first = container(1)
        assert first is not None and first.status == "running"  # type: ignore[attr-defined]
        cluster.start_nodelet("b")
        victim = cluster.nodelets["a"]
        cut = time.time()
        if fault == "stop":
            victim.popen.send_signal(signal.SIGSTOP)
        else:
            kill9(victim)
        try:
            wait_for(lambda: (x := c.get_task(task_id=t.task_id)).attempt == 2 and x.state == pb.RUNNING, 60, what="attempt 2 RUNNING")
            second = wait_for(lambda: container(2), 10, what="attempt 2's container")
            first.reload()  # type: ignore[attr-defined]
            state1, state2 = first.attrs["State"], second.attrs["State"]  # type: ignore[attr-defined]
            assert not state1["Running"], "the lost node's container still runs beside attempt 2"
            ended, began = _engine_time(state1["FinishedAt"]), _engine_time(state2["StartedAt"])
            assert ended < began, f"container 1 ran until {ended:.3f}, container 2 began at {began:.3f}"
            assert ended - cut < 6.0, f"container 1 ran {ended - cut:.1f}s past the fault; the lease is 4.2 s + 0.6 s grace"
        finally:
            if fault == "stop":
                victim.popen.send_signal(signal.SIGCONT)
        c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]
        final = c.wait_task(t.task_id, timeout=30)
        assert [h.state for h in final.history] == [pb.LOST]
    finally:
        for x in engine.containers.list(all=True, filters={"label": [f"corral.task_id={t.task_id}"]}):
            x.remove(force=True)
