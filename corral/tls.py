"""Mutual TLS for corral's gRPC: the files, the credentials, and the peer's identity.

Every part takes the same three files (`corral pki` issues them): the cluster CA, its own
certificate and its key — flags `--tls-ca --tls-cert --tls-key` or the environment
variables CORRAL_TLS_CA, CORRAL_TLS_CERT, CORRAL_TLS_KEY. With them a master serves only
TLS and requires a client certificate from the same CA; plaintext is refused.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from corral.errors import InvalidArgument


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str
    flags: str = "--tls"  # the flags these came from, for error messages

    def _read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for what, path in ((f"{self.flags}-ca", self.ca), (f"{self.flags}-cert", self.cert), (f"{self.flags}-key", self.key)):
            try:
                out.append(Path(path).read_bytes())
            except OSError as e:
                raise InvalidArgument(f"{what}: cannot read {path}: {e.strerror}") from None
        return out[0], out[1], out[2]

    def server_credentials(self) -> grpc.ServerCredentials:
        ca, cert, key = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def tls_files(ca: str | None = None, cert: str | None = None, key: str | None = None, *, flags: str = "--tls") -> TlsFiles | None:
    """The TLS files from arguments, else from CORRAL_TLS_* (CORRAL_ETCD_* for the etcd
    flags); None when none is given. Giving some but not all of the three is an error that
    names the missing one."""
    env = "CORRAL_" + flags.removeprefix("--").upper().replace("-", "_")
    ca = ca or os.environ.get(f"{env}_CA", "")
    cert = cert or os.environ.get(f"{env}_CERT", "")
    key = key or os.environ.get(f"{env}_KEY", "")
    if not (ca or cert or key):
        return None
    for name, value in ((f"{flags}-ca", ca), (f"{flags}-cert", cert), (f"{flags}-key", key)):
        if not value:
            raise InvalidArgument(f"{name}: TLS needs the CA, a certificate and its key; {name} is missing")
    return TlsFiles(ca, cert, key, flags)


def _add_three(p: argparse.ArgumentParser, flags: str, whats: tuple[str, str, str], effect: str) -> None:
    env = "CORRAL_" + flags.removeprefix("--").upper()
    for part, what in zip(("ca", "cert", "key"), whats, strict=True):
        p.add_argument(f"{flags}-{part}", default="", help=f"{what}; with all three set, {effect} (env {env}_{part.upper()})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The three flags, for any server's argparse parser."""
    _add_three(p, "--tls", ("the cluster CA certificate", "this process's certificate (corral pki issue)", "its private key"),
               "gRPC is mutual TLS only")


def add_etcd_arguments(p: argparse.ArgumentParser) -> None:
    """Client TLS to etcd (etcd started with --client-cert-auth and https URLs)."""
    _add_three(p, "--etcd", ("the CA that signed etcd's certificate", "this master's client certificate for etcd", "its private key"),
               "etcd is reached over mutual TLS")
    p.add_argument(
        "--etcd-server-name", default=os.environ.get("CORRAL_ETCD_SERVER_NAME", "localhost"),
        help="with several etcd endpoints over TLS, the name every member's certificate is checked "
             "against (one gRPC channel serves them all); corral pki's etcd-server certificates all "
             "carry `localhost` (default; env CORRAL_ETCD_SERVER_NAME)",
    )


def peer_identity(context: grpc.aio.ServicerContext) -> tuple[str, str] | None:
    """(CN, OU) of the caller's verified certificate; None on a plaintext connection."""
    auth = context.auth_context()
    cn = auth.get("x509_common_name")
    if not cn:
        return None
    ou = ""
    for subject in auth.get("x509_subject", []):
        for part in subject.decode().split(","):
            k, _, v = part.strip().partition("=")
            if k == "OU":
                ou = v
    return cn[0].decode(), ou
