"""A cluster on mutual TLS: masters, nodelets and clients with `corral pki` certificates;
plaintext and strangers are refused, and a nodelet speaks only for its own node."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import grpc
import pytest

from corral import errors, pki
from corral.client import Client
from corral.tls import TlsFiles
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from harness import TOKEN, Cluster, wait_for

pytestmark = pytest.mark.integration


def _flags(d: Path, kind: str, name: str) -> list[str]:
    return ["--tls-ca", str(d / "ca.crt"), "--tls-cert", str(d / kind / f"{name}.crt"), "--tls-key", str(d / kind / f"{name}.key")]


def _files(d: Path, kind: str, name: str) -> TlsFiles:
    return TlsFiles(str(d / "ca.crt"), str(d / kind / f"{name}.crt"), str(d / kind / f"{name}.key"))


def _tls_cluster(cluster: Cluster, d: Path, certs: list[tuple[str, str]]) -> str:
    """A CA in `d`, a master and nodelet "a" on mutual TLS, and the extra `certs`; the node id."""
    pki.init_ca(d)
    node = cluster.node_id("a")
    for kind, name in [("master", "m"), ("nodelet", node), ("client", "admin"), *certs]:
        pki.issue(d, kind, name)
    cluster.start_master(extra=_flags(d, "master", "m"))
    cluster.start_nodelet("a", wait=False, extra=_flags(d, "nodelet", node))
    return node


def test_cluster_on_mutual_tls(cluster: Cluster, tmp_path: Path) -> None:
    d, other = tmp_path / "pki", tmp_path / "other"
    pki.init_ca(other)
    pki.issue(other, "client", "mallory")
    node = _tls_cluster(cluster, d, [("nodelet", "some-other-node")])

    c = Client(cluster.addr, TOKEN, tls=_files(d, "client", "admin"))
    try:
        wait_for(lambda: any(n.node_id == node and n.state == pb.READY for n in c.list_nodes().nodes), 30, what="TLS nodelet READY")
        t = c.submit_task(spec=pb.TaskTemplate(run_script="echo over tls"))
        assert c.wait_task(t.task_id, timeout=60).state == pb.SUCCEEDED
        assert b"".join(x.data for x in c.task_logs(task_id=t.task_id)) == b"over tls\n"
    finally:
        c.close()

    plain = Client(cluster.addr, TOKEN, timeout=3)
    stranger = Client(cluster.addr, TOKEN, timeout=3, tls=_files(other, "client", "mallory"))
    try:
        for who in (plain, stranger):
            with pytest.raises(errors.CorralError):
                who.list_nodes()
    finally:
        plain.close()
        stranger.close()

    # a nodelet whose certificate names another node cannot register as this one
    impostor = cluster.start_nodelet("b", wait=False, extra=_flags(d, "nodelet", "some-other-node"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "PERMISSION_DENIED" not in impostor.log_path.read_text(errors="replace"):
        time.sleep(0.2)
    assert "certificate is for node 'some-other-node'" in impostor.log_path.read_text(errors="replace")
    c2 = Client(cluster.addr, TOKEN, tls=_files(d, "client", "admin"))
    try:
        assert cluster.node_id("b") not in {n.node_id for n in c2.list_nodes().nodes}
    finally:
        c2.close()


def test_certificates_are_identities(cluster: Cluster, tmp_path: Path) -> None:
    """A client certificate is a user (no token needed); a nodelet certificate may not use
    the public API, and may not report on another node's task."""
    d = tmp_path / "pki"
    node = _tls_cluster(cluster, d, [("nodelet", "other-node"), ("client", "nobody-known")])

    admin = Client(cluster.addr, "", tls=_files(d, "client", "admin"))  # the certificate alone
    as_nodelet = Client(cluster.addr, TOKEN, timeout=5, tls=_files(d, "nodelet", node))
    unknown = Client(cluster.addr, "", timeout=5, tls=_files(d, "client", "nobody-known"))
    try:
        wait_for(lambda: any(n.node_id == node and n.state == pb.READY for n in admin.list_nodes().nodes), 30, what="TLS nodelet READY")
        with pytest.raises(errors.PermissionDenied, match="nodelet certificate"):
            as_nodelet.submit_task(spec=pb.TaskTemplate(run_script="true"))
        with pytest.raises(errors.Unauthenticated, match="names no user"):
            unknown.list_tasks()
        t = admin.submit_task(spec=pb.TaskTemplate(run_script="sleep 30"))
        wait_for(lambda: admin.get_task(task_id=t.task_id).state == pb.RUNNING, 30)
        assert admin.get_task(task_id=t.task_id).user_id == "admin"

        # another node's certificate reports the task finished: ignored
        creds = _files(d, "nodelet", "other-node").channel_credentials()
        with grpc.secure_channel(cluster.addr.split(",")[0], creds) as ch:
            connect = ch.stream_stream(
                "/corral.v1.NodeletService/Connect",
                request_serializer=npb.NodeletMessage.SerializeToString, response_deserializer=npb.MasterMessage.FromString,
            )
            out: queue.Queue[npb.NodeletMessage | None] = queue.Queue()
            out.put(npb.NodeletMessage(register=npb.Register(
                node_id="other-node", address="127.0.0.1:1", capacity=pb.Resources(cpu=1000, memory=1 << 30, pids=100), drivers=["process"])))
            stream = connect(iter(out.get, None))
            first = next(stream)
            assert first.WhichOneof("msg") == "registered"
            out.put(npb.NodeletMessage(status=npb.TaskStatus(task_id=t.task_id, attempt=1, state=pb.SUCCEEDED, exit_code=0)))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                time.sleep(0.2)
                assert admin.get_task(task_id=t.task_id).state == pb.RUNNING
            out.put(None)
            stream.cancel()
        got = admin.get_task(task_id=t.task_id)
        assert got.state == pb.RUNNING and got.node_id == node
    finally:
        for c in (admin, as_nodelet, unknown):
            c.close()
