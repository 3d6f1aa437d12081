"""A cluster on mutual TLS: masters, nodelets and clients with `corral pki` certificates;
plaintext and strangers are refused, and a nodelet speaks only for its own node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corral import errors, pki
from corral.client import Client
from corral.tls import TlsFiles
from corral.v1 import types_pb2 as pb

from harness import TOKEN, Cluster, wait_for

pytestmark = pytest.mark.integration


def _flags(d: Path, kind: str, name: str) -> list[str]:
    return ["--tls-ca", str(d / "ca.crt"), "--tls-cert", str(d / kind / f"{name}.crt"), "--tls-key", str(d / kind / f"{name}.key")]


def _files(d: Path, kind: str, name: str) -> TlsFiles:
    return TlsFiles(str(d / "ca.crt"), str(d / kind / f"{name}.crt"), str(d / kind / f"{name}.key"))


def test_cluster_on_mutual_tls(cluster: Cluster, tmp_path: Path) -> None:
    d, other = tmp_path / "pki", tmp_path / "other"
    pki.init_ca(d)
    pki.init_ca(other)
    node = cluster.node_id("a")
    pki.issue(d, "master", "m")
    pki.issue(d, "nodelet", node)
    pki.issue(d, "nodelet", "some-other-node")
    pki.issue(d, "client", "admin")
    pki.issue(other, "client", "mallory")
    cluster.start_master(extra=_flags(d, "master", "m"))
    cluster.start_nodelet("a", wait=False, extra=_flags(d, "nodelet", node))

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
