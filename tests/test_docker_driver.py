"""What only the Docker driver does: limits read back from the engine, no network by
default, image handling, advertising the driver, removing containers no task knows."""

from __future__ import annotations

import contextlib
import time

import docker
import pytest
from test_driver_conformance import docker_image  # noqa: F401 - the session fixture

from corral.v1 import types_pb2 as pb

from harness import Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def ready(cluster: Cluster, docker_image: str) -> Cluster:  # noqa: F811
    cluster.start_master()
    cluster.start_nodelet("a")
    return cluster


def test_limits_are_applied_and_network_is_off(ready: Cluster, docker_image: str) -> None:  # noqa: F811
    c = ready.client()
    t = c.submit_task(spec=pb.TaskTemplate(driver=pb.DOCKER, image=docker_image, run_script="cat /proc/net/dev; sleep 30", cpu_request=250, mem_request=48 << 20, pids_limit=40))
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 60, what="RUNNING")
    (container,) = docker.from_env().containers.list(filters={"label": f"corral.task_id={t.task_id}"})
    hc = container.attrs["HostConfig"]
    assert (hc["NanoCpus"], hc["Memory"], hc["MemorySwap"], hc["PidsLimit"]) == (250_000_000, 48 << 20, 48 << 20, 40)
    assert hc["NetworkMode"] == "none" and hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert container.labels["corral.node_id"] == ready.node_id("a")
    wait_for(lambda: b"lo:" in b"".join(x.data for x in c.task_logs(task_id=t.task_id)), 10, what="output")
    out = b"".join(x.data for x in c.task_logs(task_id=t.task_id)).decode()
    assert "eth0" not in out
    c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})
    assert c.wait_task(t.task_id, timeout=30).state == pb.STOPPED


def test_missing_image_fails_quickly_with_reason(ready: Cluster) -> None:
    c = ready.client()
    t = c.submit_task(spec=pb.TaskTemplate(driver=pb.DOCKER, image="corral-test/does-not-exist:1", run_script="true", pull_policy=pb.NEVER))
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.FAILED and final.reason.startswith("image not found: corral-test/does-not-exist:1")


def test_node_advertises_docker(ready: Cluster) -> None:
    node = ready.client().get_node(node_id=ready.node_id("a"))
    assert "docker" in node.drivers and "process" in node.drivers


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    """Whether the engine still has the container (a list followed by an inspect races with
    a removal: the inspect of a just-removed one answers 404)."""
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


def test_orphan_containers_are_removed_on_start(ready: Cluster, docker_image: str) -> None:  # noqa: F811
    """A container of this cluster and node that no task knows goes; one of another cluster
    that happens to use the same node id stays (two clusters may share a Docker engine)."""
    client = docker.from_env()
    ours = ready.client().cluster_status().cluster_id  # type: ignore[attr-defined]
    node = ready.node_id("b")
    stray = client.containers.run(docker_image, ["sleep", "60"], detach=True,
                                  labels={"corral.node_id": node, "corral.task_id": "nobody-knows", "corral.cluster_id": ours})
    theirs = client.containers.run(docker_image, ["sleep", "60"], detach=True,
                                   labels={"corral.node_id": node, "corral.task_id": "another-clusters", "corral.cluster_id": "0ther0ne"})
    try:
        ready.start_nodelet("b")
        wait_for(lambda: not _exists(client, stray.id), 20, what="orphan removed")
        time.sleep(1.0)
        assert _exists(client, theirs.id), "another cluster's container was touched"
    finally:
        for c in (stray, theirs):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


def test_docker_task_is_not_placed_where_docker_is_off(cluster: Cluster, docker_image: str) -> None:  # noqa: F811
    cluster.start_master()
    cluster.start_nodelet("p", extra=["--drivers", "process"])
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(driver=pb.DOCKER, image=docker_image, run_script="true"))
    got = wait_for(lambda: (x := c.get_task(task_id=t.task_id)).reason.startswith("no node") and x, 15, what="pending reason")
    assert got.state == pb.PENDING and "driver docker not available" in got.reason
