"""The HTTP side of a master or nodelet (`--http`): `/metrics` in Prometheus' text format from
prometheus_client's registry, `/healthz`, and whatever routes the member adds (the master's
JSON API and web UI). Served by aiohttp on the member's own event loop, so handlers read
its in-memory state directly, without locks.

Metric objects live at module level in `master/telemetry.py` and `nodelet/telemetry.py`;
the registry also carries prometheus_client's standard process, platform and GC metrics.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("corral.http")


def metrics_app(healthy: Callable[[], bool]) -> web.Application:
    """An application with /metrics and /healthz; the caller may add routes before start."""

    async def metrics(_: web.Request) -> web.Response:
        # (text/plain; version=0.0.4 — what every Prometheus scrapes)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "starting\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


class Endpoint:
    """A started aiohttp application; `address` is where it listens (the real port when
    the one asked for was 0)."""

    def __init__(self, runner: web.AppRunner, address: str) -> None:
        self.runner = runner
        self.address = address

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(address: str, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> Endpoint | None:
    """Listen on `address` (host:port); None, with a warning, when it cannot be bound — the
    member goes on without its HTTP side rather than not at all."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), reuse_address=True, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        log.warning("HTTP endpoint not started on %s: %s", address, e)
        return None
    bound = runner.addresses[0] if runner.addresses else (host, int(port))
    return Endpoint(runner, f"{bound[0]}:{bound[1]}")
