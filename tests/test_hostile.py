"""Hostile tasks and users: every attack here is tried by a `user`-role account against a
real cluster (etcd, master, nodelet, cgroups, namespaces), and each checks that the
specific defense held, with evidence from outside corral's records: marker files only a
privileged process could write, /proc of the host, the process table, the disk.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_driver_conformance import docker_image  # noqa: F401 - the session fixture

from corral import errors, procs
from corral.client import Client
from corral.v1 import types_pb2 as pb

from harness import TOKEN, Cluster, task_cgroup, task_pids, wait_for

pytestmark = pytest.mark.integration

PRELOAD = "/lib/x86_64-linux-gnu/libpcprofile.so" if os.path.exists("/lib/x86_64-linux-gnu/libpcprofile.so") else "/lib/aarch64-linux-gnu/libpcprofile.so"


class People:
    """An admin client and two `user`-role accounts with clients of their own."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.admin = cluster.client()
        self.clients: dict[str, Client] = {}
        self.uids: dict[str, int] = {}
        self.data_dir = Path()
        for name in ("alice", "bob"):
            made = self.admin.create_user(user_id=name, role="user")  # type: ignore[attr-defined]
            self.clients[name] = Client(cluster.addr, made.secret, timeout=20)
            self.uids[name] = made.user.uid

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


@pytest.fixture
def people(cluster: Cluster) -> Iterator[People]:
    """A cluster whose nodelet keeps its data where production does, outside /tmp (which
    every task sees as its own), so hiding the data directory is put to the test."""
    data_dir = Path(f"/var/lib/corral-test-{secrets.token_hex(4)}")
    cluster.start_master()
    cluster.start_nodelet("a", extra=["--data-dir", str(data_dir)])
    p = People(cluster)
    p.data_dir = data_dir
    try:
        yield p
    finally:
        p.close()
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _uid_of(pid: int) -> int:
    try:
        return int(psutil.Process(pid).uids().real)
    except psutil.NoSuchProcess:
        return -1


def out(c: Client, task_id: str) -> str:
    return b"".join(x.data for x in c.task_logs(task_id=task_id)).decode(errors="replace")  # type: ignore[attr-defined]


def code(fn) -> str:  # type: ignore[no-untyped-def]
    try:
        fn()
    except errors.CorralError as e:
        return f"{e.code.name}: {e}"
    return "OK"


@pytest.fixture
def planted() -> Iterator[Path]:
    """A world-writable folder outside /tmp, stocked as an earlier unprivileged task could
    have: fake `unshare`, `setpriv`, `head`, `cat`, `mv`, `sh`, `python3` and `id`, each
    leaving a marker when run. Markers go to a folder only root may write, so a marker
    means something privileged ran the fake."""
    base = Path(f"/var/lib/corral-hostile-{secrets.token_hex(4)}")
    bin_dir, markers = base / "bin", base / "markers"
    bin_dir.mkdir(parents=True)
    markers.mkdir()
    base.chmod(0o755)
    bin_dir.chmod(0o1777)
    markers.chmod(0o755)
    for tool in ("unshare", "setpriv", "head", "cat", "mv", "sh", "python3", "id"):
        f = bin_dir / tool
        f.write_text(f"#!/bin/sh\ntouch {markers}/{tool}\nexit 0\n")
        f.chmod(0o755)
    (bin_dir / "rc").write_text(f"touch {markers}/rc\n")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_run_as_root_another_uid_or_host_network_is_refused_without_the_permission(people: People) -> None:
    alice, bob_uid = people.clients["alice"], people.uids["bob"]
    assert people.uids["alice"] != bob_uid and min(people.uids.values()) >= 2_000_000, "each user its own uid"
    for user, perm in (("root", "run_as_root"), ("0", "run_as_root"), (str(bob_uid), "run_as_uid"), ("nobody", "run_as_uid"), ("1000", "run_as_uid")):
        got = code(lambda user=user: alice.submit_task(spec=pb.TaskTemplate(run_script="id", user=user)))
        assert got.startswith("PERMISSION_DENIED") and perm in got, (user, got)
        got = code(lambda user=user: alice.create_template(template=pb.TaskTemplate(name=f"t{user}", run_script="id", user=user)))
        assert got.startswith("PERMISSION_DENIED") and perm in got, (user, got)
    got = code(lambda: alice.submit_task(spec=pb.TaskTemplate(run_script="true", network="host")))
    assert got.startswith("PERMISSION_DENIED") and "host_network" in got
    # her own uid, spelt out, is hers
    assert code(lambda: alice.submit_task(spec=pb.TaskTemplate(run_script="true", user=str(people.uids["alice"])))) == "OK"

    # granted, it works; the node's own network namespace is what the task sees
    people.admin.update_user(user_id="alice", grant=["host_network"])  # type: ignore[attr-defined]
    t = alice.submit_task(spec=pb.TaskTemplate(run_script="readlink /proc/self/ns/net", network="host"))  # type: ignore[attr-defined]
    assert alice.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    assert out(alice, t.task_id).strip() == os.readlink("/proc/self/ns/net")

    # revoked after submission: the node is told not to start it (checked again at start)
    later = alice.submit_task(spec=pb.TaskTemplate(run_script="echo ran", network="host"),  # type: ignore[attr-defined]
                              run_at={"seconds": int(time.time()) + 3})
    people.admin.update_user(user_id="alice", revoke=["host_network"])  # type: ignore[attr-defined]
    final = alice.wait_task(later.task_id, timeout=30)
    assert final.state == pb.FAILED and "host_network" in final.reason, final
    assert out(alice, later.task_id) == ""


def test_nothing_of_the_task_is_interpreted_with_privileges(people: People, planted: Path) -> None:
    alice, cluster = people.clients["alice"], people.cluster
    bin_dir, markers = planted / "bin", planted / "markers"
    hostile = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "LD_PRELOAD": PRELOAD,
        "PCPROFILE_OUTPUT": str(markers / "preloaded"),  # created by any process that loads it
        "IFS": "/",
        "ENV": str(bin_dir / "rc"),
        "BASH_ENV": str(bin_dir / "rc"),
        "SHELL": str(bin_dir / "sh"),
        "PYTHONPATH": str(bin_dir),
    }
    script = "pwd; env | grep -E '^(LD_PRELOAD|PATH)='; sleep 3; echo done"
    t = alice.submit_task(spec=pb.TaskTemplate(run_script=script, env=hostile, working_dir=str(bin_dir)))  # type: ignore[attr-defined]
    wait_for(lambda: alice.get_task(task_id=t.task_id).state == pb.RUNNING, 30, what="RUNNING")
    # every process of the task's that runs as root has a fixed environment: nothing of the task's
    node = cluster.node_id("a")
    task = alice.get_task(task_id=t.task_id)
    pids = wait_for(lambda: task_pids(node, task), 10, what="task processes")
    seen_root = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.uids().real != 0:
                assert proc.uids().real == people.uids["alice"]
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
        seen_root += 1
        for k in hostile:
            assert not any(e.startswith(k.encode() + b"=") and str(bin_dir).encode() in e for e in env), (pid, proc.cmdline(), k)
        assert not any(e.startswith(b"LD_PRELOAD=") for e in env), (pid, proc.cmdline())
        assert Path(f"/proc/{pid}/cwd").resolve() == Path("/"), "privileged parts work from /, not the task's working_dir"
    assert seen_root >= 1, "the wrapper runs as root, outside the task's namespaces"
    spawners = [p for p in psutil.process_iter(["cmdline"]) if any(a.endswith("nodelet/spawner.py") for a in p.info["cmdline"] or ())]
    assert spawners, "the node's resident spawner"
    for sp in spawners:
        assert set(sp.environ()) <= {"PATH", "LC_ALL"} and sp.environ()["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
        assert sp.cwd() == "/"
    final = alice.wait_task(t.task_id, timeout=30)
    assert final.state == pb.SUCCEEDED, final.reason
    lines = out(alice, t.task_id).splitlines()
    assert lines[0] == str(bin_dir), "the working directory is applied, as the task's user"
    assert f"LD_PRELOAD={PRELOAD}" in lines and f"PATH={bin_dir}:/usr/bin:/bin" in lines, "the env reaches the task itself"
    assert lines[-1] == "done"
    assert sorted(p.name for p in markers.iterdir()) == [], "a planted file ran with privileges"


def test_users_cannot_reach_each_others_files_processes_logs_or_the_node(people: People, cluster: Cluster) -> None:
    alice, bob = people.clients["alice"], people.clients["bob"]
    node = cluster.node_id("a")
    data_dir = people.data_dir
    # bob: a secret in his scratch and in his output, and a process that keeps running
    b = bob.submit_task(spec=pb.TaskTemplate(run_script="echo bob-secret > /tmp/secret; echo bob-secret-log; exec sleep 60"))  # type: ignore[attr-defined]
    wait_for(lambda: bob.get_task(task_id=b.task_id).state == pb.RUNNING, 30, what="bob RUNNING")
    b_task = bob.get_task(task_id=b.task_id)
    b_pids = wait_for(lambda: [p for p in task_pids(node, b_task) if _uid_of(p) == people.uids["bob"]], 10, what="bob's pids")
    wait_for(lambda: any(Path(f"/proc/{p}/root/tmp/secret").exists() for p in b_pids), 10, what="bob's secret written")
    nodelet_pid = cluster.nodelets["a"].pid
    logs = sorted(str(p) for p in data_dir.glob("tasks/*/output.log"))
    assert logs, "bob's log is on the node's disk"
    etcd_dirs = [str(p) for p in Path("/tmp").glob("pytest-of-*/pytest-*/etcd*/data")] + ["/var/lib/etcd"]
    probe = "; ".join([
        "id -u",
        "cat /tmp/secret 2>&1 | head -1",
        "ls /tmp",
        *(f"kill -9 {p} 2>&1 | head -1" for p in b_pids),
        f"cat /proc/{nodelet_pid}/environ 2>&1 | head -c 200; echo",
        "grep -l bob-secret /proc/*/root/tmp/secret 2>&1 | head -3",
        f"ls -A {data_dir} 2>&1 | head -3",
        *(f"cat {log} 2>&1 | head -1" for log in logs[:3]),
        *(f"ls {d} 2>&1 | head -1" for d in etcd_dirs),
        "echo probe-end",
    ])
    a = alice.submit_task(spec=pb.TaskTemplate(run_script=probe))  # type: ignore[attr-defined]
    final = alice.wait_task(a.task_id, timeout=30)
    text = out(alice, a.task_id)
    assert final.state == pb.SUCCEEDED and text.rstrip().endswith("probe-end"), text
    assert text.splitlines()[0] == str(people.uids["alice"])
    assert "bob-secret" not in text, text
    assert TOKEN not in text and "CORRAL_TOKEN" not in text, "the nodelet's environment"
    # bob's process was never touched and his scratch is intact (read through the host's /proc)
    assert bob.get_task(task_id=b.task_id).state == pb.RUNNING
    for p in b_pids:
        assert psutil.pid_exists(p)
    assert any(Path(f"/proc/{p}/root/tmp/secret").read_text() == "bob-secret\n" for p in b_pids)
    # and through the API, bob's logs are bob's
    assert code(lambda: out(alice, b.task_id)).startswith("PERMISSION_DENIED")
    # on the node: the data directory and logs are root's alone
    assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
    for log in logs:
        assert Path(log).stat().st_uid == 0 and Path(log).stat().st_mode & 0o077 == 0
    bob.stop_task(task_id=b.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]


def test_fork_bomb_and_disk_filler_stay_inside_their_limits(people: People) -> None:
    alice, bob = people.clients["alice"], people.clients["bob"]
    free_before = shutil.disk_usage("/").free
    bomb = alice.submit_task(spec=pb.TaskTemplate(  # type: ignore[attr-defined]
        run_script="b() { b | b & }; b; exec sleep 60", pids_limit=64, timeout={"seconds": 8}, mem_request=64 << 20))
    fill = alice.submit_task(spec=pb.TaskTemplate(  # type: ignore[attr-defined]
        run_script="for d in /tmp /var/tmp /dev/shm . $HOME /var/lib /root /; do head -c 300000000 /dev/zero > $d/fill-$$ 2>/dev/null; echo \"$d $?\"; rm -f $d/fill-$$; done; echo filled",
        mem_request=64 << 20, timeout={"seconds": 60}))
    wait_for(lambda: alice.get_task(task_id=bomb.task_id).state == pb.RUNNING, 30, what="bomb RUNNING")
    cg = wait_for(lambda: (x := task_cgroup(people.cluster.node_id("a"), bomb.task_id, 1)).exists() and x, 10, what="the bomb's cgroup")
    events = (cg.dirs.get("pids") or cg.dirs["unified"]) / "pids.events"
    wait_for(lambda: int(events.read_text().split()[1]) > 0, 20, what="the bomb hitting its pids limit (pids.events)")
    assert len(cg.pids()) <= 64
    # meanwhile the node runs other work
    ok = bob.submit_task(spec=pb.TaskTemplate(run_script="echo fine"))  # type: ignore[attr-defined]
    assert bob.wait_task(ok.task_id, timeout=60).state == pb.SUCCEEDED
    assert out(bob, ok.task_id) == "fine\n"
    assert alice.wait_task(bomb.task_id, timeout=60).state == pb.TIMED_OUT
    f = alice.wait_task(fill.task_id, timeout=90)
    assert f.state in (pb.SUCCEEDED, pb.OOM_KILLED), f
    if f.state == pb.SUCCEEDED:
        for line in out(alice, fill.task_id).splitlines()[:-1]:
            d, rc = line.rsplit(" ", 1)
            assert rc != "0", f"wrote 300 MB into {d}"
    assert free_before - shutil.disk_usage("/").free < 100 * 1024**2, "the node's disk did not take the filler"
    assert people.admin.get_node(node_id=people.cluster.node_id("a")).state == pb.READY  # type: ignore[attr-defined]


def test_a_node_credential_registers_only_its_node_and_never_calls_the_api(people: People, cluster: Cluster) -> None:
    secret = cluster.node_token(cluster.node_id("a"))
    as_node = Client(cluster.addr, secret, timeout=10)
    try:
        for call in (lambda: as_node.list_tasks(), lambda: as_node.submit_task(spec=pb.TaskTemplate(run_script="id")),  # type: ignore[attr-defined]
                     lambda: as_node.list_nodes()):  # type: ignore[attr-defined]
            got = code(call)
            assert got.startswith("PERMISSION_DENIED") and "nodelet protocol" in got, got
    finally:
        as_node.close()
    # a nodelet holding node a's credential tries to register as node "b"
    impostor = cluster.start_nodelet("b", wait=False, token=secret)
    wait_for(lambda: "PERMISSION_DENIED" in impostor.log_tail(40), 20, what="the refusal in the impostor's log")
    assert cluster.node_id("b") not in {n.node_id for n in people.admin.list_nodes().nodes}  # type: ignore[attr-defined]
    # a user's token is no node credential either
    user_secret = people.admin.create_token(user_id="alice").secret  # type: ignore[attr-defined]
    pretender = cluster.start_nodelet("c", wait=False, token=user_secret)
    wait_for(lambda: "PERMISSION_DENIED" in pretender.log_tail(40), 20, what="the refusal in the pretender's log")
    assert cluster.node_id("c") not in {n.node_id for n in people.admin.list_nodes().nodes}  # type: ignore[attr-defined]


def test_no_secret_on_any_command_line(people: People, cluster: Cluster) -> None:
    secrets_now = [TOKEN, cluster.node_token(cluster.node_id("a"))]
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        for s in secrets_now:
            assert s not in line, f"pid {proc.pid} shows a token: {line[:200]}"
    # and the old flags are refused with a sentence, not accepted
    for argv in (["master", f"--bootstrap-token={TOKEN}"], ["nodelet", "--token", TOKEN]):
        r = subprocess.run(procs.corral_argv(*argv), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "visible to every local user" in r.stderr, r.stderr


def test_storage_quota_refuses_one_user_while_others_go_on(people: People) -> None:
    admin, alice, bob = people.admin, people.clients["alice"], people.clients["bob"]
    admin.update_user(user_id="alice", max_stored_records=6)  # type: ignore[attr-defined]
    ids = [alice.submit_task(spec=pb.TaskTemplate(run_script="true")).task_id for _ in range(5)]  # type: ignore[attr-defined]
    for i in ids:
        assert alice.wait_task(i, timeout=30).state == pb.SUCCEEDED
    alice.create_template(template=pb.TaskTemplate(name="alices", run_script="true"))  # type: ignore[attr-defined]
    # finished tasks and templates count: she is at 6 of 6
    got = code(lambda: alice.submit_task(spec=pb.TaskTemplate(run_script="true")))
    assert got.startswith("RESOURCE_EXHAUSTED") and "max_stored_records" in got, got
    got = code(lambda: alice.create_template(template=pb.TaskTemplate(name="more", run_script="true")))
    assert got.startswith("RESOURCE_EXHAUSTED"), got
    batch = alice.submit_tasks(tasks=[{"spec": {"run_script": "true"}}] * 3)  # type: ignore[attr-defined]
    assert batch.accepted == 0 and all(r.code == 8 for r in batch.results)  # 8 = RESOURCE_EXHAUSTED
    # bob is not held back by alice's quota
    t = bob.submit_task(spec=pb.TaskTemplate(run_script="true"))  # type: ignore[attr-defined]
    assert bob.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    # the limit shows in the user table; raising it lets her go on
    assert next(u for u in admin.list_users().users if u.user_id == "alice").quota.max_stored_records == 6  # type: ignore[attr-defined]
    admin.update_user(user_id="alice", max_stored_records=100)  # type: ignore[attr-defined]
    assert code(lambda: alice.submit_task(spec=pb.TaskTemplate(run_script="true"))) == "OK"


def test_idempotency_keys_expire(people: People, cluster: Cluster, etcd: str) -> None:
    alice = people.clients["alice"]
    alice.submit_task(spec=pb.TaskTemplate(run_script="true"), idempotency_key="once")  # type: ignore[attr-defined]
    key = f"{cluster.prefix}idem/alice/once"
    env = {**os.environ, "ETCDCTL_API": "3"}
    got = subprocess.run(["etcdctl", f"--endpoints={etcd}", "get", key, "-w", "json"], capture_output=True, text=True, env=env, timeout=30)
    import json

    kvs = json.loads(got.stdout)["kvs"]
    assert len(kvs) == 1 and kvs[0].get("lease"), "the key is bound to a lease"
    ttl = subprocess.run(["etcdctl", f"--endpoints={etcd}", "lease", "timetolive", format(int(kvs[0]["lease"]), "x"), "-w", "json"],
                         capture_output=True, text=True, env=env, timeout=30)
    left = json.loads(ttl.stdout)["ttl"]
    assert 22 * 3600 < left <= 24 * 3600, left


def test_the_store_guard_refuses_new_work_but_not_state_changes(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="sleep 60"))  # type: ignore[attr-defined]
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 30, what="RUNNING")
    # the same cluster, its master told the store's quota is tiny: it is "full"
    cluster.masters[0].stop()
    cluster.start_master(extra=["--store-quota", "64Ki"])
    c2 = cluster.client()
    wait_for(lambda: code(lambda: c2.submit_task(spec=pb.TaskTemplate(run_script="true"))).startswith("RESOURCE_EXHAUSTED"), 30,
             what="submissions refused")
    got = code(lambda: c2.submit_task(spec=pb.TaskTemplate(run_script="true")))
    assert "store is" in got and "full" in got, got
    c2.stop_task(task_id=t.task_id, grace_period={"seconds": 0})  # type: ignore[attr-defined]
    assert c2.wait_task(t.task_id, timeout=30).state == pb.STOPPED


def test_docker_tasks_run_as_their_owner_and_take_the_same_permissions(people: People, docker_image: str) -> None:  # noqa: F811
    alice = people.clients["alice"]
    spec = {"driver": pb.DOCKER, "image": docker_image}
    t = alice.submit_task(spec=pb.TaskTemplate(run_script="id -u; id -g", **spec))  # type: ignore[attr-defined, arg-type]
    assert alice.wait_task(t.task_id, timeout=90).state == pb.SUCCEEDED
    uid = str(people.uids["alice"])
    assert out(alice, t.task_id).split() == [uid, uid]
    for extra, perm in (({"user": "root"}, "run_as_root"), ({"network": "host"}, "host_network")):
        got = code(lambda extra=extra: alice.submit_task(spec=pb.TaskTemplate(run_script="id", **spec, **extra)))  # type: ignore[arg-type]
        assert got.startswith("PERMISSION_DENIED") and perm in got, got
