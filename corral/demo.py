"""The short demo `make up` runs against a fresh `corral dev` cluster."""

from __future__ import annotations

import time

from corral.client import Client, output
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb


def run_demo(addr: str, token: str, nodelets: int) -> None:
    c = Client(addr, token)
    deadline = time.monotonic() + 30
    while len(c.list_nodes().nodes) < min(1, nodelets) and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.2)
    print("$ corral node list")
    print(output.table(c.list_nodes()))  # type: ignore[attr-defined]
    print("\n$ corral submit --command 'echo hello from corral; uname -n' --wait")
    t = c.submit_task(spec=pb.TaskTemplate(run_script="echo hello from corral; uname -n"), name="hello")  # type: ignore[attr-defined]
    print(t.task_id)
    final = c.wait_task(t.task_id, timeout=60)
    print(f"{t.task_id}: {pb.TaskState.Name(final.state)} on {final.node_id}")
    print(f"\n$ corral logs {t.task_id}")
    for chunk in c.task_logs(task_id=t.task_id):  # type: ignore[attr-defined]
        print(chunk.data.decode(errors="replace"), end="")
    print("\n$ corral submit --command 'exit 3' --wait")
    f = c.submit_task(spec=pb.TaskTemplate(run_script="exit 3"), name="fails")  # type: ignore[attr-defined]
    ff = c.wait_task(f.task_id, timeout=60)
    print(f"{f.task_id}: {pb.TaskState.Name(ff.state)} exit code {ff.exit_code}")
    print("\n$ corral submit --command 'sleep 2' --memory 64Gi")
    big = c.submit_task(spec=pb.TaskTemplate(run_script="sleep 2", mem_request=64 * 1024**3))  # type: ignore[attr-defined]
    time.sleep(1.0)
    print(f"$ corral task get {big.task_id}")
    print(output.table(c.get_task(task_id=big.task_id)))  # type: ignore[attr-defined]
    c.stop_task(task_id=big.task_id)  # type: ignore[attr-defined]
    print("\n$ corral task list")
    print(output.table(c.list_tasks(page_size=10)))  # type: ignore[attr-defined]
    print("\n$ corral cluster status")
    print(output.table(c.cluster_status(api_pb2.ClusterStatusRequest())))  # type: ignore[attr-defined]
    print("\nDemo done; the cluster keeps running. Ctrl-C stops it.\n", flush=True)
    c.close()
