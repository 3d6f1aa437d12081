"""Policies hold at every instant, checked from marker files the runs write on the host
("<task> start|end <time>") beside the records: FORBID never overlaps (also through a
leader failover's catch-up); a pause, a delete or a schedule change cancels the runs placed
ahead of their instant before it is answered (they end SKIPPED and never start); an update
owes nothing for the new schedule's earlier instants; history_limit holds once runs end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corral.v1 import types_pb2 as pb

from harness import Cluster, kill9, wait_for

pytestmark = pytest.mark.integration


def _script(out: Path, secs: float) -> str:
    mark = f'echo "$CORRAL_TASK_ID {{}} $(date +%s.%N)" >> {out}'
    return f"{mark.format('start')}; sleep {secs}; {mark.format('end')}"


def _spans(out: Path) -> dict[str, list[float]]:
    """task → [start, end] (end missing while it runs)."""
    spans: dict[str, list[float]] = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        task, _, at = line.split()  # a run writes its start line before its end line
        spans.setdefault(task, []).append(float(at))
    return spans


def _runs(c, template_id: str) -> list[pb.TaskExecution]:  # type: ignore[no-untyped-def]
    return list(c.list_tasks(template_id=template_id, page_size=1000).tasks)


def test_forbid_never_overlaps_also_through_a_failover_catch_up(cluster: Cluster, tmp_path: Path) -> None:
    for slot in (0, 1):
        cluster.start_master(slot)
    cluster.start_nodelet("a")
    c = cluster.client()
    out = tmp_path / "markers"
    tpl = c.create_template(template=pb.TaskTemplate(
        name="forbid", cron_schedule="* * * * * *", user="root", run_script=_script(out, 1.5),
        concurrency_policy=pb.FORBID, misfire_policy=pb.RUN_ALL))
    time.sleep(5)
    kill9(cluster.leader())
    time.sleep(7)
    c.pause_template(template_id=tpl.template_id)
    wait_for(lambda: all(r.state in (pb.SUCCEEDED, pb.SKIPPED, pb.STOPPED) for r in _runs(c, tpl.template_id)), 30, what="every run final")
    spans = sorted((s[0], s[-1], task) for task, s in _spans(out).items() if len(s) == 2)
    assert len(spans) >= 3, spans
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end < start, f"{a} ran until {end:.3f}, {b} began at {start:.3f}: FORBID overlapped"
    skipped = [r for r in _runs(c, tpl.template_id) if r.state == pb.SKIPPED]
    assert skipped and all("FORBID" in r.reason or "paused" in r.reason or "misfire" in r.reason for r in skipped), skipped


@pytest.mark.parametrize("edit", ["pause", "delete", "reschedule"])
def test_an_edit_cancels_the_run_placed_ahead_before_it_answers(cluster: Cluster, tmp_path: Path, edit: str) -> None:
    cluster.start_master(extra=["--lookahead", "2"])  # runs are placed two seconds ahead
    cluster.start_nodelet("a")
    c = cluster.client()
    out = tmp_path / "markers"
    tpl = c.create_template(template=pb.TaskTemplate(name="edit", cron_schedule="* * * * * */5", user="root", run_script=_script(out, 0.1)))

    def placed_ahead() -> pb.TaskExecution | None:
        ahead = [r for r in _runs(c, tpl.template_id)
                 if r.state == pb.ASSIGNED and r.due_time.ToNanoseconds() / 1e9 > time.time() + 0.7]
        return ahead[0] if ahead else None

    early = wait_for(placed_ahead, 20, 0.02, "a run placed ahead of its instant")
    if edit == "pause":
        c.pause_template(template_id=tpl.template_id)
    elif edit == "delete":
        c.delete_template(template_id=tpl.template_id)
    else:
        c.update_template(template=pb.TaskTemplate(template_id=tpl.template_id, user="root", run_script=_script(out, 0.1),
                                                   cron_schedule="* * * * * 1,31"))
    answered = time.time()
    rec = c.get_task(task_id=early.task_id)
    assert rec.state == pb.SKIPPED, f"answered before its node confirmed: {rec}"
    assert {"pause": "paused", "delete": "deleted", "reschedule": "schedule changed"}[edit] in rec.reason, rec.reason
    time.sleep(max(0.0, early.due_time.ToNanoseconds() / 1e9 - time.time()) + 1.0)
    assert early.task_id not in _spans(out), "the cancelled run started anyway"
    if edit != "reschedule":
        late = [t for t, s in _spans(out).items() if s[0] > answered]
        assert not late, f"runs started after the answer: {late}"


def test_a_schedule_update_owes_nothing_for_earlier_instants_of_the_new_schedule(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="hourly", cron_schedule="0 * * * *", run_script="true"))
    time.sleep(1)
    updated_at = time.time()
    c.update_template(template=pb.TaskTemplate(template_id=tpl.template_id, run_script="true", cron_schedule="* * * * * *"))
    time.sleep(3)
    c.pause_template(template_id=tpl.template_id)
    runs = _runs(c, tpl.template_id)
    before = [r for r in runs if r.due_time.ToNanoseconds() / 1e9 < updated_at - 1]
    assert not before, f"records for instants before the update: {[(r.task_id, r.reason) for r in before]}"
    assert any(r.state != pb.SKIPPED for r in runs), "the new schedule runs"


def test_history_limit_holds_once_runs_end(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="short", cron_schedule="* * * * * */2", run_script="sleep 0.5", history_limit=1))
    wait_for(lambda: sum(r.state == pb.SUCCEEDED for r in _runs(c, tpl.template_id)) >= 1, 20, what="a finished run")
    time.sleep(3)
    c.pause_template(template_id=tpl.template_id)
    wait_for(lambda: all(r.state in (pb.SUCCEEDED, pb.SKIPPED) for r in _runs(c, tpl.template_id)), 20, what="all final")
    wait_for(lambda: len(_runs(c, tpl.template_id)) == 1, 3, 0.05,
             what="one finished run kept (history_limit 1), soon after the last ended")
