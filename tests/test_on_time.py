"""On time under load: a run due in a second is prepared before one-off work that arrived
earlier (deadline first), every one-off task still runs once, and a task that starts in a
reused slot is inside its own limits from its first instruction. Evidence from the tasks
themselves: marker files they write with their own clock, and what they read of their
cgroups from inside."""

from __future__ import annotations

import time

import psutil

from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

from harness import Cluster, wait_for


def _said(c: object, task_id: str) -> str:
    return b"".join(x.data for x in c.task_logs(task_id=task_id)).decode()  # type: ignore[attr-defined]


def test_a_run_due_in_a_second_overtakes_300_waiting_one_off_tasks(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    # each task's first instruction prints its own clock and id (the host's files are read-only to it)
    script = 'echo "$(date +%s.%N) $CORRAL_TASK_ID $CORRAL_ATTEMPT"'
    one_off = [api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script=script, cpu_request=5, mem_request=4 << 20, pids_limit=16))
               for _ in range(300)]
    submitted = c.submit_many(one_off)  # type: ignore[attr-defined]
    ids = [r.task_id for r in submitted.results if r.code == 0]
    assert len(ids) == 300
    due = time.time() + 1.0
    due_ts = {"seconds": int(due), "nanos": int((due % 1) * 1e9)}
    sched = c.submit_task(spec=pb.TaskTemplate(run_script=script, cpu_request=5, mem_request=4 << 20), run_at=due_ts)  # type: ignore[attr-defined]
    final = c.wait_task(sched.task_id, timeout=120)
    assert final.state == pb.SUCCEEDED, final
    started = float(_said(c, sched.task_id).split()[0])
    assert started >= int(due) + due_ts["nanos"] / 1e9 - 0.001, "never before its instant"

    def all_done() -> bool:
        return all(c.get_task(task_id=i).state in (pb.SUCCEEDED, pb.FAILED) for i in ids)  # type: ignore[attr-defined]

    wait_for(all_done, 300, 0.5, "the one-off tasks to end")
    waiting_at_due: list[float] = []  # one-off tasks that had not started by the instant
    for i in ids:
        t = c.get_task(task_id=i)  # type: ignore[attr-defined]
        lines = _said(c, i).splitlines()
        assert t.state == pb.SUCCEEDED and t.attempt == 1 and len(lines) == 1, (t, lines)
        when, tid, attempt = lines[0].split()
        assert (tid, attempt) == (i, "1"), "each one-off task ran once, as itself"
        if float(when) > due:
            waiting_at_due.append(float(when))
    assert len(waiting_at_due) >= 20, f"only {len(waiting_at_due)} one-off tasks were still waiting at the instant: no load to overtake"
    overtaken = sum(w > started for w in waiting_at_due)
    # in arrival order it would start after all of them; deadline first, before nearly all
    assert overtaken >= len(waiting_at_due) // 2, f"it started after {len(waiting_at_due) - overtaken} of the {len(waiting_at_due)} that waited at its instant"


def test_a_task_in_a_reused_slot_is_inside_its_own_limits_from_its_first_instruction(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    # the first thing each task does is read its limits from inside; then it tries to go past them
    probe = (
        'cg() { grep ":$1:" /proc/self/cgroup | cut -d: -f3; }; '
        'if [ -e /sys/fs/cgroup/cgroup.controllers ]; then d=/sys/fs/cgroup$(grep "^0::" /proc/self/cgroup | cut -d: -f3); '
        'echo "group $d"; echo "mem $(cat $d/memory.max)"; echo "cpu $(cut -d" " -f1 $d/cpu.max)"; echo "pids $(cat $d/pids.max)"; '
        'else echo "group $(cg memory)"; echo "mem $(cat /sys/fs/cgroup/memory$(cg memory)/memory.limit_in_bytes)"; '
        'echo "cpu $(cat /sys/fs/cgroup/cpu$(cg cpu)/cpu.cfs_quota_us)"; echo "pids $(cat /sys/fs/cgroup/pids$(cg pids)/pids.max)"; fi; '
        # past the pids limit: the subshell's forks fail at the limit
        '(i=0; while [ $i -lt 80 ]; do sleep 3 & i=$((i+1)); echo $i > /tmp/n; done) 2>/dev/null; echo "forked $(cat /tmp/n)"'
    )
    seen = []
    for mem_mib, cpu_m, pids in ((48, 300, 20), (96, 700, 40), (32, 200, 12)):
        t = c.submit_task(spec=pb.TaskTemplate(  # type: ignore[attr-defined]
            run_script=probe, cpu_request=cpu_m, cpu_limit=cpu_m, mem_request=mem_mib << 20, pids_limit=pids))
        final = c.wait_task(t.task_id, timeout=60)
        assert final.state == pb.SUCCEEDED, final
        out = dict(line.split(" ", 1) for line in b"".join(x.data for x in c.task_logs(task_id=t.task_id)).decode().splitlines() if " " in line)  # type: ignore[attr-defined]
        assert int(out["mem"]) == mem_mib << 20, out
        assert int(out["cpu"]) == cpu_m * 100, out  # quota in µs per 100 ms period
        assert int(out["pids"]) in (pids, pids + 1), out  # + 1: a slot's resident server
        assert int(out["forked"]) < pids, out
        seen.append(out["group"])
    assert len(set(seen)) < len(seen), f"the tasks ran one after another in a reused slot ({seen})"


def test_killed_slot_servers_are_replaced_and_never_used_again(cluster: Cluster) -> None:
    """A hostile or unlucky kill of the node's resident slot servers: the next tasks still
    start on their first attempt, in slots with live servers (checked in the process table)."""
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    first = c.submit_task(spec=pb.TaskTemplate(run_script="true"))  # type: ignore[attr-defined]
    assert c.wait_task(first.task_id, timeout=60).state == pb.SUCCEEDED
    nodelet = cluster.nodelets["a"].pid
    spawner = wait_for(lambda: [p for p in psutil.Process(nodelet).children() if "spawner.py" in " ".join(p.cmdline())], 10, what="the spawner")[0]
    servers = wait_for(lambda: spawner.children(), 20, what="slot servers")
    killed = {p.pid for p in servers}
    for p in servers:
        p.kill()
    psutil.wait_procs(servers, timeout=10)
    for _ in range(3):
        t = c.submit_task(spec=pb.TaskTemplate(run_script="echo ran"))  # type: ignore[attr-defined]
        final = c.wait_task(t.task_id, timeout=60)
        assert final.state == pb.SUCCEEDED and final.attempt == 1, final
        assert _said(c, t.task_id).strip() == "ran"
    alive = {p.pid for p in spawner.children()}
    assert alive and not (alive & killed), "new slot servers, none of the killed ones"
