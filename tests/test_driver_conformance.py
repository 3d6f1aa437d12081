"""One conformance suite, run against every driver (process and docker) through a real
master and nodelet: start, wait, exit codes, logs, stop, OOM, timeout, recovery after a
nodelet restart, and nothing left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from corral.v1 import types_pb2 as pb

from harness import Cluster, task_cgroup, wait_for

pytestmark = pytest.mark.integration

Spec = Callable[..., pb.TaskTemplate]


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The local busybox image; a missing engine fails the run when CORRAL_REQUIRE_DOCKER=1."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CORRAL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker is required (CORRAL_REQUIRE_DOCKER=1) but the engine does not answer: {e}")
        pytest.skip(f"no Docker engine: {e}")
    from corral.testimage import ensure_image

    return ensure_image(client)


@pytest.fixture(params=["process", "docker"])
def driver(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_image")
    return str(request.param)


@pytest.fixture
def spec(driver: str, request: pytest.FixtureRequest) -> Spec:
    def make(script: str, **kw: object) -> pb.TaskTemplate:
        t = pb.TaskTemplate(run_script=script, **kw)  # type: ignore[arg-type]
        if driver == "docker":
            t.driver = pb.DOCKER
            t.image = request.getfixturevalue("docker_image")
        return t

    return make


def logs(c, task_id: str) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(x.data for x in c.task_logs(task_id=task_id))


def containers_of(task_id: str) -> list[object]:
    import docker

    return docker.from_env().containers.list(all=True, filters={"label": f"corral.task_id={task_id}"})


def assert_nothing_left(driver: str, cluster: Cluster, task: pb.TaskExecution) -> None:
    if driver == "docker":
        wait_for(lambda: not containers_of(task.task_id), 10, what="container removed")
    else:
        assert not task_cgroup(task.node_id, task.task_id, task.attempt).exists()


@pytest.fixture
def ready(cluster: Cluster) -> Cluster:
    cluster.start_master()
    cluster.start_nodelet("a")
    return cluster


def test_runs_to_success_with_logs_and_identity(ready: Cluster, spec: Spec, driver: str) -> None:
    c = ready.client()
    t = c.submit_task(spec=spec("echo out; echo err >&2; id -u; echo $CORRAL_TASK_ID $CORRAL_ATTEMPT"))
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.SUCCEEDED, final.reason
    lines = logs(c, t.task_id).decode().splitlines()
    assert "out" in lines and "err" in lines
    admin = next(u for u in c.list_users().users if u.user_id == "admin")
    assert str(admin.uid) in lines, "its owner's own uid by default"
    assert f"{t.task_id} 1" in lines
    assert_nothing_left(driver, ready, final)


def test_exit_code_is_failed(ready: Cluster, spec: Spec, driver: str) -> None:
    c = ready.client()
    t = c.submit_task(spec=spec("exit 3"))
    final = c.wait_task(t.task_id, timeout=60)
    assert (final.state, final.exit_code) == (pb.FAILED, 3)
    assert_nothing_left(driver, ready, final)


def test_stop_terminates_then_kills(ready: Cluster, spec: Spec, driver: str) -> None:
    c = ready.client()
    t = c.submit_task(spec=spec("trap '' TERM; sleep 60"))
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 60, what="RUNNING")
    time.sleep(0.5)
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 1})
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.STOPPED
    assert_nothing_left(driver, ready, final)


def test_memory_over_limit_is_oom_killed(ready: Cluster, spec: Spec, driver: str) -> None:
    c = ready.client()
    t = c.submit_task(spec=spec("head -c 209715200 /dev/zero | tail -n 1 > /dev/null", mem_request=32 << 20))
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.OOM_KILLED, final
    assert_nothing_left(driver, ready, final)


def test_timeout_is_timed_out(ready: Cluster, spec: Spec, driver: str) -> None:
    c = ready.client()
    t = c.submit_task(spec=spec("sleep 60", timeout={"seconds": 1}))
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.TIMED_OUT
    assert_nothing_left(driver, ready, final)


def test_recovers_after_nodelet_restart(ready: Cluster, spec: Spec, driver: str) -> None:
    c = ready.client()
    t = c.submit_task(spec=spec("echo started; sleep 3; echo done"))
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 60, what="RUNNING")
    ready.nodelets["a"].stop()
    ready.start_nodelet("a")
    final = c.wait_task(t.task_id, timeout=60)
    assert (final.state, final.attempt) == (pb.SUCCEEDED, 1)
    assert logs(c, t.task_id) == b"started\ndone\n", "re-attached, not started twice"
    assert_nothing_left(driver, ready, final)
