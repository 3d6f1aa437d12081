"""`corral pki`: certificates that chain to the cluster CA and work for mutual TLS, checked
with real TLS handshakes over loopback; unknown CAs, expired and wrong-purpose
certificates are refused."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral import errors, pki


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_name: str = "localhost",
               judge: str = "server") -> str | None:
    """Run one TLS handshake over a loopback socket; None if both sides agree, else the
    error seen by `judge`, the side whose verification is under test (or the other side's
    if the judge saw none)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    result: list[str | None] = []

    def serve() -> None:
        conn, _ = lsock.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
                result.append(None)
        except (ssl.SSLError, OSError) as e:
            result.append(str(e))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_error: str | None = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client.wrap_socket(raw, server_hostname=server_name) as s:
            s.sendall(b"x")
    except (ssl.SSLError, OSError) as e:
        client_error = f"client: {e}"
    t.join(5)
    lsock.close()
    # Under TLS 1.3 the server checks the client certificate after the client has finished
    # its side, so which side notices a refusal first is a race: report the verifying side.
    server_error = result[0] if result else "no result"
    first, second = (server_error, client_error) if judge == "server" else (client_error, server_error)
    return first if first is not None else second


def _server_ctx(d: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(d / "ca.crt"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(d / "master" / f"{name}.crt", d / "master" / f"{name}.key")
    return ctx


def _client_ctx(d: Path, kind: str, name: str, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca or d / "ca.crt"))
    ctx.load_cert_chain(d / kind / f"{name}.crt", d / kind / f"{name}.key")
    return ctx


def test_issued_certificates_chain_to_the_ca_and_name_their_holder(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    pki.issue(d, "master", "m1", sans=["10.1.2.3", "master.example"])
    pki.issue(d, "nodelet", "node-7")
    ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    m = x509.load_pem_x509_certificate((d / "master" / "m1.crt").read_bytes())
    n = x509.load_pem_x509_certificate((d / "nodelet" / "node-7.crt").read_bytes())
    for cert in (m, n):
        cert.verify_directly_issued_by(ca)
    assert n.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-7"
    assert list(n.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ExtendedKeyUsageOID.SERVER_AUTH in m.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    sans = m.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "master.example" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"10.1.2.3", "127.0.0.1"}
    assert (d / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (d / "nodelet" / "node-7.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(errors.AlreadyExists, match="--force"):
        pki.init_ca(d)
    with pytest.raises(errors.InvalidArgument, match="name"):
        pki.issue(d, "client", "../escape")


def test_mutual_tls_accepts_the_cluster_and_refuses_strangers(tmp_path: Path) -> None:
    d, other = tmp_path / "pki", tmp_path / "other"
    pki.init_ca(d)
    pki.init_ca(other)
    pki.issue(d, "master", "m1")
    pki.issue(d, "nodelet", "node-1")
    pki.issue(d, "client", "alice")
    pki.issue(other, "client", "mallory")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    pki.issue(d, "client", "expired", days=1, not_before=long_ago)
    server = _server_ctx(d, "m1")

    assert _handshake(server, _client_ctx(d, "nodelet", "node-1")) is None
    assert _handshake(server, _client_ctx(d, "client", "alice")) is None
    # a client certificate from another CA
    assert "unable to get local issuer" in str(_handshake(server, _client_ctx(other, "client", "mallory", ca=d / "ca.crt")))
    # an expired client certificate
    assert "certificate has expired" in str(_handshake(server, _client_ctx(d, "client", "expired")))
    # no client certificate at all
    bare = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(d / "ca.crt"))
    assert "did not return a certificate" in str(_handshake(server, bare))
    # a nodelet certificate cannot act as a server (no serverAuth)
    pki.issue(d, "master", "m2")
    fake = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(d / "ca.crt"))
    fake.load_cert_chain(d / "nodelet" / "node-1.crt", d / "nodelet" / "node-1.key")
    assert "unsuitable certificate purpose" in str(_handshake(fake, _client_ctx(d, "master", "m2"), server_name="node-1", judge="client"))


def test_cli_init_and_issue(tmp_path: Path) -> None:
    d = tmp_path / "pki"

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral", "pki", *args, "--dir", str(d)], capture_output=True, text=True, timeout=60)

    assert corral("init").returncode == 0
    r = corral("issue", "nodelet", "n1")
    assert r.returncode == 0 and r.stdout.split() == [str(d / "nodelet" / "n1.crt"), str(d / "nodelet" / "n1.key")]
    again = corral("init")
    assert again.returncode == 2 and "--force" in again.stderr
    missing = subprocess.run([sys.executable, "-m", "corral", "pki", "issue", "client", "x", "--dir", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "corral pki init" in missing.stderr


@pytest.mark.integration
def test_etcd_kinds_from_a_ca_of_its_own_keep_cluster_certificates_out_of_the_store(tmp_path: Path) -> None:
    """etcd on mutual TLS with `etcd-server` from the etcd CA: a master's `etcd-client`
    certificate reads and writes; a client certificate of the cluster's CA is refused."""
    import asyncio

    from corral import procs
    from corral.errors import Unavailable
    from corral.master.store import EtcdStore
    from corral.tls import TlsFiles

    cluster_ca, etcd_ca = tmp_path / "pki", tmp_path / "pki" / "etcd"
    pki.init_ca(cluster_ca)
    pki.init_ca(etcd_ca)
    pki.issue(etcd_ca, "etcd-server", "etcd-1", sans=["127.0.0.1"])
    pki.issue(etcd_ca, "etcd-peer", "etcd-1", sans=["127.0.0.1"])
    pki.issue(etcd_ca, "etcd-client", "m1")
    pki.issue(cluster_ca, "client", "mallory")

    def files(d: Path, kind: str, name: str) -> TlsFiles:
        return TlsFiles(str(d / "ca.crt"), str(d / kind / f"{name}.crt"), str(d / kind / f"{name}.key"))

    etcd = procs.start_etcd(tmp_path / "etcd-data", tmp_path / "logs", tls=files(etcd_ca, "etcd-server", "etcd-1"))

    async def use(tls: TlsFiles) -> bytes | None:
        store = EtcdStore(etcd.info["endpoint"], prefix="/t-pki/", tls=tls)
        try:
            await store.connect(wait=3)
            await store.put("k", b"v")
            kv = await store.get("k")
            return kv.value if kv else None
        finally:
            await store.close()

    try:
        assert asyncio.run(use(files(etcd_ca, "etcd-client", "m1"))) == b"v"
        mallory = TlsFiles(str(etcd_ca / "ca.crt"), str(cluster_ca / "client" / "mallory.crt"), str(cluster_ca / "client" / "mallory.key"))
        with pytest.raises(Unavailable):
            asyncio.run(use(mallory))
    finally:
        etcd.stop()
