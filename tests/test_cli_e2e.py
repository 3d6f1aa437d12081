"""The CLI against a real cluster, as a user would type it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from corral import procs
from corral.nodelet import cgroups

from harness import Cluster, kill9, wait_for

pytestmark = pytest.mark.integration


def corral(cluster: Cluster, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, env=cluster.corral_env(), timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_submit_wait_get_json_logs(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    r = corral(cluster, "task", "submit", "--command", "echo from-cli", "--name", "cli", "--cpu", "0.5", "--memory", "64Mi", "--timeout", "30s", "--wait")
    task_id = r.stdout.strip()
    assert task_id.startswith("t") and "\n" not in task_id, "prints the id alone"
    assert "SUCCEEDED" in r.stderr
    got = json.loads(corral(cluster, "task", "get", task_id, "-o", "json").stdout)
    assert got["state"] == "SUCCEEDED" and got["task_id"] == task_id and got["exit_code"] == 0
    assert got["spec"]["cpu_request"] == "500m" and got["spec"]["mem_limit"] == "64Mi", "units as files write them"
    assert yaml.safe_load(corral(cluster, "task", "get", task_id, "-o", "yaml").stdout)["state"] == "SUCCEEDED"
    assert corral(cluster, "logs", task_id).stdout == "from-cli\n"
    table = corral(cluster, "task", "list").stdout
    assert "TASK ID" in table and task_id in table and "SUCCEEDED" in table
    assert task_id in corral(cluster, "task", "list", "--state", "SUCCEEDED").stdout
    assert task_id not in corral(cluster, "task", "list", "--state", "FAILED").stdout
    assert task_id not in corral(cluster, "task", "list", "--template", "no-such").stdout
    assert task_id in corral(cluster, "task", "list", "--node", cluster.node_id("a")).stdout


def test_wait_exits_nonzero_unless_succeeded(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    r = corral(cluster, "submit", "--command", "exit 7", "--wait", check=False)
    assert r.returncode != 0 and "FAILED" in r.stderr and "exit code 7" in r.stderr


def test_logs_follow_streams_until_end(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    task_id = corral(cluster, "submit", "--command", "for i in 1 2 3; do echo line$i; sleep 0.4; done").stdout.strip()
    r = corral(cluster, "logs", "-f", task_id)
    assert r.stdout == "line1\nline2\nline3\n"


def test_delayed_submit_and_stop(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    task_id = corral(cluster, "submit", "--command", "echo later", "--in", "3s").stdout.strip()
    got = json.loads(corral(cluster, "task", "get", task_id, "-o", "json").stdout)
    assert got["state"] == "PENDING"
    due = got["due_time"]
    wait_for(lambda: json.loads(corral(cluster, "task", "get", task_id, "-o", "json").stdout)["state"] == "SUCCEEDED", 30)
    final = json.loads(corral(cluster, "task", "get", task_id, "-o", "json").stdout)
    assert final["start_time"] >= due
    long_id = corral(cluster, "submit", "--command", "sleep 60").stdout.strip()
    wait_for(lambda: "RUNNING" in corral(cluster, "task", "get", long_id).stdout, 30)
    out = corral(cluster, "stop", long_id, "--grace-period", "2s").stdout
    assert "STOPPED" in out


def test_template_create_from_file_and_crud(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    f = tmp_path / "t.yaml"
    f.write_text("name: nightly\nrun_script: echo templated\ncpu_request: 0.25\nmem_request: 32Mi\ntimeout: 30s\ncron_schedule: '0 2 * * *'\ntime_zone: Europe/Berlin\n")
    created = json.loads(corral(cluster, "template", "create", "-f", str(f), "-o", "json").stdout)
    assert created["name"] == "nightly" and created["cpu_request"] == "250m" and created["timeout"] == "30s"
    assert "nightly" in corral(cluster, "template", "list").stdout
    assert json.loads(corral(cluster, "template", "get", "nightly", "-o", "json").stdout)["template_id"] == created["template_id"]
    dup = corral(cluster, "template", "create", "-f", str(f), check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    updated = json.loads(corral(cluster, "template", "update", "nightly", "-f", str(f), "--memory", "48Mi", "-o", "json").stdout)
    assert updated["mem_request"] == "48Mi"
    r = corral(cluster, "submit", "--template", "nightly", "--wait")
    assert corral(cluster, "logs", r.stdout.strip()).stdout == "templated\n"
    corral(cluster, "template", "delete", "nightly")
    assert "nightly" not in corral(cluster, "template", "list").stdout


def test_node_and_cluster_commands(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", cpus="1500m", memory="1Gi")
    node = cluster.node_id("a")
    table = corral(cluster, "node", "list").stdout
    assert node in table and "READY" in table and "1.5" in table
    assert json.loads(corral(cluster, "node", "cordon", node, "-o", "json").stdout)["state"] == "CORDONED"
    task_id = corral(cluster, "submit", "--command", "true").stdout.strip()
    reason = wait_for(lambda: (x := json.loads(corral(cluster, "task", "get", task_id, "-o", "json").stdout)).get("reason", "").startswith("no node") and x["reason"], 15)
    assert "cordoned" in reason
    corral(cluster, "node", "uncordon", node)
    wait_for(lambda: json.loads(corral(cluster, "task", "get", task_id, "-o", "json").stdout)["state"] == "SUCCEEDED", 30)
    status = json.loads(corral(cluster, "cluster", "status", "-o", "json").stdout)
    assert status["leader"]["address"] == cluster.addr and status["nodes_by_state"] == {"READY": 1}
    assert status["tasks_by_state"]["SUCCEEDED"] == 1


def test_node_delete_forgets_only_a_down_node_and_revokes_its_tokens(cluster: Cluster) -> None:
    cluster.start_master(heartbeat_timeout=2)
    cluster.start_nodelet("a")
    node = cluster.node_id("a")
    r = corral(cluster, "node", "delete", node, check=False)
    assert r.returncode != 0 and "only a DOWN node" in r.stderr, r.stderr
    kill9(cluster.nodelets["a"])
    wait_for(lambda: json.loads(corral(cluster, "node", "get", node, "-o", "json").stdout)["state"] == "DOWN", 30)
    out = json.loads(corral(cluster, "node", "delete", node, "-o", "json").stdout)
    assert out == {"node_id": node, "tokens_revoked": 1}
    assert node not in corral(cluster, "node", "list").stdout
    assert f"node:{node}" not in corral(cluster, "token", "list").stdout
    r = corral(cluster, "node", "delete", node, check=False)
    assert r.returncode != 0 and "not found" in r.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_corral_dev_starts_and_stops_everything(tmp_path: Path, tls: bool) -> None:
    port = procs.free_port()
    data = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    p = subprocess.Popen(
        [sys.executable, "-m", "corral", "dev", "--data-dir", str(data), "--port", str(port), "--nodelets", "1", "--cpus", "1", "--memory", "1Gi",
         *(["--tls"] if tls else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    try:
        wait_for(lambda: (data / "env").exists() or p.poll() is not None, 60, what="env file")
        if p.poll() is not None:
            pytest.fail(f"corral dev exited early: {p.communicate()[0]}")
        lines = (data / "env").read_text().splitlines()
        assert lines[0] == f"export CORRAL_ADDR=127.0.0.1:{port}"
        exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert ("CORRAL_TLS_CERT" in exported) == tls
        assert (data / "env").stat().st_mode & 0o077 == 0, "the admin token's file is root's alone"
        env2 = {**env, **exported}
        wait_for(lambda: "READY" in subprocess.run([sys.executable, "-m", "corral", "node", "list"], capture_output=True, text=True, env=env2).stdout, 30)
        r = subprocess.run([sys.executable, "-m", "corral", "submit", "--command", "echo dev", "--wait"], capture_output=True, text=True, env=env2, timeout=60)
        assert r.returncode == 0, r.stderr
        if tls:
            # plaintext is refused by the master and by etcd
            plain = {k: v for k, v in env2.items() if not k.startswith("CORRAL_TLS_")}
            r = subprocess.run([sys.executable, "-m", "corral", "node", "list"], capture_output=True, text=True, env=plain, timeout=60)
            assert r.returncode != 0
            status = json.loads(subprocess.run([sys.executable, "-m", "corral", "cluster", "status", "-o", "json"],
                                               capture_output=True, text=True, env=env2, timeout=60).stdout)
            assert status["etcd"] and all(ep["healthy"] for ep in status["etcd"]), status  # the master reaches etcd over TLS
            from corral.errors import Unavailable
            from corral.master.store import EtcdStore

            async def plaintext_etcd() -> None:
                store = EtcdStore(status["etcd_endpoints"][0])
                try:
                    await store.connect(wait=2)
                finally:
                    await store.close()

            with pytest.raises(Unavailable):
                asyncio.run(plaintext_etcd())
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
        cgroups.remove_node("node-1")  # the dev nodelet's (empty) cgroup parent
    started = [int(x) for x in __import__("re").findall(r"\(pid (\d+)", out)]
    assert len(started) == 3, out  # etcd, master, nodelet
    assert exported["CORRAL_TOKEN"] not in out, "corral dev never prints the token"
    if not tls:  # the nodelet had a node credential of its own, kept for the next run
        assert (data / "nodes" / "node-1.token").stat().st_mode & 0o077 == 0
    assert "stopped" in out
    time.sleep(0.2)
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()


def test_health_reflection_and_metrics_are_served(cluster: Cluster) -> None:
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    m = cluster.start_master()
    cluster.start_nodelet("a")
    with grpc.insecure_channel(cluster.addr) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"corral.v1.TaskService", "corral.v1.TemplateService", "corral.v1.NodeService", "corral.v1.ClusterService"} <= names
    body = urllib.request.urlopen(f"http://{m.info['http']}/metrics", timeout=10).read().decode()
    assert 'corral_nodes{state="READY"} 1' in body
    assert "corral_nodelet_streams 1" in body
    assert urllib.request.urlopen(f"http://{m.info['http']}/healthz", timeout=10).read() == b"ok\n"


def test_corral_dev_restarts_a_member_and_keeps_the_rest(tmp_path: Path) -> None:
    """`corral dev` supervises: kill -9 of a master or an etcd member leaves the others up,
    and the killed one comes back; the cluster keeps taking work meanwhile."""
    import re

    port = procs.free_port()
    data = tmp_path / "dev"
    log = tmp_path / "dev.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    with open(log, "w") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "corral", "dev", "--data-dir", str(data), "--port", str(port), "--masters", "2", "--etcd-members", "3",
             "--nodelets", "1", "--cpus", "1", "--memory", "1Gi"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )
    try:
        wait_for(lambda: (data / "env").exists() or p.poll() is not None, 90, what="env file")
        assert p.poll() is None, log.read_text()
        exported = dict(line.removeprefix("export ").split("=", 1) for line in (data / "env").read_text().splitlines())
        env2 = {**env, **exported}
        text = log.read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"^  (\w+)\s+\S+\s+\(pid (\d+)", text, re.M)}
        etcds = [int(x) for x in re.findall(r"^  etcd\s+\S+\s+\(pid (\d+)", text, re.M)]
        masters = [int(x) for x in re.findall(r"^  master\s+\S+\s+\(pid (\d+)", text, re.M)]
        assert len(etcds) == 3 and len(masters) == 2 and pids, text

        def submit_ok() -> bool:
            r = subprocess.run([sys.executable, "-m", "corral", "submit", "--command", "echo ok", "--wait"],
                               capture_output=True, text=True, env=env2, timeout=60)
            return r.returncode == 0

        wait_for(submit_ok, 60, 0.5, what="a task through the dev cluster")
        os.kill(masters[0], signal.SIGKILL)
        wait_for(lambda: "master-1 restarted" in log.read_text(), 30, what="master-1 restarted")
        assert all(Path(f"/proc/{pid}").exists() for pid in [*etcds, masters[1]]), "the others kept running"
        os.kill(etcds[0], signal.SIGKILL)
        wait_for(submit_ok, 60, 0.5, what="a task with one etcd member down")
        wait_for(lambda: "etcd0 restarted" in log.read_text(), 30, what="etcd0 restarted")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        cgroups.remove_node("node-1")
    assert "stopped" in log.read_text()
