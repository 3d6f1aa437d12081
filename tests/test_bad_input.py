"""Bad input: each is refused with the right gRPC status and a sentence naming the field;
the CLI prints that one sentence and exits non-zero, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from corral import errors
from corral.client import Client
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from harness import TOKEN, Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def c(cluster: Cluster) -> Client:
    cluster.start_master()
    return cluster.client()


@pytest.mark.parametrize(
    ("fields", "exc", "field"),
    [
        ({"run_script": ""}, errors.InvalidArgument, "run_script"),
        ({"run_script": "   "}, errors.InvalidArgument, "run_script"),
        ({"run_script": "true", "cpu_request": -1}, errors.InvalidArgument, "cpu_request"),
        ({"run_script": "true", "cpu_request": 10**12}, errors.InvalidArgument, "cpu_request"),
        ({"run_script": "true", "mem_request": -5}, errors.InvalidArgument, "mem_request"),
        ({"run_script": "true", "mem_request": 1 << 60}, errors.InvalidArgument, "mem_request"),
        ({"run_script": "x" * (100 * 1024 + 1)}, errors.InvalidArgument, "run_script"),
        ({"run_script": "true", "cron_schedule": "61 * * * *"}, errors.InvalidArgument, "cron_schedule"),
        ({"run_script": "true", "time_zone": "Mars/Olympus"}, errors.InvalidArgument, "time_zone"),
        ({"run_script": "true", "priority": 101}, errors.InvalidArgument, "priority"),
        ({"run_script": "true", "env": {"1BAD": "x"}}, errors.InvalidArgument, "env"),
        ({"run_script": "true", "starting_deadline": {"seconds": -1}}, errors.InvalidArgument, "starting_deadline"),
        ({"run_script": "true", "ordering_key": "no spaces"}, errors.InvalidArgument, "ordering_key"),
    ],
)
def test_submit_rejects(c: Client, fields: dict, exc: type, field: str) -> None:
    with pytest.raises(exc) as info:
        c.submit_task(spec=pb.TaskTemplate(**fields))
    assert field in str(info.value)
    assert not c.list_tasks().tasks, "nothing was stored"


def test_unknown_template_is_not_found(c: Client) -> None:
    with pytest.raises(errors.NotFound, match="nope"):
        c.submit_task(template_id="nope")
    with pytest.raises(errors.NotFound):
        c.get_template(template_id="nope")


def test_duplicate_template_name_already_exists(c: Client) -> None:
    c.create_template(template=pb.TaskTemplate(name="dup", run_script="true"))
    with pytest.raises(errors.AlreadyExists, match="dup"):
        c.create_template(template=pb.TaskTemplate(name="dup", run_script="false"))


@pytest.mark.parametrize(
    ("tpl", "field"),
    [
        ({"name": "cron1", "run_script": "true", "cron_schedule": "not a cron"}, "cron_schedule"),
        ({"name": "tz1", "run_script": "true", "cron_schedule": "* * * * *", "time_zone": "Nowhere/Else"}, "time_zone"),
        ({"name": "", "run_script": "true"}, "name"),
        ({"name": "bad name!", "run_script": "true"}, "name"),
    ],
)
def test_template_rejects(c: Client, tpl: dict, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        c.create_template(template=pb.TaskTemplate(**tpl))
    assert field in str(info.value)


def test_stop_finished_task_is_failed_precondition(cluster: Cluster, c: Client) -> None:
    t = c.submit_task(spec=pb.TaskTemplate(run_script="true"), run_at={"seconds": 2_000_000_000})
    c.stop_task(task_id=t.task_id)
    with pytest.raises(errors.FailedPrecondition):
        c.stop_task(task_id=t.task_id)
    with pytest.raises(errors.NotFound):
        c.stop_task(task_id="t-missing")


def test_no_or_wrong_token_is_unauthenticated(cluster: Cluster, c: Client) -> None:
    with pytest.raises(errors.Unauthenticated, match="no token"):
        Client(cluster.addr, "").list_tasks()
    with pytest.raises(errors.Unauthenticated, match="not valid"):
        Client(cluster.addr, "wrong").list_tasks()


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, env=cluster.corral_env(), timeout=60
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["submit", "--command", ""], "command"),
        (["submit", "--command", "true", "--at", "tomorrow-ish"], "RFC 3339"),
        (["submit", "--command", "true", "--cpu", "0"], "--cpu"),
        (["submit", "--command", "true", "--memory", "lots"], "memory size"),
        (["submit", "--command", "true", "--timeout", "soon"], "duration"),
        (["submit", "--template", "missing"], "not found"),
        (["task", "get", "t-missing"], "not found"),
        (["task", "get"], "task_id"),
        (["template", "create", "--name", "x", "--command", "true", "--schedule", "bad"], "cron_schedule"),
    ],
)
def test_cli_prints_one_sentence_and_fails(cluster: Cluster, c: Client, args: list[str], needle: str) -> None:
    r = cli(cluster, *args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert needle in r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_cli_unreachable_master(cluster: Cluster) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "corral", "task", "list", "--addr", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env={**cluster.corral_env()},
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "cannot reach a master" in r.stderr


# ---- a hostile or broken nodelet ---------------------------------------------------------------


def _stream(cluster: Cluster, messages: list[bytes]) -> grpc.RpcError | None:
    with grpc.insecure_channel(cluster.addr) as ch:
        call = ch.stream_stream(
            "/corral.v1.NodeletService/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            for _ in call(iter(messages), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10):
                pass
        except grpc.RpcError as e:
            return e
    return None


def _register(node_id: str) -> bytes:
    return npb.NodeletMessage(
        register=npb.Register(node_id=node_id, capacity=pb.Resources(cpu=1000, memory=1 << 30), drivers=["process"])
    ).SerializeToString()


def test_malformed_nodelet_messages_are_rejected_and_master_survives(cluster: Cluster, c: Client) -> None:
    err = _stream(cluster, [b"\xff\xff\xff garbage"])
    assert err is not None
    err = _stream(cluster, [npb.NodeletMessage(heartbeat=npb.Heartbeat()).SerializeToString()])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = _stream(cluster, [_register("")])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and "node_id" in err.details()
    err = _stream(cluster, [_register("bad id with spaces")])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_cap = npb.NodeletMessage(register=npb.Register(node_id="n1", capacity=pb.Resources(cpu=-1, memory=1))).SerializeToString()
    err = _stream(cluster, [bad_cap])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the master is unharmed: it still serves and runs tasks
    assert c.cluster_status().version
    assert cluster.masters[0].alive()


def test_nodelet_claiming_a_connected_nodes_id_is_rejected(cluster: Cluster, c: Client) -> None:
    cluster.start_nodelet("a")
    err = _stream(cluster, [_register(cluster.node_id("a"))])
    assert err is not None and err.code() == grpc.StatusCode.ALREADY_EXISTS
    # the real nodelet keeps working
    t = c.submit_task(spec=pb.TaskTemplate(run_script="true"))
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    wait_for(lambda: c.get_node(node_id=cluster.node_id("a")).state == pb.READY, 5)
