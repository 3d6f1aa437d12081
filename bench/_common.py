"""What every benchmark script shares: percentiles and the table it prints."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from corral import pki, procs
from corral.client import Client
from corral.nodelet import cgroups
from corral.tls import TlsFiles


def pct(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of xs; NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@contextmanager
def local_cluster(
    node_id: str | None, *, driver: str = "process", master_args: Sequence[str] = (), tls: bool = False,
) -> Iterator[tuple[str, str, str]]:
    """etcd, one master and one nodelet (as `corral dev` runs them), until the nodelet offers
    `driver`; no nodelet when `node_id` is None. Yields (master address, token, etcd
    endpoint); stops everything by PID and deletes its files (CORRAL_BENCH_KEEP=1 keeps
    them, to read the logs). With `tls`, a fresh `corral pki` CA and mutual TLS
    everywhere: CORRAL_TLS_* point at a client certificate meanwhile, so every Client made
    in this process or its children uses it."""
    # CORRAL_BENCH_DIR: where the cluster's files go (default: the system's temporary
    # directory). On ext4 a file made where many were deleted in the last minutes costs
    # milliseconds (the allocator skips recently freed inodes), so compare runs on one place.
    base = Path(os.environ.get("CORRAL_BENCH_DIR") or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=base))
    token = secrets.token_urlsafe(16)
    started: list[procs.Proc] = []
    node_args: list[str] = []
    saved = {k: os.environ.get(k) for k in ("CORRAL_TLS_CA", "CORRAL_TLS_CERT", "CORRAL_TLS_KEY", "CORRAL_ETCD_CA", "CORRAL_ETCD_CERT", "CORRAL_ETCD_KEY")}
    etcd_tls: TlsFiles | None = None
    if tls:
        d = tmp / "pki"
        pki.init_ca(d)
        master_flags = _tls_flags(d, "master", "master")
        # etcd serves TLS too; the master (and the raw-etcd baseline) use the master's certificate
        master_args = [*master_args, *master_flags, *[f.replace("--tls-", "--etcd-") for f in master_flags]]
        _tls_flags(d, "master", "etcd")
        etcd_tls = TlsFiles(str(d / "ca.crt"), str(d / "master" / "etcd.crt"), str(d / "master" / "etcd.key"))
        os.environ.update({"CORRAL_ETCD_CA": str(d / "ca.crt"), "CORRAL_ETCD_CERT": str(d / "master" / "master.crt"),
                           "CORRAL_ETCD_KEY": str(d / "master" / "master.key")})
        if node_id is not None:
            node_args = _tls_flags(d, "nodelet", node_id)
        pki.issue(d, "client", "bench")
        os.environ.update({"CORRAL_TLS_CA": str(d / "ca.crt"), "CORRAL_TLS_CERT": str(d / "client" / "bench.crt"), "CORRAL_TLS_KEY": str(d / "client" / "bench.key")})
    try:
        etcd = procs.start_etcd(tmp / "etcd", tmp / "logs", tls=etcd_tls)
        started.append(etcd)
        m = procs.start_master(etcd.info["endpoint"], token, tmp, name="master", extra=["--log-level", "warning", *master_args])
        started.append(m)
        os.environ["CORRAL_BENCH_MASTER_PID"] = str(m.pid)  # for benchmarks that sample the master
        addr = m.info["address"]
        if node_id is not None:
            node_token = "" if node_args else procs.node_token(addr, token, node_id)  # its own credential, as corral dev gives it
            started.append(procs.start_nodelet(addr, node_token, tmp, node_id=node_id, extra=["--log-level", "warning", *node_args]))
        c = Client(addr, token)
        deadline = time.monotonic() + 60
        while node_id is not None and time.monotonic() < deadline:
            nodes = c.list_nodes().nodes  # type: ignore[attr-defined]
            if nodes and driver in nodes[0].drivers:
                break
            time.sleep(0.1)
        c.close()
        yield addr, token, etcd.info["endpoint"]
    finally:
        for p in reversed(started):
            p.stop()
        if node_id is not None:  # the nodelet's cgroup parent (its tasks' groups are gone with them)
            cgroups.remove_node(node_id)
        if os.environ.get("CORRAL_BENCH_KEEP"):
            print(f"kept {tmp} (logs, etcd data)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tls_flags(d: Path, kind: str, name: str) -> list[str]:
    """Issue a certificate and return the flags that use it."""
    pki.issue(d, kind, name)
    return ["--tls-ca", str(d / "ca.crt"), "--tls-cert", str(d / kind / f"{name}.crt"), "--tls-key", str(d / kind / f"{name}.key")]
