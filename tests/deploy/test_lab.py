"""corral deployed by the playbooks onto four network-namespace hosts, driven through the CLI
and SDK on mutual TLS, under faults on real links: a master host's link cut, the leader
killed, a nodelet host's link cut past its node lease, delay and loss (tc netem), a rolling
upgrade and a restore from backup.

h1, h2, h3 run etcd and a master; nodelets run on h1 (beside a master) and h4. The evidence
is outside corral's records: the tasks append lines to marker files in a directory all the
hosts see (they share one file tree), and the checks read those files and the process table.
The figures the closing notes quote are printed (`pytest -s tests/deploy`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from labcluster import LabCluster
from test_driver_conformance import docker_image  # noqa: F401 - the session fixture

from corral import procs
from corral.client import Client
from corral.v1 import types_pb2 as pb

from harness import wait_for

# the first test also carries the lab's deploy (about three minutes) in its time
pytestmark = pytest.mark.timeout(900)

FINAL = {pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED, pb.TIMED_OUT, pb.STOPPED, pb.LOST, pb.PREEMPTED, pb.SKIPPED}
LOOP = 'while :; do echo "$CORRAL_TASK_ID $CORRAL_ATTEMPT $(date +%s.%N)" >> {out}; sleep 0.05; done'


def ts(t: Any) -> float:
    return float(t.seconds + t.nanos / 1e9)


def once(out: Path) -> str:
    """A task that appends its id to `out` once."""
    return f'echo "$CORRAL_TASK_ID" >> {out}'


def lines(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


class Submitter:
    """Submits one small task every `interval` seconds from a thread until stopped; records
    what was acknowledged (task id, ack time) and what failed after the SDK's own retries."""

    def __init__(self, c: Client, script: str, interval: float = 0.1, limit: int = 3000) -> None:
        self.c, self.script, self.interval, self.limit = c, script, interval, limit
        self.acked: list[tuple[str, float]] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.acked) + len(self.failed) < self.limit:
            try:
                t = self.c.submit_task(spec=pb.TaskTemplate(run_script=self.script, user="root"), timeout=30)  # type: ignore[attr-defined]
                self.acked.append((t.task_id, time.time()))
            except Exception as e:  # noqa: BLE001 - every failure is counted, not raised
                self.failed.append(f"{type(e).__name__}: {e}")
            self._stop.wait(self.interval)

    def after(self, t0: float) -> list[str]:
        return [i for i, at in self.acked if at > t0]


def all_final(c: Client, ids: list[str], timeout: float) -> dict[str, pb.TaskExecution]:
    out: dict[str, pb.TaskExecution] = {}

    def done() -> bool:
        for i in ids:
            if i not in out:
                t = c.get_task(task_id=i)  # type: ignore[attr-defined]
                if t.state in FINAL:
                    out[i] = t
        return len(out) == len(ids)

    wait_for(done, timeout, 0.5, f"{len(ids)} tasks final")
    return out


def first_start(c: Client, ids: list[str], timeout: float) -> float:
    """The earliest start time among tasks `ids`, once one of them has started."""
    def started() -> float | None:
        starts = [ts(t.start_time) for i in ids if (t := c.get_task(task_id=i)).HasField("start_time")]  # type: ignore[attr-defined]
        return min(starts) if starts else None
    return float(wait_for(started, timeout, 0.1, "a task submitted after the fault to start"))


def ids_of(sub: Submitter, pred: Callable[[float], bool]) -> list[str]:
    return [i for i, at in sub.acked if pred(at)]


# ---- the happy path, on mutual TLS --------------------------------------------------------


def test_one_off_cron_and_docker_tasks_run_through_the_cli(lab: LabCluster, request: pytest.FixtureRequest) -> None:
    image = str(request.getfixturevalue("docker_image"))
    status = lab.cli_json("cluster", "status")
    assert len(status["members"]) == 3 and status["leader"]["name"]
    nodes = {n["node_id"]: n["state"] for n in lab.cli_json("node", "list")["nodes"]}
    assert nodes == {lab.node_id("h1"): "READY", lab.node_id("h4"): "READY"}

    r = lab.cli("submit", "--command", "echo one-off-ran", "--wait", "-o", "json")
    task_id = r.stdout.split('"task_id": "')[1].split('"')[0]
    t = lab.cli_json("task", "get", task_id)
    assert t["state"] == "SUCCEEDED" and t["node_id"] in nodes
    assert "one-off-ran" in lab.cli("logs", task_id).stdout

    r = lab.cli("submit", "--driver", "docker", "--image", image, "--command", "echo from-a-container", "--wait", "-o", "json")
    task_id = r.stdout.split('"task_id": "')[1].split('"')[0]
    assert lab.cli_json("task", "get", task_id)["state"] == "SUCCEEDED"
    assert "from-a-container" in lab.cli("logs", task_id).stdout

    out = lab.markers / "cron"
    spec = lab.dir / "cron.json"  # a file: the template runs as root to write the marker
    spec.write_text(json.dumps({"name": "lab-cron", "run_script": once(out), "user": "root", "cron_schedule": "* * * * * */2"}))
    tpl = lab.cli_json("template", "create", "-f", str(spec))
    try:
        try:
            wait_for(lambda: sum(lines(out).values()) >= 3, 60, 0.2, "three cron runs")
        except AssertionError as e:  # the evidence for whoever reads the failure
            history = lab.cli("template", "history", tpl["template_id"], "-o", "json", check=False).stdout
            status = lab.cli("cluster", "status", "-o", "json", check=False).stdout
            raise AssertionError(f"{e}\nmarkers: {lines(out)}\nhistory: {history[-3000:]}\nstatus: {status[-1500:]}") from None
    finally:
        lab.cli("template", "delete", tpl["template_id"])
    runs = lab.cli_json("task", "list", "--template", tpl["template_id"])["tasks"]
    seen = lines(out)
    assert seen and all(n == 1 for n in seen.values()), f"a cron run ran twice: {seen}"
    assert {r["task_id"] for r in runs if r["state"] == "SUCCEEDED"} <= set(seen)
    assert len({r["due_time"] for r in runs}) == len(runs), "two tasks for one instant"


# ---- delay and loss, then a nodelet host cut off past its lease ----------------------------


def test_packet_loss_and_delay_lose_nothing(lab: LabCluster) -> None:
    """5% of the packets to and from a master host and the nodelet-only host dropped (and
    40±10 ms of delay towards them where the kernel has tc netem): every task runs once."""
    out = lab.markers / "lossy"
    delayed = [h for h in ("h2", "h4") if lab.netem(h, "delay 40ms 10ms")]
    for h in ("h2", "h4"):
        lab.loss(h, 5)
    try:
        t0 = time.monotonic()
        with lab.client() as c:
            ids = [c.submit_task(spec=pb.TaskTemplate(run_script=once(out), user="root")).task_id for _ in range(20)]  # type: ignore[attr-defined]
            final = all_final(c, ids, 120)
        took = time.monotonic() - t0
    finally:
        for h in ("h2", "h4"):
            lab.loss(h, 0)
            lab.netem(h, "")
    print(f"5% loss on h2, h4 (delay on {delayed or 'none: no sch_netem'}): 20 tasks done in {took:.1f}s")
    assert {t.state for t in final.values()} == {pb.SUCCEEDED}
    assert lines(out) == Counter({i: 1 for i in ids})


def test_a_cut_off_nodelet_host_s_tasks_run_elsewhere_never_twice(lab: LabCluster) -> None:
    """h4's link goes down with tasks running there; past the node lease they run on h1, and
    the markers show every first copy ended before its second began — also after the heal."""
    out = lab.markers / "nodecut"
    h1, h4 = lab.node_id("h1"), lab.node_id("h4")
    with lab.client() as c:
        lab.cli("node", "cordon", h1)  # so the tasks start on h4
        try:
            ids = [c.submit_task(spec=pb.TaskTemplate(run_script=LOOP.format(out=out), user="root")).task_id for _ in range(3)]  # type: ignore[attr-defined]
            wait_for(lambda: all(c.get_task(task_id=i).state == pb.RUNNING for i in ids), 60, 0.2, "3 RUNNING on h4")  # type: ignore[attr-defined]
            assert {c.get_task(task_id=i).node_id for i in ids} == {h4}  # type: ignore[attr-defined]
        finally:
            lab.cli("node", "uncordon", h1)
        spans = lambda: procs.marker_spans(out, 3)  # noqa: E731 - (task, attempt) → (first, last)
        wait_for(lambda: all((i, "1") in spans() for i in ids), 10, what="attempt 1 markers")
        cut = time.time()
        lab.cut("h4")
        try:
            wait_for(lambda: all((x := c.get_task(task_id=i)).attempt == 2 and x.state == pb.RUNNING for i in ids),  # type: ignore[attr-defined]
                     60, 0.2, "attempt 2 RUNNING elsewhere")
            moved = time.time() - cut
            assert {c.get_task(task_id=i).node_id for i in ids} == {h1}  # type: ignore[attr-defined]
            wait_for(lambda: all((i, "2") in spans() for i in ids), 10, what="attempt 2 markers")
        finally:
            lab.heal("h4")
        wait_for(lambda: c.get_node(node_id=h4).state == pb.READY, 60, 0.5, "h4 READY again after the heal")  # type: ignore[attr-defined]
        time.sleep(2)  # a first copy that survived the cut would write again now
        s = spans()
        for i in ids:
            assert s[(i, "1")][1] < s[(i, "2")][0], f"{i}: attempt 1 ran until {s[(i, '1')][1]:.3f}, attempt 2 began {s[(i, '2')][0]:.3f}"
        last1 = max(s[(i, "1")][1] for i in ids)
        print(f"nodelet host cut: attempt 2 RUNNING on h1 {moved:.1f}s after the cut; first copies' last marker "
              f"{last1 - cut:.1f}s after the cut; doubled 0 of {len(ids)}")
        for i in ids:
            c.stop_task(task_id=i, grace_period={"seconds": 0})  # type: ignore[attr-defined]
        all_final(c, ids, 60)
    assert {k[1] for k in procs.marker_spans(out, 3)} == {"1", "2"}


# ---- masters: a host's link cut, the leader killed -----------------------------------------


def _master_fault(lab: LabCluster, name: str, fault: Callable[[str], None], heal: Callable[[str], None]) -> None:
    out = lab.markers / name
    host = lab.leader_host()
    with lab.client(timeout=60) as c, Submitter(c, once(out), 0.1) as sub:
        wait_for(lambda: len(sub.acked) >= 10, 30, 0.1, "submissions before the fault")
        t0 = time.time()
        fault(host)
        try:
            wait_for(lambda: len(sub.after(t0)) >= 5, 60, 0.1, "submissions acknowledged after the fault")
            start = first_start(c, sub.after(t0), 60)
            # the leader key names the old leader until its lease runs out: wait for the new one
            new_leader = wait_for(lambda: (h := lab.leader_host()) != host and h, 30, 0.2, "a leader on another host")
        finally:
            heal(host)
        time.sleep(2)
    ids = [i for i, _ in sub.acked]
    with lab.client() as c:
        final = all_final(c, ids, 120)
    seen = lines(out)
    lost = [i for i in ids if seen[i] == 0]
    doubled = [i for i in ids if seen[i] > 1]
    print(f"{name}: leader {host} → {new_leader}; fault → first start {start - t0:.2f}s; acknowledged {len(ids)}, "
          f"lost {len(lost)}, doubled {len(doubled)}, failed submissions {len(sub.failed)}")
    assert new_leader != host
    assert not lost and not doubled, f"lost {lost[:5]} doubled {doubled[:5]}"
    assert {t.state for t in final.values()} == {pb.SUCCEEDED}
    assert set(seen) <= set(ids) | {""}, "a task ran that no one was told was submitted"


def test_a_cut_off_leader_host_loses_nothing_acknowledged(lab: LabCluster) -> None:
    _master_fault(lab, "mastercut", lab.cut, lab.heal)


def test_a_killed_leader_loses_nothing_acknowledged(lab: LabCluster) -> None:
    killed: list[int] = []

    def kill(host: str) -> None:
        killed.append(lab.member_pid(host, "master"))
        os.kill(killed[0], signal.SIGKILL)

    def restarted(host: str) -> None:  # corral supervise starts it again
        wait_for(lambda: lab.member_pid(host, "master") != killed[0], 30, 0.2, "the master restarted by its supervisor")

    _master_fault(lab, "leaderkill", kill, restarted)


# ---- day two: backup and restore, rolling upgrade --------------------------------------------


def test_restore_from_a_backup_brings_back_templates_tasks_and_users(lab: LabCluster) -> None:
    tpl = lab.cli_json("template", "create", "--name", "lab-kept", "--command", "true")
    lab.cli("user", "create", "lab-alice", "--role", "user")
    r = lab.cli("submit", "--command", "echo kept", "--wait", "-o", "json")
    task_id = r.stdout.split('"task_id": "')[1].split('"')[0]
    lab.ansible("backup.yml")
    backups = sorted((lab.dir / "backups").glob("etcd-*.db"))
    assert backups, "backup.yml wrote no snapshot"
    lab.cli("template", "delete", tpl["template_id"])
    lab.cli("user", "delete", "lab-alice")
    assert lab.cli("template", "get", tpl["template_id"], check=False).returncode != 0
    took = lab.ansible("restore.yml", "-e", f"backup={backups[-1]}")
    print(f"restore.yml: {took:.0f}s")
    assert lab.cli_json("template", "get", tpl["template_id"])["name"] == "lab-kept"
    assert lab.cli_json("task", "get", task_id)["state"] == "SUCCEEDED"
    assert "lab-alice" in lab.cli("user", "list").stdout
    wait_for(lambda: {n["state"] for n in lab.cli_json("node", "list")["nodes"]} == {"READY"}, 60, 1, "nodes READY after the restore")
    r = lab.cli("submit", "--command", "echo after-restore", "--wait")
    assert r.returncode == 0


def _serial(path: Path) -> str:
    r = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(path)], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def test_certificate_rotation_under_submissions(lab: LabCluster) -> None:
    """rotate-certs.yml re-issues every certificate and restarts the members one at a time
    while a client submits: the hosts hold new certificates, nothing failed or ran twice."""
    files = [lab.dir / "hosts" / "h2" / "etc" / "tls" / f for f in ("master.crt", "etcd-peer.crt", "etcd-server.crt", "etcd-client.crt")]
    files += [lab.dir / "hosts" / "h4" / "etc" / "tls" / "nodelet.crt", Path(lab.env["CORRAL_TLS_CERT"])]
    before = {f: _serial(f) for f in files}
    out = lab.markers / "rotate"
    with lab.client(timeout=60) as c, Submitter(c, once(out), 0.2, limit=5000) as sub:
        wait_for(lambda: len(sub.acked) >= 5, 30, 0.1, "submissions before the rotation")
        took = lab.ansible("rotate-certs.yml")
        time.sleep(1)
    unchanged = [str(f) for f in files if _serial(f) == before[f]]
    assert not unchanged, f"not re-issued: {unchanged}"
    ids = [i for i, _ in sub.acked]
    with lab.client() as c:  # the admin's new client certificate
        final = all_final(c, ids, 120)
    seen = lines(out)
    print(f"certificate rotation: {took:.0f}s; submitted {len(ids)} + failed {len(sub.failed)}")
    assert not sub.failed, sub.failed[:5]
    assert {t.state for t in final.values()} == {pb.SUCCEEDED}
    assert all(seen[i] == 1 for i in ids)
    assert {n["state"] for n in lab.cli_json("node", "list")["nodes"]} == {"READY"}


def test_a_nodelet_host_is_removed_and_added_back(lab: LabCluster) -> None:
    """remove-nodelet.yml drains h4, stops its nodelet and forgets the node; site.yml
    limited to h4 brings it back as a fresh node."""
    h1, h4 = lab.node_id("h1"), lab.node_id("h4")
    took = lab.ansible("remove-nodelet.yml", "-e", "target=h4")
    assert h4 not in {n["node_id"] for n in lab.cli_json("node", "list")["nodes"]}
    with pytest.raises(AssertionError, match="no nodelet"):
        lab.member_pid("h4", "nodelet")
    ids = [lab.cli("submit", "--command", "true").stdout.strip() for _ in range(4)]
    with lab.client() as c:
        final = all_final(c, ids, 60)
    assert {t.node_id for t in final.values()} == {h1} and {t.state for t in final.values()} == {pb.SUCCEEDED}
    took_add = lab.ansible("site.yml", "--limit", "localhost,h4")
    nodes = {n["node_id"]: n["state"] for n in lab.cli_json("node", "list")["nodes"]}
    assert nodes == {h1: "READY", h4: "READY"}
    print(f"remove-nodelet.yml {took:.0f}s; site.yml --limit localhost,h4 {took_add:.0f}s")


def test_a_rolling_upgrade_under_submissions_fails_none_and_runs_each_once(lab: LabCluster) -> None:
    out = lab.markers / "upgrade"
    before = {h: lab.member_pid(h, "master") for h in ("h1", "h2", "h3")}
    with lab.client(timeout=60) as c, Submitter(c, once(out), 0.2, limit=5000) as sub:
        wait_for(lambda: len(sub.acked) >= 5, 30, 0.1, "submissions before the upgrade")
        took = lab.ansible("upgrade.yml", "-e", "corral_upgrade_force=true")
        time.sleep(1)
    after = {h: lab.member_pid(h, "master") for h in ("h1", "h2", "h3")}
    assert all(before[h] != after[h] for h in before), "every master was restarted"
    ids = [i for i, _ in sub.acked]
    with lab.client() as c:
        final = all_final(c, ids, 180)
    seen = lines(out)
    print(f"rolling upgrade: {took:.0f}s; submitted {len(ids)} + failed {len(sub.failed)}; "
          f"lost {sum(1 for i in ids if seen[i] == 0)}, doubled {sum(1 for i in ids if seen[i] > 1)}")
    assert not sub.failed, sub.failed[:5]
    assert {t.state for t in final.values()} == {pb.SUCCEEDED}
    assert all(seen[i] == 1 for i in ids)
