"""A small HTTP endpoint for operators: `/metrics` (Prometheus text format) and `/healthz`.

Figures are computed from the cache when scraped (no bookkeeping on hot paths), plus a few
counters the master keeps anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from corral import __version__
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:  # (type names only: the loops import this module for RECORD_ERRORS)
    from .cache import Cache
    from .gateway import Gateway
    from .leadership import Leadership
    from .scheduling import Scheduler
    from .taskops import TaskWriter

log = logging.getLogger("corral.metrics")

# Records a leader loop could not handle and set aside (the loop went on with the rest),
# by loop: counted where it happens, shown here.
RECORD_ERRORS: Counter[str] = Counter()


def render(cache: Cache, gateway: Gateway, scheduler: Scheduler, writer: TaskWriter, leadership: Leadership) -> str:
    lines = [
        "# HELP corral_tasks Tasks in the store by state.",
        "# TYPE corral_tasks gauge",
    ]
    for value, name in sorted((v.number, v.name) for v in pb.TaskState.DESCRIPTOR.values if v.number):
        lines.append(f'corral_tasks{{state="{name}"}} {len(cache.by_state.get(value, ()))}')
    lines += ["# HELP corral_nodes Nodes by state.", "# TYPE corral_nodes gauge"]
    nodes = Counter(r.msg.state for r in cache.nodes.values())
    for v in pb.NodeState.DESCRIPTOR.values:
        if v.number:
            lines.append(f'corral_nodes{{state="{v.name}"}} {nodes.get(v.number, 0)}')
    lines += [
        "# HELP corral_nodelet_streams Nodelets connected to this master.",
        "# TYPE corral_nodelet_streams gauge",
        f"corral_nodelet_streams {sum(1 for s in gateway.sessions.values() if not s.closed)}",
        "# HELP corral_scheduler_passes_total Scheduling passes run by this master.",
        "# TYPE corral_scheduler_passes_total counter",
        f"corral_scheduler_passes_total {scheduler.passes}",
        "# HELP corral_leader_writes_total Fenced leader writes by outcome (fenced = refused: another master leads).",
        "# TYPE corral_leader_writes_total counter",
        f'corral_leader_writes_total{{result="committed"}} {writer.fenced_committed}',
        f'corral_leader_writes_total{{result="fenced"}} {writer.fenced_rejected}',
        "# HELP corral_etcd_commits_total etcd transactions sent by the group committer, and the writes they carried.",
        "# TYPE corral_etcd_commits_total counter",
        f"corral_etcd_commits_total {writer.commit.transactions if writer.commit else 0}",
        "# TYPE corral_etcd_committed_writes_total counter",
        f"corral_etcd_committed_writes_total {writer.commit.writes if writer.commit else 0}",
        "# HELP corral_is_leader Whether this master runs the leader loops now.",
        "# TYPE corral_is_leader gauge",
        f"corral_is_leader {int(leadership.is_leader())}",
        "# HELP corral_store_revision Last etcd revision applied to the cache.",
        "# TYPE corral_store_revision gauge",
        f"corral_store_revision {cache.revision}",
        "# HELP corral_record_errors_total Records a leader loop could not handle and set aside (a template is suspended with the reason).",
        "# TYPE corral_record_errors_total counter",
        *(f'corral_record_errors_total{{loop="{k}"}} {v}' for k, v in sorted(RECORD_ERRORS.items())),
        "# HELP corral_build_info Version of this master.",
        "# TYPE corral_build_info gauge",
        f'corral_build_info{{version="{__version__}"}} 1',
    ]
    return "\n".join(lines) + "\n"


async def serve(
    address: str, cache: Cache, gateway: Gateway, scheduler: Scheduler, tasks: TaskWriter, leadership: Leadership
) -> asyncio.Server | None:
    """Start the endpoint; returns None (with a warning) when the address cannot be bound."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, body, ctype = "200 OK", render(cache, gateway, scheduler, tasks, leadership), "text/plain; version=0.0.4"
            elif path == "/healthz":
                ok = cache.ready.is_set()
                status, body, ctype = ("200 OK" if ok else "503 Service Unavailable"), ("ok\n" if ok else "starting\n"), "text/plain"
            else:
                status, body, ctype = "404 Not Found", "not found\n", "text/plain"
            data = body.encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    host, _, port = address.rpartition(":")
    try:
        server = await asyncio.start_server(handle, host or "127.0.0.1", int(port))
    except OSError as e:
        log.warning("metrics endpoint not started on %s: %s", address, e)
        return None
    return server
