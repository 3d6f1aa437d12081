"""Batch and streaming submission: per-task results, idempotency across a repeated stream,
and `corral task submit --from-file tasks.jsonl`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from corral import errors
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

from harness import Cluster

pytestmark = pytest.mark.integration

LATER = {"seconds": int(time.time()) + 3600}


def test_submit_tasks_gives_each_task_its_own_result(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    reqs = [api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script=f"echo {i}"), run_at=LATER) for i in range(300)]
    reqs[7] = api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script=""))
    reqs[8] = api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script="true", cpu_request=-5))
    reqs[9] = api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script="echo now"))  # due now: it runs
    resp = c.submit_tasks(tasks=reqs)
    assert resp.accepted == 298 and len(resp.results) == 300
    assert resp.results[7].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "run_script" in resp.results[7].error
    assert resp.results[8].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "cpu_request" in resp.results[8].error
    ids = [r.task_id for r in resp.results if r.code == 0]
    assert len(set(ids)) == 298
    listed = {t.task_id for t in c.list_tasks(page_size=1000).tasks}
    assert set(ids) <= listed, "every accepted task is readable at once"
    assert c.wait_task(resp.results[9].task_id, timeout=30).state == pb.SUCCEEDED
    with pytest.raises(errors.InvalidArgument, match="tasks: at most 1000"):
        c.submit_tasks(tasks=[reqs[0]] * 1001)


def test_streamed_submission_is_idempotent_when_repeated(cluster: Cluster) -> None:
    cluster.start_master()
    c = cluster.client()
    reqs = [
        api_pb2.SubmitTaskRequest(spec=pb.TaskTemplate(run_script="true"), run_at=LATER, idempotency_key=f"k-{i}")
        for i in range(2500)
    ]
    first = c.submit_many(reqs)
    assert first.accepted == 2500
    again = c.submit_many(reqs)  # e.g. a client retrying after a lost answer
    assert [r.task_id for r in again.results] == [r.task_id for r in first.results]
    assert len(c.list_tasks(page_size=1000, state=pb.PENDING).tasks) == 1000  # a full page
    total, token = 0, ""
    while True:
        page = c.list_tasks(page_size=1000, page_token=token)
        total += len(page.tasks)
        token = page.next_page_token
        if not token:
            break
    assert total == 2500, "no task twice"


def test_cli_submits_a_jsonl_file(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    f = tmp_path / "tasks.jsonl"
    f.write_text(
        '{"run_script": "echo a", "cpu_request": "0.1", "mem_request": "32Mi"}\n'
        "\n"
        '{"spec": {"run_script": "echo b"}, "name": "bee"}\n'
        '{"run_script": ""}\n'
        '{"spec": {"run_script": "echo later"}, "run_at": "2099-01-01T00:00:00Z"}\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "corral", "task", "submit", "--from-file", str(f)],
        capture_output=True, text=True, env=cluster.corral_env(), timeout=60,
    )
    assert r.returncode == 1, "a rejected line makes the command fail"
    ids = r.stdout.split()
    assert len(ids) == 3
    assert f"{f}:4: spec.run_script" in r.stderr and "3 accepted, 1 rejected" in r.stderr
    c = cluster.client()
    assert c.get_task(task_id=ids[1]).name == "bee"
    assert c.get_task(task_id=ids[0]).spec.cpu_request == 100
    assert c.wait_task(ids[0], timeout=30).state == pb.SUCCEEDED
