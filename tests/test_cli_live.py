"""The CLI live: `logs -f` prints a process task's lines as they are written (each seen
within a second of when the task wrote it, by the time the task printed into the line),
`--tail`, `task watch ID` ends with the task and its exit status, and `task watch` /
`task list --watch` without an id follow every change that passes their filters."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from corral.v1 import types_pb2 as pb

from harness import Cluster

pytestmark = pytest.mark.integration


def corral(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "corral", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cluster.corral_env())


class Lines:
    """A process's stdout lines, read by a thread as they come (select() on a buffered pipe
    misses lines already in the buffer)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(p,), daemon=True)
        self._t.start()

    def _read(self, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            self.lines.append(line.rstrip("\n"))

    def until(self, pred: Callable[[list[str]], bool], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not pred(self.lines):
            time.sleep(0.05)
        return self.lines


def test_logs_follow_is_live_and_tail_prints_the_last_lines(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="for i in 1 2 3 4; do date +%s.%N; sleep 1; done"))  # type: ignore[attr-defined]
    p = corral(cluster, "logs", "-f", t.task_id)
    delays = []
    assert p.stdout is not None
    for line in p.stdout:
        delays.append(time.time() - float(line))
    assert p.wait(30) == 0
    assert len(delays) == 4 and max(delays) < 1.0, f"lines reached `logs -f` {delays} s after the task wrote them"

    t = c.submit_task(spec=pb.TaskTemplate(run_script="seq 1 5"))  # type: ignore[attr-defined]
    c.wait_task(t.task_id, timeout=30)
    r = subprocess.run([sys.executable, "-m", "corral", "logs", "--tail", "2", t.task_id], capture_output=True, text=True,
                       env=cluster.corral_env(), timeout=30)
    assert r.returncode == 0 and r.stdout == "4\n5\n", r


def test_watch_follows_one_task_to_its_end_or_all_tasks(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    ok = c.submit_task(spec=pb.TaskTemplate(run_script="sleep 0.5"))  # type: ignore[attr-defined]
    p = corral(cluster, "task", "watch", ok.task_id)
    assert p.wait(30) == 0
    out = p.stdout.read().splitlines() if p.stdout else []
    assert "SUCCEEDED" in out[-1] and ok.task_id in out[-1], out
    bad = c.submit_task(spec=pb.TaskTemplate(run_script="exit 3"))  # type: ignore[attr-defined]
    p = corral(cluster, "task", "watch", bad.task_id)
    assert p.wait(30) == 1
    out = p.stdout.read().splitlines() if p.stdout else []
    assert "FAILED" in out[-1] and "exit code 3" in out[-1], out

    # all tasks, only their SUCCEEDED changes; and `task list --watch` after its list
    w = corral(cluster, "task", "watch", "--state", "SUCCEEDED")
    lw = corral(cluster, "task", "list", "--watch", "-o", "json")
    try:
        wl, lwl = Lines(w), Lines(lw)
        # a probe task per second until both show one SUCCEEDED: then both streams are open
        for _ in range(30):
            probe = c.submit_task(spec=pb.TaskTemplate(run_script="true")).task_id  # type: ignore[attr-defined]
            wl.until(lambda ls, i=probe: any(i in x for x in ls), 2)
            lwl.until(lambda ls, i=probe: any(i in x and '"SUCCEEDED"' in x for x in ls), 2)
            if any(probe in x for x in wl.lines) and any(probe in x and '"SUCCEEDED"' in x for x in lwl.lines):
                break
        ids = [c.submit_task(spec=pb.TaskTemplate(run_script="true")).task_id for _ in range(2)]  # type: ignore[attr-defined]
        seen = wl.until(lambda ls: all(any(i in x for x in ls) for i in ids), 30)
        assert all(any(i in x and "SUCCEEDED" in x for x in seen) for i in ids), seen
        assert all("SUCCEEDED" in x for x in seen), f"a change that is not SUCCEEDED passed --state: {seen}"
        listed = lwl.until(lambda ls: all(any(i in x and '"SUCCEEDED"' in x for x in ls) for i in ids), 30)
        assert any(ok.task_id in x for x in listed), f"the list came first: {listed}"
        assert all(any(i in x and '"SUCCEEDED"' in x for x in listed) for i in ids), (ids, listed[-8:])
    finally:
        for proc in (w, lw):
            proc.kill()
            proc.wait(10)


def test_logs_timestamps_and_since_come_from_when_the_node_wrote_each_line(cluster: Cluster) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    t = c.submit_task(spec=pb.TaskTemplate(run_script="for i in 1 2 3; do date +%s.%N; sleep 1; done"))  # type: ignore[attr-defined]
    assert c.wait_task(t.task_id, timeout=30).state == pb.SUCCEEDED

    def logs(*flags: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "corral", "logs", *flags, t.task_id], capture_output=True, text=True,
                           env=cluster.corral_env(), timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    stamped = logs("--timestamps")
    assert len(stamped) == 3
    printed = []
    for line in stamped:
        stamp, value = line.split()
        written = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        assert abs(written - float(value)) < 0.5, f"{stamp} for a line the task printed at {value}"
        printed.append(float(value))
    since = datetime.fromtimestamp(printed[1] - 0.3, UTC).isoformat().replace("+00:00", "Z")
    assert [float(x) for x in logs("--since", since)] == printed[1:]
    assert logs("--since", "1h") == logs()  # all of it was written in the last hour
