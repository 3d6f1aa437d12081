"""`corral pki`: a small certificate authority for one corral cluster.

    corral pki init [--dir DIR]                      a CA: key and self-signed certificate
    corral pki issue master NAME [--san HOST_OR_IP]  serverAuth + clientAuth (a master is
                                                     also a client of etcd and of its peers)
    corral pki issue nodelet NODE_ID                 clientAuth; the subject CN is the node
                                                     id the nodelet may speak for
    corral pki issue client USER                     clientAuth; CN is the user
    corral pki issue etcd-server NAME --san IP       serverAuth + clientAuth, for an etcd
                                                     member's client port
    corral pki issue etcd-peer NAME --san IP         serverAuth + clientAuth, for the
                                                     members' own traffic
    corral pki issue etcd-client NAME                clientAuth: a master's identity to etcd

etcd trusts every certificate its CA signed, so give etcd a CA of its own (`corral pki init
--dir pki/etcd`) and issue the etcd kinds from that: a nodelet's or a user's certificate from
the cluster's CA then cannot reach the store.

Keys are EC P-256, written with mode 0600; certificates are PEM. Files are never
overwritten unless `--force` is given, so a second `init` cannot silently orphan every
certificate issued so far. The directory defaults to $CORRAL_PKI_DIR or ./pki.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.errors import AlreadyExists, InvalidArgument, NotFound

KINDS = ("master", "nodelet", "client", "etcd-server", "etcd-peer", "etcd-client")
SERVERS = ("master", "etcd-server", "etcd-peer")  # kinds that serve TLS: serverAuth, and localhost in the names
CA_DAYS = 3650
LEAF_DAYS = 365


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    if path.exists() and not force:
        raise AlreadyExists(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _save(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, force: bool, why: str,
) -> tuple[Path, Path]:
    """Write a key (0600) and its certificate, refusing to replace either without force."""
    for p in (cert_path, key_path):
        if p.exists() and not force:
            raise AlreadyExists(f"{p} exists; {why}")
    _write(key_path, _key_pem(key), private=True, force=force)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False, force=force)
    return cert_path, key_path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def init_ca(directory: Path, *, days: int = CA_DAYS, name: str = "corral CA", force: bool = False) -> tuple[Path, Path]:
    """Create the CA key and certificate; returns (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _save(directory / "ca.crt", directory / "ca.key", cert, key, force=force,
                 why="pass --force to replace the CA (every certificate it issued stops being trusted)")


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    except FileNotFoundError:
        raise NotFound(f"no CA in {directory}; run `corral pki init --dir {directory}` first") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{directory / 'ca.key'}: not an EC private key")
    return cert, key


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def issue(
    directory: Path, kind: str, name: str, *, sans: list[str] | None = None, days: int = LEAF_DAYS, force: bool = False,
    not_before: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue a certificate of `kind` for `name`; returns (cert path, key path) in DIR/KIND/."""
    if kind not in KINDS:
        raise InvalidArgument(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not name or len(name) > 128 or "/" in name or name.startswith("."):
        raise InvalidArgument(f"name: {name[:80]!r} is not a valid name (1–128 characters, no '/')")
    ca_cert, ca_key = load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if kind in SERVERS else [])
    names = [name, *(sans or [])] + (["localhost", "127.0.0.1"] if kind in SERVERS else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in dict.fromkeys(names)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False,
        )
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    return _save(directory / kind / f"{name}.crt", directory / kind / f"{name}.key", cert, key, force=force,
                 why="pass --force to issue it again")


def main(argv: list[str]) -> int:
    default_dir = os.environ.get("CORRAL_PKI_DIR", "pki")
    p = argparse.ArgumentParser(prog="corral pki", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="create the cluster's CA")
    i.add_argument("--dir", default=default_dir, help="where the CA and certificates live (env CORRAL_PKI_DIR, default ./pki)")
    i.add_argument("--days", type=int, default=CA_DAYS, help=f"validity (default {CA_DAYS})")
    i.add_argument("--force", action="store_true", help="replace an existing CA")
    s = sub.add_parser("issue", help="issue a master, nodelet, client or etcd certificate")
    s.add_argument("kind", choices=KINDS)
    s.add_argument("name", help="master, etcd-*: its host name; nodelet: its node id; client: the user")
    s.add_argument("--san", action="append", default=[], help="extra DNS name or IP the certificate is valid for (repeatable)")
    s.add_argument("--dir", default=default_dir, help="the CA's directory (env CORRAL_PKI_DIR, default ./pki)")
    s.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity (default {LEAF_DAYS})")
    s.add_argument("--force", action="store_true", help="replace an existing certificate")
    args = p.parse_args(argv)
    if args.days <= 0:
        print("corral pki: --days: must be positive", file=sys.stderr)
        return 2
    try:
        if args.cmd == "init":
            cert, key = init_ca(Path(args.dir), days=args.days, force=args.force)
        else:
            cert, key = issue(Path(args.dir), args.kind, args.name, sans=args.san, days=args.days, force=args.force)
    except (AlreadyExists, InvalidArgument, NotFound) as e:
        print(f"corral pki: {e}", file=sys.stderr)
        return 2
    print(f"{cert}\n{key}")
    return 0
