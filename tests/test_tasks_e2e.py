"""One-off tasks end to end: real etcd, master and nodelet processes, cgroups, namespaces."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from corral import errors
from corral.v1 import types_pb2 as pb

from harness import Cluster, kill9, task_cgroup, task_pids, wait_for

pytestmark = pytest.mark.integration


def spec(script: str, **kw: object) -> pb.TaskTemplate:
    return pb.TaskTemplate(run_script=script, **kw)  # type: ignore[arg-type]


def logs(c, task_id: str) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(ch.data for ch in c.task_logs(task_id=task_id))


def test_task_succeeds_and_logs_are_readable(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=spec("echo hello; echo err >&2; id -u; echo $CORRAL_TASK_ID; cat /proc/self/cgroup"), name="hello")
    assert t.state == pb.PENDING and t.attempt == 1
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.SUCCEEDED, final
    assert final.exit_code == 0
    assert final.node_id == cluster.node_id("a")
    assert final.start_time.seconds and final.finish_time.seconds
    out = logs(c, t.task_id).decode()
    lines = out.splitlines()
    assert lines[0] == "hello" and "err" in lines
    admin = next(u for u in c.list_users().users if u.user_id == "admin")
    assert str(admin.uid) in lines, "runs as its owner's own uid by default"
    assert t.task_id in lines
    cid = c.cluster_status().cluster_id
    group = f"corral/{cid}/{cluster.node_id('a')}/"
    assert cid and (f"{group}{t.task_id}-1" in out or re.search(re.escape(group) + r"slot-\d+\n", out)), "runs inside a cgroup of its node's (its own or a slot), under its cluster"


def test_nonzero_exit_is_failed_with_exit_code(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=spec("exit 3"))
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.FAILED
    assert final.exit_code == 3
    assert "exit code 3" in final.reason


def test_memory_over_limit_is_oom_killed(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    # `tail -n 1` holds the whole 200 MB newline-free line in memory: far over 32 MiB.
    t = c.submit_task(spec=spec("head -c 209715200 /dev/zero | tail -n 1 > /dev/null", mem_request=32 * 1024**2))
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.OOM_KILLED, final
    assert not task_cgroup(cluster.node_id("a"), t.task_id, 1).exists()


def test_task_past_timeout_is_timed_out(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=spec("sleep 60", timeout={"seconds": 1}))
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.TIMED_OUT, final
    assert final.expiry_time.seconds > 0
    ran = (final.finish_time.seconds + final.finish_time.nanos / 1e9) - (final.start_time.seconds + final.start_time.nanos / 1e9)
    assert 0.9 < ran < 20


def test_stop_ends_task_and_removes_processes_and_cgroup(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    node = cluster.node_id("a")
    # a child process that ignores SIGTERM: only SIGKILL after the grace period ends it
    t = c.submit_task(spec=spec("sh -c 'trap \"\" TERM; sleep 60' & sleep 60"))
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 30, what="RUNNING")
    running = c.get_task(task_id=t.task_id)
    pids = wait_for(lambda: len(task_pids(node, running)) >= 3 and task_pids(node, running), 10, what="task processes")
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 1})
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.STOPPED, final
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0
    assert not task_cgroup(node, t.task_id, 1).exists()
    with pytest.raises(errors.FailedPrecondition, match="already finished"):
        c.stop_task(task_id=t.task_id)


def test_stop_before_start(cluster: Cluster) -> None:
    cluster.start_master()
    c = cluster.client()
    t = c.submit_task(spec=spec("echo never"), run_at={"seconds": int(time.time()) + 3600})
    stopped = c.stop_task(task_id=t.task_id)
    assert stopped.state == pb.STOPPED


def test_bin_packing_fills_one_node_before_the_other(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", cpus="1", memory="1Gi")
    cluster.start_nodelet("b", cpus="1", memory="1Gi")
    c = cluster.client()
    ids = []
    for i in range(3):
        t = c.submit_task(spec=spec("sleep 30", cpu_request=300, mem_request=200 * 1024**2), name=f"pack-{i}")
        ids.append(t.task_id)
        wait_for(lambda tid=t.task_id: c.get_task(task_id=tid).state == pb.RUNNING, 30, what="RUNNING")
    nodes = {c.get_task(task_id=i).node_id for i in ids}
    assert len(nodes) == 1, f"best-fit packs all three on one node, got {nodes}"
    # a fourth does not fit there (cpu 1.2 > 1): it goes to the other node
    t4 = c.submit_task(spec=spec("sleep 30", cpu_request=300, mem_request=200 * 1024**2))
    wait_for(lambda: c.get_task(task_id=t4.task_id).state == pb.RUNNING, 30, what="RUNNING")
    assert c.get_task(task_id=t4.task_id).node_id not in nodes
    for i in [*ids, t4.task_id]:
        c.stop_task(task_id=i, grace_period={"seconds": 0})


def test_unplaceable_task_stays_pending_with_reason(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", cpus="2", memory="2Gi")
    c = cluster.client()
    t = c.submit_task(spec=spec("true", mem_request=64 * 1024**3))
    got = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).reason.startswith("no node") and x, 15, what="reason")
    assert got.state == pb.PENDING
    assert got.reason == "no node has 64 GiB free: largest has 2 GiB"


def test_killed_nodelet_task_is_lost_then_retried_elsewhere(cluster: Cluster) -> None:
    cluster.start_master(heartbeat_timeout=2)
    cluster.start_nodelet("a")
    cluster.start_nodelet("b")
    c = cluster.client()
    t = c.submit_task(spec=spec("sleep 3; echo finished"))
    first = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).state == pb.RUNNING and x, 30, what="RUNNING")
    victim = next(k for k in ("a", "b") if cluster.node_id(k) == first.node_id)
    kill9(cluster.nodelets[victim])
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.SUCCEEDED, final
    assert final.attempt == 2
    assert final.node_id != first.node_id
    assert [h.state for h in final.history] == [pb.LOST]
    assert final.history[0].node_id == first.node_id
    assert c.get_node(node_id=first.node_id).state == pb.DOWN


def test_master_restart_loses_nothing(cluster: Cluster) -> None:
    m = cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    done = c.submit_task(spec=spec("echo one"))
    c.wait_task(done.task_id, timeout=30)
    running = c.submit_task(spec=spec("sleep 3; echo two"))
    wait_for(lambda: c.get_task(task_id=running.task_id).state == pb.RUNNING, 30, what="RUNNING")
    kill9(m)
    time.sleep(4)  # the task finishes while no master runs
    cluster.start_master()
    final = c.wait_task(running.task_id, timeout=30)
    assert final.state == pb.SUCCEEDED
    assert final.attempt == 1
    assert logs(c, running.task_id) == b"two\n"
    assert c.get_task(task_id=done.task_id).state == pb.SUCCEEDED
    after = c.submit_task(spec=spec("echo three"))
    assert c.wait_task(after.task_id, timeout=30).state == pb.SUCCEEDED


def test_nodelet_restart_readopts_running_task(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()
    n = cluster.start_nodelet("a")
    c = cluster.client()
    marker = tmp_path / "starts"
    t = c.submit_task(spec=spec(f"echo started >> {marker}; sleep 4; echo done", user="root"))
    running = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).state == pb.RUNNING and x, 30, what="RUNNING")
    pids_before = set(task_pids(cluster.node_id("a"), running))
    n.stop()  # SIGTERM: the nodelet exits, its task keeps running
    assert c.get_task(task_id=t.task_id).state == pb.RUNNING
    assert pids_before and pids_before <= set(task_pids(cluster.node_id("a"), running)) | set()
    cluster.start_nodelet("a")
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.SUCCEEDED
    assert final.attempt == 1
    assert marker.read_text() == "started\n", "re-adopted, not restarted"
    assert logs(c, t.task_id) == b"done\n"


def test_watch_and_list_filters(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    ok = c.submit_task(spec=spec("true"))
    bad = c.submit_task(spec=spec("false"))
    c.wait_task(ok.task_id, timeout=30)
    c.wait_task(bad.task_id, timeout=30)
    failed = c.list_tasks(state=pb.FAILED).tasks
    assert [t.task_id for t in failed] == [bad.task_id]
    all_ids = [t.task_id for t in c.list_tasks().tasks]
    assert all_ids == [bad.task_id, ok.task_id], "newest first"
    retried = c.retry_task(task_id=bad.task_id)
    assert retried.attempt == 2 and retried.state == pb.PENDING
    final = c.wait_task(bad.task_id, timeout=30)
    assert final.state == pb.FAILED and final.attempt == 2 and len(final.history) == 1


def test_idempotent_submit_returns_the_first_task(cluster: Cluster) -> None:
    cluster.start_master()
    c = cluster.client()
    a = c.submit_task(spec=spec("true"), idempotency_key="k-1")
    b = c.submit_task(spec=spec("true"), idempotency_key="k-1")
    assert a.task_id == b.task_id
    assert len(c.list_tasks().tasks) == 1


def test_task_from_template_with_overrides(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="greet", run_script="echo $GREETING", env={"GREETING": "hi"}))
    t = c.submit_task(template_id="greet", spec=pb.TaskTemplate(env={"GREETING": "hello"}))
    assert t.template_id == tpl.template_id
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    assert logs(c, t.task_id) == b"hello\n"
    assert os.environ.get("GREETING") is None


def test_paused_nodelet_returns_and_kills_its_replaced_copy(cluster: Cluster) -> None:
    import signal

    cluster.start_master(heartbeat_timeout=2)
    cluster.start_nodelet("a")
    cluster.start_nodelet("b")
    c = cluster.client()
    t = c.submit_task(spec=spec("sleep 6; echo done"))
    first = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).state == pb.RUNNING and x, 30, what="RUNNING")
    victim = next(k for k in ("a", "b") if cluster.node_id(k) == first.node_id)
    proc = cluster.nodelets[victim]
    proc.popen.send_signal(signal.SIGSTOP)
    try:
        second = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).attempt == 2 and x.state == pb.RUNNING and x, 30, what="attempt 2 RUNNING")
        assert second.node_id != first.node_id
        assert not task_pids(first.node_id, first), "the node lease killed the first copy before the second started"
    finally:
        proc.popen.send_signal(signal.SIGCONT)
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.SUCCEEDED and final.attempt == 2
    wait_for(lambda: c.get_node(node_id=first.node_id).state == pb.READY, 20, what="node READY again")


def test_task_that_ends_while_its_nodelet_is_down_is_recorded(cluster: Cluster) -> None:
    cluster.start_master(heartbeat_timeout=10)
    n = cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=spec("sleep 1; echo ok; exit 4"))
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 30, what="RUNNING")
    n.stop()
    time.sleep(2)  # it ends while no nodelet watches it
    cluster.start_nodelet("a")
    final = c.wait_task(t.task_id, timeout=30)
    assert (final.state, final.exit_code, final.attempt) == (pb.FAILED, 4, 1)
    assert logs(c, t.task_id) == b"ok\n"


def test_retry_on_failure_policy(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=spec('echo "attempt $CORRAL_ATTEMPT"; [ "$CORRAL_ATTEMPT" = 2 ]', retry=pb.RetryPolicy(max_attempts=3, retry_on_failure=True)))
    final = c.wait_task(t.task_id, timeout=30)
    assert (final.state, final.attempt) == (pb.SUCCEEDED, 2)
    assert [h.state for h in final.history] == [pb.FAILED]
    assert logs(c, t.task_id) == b"attempt 2\n"


def test_a_repeated_request_id_creates_and_retries_once(cluster: Cluster) -> None:
    import grpc

    from corral.client.sdk import METHODS
    from corral.v1 import api_pb2

    from harness import TOKEN

    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=spec("false"))
    c.wait_task(t.task_id, timeout=30)
    with grpc.insecure_channel(cluster.addr) as ch:

        def call(name: str, req: object, rid: str) -> object:
            m = METHODS[name]
            fn = ch.unary_unary(m.path, request_serializer=m.input.SerializeToString, response_deserializer=m.output.FromString)
            return fn(req, metadata=(("authorization", f"Bearer {TOKEN}"), ("corral-request-id", rid)), timeout=10)

        first = call("retry_task", api_pb2.RetryTaskRequest(task_id=t.task_id), "r-1")
        again = call("retry_task", api_pb2.RetryTaskRequest(task_id=t.task_id), "r-1")
        assert first.attempt == again.attempt == 2  # type: ignore[attr-defined]
        tpl = api_pb2.CreateTemplateRequest(template=pb.TaskTemplate(name="once", run_script="true"))
        a = call("create_template", tpl, "r-2")
        b = call("create_template", tpl, "r-2")
        assert a.template_id == b.template_id  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as info:
            call("create_template", tpl, "r-3")
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert c.wait_task(t.task_id, timeout=30).attempt == 2


def test_higher_priority_task_preempts_and_the_victim_runs_again(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", cpus="1", memory="1Gi")
    c = cluster.client()
    low = c.submit_task(spec=spec("sleep 2; echo low", cpu_request=800, priority=1))
    wait_for(lambda: c.get_task(task_id=low.task_id).state == pb.RUNNING, 30, what="low RUNNING")
    high = c.submit_task(spec=spec("echo high", cpu_request=500, priority=50))
    assert c.wait_task(high.task_id, timeout=30).state == pb.SUCCEEDED
    final = c.wait_task(low.task_id, timeout=60)
    assert (final.state, final.attempt) == (pb.SUCCEEDED, 2)
    assert [h.state for h in final.history] == [pb.PREEMPTED]
    assert high.task_id in final.history[0].reason
    assert logs(c, low.task_id) == b"low\n"


def test_distinct_nodes_template_spreads_and_explains(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    cluster.start_nodelet("b")
    c = cluster.client()
    c.create_template(template=pb.TaskTemplate(name="one-per-node", run_script="sleep 30", distinct_nodes=True))
    ids = [c.submit_task(template_id="one-per-node").task_id for _ in range(3)]
    wait_for(lambda: sum(c.get_task(task_id=i).state == pb.RUNNING for i in ids) == 2, 30, what="two RUNNING")
    tasks = [c.get_task(task_id=i) for i in ids]
    assert len({t.node_id for t in tasks if t.state == pb.RUNNING}) == 2
    waiting = wait_for(lambda: next((x for x in (c.get_task(task_id=i) for i in ids) if x.reason.startswith("no node")), None), 15, what="reason")
    assert "already runs a task of template" in waiting.reason
    for i in ids:
        c.stop_task(task_id=i, grace_period={"seconds": 0})


def test_gang_waits_for_its_members_and_places_all_or_none(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", cpus="1", memory="1Gi")
    c = cluster.client()

    def member(gang: str, size: int) -> str:
        return c.submit_task(spec=spec("sleep 1", cpu_request=400, gang=gang, gang_size=size)).task_id

    big = [member("big", 3), member("big", 3)]
    wait_for(lambda: c.get_task(task_id=big[0]).reason == "waiting for gang big: 2 of 3 tasks pending", 15, what="gang wait")
    big.append(member("big", 3))
    wait_for(lambda: all(c.get_task(task_id=i).reason.startswith("gang admin/big: not all 3 tasks fit") for i in big), 15, what="gang refused")
    assert all(c.get_task(task_id=i).state == pb.PENDING for i in big), "none of a gang that does not fit runs"
    small = [member("small", 2), member("small", 2)]
    for i in small:
        assert c.wait_task(i, timeout=30).state == pb.SUCCEEDED
    for i in big:
        c.stop_task(task_id=i)
    with pytest.raises(errors.InvalidArgument, match="gang_size"):
        c.submit_task(spec=spec("true", gang="x", gang_size=1))


def test_finished_tasks_past_retention_are_deleted(cluster: Cluster) -> None:
    cluster.start_master(extra=["--retention", "3s"])
    cluster.start_nodelet("a")
    c = cluster.client()
    done = [c.submit_task(spec=pb.TaskTemplate(run_script="true")).task_id for _ in range(3)]
    later = c.submit_task(spec=pb.TaskTemplate(run_script="true"), run_at={"seconds": int(time.time()) + 3600}).task_id
    for t in done:
        assert c.wait_task(t, timeout=30).state == pb.SUCCEEDED
    wait_for(lambda: not ({t.task_id for t in c.list_tasks(page_size=100).tasks} & set(done)), 20, what="finished tasks deleted")
    assert c.get_task(task_id=later).state == pb.PENDING, "unfinished tasks are kept"
