"""What a task gets: its cgroup limits as the kernel holds them, its own namespaces, its
user, a capped log. Real cgroups and processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.nodelet import cgroups
from corral.v1 import types_pb2 as pb

from harness import Cluster, SlotGroup, task_cgroup, wait_for

pytestmark = pytest.mark.integration


def out(c, task_id: str) -> str:  # type: ignore[no-untyped-def]
    return b"".join(x.data for x in c.task_logs(task_id=task_id)).decode()


def test_limits_are_in_the_kernel_while_it_runs(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="sleep 30", cpu_request=250, cpu_limit=500, mem_request=48 * 1024**2, pids_limit=33))
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 30)
    cg = task_cgroup(cluster.node_id("a"), t.task_id, 1)
    lim = cg.limits()
    server = 1 if isinstance(cg, SlotGroup) else 0  # a slot's resident server counts against pids.max: one more
    assert (lim.cpu_millis, lim.memory, lim.pids) == (500, 48 * 1024**2, 33 + server)
    if cg.version == "v1":
        assert Path(cg.dirs["memory"], "memory.memsw.limit_in_bytes").read_text().strip() == str(48 * 1024**2), "no swap"
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})
    assert c.wait_task(t.task_id, timeout=30).state == pb.STOPPED
    assert not cg.exists()


def test_pids_limit_stops_a_fork_bomb(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    # the subshell dies at the first failed fork; `count` holds how many sleeps it started
    script = "(i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); echo $i > count; done) 2>/dev/null; read n < count; echo started=$n; exit 0"
    t = c.submit_task(spec=pb.TaskTemplate(run_script=script, pids_limit=20))
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.SUCCEEDED
    started = int(out(c, t.task_id).split("started=")[1].split()[0])
    assert started < 20


def test_own_namespaces_and_unprivileged_user(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    script = "echo pid=$$; ls /proc | grep -c '^[0-9]'; readlink /proc/self/ns/pid; readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc; id -u; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; grep CapBnd /proc/self/status"
    t = c.submit_task(spec=pb.TaskTemplate(run_script=script))
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    lines = out(c, t.task_id).splitlines()
    assert lines[0] in ("pid=1", "pid=2"), "a fresh pid namespace"
    assert int(lines[1]) < 10, "sees only its own processes"
    for line, ns in zip(lines[2:5], ("pid", "uts", "ipc"), strict=True):
        assert line != os.readlink(f"/proc/self/ns/{ns}"), f"own {ns} namespace"
    admin = next(u for u in c.list_users().users if u.user_id == "admin")
    assert admin.uid >= 2_000_000 and lines[5] == str(admin.uid), "its owner's own uid, not root or nobody"
    assert lines[6].split()[1] == "0000000000000000", "no capabilities"
    assert lines[7].split()[1] == "1"
    assert lines[8].split()[1] == "0000000000000000", "an empty bounding set: none to regain"


def test_root_when_asked(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="id -u", user="root"))
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    assert out(c, t.task_id) == "0\n"


def test_log_is_capped(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", extra=["--max-log-size", "10Ki"])
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="head -c 1000000 /dev/zero | tr '\\0' x; echo; echo tail-line"))
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.SUCCEEDED, "the task is not killed by the cap"
    assert len(out(c, t.task_id)) == 10 * 1024


def test_no_network_unless_asked(cluster: Cluster) -> None:
    """A process task gets its own empty network namespace (only a loopback, down) unless
    its spec says network: host."""
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    script = "readlink /proc/self/ns/net; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,"
    own = c.submit_task(spec=pb.TaskTemplate(run_script=script))
    host = c.submit_task(spec=pb.TaskTemplate(run_script=script, network="host"))
    for t in (own, host):
        assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    ns_own, ifaces_own = out(c, own.task_id).splitlines()
    ns_host, ifaces_host = out(c, host.task_id).splitlines()
    assert ns_own != os.readlink("/proc/self/ns/net") and ifaces_own == "lo,"
    assert ns_host == os.readlink("/proc/self/ns/net") and ifaces_host.count(",") >= 1


def test_removed_cgroup_gives_back_its_page_cache(tmp_path: Path) -> None:
    """Page cache a task wrote is uncharged before its cgroup is removed, so the kernel can
    free the group instead of keeping it as a dying one."""
    if os.geteuid() != 0:
        pytest.skip("needs root (cgroups)")
    import secrets
    import subprocess

    cg = cgroups.TaskCgroup(f"corral/test-uncharge-{secrets.token_hex(3)}")
    cg.create(cgroups.Limits(cpu_millis=1000, memory=256 * 1024**2, pids=64))
    try:
        path = tmp_path / "data"
        # a process inside the group writes 32 MiB: the pages are charged to the group
        script = f'for f in "$@"; do echo $$ > "$f"; done; head -c 33554432 /dev/zero > {path}'
        subprocess.run(["/bin/sh", "-c", script, "sh", *cg.procs_files()], check=True, timeout=60)
        assert cg.memory_usage() > 16 * 1024**2
        cg._uncharge()
        assert cg.memory_usage() < 4 * 1024**2
    finally:
        cg.remove()
    assert not cg.exists()
