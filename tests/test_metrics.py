"""Metrics: scrape a live master and nodelet and parse with prometheus_client's own parser.
The families must exist and move: a submitted task shows in the lateness and submit→running
histograms, in the RPC latency histogram under its method, and in the nodelet's outcome
counter and start histograms."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral import procs
from corral.v1 import types_pb2 as pb

from harness import Cluster, wait_for

pytestmark = pytest.mark.integration


def scrape(address: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """family name → {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
    return out


def value(fams: dict, family: str, sample: str, **labels: str) -> float:  # type: ignore[type-arg]
    """Sum of a family's samples named `sample` whose labels include `labels`."""
    return sum(v for (name, lbls), v in fams.get(family, {}).items()
               if name == sample and all(dict(lbls).get(k) == x for k, x in labels.items()))


def test_master_and_nodelet_metrics_exist_and_move(cluster: Cluster) -> None:
    m = cluster.start_master()
    http = procs.free_port()
    cluster.start_nodelet("a", extra=["--http", f"127.0.0.1:{http}"])
    c = cluster.client()
    master_addr, node_addr = m.info["http"], f"127.0.0.1:{http}"
    before = scrape(master_addr)
    for family in ("corral_rpc_duration_seconds", "corral_task_start_lateness_seconds", "corral_task_submit_to_running_seconds",
                   "corral_scheduler_pass_seconds", "corral_placement_seconds", "corral_etcd_transaction_seconds",
                   "corral_etcd_transaction_writes", "corral_leadership_changes", "corral_leader_writes", "corral_tasks",
                   "corral_pending_tasks", "corral_nodes", "corral_is_leader", "process_cpu_seconds", "process_resident_memory_bytes"):
        assert family in before, f"{family} missing from the master's /metrics"
    assert value(before, "corral_leadership_changes", "corral_leadership_changes_total", event="won") == 1
    assert value(before, "corral_nodes", "corral_nodes", state="READY") == 1

    t = c.submit_task(spec=pb.TaskTemplate(run_script="sleep 1"))  # type: ignore[attr-defined]
    wait_for(lambda: c.get_task(task_id=t.task_id).state == pb.RUNNING, 30, what="RUNNING")  # type: ignore[attr-defined]
    # (from the nodelet's last heartbeat: within a second)
    wait_for(lambda: value(scrape(node_addr), "corral_nodelet_running_tasks", "corral_nodelet_running_tasks") == 1, 10,
             what="the running task counted")
    wait_for(lambda: any(dict(lbls).get("task_id") == t.task_id for _, lbls in scrape(node_addr)["corral_nodelet_task_memory_bytes"]),
             10, what="the task's memory in the nodelet's metrics")
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED

    after = scrape(master_addr)
    for family, sample in (("corral_task_start_lateness_seconds", "corral_task_start_lateness_seconds_count"),
                           ("corral_task_submit_to_running_seconds", "corral_task_submit_to_running_seconds_count")):
        assert value(after, family, sample, driver="process", kind="one_off") == value(before, family, sample, driver="process", kind="one_off") + 1
    assert value(after, "corral_rpc_duration_seconds", "corral_rpc_duration_seconds_count", method="SubmitTask", code="OK") == 1
    assert value(after, "corral_placement_seconds", "corral_placement_seconds_count") >= 1
    assert value(after, "corral_etcd_transaction_writes", "corral_etcd_transaction_writes_sum") > value(
        before, "corral_etcd_transaction_writes", "corral_etcd_transaction_writes_sum")
    assert value(after, "corral_tasks", "corral_tasks", state="SUCCEEDED") == 1

    # a refused call is counted under its status code
    with pytest.raises(Exception):  # noqa: B017,PT011 - NotFound, whatever the SDK's class
        c.get_task(task_id="t-no-such-task")  # type: ignore[attr-defined]
    assert value(scrape(master_addr), "corral_rpc_duration_seconds", "corral_rpc_duration_seconds_count", method="GetTask", code="NOT_FOUND") == 1

    node = scrape(node_addr)
    for family in ("corral_nodelet_prepare_seconds", "corral_nodelet_launch_seconds", "corral_nodelet_task_outcomes",
                   "corral_nodelet_stream_reconnects", "corral_nodelet_capacity", "process_cpu_seconds"):
        assert family in node, f"{family} missing from the nodelet's /metrics"
    assert value(node, "corral_nodelet_task_outcomes", "corral_nodelet_task_outcomes_total", driver="process", state="SUCCEEDED") == 1
    assert value(node, "corral_nodelet_launch_seconds", "corral_nodelet_launch_seconds_count", driver="process") == 1
    assert value(node, "corral_nodelet_connected", "corral_nodelet_connected") == 1

    # the stream's reconnects move when the master goes away and comes back
    m.stop(timeout=5)
    master_addr = cluster.start_master().info["http"]
    wait_for(lambda: value(scrape(node_addr), "corral_nodelet_stream_reconnects", "corral_nodelet_stream_reconnects_total") >= 1,
             30, what="a reconnect counted")
    with urllib.request.urlopen(f"http://{node_addr}/healthz", timeout=5) as r:
        assert r.status == 200

    # every corral metric the Grafana dashboard queries is one of these families
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana" / "corral.json").read_text())
    queried = {re.sub(r"_(bucket|sum|count|total)$", "", n)
               for p in dashboard["panels"] for t in p["targets"] for n in re.findall(r"corral_[a-z_]+", t["expr"])}
    served = set(scrape(master_addr)) | set(scrape(node_addr))
    assert queried and not queried - served, f"the dashboard queries metrics nobody serves: {sorted(queried - served)}"


def test_json_logs_from_master_and_nodelet(cluster: Cluster) -> None:
    """--log-format json: every line either member writes is one JSON object with ts, level,
    logger and msg, and structured fields (the audit's) are keys of their own."""
    m = cluster.start_master(extra=["--log-format", "json"])
    n = cluster.start_nodelet("a", extra=["--log-format", "json"])
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="true"))  # type: ignore[attr-defined]
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED
    events = []
    for p in (m, n):
        lines = [x for x in p.log_path.read_text().splitlines() if x.strip()]
        assert lines, f"{p.name} wrote no log"
        for line in lines:
            e = json.loads(line)  # fails on any line that is not JSON
            assert {"ts", "level", "logger", "msg"} <= set(e) and e["ts"].endswith("Z"), e
            events.append(e)
    audit = [e for e in events if e["logger"] == "corral.audit" and e.get("what") == "SubmitTask"]
    assert audit and audit[0]["who"] == "admin" and audit[0]["result"] == "OK", audit
    assert any(e["logger"] == "corral.nodelet" and "registered" in e["msg"] for e in events)
