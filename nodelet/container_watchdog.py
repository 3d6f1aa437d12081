"""The node lease for containers: one small process per node that kills the node's running
containers once the lease has run out, whatever the nodelet is doing.

Process tasks carry their own watchdog (the wrapper in spawner.py). A container has none
of ours inside it, and the Docker engine keeps it running when the nodelet is paused,
killed or cut off, so this process does for containers what each wrapper does for its task:
it reads the lease file the nodelet renews with every acknowledged heartbeat
(agent.LeaseFile) four times a second, and once the deadline has passed it writes the
task's `lost` marker (the nodelet reports the attempt LOST, not FAILED) and sends SIGTERM
to each of this node's running containers, then SIGKILL after the lease's grace — except
those whose template says `on_disconnect: keep` (label `corral.on_disconnect`).

It is started by the Docker driver before the first container runs, as
`python -m corral.nodelet.container_watchdog ...` in its own session (a SIGSTOP or kill -9 of the
nodelet leaves it running), and holds an exclusive lock on its lock file: a restarted
nodelet starts another, which waits for the lock, so one watches at a time and there is
never a moment with none. It exits once its nodelet is gone (the pipe the nodelet holds
reads end of file) and no container of this node runs any more.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import select
import time
from pathlib import Path
from typing import Any

from .runner import dir_name
from .spawner import NodeLease

log = logging.getLogger("corral.container_watchdog")

POLL = 0.25  # seconds between lease readings, as the process tasks' wrappers
LIVE_CHECK = 5.0  # seconds between looks for running containers once the nodelet is gone


class Watchdog:
    def __init__(self, node_id: str, data_dir: Path, client: Any) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.lease = NodeLease(str(data_dir / "lease"))
        self.client = client
        self.termed: dict[str, float] = {}  # container id → when it was sent SIGTERM

    def _containers(self) -> list[Any]:
        """This node's running containers of this node's cluster (never another's)."""
        try:
            cluster = (self.data_dir / "cluster_id").read_text().strip()
        except OSError:
            return []  # never registered: no container of ours can exist
        labels = [f"corral.node_id={self.node_id}", f"corral.cluster_id={cluster}"]
        return list(self.client.containers.list(filters={"label": labels, "status": "running"}))

    def check(self, now: float) -> int:
        """One pass: kill what must die. Returns how many containers were signalled."""
        if not self.lease.expired(now):
            self.termed.clear()
            return 0
        signalled = 0
        for c in self._containers():
            labels = c.labels or {}
            if labels.get("corral.on_disconnect") == "keep":
                continue  # its template opted out: it tolerates a second copy
            termed = self.termed.get(c.id)
            if termed is None:
                self._mark_lost(labels)
                self.termed[c.id] = now
                sig = "SIGTERM"
            elif now - termed >= self.lease.grace:
                sig = "SIGKILL"
            else:
                continue
            log.warning("node lease ran out %.1fs ago: %s to the container of task %s",
                        now - self.lease.deadline, sig, labels.get("corral.task_id", c.id[:12]))
            try:
                c.kill(signal=sig)
                signalled += 1
            except Exception as e:  # noqa: BLE001 - it may have ended meanwhile
                log.debug("kill %s: %s", c.id[:12], e)
        return signalled

    def _mark_lost(self, labels: dict[str, str]) -> None:
        task_id, attempt = labels.get("corral.task_id", ""), labels.get("corral.attempt", "")
        if not task_id or not attempt.isdigit():
            return
        d = self.data_dir / "tasks" / dir_name(task_id, int(attempt))
        if d.is_dir():
            (d / "lost").write_text("killed on its node: its node lease ran out (no leader acknowledged the node in time)\n")


def run(node_id: str, data_dir: Path, lock_path: Path, nodelet_fd: int) -> None:
    import docker

    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the one before us (an earlier nodelet's) exits first
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    dog = Watchdog(node_id, data_dir, docker.from_env(timeout=10))
    nodelet_gone = False
    next_live_check = 0.0
    while True:
        if not nodelet_gone:
            ready, _, _ = select.select([nodelet_fd], [], [], POLL)
            if ready and not os.read(nodelet_fd, 64):
                nodelet_gone = True
                log.info("the nodelet is gone; watching its containers until none runs")
        else:
            time.sleep(POLL)
        now = time.monotonic()
        try:
            dog.check(now)
            if nodelet_gone and now >= next_live_check:
                next_live_check = now + LIVE_CHECK
                if not dog._containers():
                    return
        except Exception as e:  # noqa: BLE001 - the engine may be restarting: try again
            log.warning("docker engine: %s", e)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--node-id", required=True)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--lock", required=True, type=Path)
    p.add_argument("--nodelet-fd", required=True, type=int, help="read end of a pipe the nodelet holds open")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s container-watchdog: %(message)s")
    run(args.node_id, args.data_dir, args.lock, args.nodelet_fd)


if __name__ == "__main__":
    main()
