"""`corral nodelet`: the node agent's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from corral import credentials, http_endpoint, logs, tls, units
from corral.errors import CorralError

from . import cgroups, metrics
from .agent import Nodelet, default_node_id
from .docker_driver import DockerDriver
from .driver import Driver
from .process_driver import ProcessDriver

log = logging.getLogger("corral.nodelet")


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="corral nodelet", description="Run the corral node agent on this machine.")
    p.add_argument("--masters", default=env("CORRAL_MASTERS", env("CORRAL_ADDR", "127.0.0.1:7070")), help="comma-separated master addresses (env CORRAL_MASTERS)")
    credentials.add_secret_arguments(p, "token", "CORRAL_TOKEN", "this node's token (`corral token create --node-id NODE`)")
    p.add_argument("--node-id", default=env("CORRAL_NODE_ID", default_node_id()), help="this node's id (default: host name)")
    p.add_argument("--data-dir", default=env("CORRAL_DATA_DIR", ""), help="task state and logs (default /var/lib/corral/nodelet-<node-id>)")
    p.add_argument("--cpus", default=env("CORRAL_CPUS", ""), help="cpu capacity to offer, e.g. 2 or 1500m (default: all)")
    p.add_argument("--memory", default=env("CORRAL_MEMORY", ""), help="memory capacity to offer, e.g. 4Gi (default: all)")
    p.add_argument("--max-log-size", default=env("CORRAL_MAX_LOG_SIZE", "16Mi"), help="output kept per task; the rest is discarded (default 16Mi)")
    p.add_argument("--drivers", default=env("CORRAL_DRIVERS", "process,docker"), help="task drivers to offer (default process,docker; docker only while its engine answers)")
    p.add_argument("--spare-slots", type=int, default=int(env("CORRAL_SPARE_SLOTS", "8")),
                   help="process driver: task slots (cgroups joined once by a resident process) kept ready, so a "
                        "task's start moves no process between cgroups; 0 makes a cgroup per task instead (default 8)")
    p.add_argument("--label", action="append", default=[], help="node label key=value (repeatable)")
    tls.add_arguments(p)
    p.add_argument("--http", default=env("CORRAL_NODELET_HTTP", ""),
                   help="host:port of /metrics (Prometheus) and /healthz, e.g. 0.0.0.0:7072; empty (default) for none")
    logs.add_arguments(p)
    args = p.parse_args(argv)
    args.token = credentials.resolve_secret(p, args, "token", "CORRAL_TOKEN")
    logs.setup(args.log_level, args.log_format)
    data_dir = Path(args.data_dir or f"/var/lib/corral/nodelet-{args.node_id}")
    labels = dict(kv.split("=", 1) for kv in args.label)
    cap = units.parse_memory(args.max_log_size)
    wanted = {d.strip() for d in args.drivers.split(",") if d.strip()}
    unknown = wanted - {"process", "docker"}
    if unknown:
        p.error(f"--drivers: unknown driver(s) {', '.join(sorted(unknown))} (process, docker)")
    try:
        tls_files = tls.tls_files(args.tls_ca, args.tls_cert, args.tls_key)
    except CorralError as e:
        p.error(str(e))
    drivers: dict[str, Driver] = {}
    if "process" in wanted:
        missing = cgroups.missing_controllers()
        if missing:
            p.error(f"the process driver needs the cgroup controllers cpu, memory and pids; /sys/fs/cgroup "
                    f"lacks {', '.join(missing)} (is /sys remounted, e.g. by `ip netns exec`?); "
                    "give --drivers docker to run without it")
        drivers["process"] = ProcessDriver(args.node_id, log_cap=cap, hide=[str(data_dir.resolve())], lease_file=str(data_dir / "lease"),
                                         slots=max(0, args.spare_slots))
    if "docker" in wanted:
        drivers["docker"] = DockerDriver(args.node_id, log_cap=cap, data_dir=data_dir)
    nodelet = Nodelet(
        args.node_id,
        [m.strip() for m in args.masters.split(",") if m.strip()],
        args.token,
        data_dir,
        drivers,
        cpus=units.parse_cpu(args.cpus) / 1000 if args.cpus else None,
        memory=units.parse_memory(args.memory) if args.memory else None,
        labels=labels,
        tls=tls_files,
    )

    async def run() -> None:
        task = asyncio.create_task(nodelet.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        http = None
        if args.http:
            http = await http_endpoint.start(args.http, metrics.app(nodelet.metrics_collector(), lambda: not task.done()))
            if http is not None:
                log.info("nodelet %s metrics on http://%s/metrics", args.node_id, http.address)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            if http is not None:
                await http.stop()

    asyncio.run(run())
    return 0
