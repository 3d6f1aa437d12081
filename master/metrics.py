"""The master's metrics (Prometheus, through prometheus_client) and its HTTP endpoint.

Two kinds: figures read from the cache when scraped (tasks and nodes by state, pending tasks
by reason, streams, leadership: no bookkeeping on hot paths), and histograms and counters
observed where the thing happens (RPC latency, how late tasks start, scheduling passes,
placements, etcd transactions, leadership changes). `/metrics` also has prometheus_client's
process metrics (CPU seconds, RSS, open fds) and Python's GC.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from corral import __version__, http_endpoint
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:  # (type names only: the loops import this module for their metrics)
    from aiohttp import web

    from .cache import Cache
    from .gateway import Gateway
    from .leadership import Leadership
    from .scheduling import Scheduler
    from .taskops import TaskWriter

# seconds, from a millisecond to five minutes: lateness and latencies share them
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

RPC_SECONDS = Histogram(
    "corral_rpc_duration_seconds", "Public API calls by method and gRPC status code, as the master served them.",
    ["method", "code"], buckets=SECONDS,
)
START_LATENESS = Histogram(
    "corral_task_start_lateness_seconds",
    "How late tasks started: start time minus due time (a cron instant, a run_at, or the submit time).",
    ["driver", "kind"], buckets=SECONDS,
)
SUBMIT_TO_RUNNING = Histogram(
    "corral_task_submit_to_running_seconds", "From a task's submission to its start.",
    ["driver", "kind"], buckets=SECONDS,
)
SCHEDULER_PASS = Histogram("corral_scheduler_pass_seconds", "Duration of one scheduling pass of the leader.", buckets=SECONDS)
PLACEMENT = Histogram(
    "corral_placement_seconds", "From a task being ready to place (submitted and due) to its placement committed.",
    buckets=SECONDS,
)
ETCD_TXN = Histogram("corral_etcd_transaction_seconds", "etcd transactions sent by the group committer: round-trip time.", buckets=SECONDS)
ETCD_TXN_WRITES = Histogram(
    "corral_etcd_transaction_writes", "Writes carried by one etcd transaction of the group committer.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
LEADERSHIP = Counter("corral_leadership_changes_total", "Times this master won or lost the leadership.", ["event"])
# Records a leader loop could not handle and set aside (the loop went on with the rest)
RECORD_ERRORS = Counter("corral_record_errors_total", "Records a leader loop could not handle and set aside.", ["loop"])


def task_kind(t: pb.TaskExecution) -> str:
    """cron for a template's scheduled fire (its id is `template@instant`), else one_off."""
    return "cron" if "@" in t.task_id else "one_off"


def observe_running(t: pb.TaskExecution) -> None:
    """A task's RUNNING was committed: how late it started after its due time, and how long
    it took from its submission (a cron fire is submitted a little ahead of its instant)."""
    if not t.HasField("start_time"):
        return
    start = _ts(t.start_time)
    submit = _ts(t.submit_time) if t.HasField("submit_time") else start
    due = _ts(t.due_time) if t.HasField("due_time") else submit
    labels = ("docker" if t.spec.driver == pb.DOCKER else "process", task_kind(t))
    START_LATENESS.labels(*labels).observe(max(0.0, start - due))
    SUBMIT_TO_RUNNING.labels(*labels).observe(max(0.0, start - submit))


def _ts(t: object) -> float:
    return float(t.seconds + t.nanos / 1e9)  # type: ignore[attr-defined]


_REASON_CLASS = re.compile(r"[0-9]+(\.[0-9]+)?|'[^']*'|\"[^\"]*\"|\b[a-z0-9]+-[a-z0-9-]+\b")


def reason_class(reason: str) -> str:
    """A pending reason without its numbers, names and ids, so reasons group into a few
    label values ("no node has 4 cpu free" and "… 2 cpu free" are one class)."""
    r = _REASON_CLASS.sub("_", reason.split(";")[0]).strip()
    return (r[:80] or "waiting")


class ClusterCollector(Collector):
    """Figures read from the master's state when scraped."""

    def __init__(self, cache: Cache, gateway: Gateway, scheduler: Scheduler, writer: TaskWriter, leadership: Leadership) -> None:
        self.cache, self.gateway, self.scheduler, self.writer, self.leadership = cache, gateway, scheduler, writer, leadership

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        tasks = GaugeMetricFamily("corral_tasks", "Tasks in the store by state.", labels=["state"])
        for v in pb.TaskState.DESCRIPTOR.values:
            if v.number:
                tasks.add_metric([v.name], len(cache.by_state.get(v.number, ())))
        yield tasks
        pending = GaugeMetricFamily("corral_pending_tasks", "PENDING tasks by the class of their reason.", labels=["reason"])
        reasons: Tally[str] = Tally()
        for task_id in cache.by_state.get(pb.PENDING, ()):
            rec = cache.tasks.get(task_id)
            if rec is not None:
                reasons[reason_class(rec.msg.reason)] += 1
        for reason, n in reasons.most_common(20):
            pending.add_metric([reason], n)
        yield pending
        nodes = GaugeMetricFamily("corral_nodes", "Nodes by state.", labels=["state"])
        by_state = Tally(r.msg.state for r in cache.nodes.values())
        for v in pb.NodeState.DESCRIPTOR.values:
            if v.number:
                nodes.add_metric([v.name], by_state.get(v.number, 0))
        yield nodes
        yield GaugeMetricFamily("corral_nodelet_streams", "Nodelets connected to this master.",
                                value=sum(1 for s in self.gateway.sessions.values() if not s.closed))
        yield CounterMetricFamily("corral_scheduler_passes", "Scheduling passes run by this master.", value=self.scheduler.passes)
        fenced = CounterMetricFamily("corral_leader_writes", "Fenced leader writes by outcome (fenced = refused: another master leads).",
                                     labels=["result"])
        fenced.add_metric(["committed"], self.writer.fenced_committed)
        fenced.add_metric(["fenced"], self.writer.fenced_rejected)
        yield fenced
        commit = self.writer.commit
        yield CounterMetricFamily("corral_etcd_commits", "etcd transactions sent by the group committer.",
                                  value=commit.transactions if commit else 0)
        yield CounterMetricFamily("corral_etcd_committed_writes", "Writes those transactions carried.",
                                  value=commit.writes if commit else 0)
        yield GaugeMetricFamily("corral_is_leader", "Whether this master runs the leader loops now.", value=int(self.leadership.is_leader()))
        yield GaugeMetricFamily("corral_store_revision", "Last etcd revision applied to the cache.", value=cache.revision)
        yield InfoMetricFamily("corral_build", "Version of this master.", value={"version": __version__})


def app(cache: Cache, gateway: Gateway, scheduler: Scheduler, writer: TaskWriter, leadership: Leadership) -> web.Application:
    """The master's HTTP application: /metrics, /healthz (routes may be added)."""
    REGISTRY.register(ClusterCollector(cache, gateway, scheduler, writer, leadership))
    return http_endpoint.metrics_app(cache.ready.is_set)
