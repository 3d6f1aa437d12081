"""Cron templates firing on a real cluster: one task per scheduled instant, named
`{template_id}@{unix_seconds}`, never twice — also across a leader kill."""

from __future__ import annotations

import collections
import time

import pytest

from corral.client.sdk import TERMINAL
from corral.v1 import types_pb2 as pb

from harness import Cluster, kill9, wait_for

pytestmark = pytest.mark.integration


def fires(c, template_id: str) -> list[pb.TaskExecution]:  # type: ignore[no-untyped-def]
    return [t for t in c.list_tasks(template_id=template_id, page_size=1000).tasks]


def test_per_second_schedule_fires_each_instant_once(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="tick", run_script="echo $CORRAL_SCHEDULED_TIME", cron_schedule="* * * * * *"))
    time.sleep(6)
    c.update_template(template=pb.TaskTemplate(template_id=tpl.template_id, run_script="true", cron_schedule="* * * * * *", suspended=True))
    got = wait_for(lambda: (f := fires(c, tpl.template_id)) and all(t.state in (pb.SUCCEEDED,) for t in f) and f, 30, what="runs done")
    seconds = sorted(int(t.task_id.rsplit("@", 1)[1]) for t in got)
    assert len(seconds) >= 4
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "consecutive instants, none twice"
    for t in got:
        assert t.due_time.seconds == int(t.task_id.rsplit("@", 1)[1])


def test_leader_kill_under_a_per_second_schedule_runs_each_instant_once(cluster: Cluster) -> None:
    for i in range(2):
        cluster.start_master(i)
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="tick-ha", run_script="true", cron_schedule="* * * * * *", misfire_policy=pb.RUN_ALL))
    time.sleep(3)
    kill9(cluster.leader())
    time.sleep(6)
    c.update_template(template=pb.TaskTemplate(template_id=tpl.template_id, run_script="true", cron_schedule="* * * * * *", suspended=True))
    time.sleep(1)
    got = fires(c, tpl.template_id)
    counts = collections.Counter(int(t.task_id.rsplit("@", 1)[1]) for t in got)
    seconds = sorted(counts)
    assert set(counts.values()) == {1}
    assert seconds == list(range(seconds[0], seconds[-1] + 1)), f"RUN_ALL: every instant of the outage has its run: {seconds}"


def test_pause_resume_next_and_history(cluster: Cluster) -> None:
    import subprocess
    import sys

    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="pr", run_script="true", cron_schedule="* * * * * *", time_zone="Europe/Berlin"))
    assert len(tpl.next_fires) == 5, "create answers with the next instants"
    time.sleep(2.5)
    c.pause_template(template_id="pr")
    paused_at = time.time()
    time.sleep(3)
    resumed_at = time.time()
    resumed = c.resume_template(template_id="pr")
    assert not resumed.suspended
    time.sleep(2.5)
    c.pause_template(template_id="pr")
    time.sleep(1)
    wait_for(lambda: all(t.state in TERMINAL for t in fires(c, tpl.template_id)), 15, what="every instant's outcome")
    outcomes = {int(t.task_id.rsplit("@", 1)[1]): t for t in fires(c, tpl.template_id)}
    instants = sorted(outcomes)
    assert instants == list(range(instants[0], instants[-1] + 1)), "every instant has exactly one outcome"
    started = [s for s in instants if outcomes[s].start_time.seconds]
    in_pause = [s for s in started if paused_at < s < resumed_at]
    assert not in_pause, f"nothing starts while paused, and resuming fires no backlog: {in_pause}"
    skipped = [s for s in instants if paused_at + 1 < s < resumed_at - 0.5]
    assert skipped and all(not outcomes[s].start_time.seconds and "suspended" in outcomes[s].reason for s in skipped)
    assert any(s >= resumed_at - 0.5 for s in started), "fires again after resume"
    hist = c.template_history(template_id="pr")
    launched = [t for t in outcomes.values() if t.state != pb.SKIPPED]
    # a run placed ahead of its instant when the pause came was fired, then skipped by the pause
    cancelled = [t for t in outcomes.values() if t.state == pb.SKIPPED and "paused before this instant" in t.reason]
    assert all(not t.start_time.seconds for t in cancelled)
    assert hist.state.fired == len(launched) + len(cancelled)
    assert hist.state.skipped == len(instants) - len(launched) - len(cancelled)
    wait_for(lambda: c.template_history(template_id="pr").last_success.seconds > 0, 15, what="a success")
    c.resume_template(template_id="pr")
    r = subprocess.run([sys.executable, "-m", "corral", "template", "next", "pr", "-n", "3"], capture_output=True, text=True, env=cluster.corral_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("LOCAL (Europe/Berlin)") and len(lines) == 4
    assert "+01:00" in lines[1] or "+02:00" in lines[1]
    c.pause_template(template_id="pr")


def _span(t: pb.TaskExecution) -> tuple[float, float]:
    return t.start_time.ToNanoseconds() / 1e9, (t.finish_time.ToNanoseconds() / 1e9 if t.finish_time.seconds else 1e18)


def test_forbid_never_overlaps_and_replace_stops_the_older_run(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    forbid = c.create_template(template=pb.TaskTemplate(name="forbid", run_script="sleep 2", cron_schedule="* * * * * *", concurrency_policy=pb.FORBID))
    replace = c.create_template(template=pb.TaskTemplate(name="replace", run_script="sleep 30", cron_schedule="* * * * * *", concurrency_policy=pb.REPLACE))
    time.sleep(5)
    for name in ("forbid", "replace"):
        c.pause_template(template_id=name)
    runs = wait_for(lambda: (f := fires(c, forbid.template_id)) and all(t.state in TERMINAL for t in f) and f, 30, what="forbid runs end")
    spans = sorted(_span(t) for t in runs if t.start_time.seconds)
    assert len(spans) >= 2
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), f"FORBID runs overlapped: {spans}"
    overlaps = [t for t in runs if t.state == pb.SKIPPED]
    assert overlaps and all(t.reason.startswith("overlap:") and "FORBID" in t.reason for t in overlaps)
    assert c.template_history(template_id="forbid").state.skipped == len(overlaps)
    # the older runs are stopped (each stop takes a moment to land): one run remains
    replaced = wait_for(
        lambda: (f := fires(c, replace.template_id)) and sum(t.state in (pb.RUNNING, pb.ASSIGNED, pb.PENDING) for t in f) <= 1 and f,
        30, what="one REPLACE run left",
    )
    assert sum(t.state == pb.STOPPED and "REPLACE" in t.reason for t in replaced) >= 2
    for t in replaced:
        if t.state not in (pb.STOPPED, pb.SUCCEEDED, pb.FAILED):
            c.stop_task(task_id=t.task_id, grace_period={"seconds": 0})


def test_delayed_task_survives_a_master_restart_and_runs_once(cluster: Cluster) -> None:
    m = cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="echo once"), run_at={"seconds": int(time.time()) + 4})
    kill9(m)
    cluster.start_master()
    final = c.wait_task(t.task_id, timeout=60)
    assert final.state == pb.SUCCEEDED and final.attempt == 1
    assert final.start_time.ToNanoseconds() >= final.due_time.ToNanoseconds()
    assert b"".join(x.data for x in c.task_logs(task_id=t.task_id)) == b"once\n"


def test_history_limit_deletes_the_oldest_finished_runs(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(name="short-history", run_script="true", cron_schedule="* * * * * *", history_limit=3))
    time.sleep(7)
    c.pause_template(template_id="short-history")
    time.sleep(1.5)
    runs = fires(c, tpl.template_id)
    finished = [t for t in runs if t.state == pb.SUCCEEDED]
    assert 1 <= len(finished) <= 4, f"kept about history_limit finished runs, got {len(finished)}"
    assert c.template_history(template_id="short-history").state.fired >= 6, "more fired than kept"


def _late(t: pb.TaskExecution) -> float:
    return (t.start_time.ToNanoseconds() - t.due_time.ToNanoseconds()) / 1e9


@pytest.mark.parametrize("policy", ["RUN_ONCE", "SKIP"])
def test_leader_kill_catch_up_follows_the_misfire_policy(cluster: Cluster, policy: str) -> None:
    """A 4 s outage of the only master under a per-second schedule: afterwards every
    instant has exactly one outcome; RUN_ONCE launches one catch-up (the latest missed
    instant) and records the rest SKIPPED; SKIP launches none."""
    m = cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    tpl = c.create_template(template=pb.TaskTemplate(
        name=f"tick-{policy.lower()}", run_script="true", cron_schedule="* * * * * *", misfire_policy=pb.MisfirePolicy.Value(policy),
    ))
    time.sleep(3)
    kill9(m)
    time.sleep(4)
    cluster.start_master()
    back = time.time()
    time.sleep(3)
    c.pause_template(template_id=tpl.template_id)
    got = wait_for(lambda: (f := fires(c, tpl.template_id)) and all(t.state in TERMINAL for t in f) and f, 30, what="outcomes")
    by_instant = collections.Counter(int(t.task_id.rsplit("@", 1)[1]) for t in got)
    instants = sorted(by_instant)
    assert set(by_instant.values()) == {1} and instants == list(range(instants[0], instants[-1] + 1)), "one outcome per instant"
    # (the run placed ahead when the pause came is skipped by the pause, not by the policy)
    skipped = [t for t in got if t.state == pb.SKIPPED and "paused before this instant" not in t.reason]
    # a catch-up is created after its instant; a regular fire ahead of it (the look-ahead)
    catch_ups = [t for t in got if t.state != pb.SKIPPED and t.submit_time.ToNanoseconds() > t.due_time.ToNanoseconds()]
    if policy == "SKIP":
        assert len(skipped) >= 3 and all("SKIP" in t.reason for t in skipped), [t.reason for t in skipped]
        assert not catch_ups, [t.task_id for t in catch_ups]
    else:
        assert len(catch_ups) == 1, [t.task_id for t in catch_ups]
        assert len(skipped) >= 2 and all("RUN_ONCE" in t.reason for t in skipped)
        # the catch-up is the latest missed instant, fired within a second of taking over
        assert int(catch_ups[0].task_id.rsplit("@", 1)[1]) == max(int(t.task_id.rsplit("@", 1)[1]) for t in skipped) + 1
        assert records_seconds(catch_ups[0].submit_time) - back < 1.0
    hist = c.template_history(template_id=tpl.template_id)
    assert hist.state.skipped == len(skipped)


def records_seconds(ts) -> float:  # type: ignore[no-untyped-def]
    return ts.ToNanoseconds() / 1e9


def test_ordering_key_runs_one_at_a_time_in_submission_order(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a", cpus="8")
    c = cluster.client()
    ids = [c.submit_task(spec=pb.TaskTemplate(run_script="sleep 0.3", ordering_key="ledger", cpu_request=100)).task_id for _ in range(5)]
    other = c.submit_task(spec=pb.TaskTemplate(run_script="sleep 0.3", ordering_key="other", cpu_request=100)).task_id
    finals = [c.wait_task(i, timeout=60) for i in ids]
    assert all(t.state == pb.SUCCEEDED for t in finals)
    spans = [_span(t) for t in finals]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), f"one at a time, in submission order: {spans}"
    o = c.wait_task(other, timeout=60)
    assert _span(o)[0] < spans[1][0], "another key does not wait for this one"


def test_starting_deadline_skips_a_task_that_cannot_start_in_time(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="true", mem_request=1 << 40, starting_deadline={"seconds": 2}))
    final = c.wait_task(t.task_id, timeout=30)
    assert final.state == pb.SKIPPED and not final.start_time.seconds
    assert "starting deadline" in final.reason and "no node" in final.reason, final.reason


def test_a_task_sent_ahead_starts_on_time_or_not_at_all_when_stopped(cluster: Cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With a 3 s look-ahead the task is on its node before its instant: it starts at the
    instant (not before), and a stop that arrives first means it never starts."""
    cluster.start_master(extra=["--lookahead", "3"])
    cluster.start_nodelet("a")
    c = cluster.client()
    marker = tmp_path / "ran"
    tmp_path.chmod(0o777)
    due = time.time() + 2.5
    # as root: only a root task sees (and may write) the host's files
    stopped = c.submit_task(spec=pb.TaskTemplate(run_script=f"touch {marker}", user="root"), run_at=records_ts(due))
    on_time = c.submit_task(spec=pb.TaskTemplate(run_script="true"), run_at=records_ts(due))
    wait_for(lambda: c.get_task(task_id=stopped.task_id).state == pb.ASSIGNED, 10, what="assigned ahead of its instant")
    assert time.time() < due
    c.stop_task(task_id=stopped.task_id)
    final = c.wait_task(stopped.task_id, timeout=30)
    assert final.state == pb.STOPPED and not final.start_time.seconds
    ok = c.wait_task(on_time.task_id, timeout=30)
    assert ok.state == pb.SUCCEEDED
    assert 0 <= _late(ok) < 1.0, f"started {_late(ok):.3f}s after its instant"
    assert not marker.exists()


def records_ts(seconds: float) -> dict[str, int]:
    return {"seconds": int(seconds), "nanos": int((seconds % 1) * 1e9)}
