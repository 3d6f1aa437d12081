"""The nodelet's metrics (Prometheus, through prometheus_client), served on `--http`.

Observed where they happen: how long a task's preparation and launch took, how late it
started after its due instant on this node, its outcome, the stream's reconnects. Read when
scraped: each running task's CPU and memory from its cgroups (or container), the node's
capacity and use, the connection. `/metrics` also has prometheus_client's process metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from corral import http_endpoint
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from aiohttp import web

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

PREPARE = Histogram(
    "corral_nodelet_prepare_seconds", "Preparing a task before its instant (cgroups, namespaces, container create).",
    ["driver"], buckets=SECONDS,
)
LAUNCH = Histogram(
    "corral_nodelet_launch_seconds", "From the instant (or the start message) to the task's process running.",
    ["driver"], buckets=SECONDS,
)
LATENESS = Histogram(
    "corral_nodelet_start_lateness_seconds", "Start time minus due time, as this node measured it.", ["driver"], buckets=SECONDS,
)
OUTCOMES = Counter("corral_nodelet_task_outcomes_total", "Tasks that ended on this node, by final state.", ["driver", "state"])
RECONNECTS = Counter("corral_nodelet_stream_reconnects_total", "Streams to a master that ended and were opened again.")


def outcome(driver: str, state: int) -> None:
    OUTCOMES.labels(driver, pb.TaskState.Name(state) if state in pb.TaskState.values() else str(state)).inc()


class NodeCollector(Collector):
    """Figures read when scraped from the nodelet's last heartbeat (the numbers the master
    saw; measuring again here would shorten the heartbeat's CPU interval): per-task CPU
    and memory, the node's use, the connection."""

    def __init__(self, heartbeat: Callable[[], npb.Heartbeat], connected: Callable[[], bool], capacity: pb.Resources) -> None:
        self.heartbeat, self.connected, self.capacity = heartbeat, connected, capacity

    def collect(self) -> Iterator[Metric]:
        hb = self.heartbeat()
        cpu = GaugeMetricFamily("corral_nodelet_task_cpu_millicores", "A running task's CPU use (millicores).", labels=["task_id"])
        mem = GaugeMetricFamily("corral_nodelet_task_memory_bytes", "A running task's memory use.", labels=["task_id"])
        for u in hb.tasks:
            cpu.add_metric([u.task_id], u.cpu)
            mem.add_metric([u.task_id], u.memory)
        yield cpu
        yield mem
        yield GaugeMetricFamily("corral_nodelet_running_tasks", "Tasks running on this node.", value=len(hb.tasks))
        used = GaugeMetricFamily("corral_nodelet_used", "The node's use (cpu in millicores, memory in bytes).", labels=["resource"])
        used.add_metric(["cpu"], hb.used.cpu)
        used.add_metric(["memory"], hb.used.memory)
        yield used
        cap = GaugeMetricFamily("corral_nodelet_capacity", "What the node offers (cpu in millicores, memory in bytes).", labels=["resource"])
        cap.add_metric(["cpu"], self.capacity.cpu)
        cap.add_metric(["memory"], self.capacity.memory)
        yield cap
        yield GaugeMetricFamily("corral_nodelet_connected", "Whether a stream to the leader is registered now.", value=int(self.connected()))


def app(collector: NodeCollector, healthy: Callable[[], bool]) -> web.Application:
    REGISTRY.register(collector)
    return http_endpoint.metrics_app(healthy)
