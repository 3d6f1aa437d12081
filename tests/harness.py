"""Test harness: a real etcd (one per session), and per-test clusters of real master and
nodelet processes under their own etcd prefix, node ids and cgroups. Everything a test
starts is stopped by PID, and its cgroups removed, even when the test fails."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral import procs
from corral.client import Client
from corral.nodelet import cgroups
from corral.v1 import types_pb2 as pb

TOKEN = "test-" + secrets.token_hex(8)


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Cluster:
    def __init__(self, etcd: str, run_dir: Path, name: str) -> None:
        self.etcd = etcd
        self.run_dir = run_dir
        self.name = name
        self.prefix = f"/t-{name}-{secrets.token_hex(3)}/"
        self.masters: list[procs.Proc] = []       # every master process started, in order
        self.by_slot: dict[int, procs.Proc] = {}   # slot → its latest process
        self.nodelets: dict[str, procs.Proc] = {}
        self.node_ids: set[str] = set()
        self.ports: list[int] = [procs.free_port()]
        self._clients: list[Client] = []
        self._node_tokens: dict[str, str] = {}

    # -- processes ----------------------------------------------------------------------------

    def start_master(self, slot: int = 0, *, heartbeat_timeout: float = 6.0, extra: list[str] | None = None) -> procs.Proc:
        """Start (or restart) the master of `slot`; each slot keeps its port."""
        while len(self.ports) <= slot:
            self.ports.append(procs.free_port())
        m = procs.start_master(
            self.etcd, TOKEN, self.run_dir, name=f"master-{slot}-{len(self.masters)}",
            listen=f"127.0.0.1:{self.ports[slot]}",
            extra=["--prefix", self.prefix, "--heartbeat-timeout", str(heartbeat_timeout), "--log-level", "debug", *(extra or [])],
        )
        self.masters.append(m)
        self.by_slot[slot] = m
        return m

    @property
    def addr(self) -> str:
        """Every master's address, comma-separated (what CORRAL_ADDR takes)."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def leader(self) -> procs.Proc:
        """The master process that currently leads (asked through the API)."""
        st = self.client().cluster_status()  # type: ignore[attr-defined]
        for m in self.by_slot.values():
            if m.alive() and m.info["address"] == st.leader.address:
                return m
        raise AssertionError(f"leader {st.leader.address} is none of ours")

    def node_id(self, short: str) -> str:
        return f"{self.name[:20]}-{short}-{self.prefix[-7:-1]}"

    def start_nodelet(
        self, short: str, *, cpus: str = "2", memory: str = "2Gi", wait: bool = True, token: str | None = None, **kw: Any
    ) -> procs.Proc:
        """A nodelet with its own node credential (made once per node through the API), or
        under mutual TLS its certificate alone; `token` overrides."""
        node_id = self.node_id(short)
        self.node_ids.add(node_id)
        if token is None:
            token = "" if "--tls-cert" in (kw.get("extra") or []) else self.node_token(node_id)
        n = procs.start_nodelet(self.addr, token, self.run_dir, node_id=node_id, cpus=cpus, memory=memory, **kw)
        extra = list(kw.get("extra") or [])
        DATA_DIRS[node_id] = Path(extra[extra.index("--data-dir") + 1]) if "--data-dir" in extra else self.run_dir / node_id
        self.nodelets[short] = n
        if wait:
            self.wait_node_ready(node_id)
        return n

    def node_token(self, node_id: str) -> str:
        if node_id not in self._node_tokens:
            self._node_tokens[node_id] = procs.node_token(self.addr, TOKEN, node_id)
        return self._node_tokens[node_id]

    def wait_node_ready(self, node_id: str, timeout: float = 20) -> None:
        c = self.client()

        def ready() -> bool:
            try:
                n = c.get_node(node_id=node_id)  # type: ignore[attr-defined]
            except Exception:
                return False
            return n.state == pb.READY

        wait_for(ready, timeout, 0.1, f"node {node_id} READY")
        time.sleep(0.1)

    def client(self) -> Client:
        c = Client(self.addr, TOKEN)
        self._clients.append(c)
        return c

    def corral_env(self) -> dict[str, str]:
        return {**os.environ, "CORRAL_ADDR": self.addr, "CORRAL_TOKEN": TOKEN}

    # -- teardown -----------------------------------------------------------------------------

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        for n in self.nodelets.values():
            n.stop(timeout=5)
        for m in self.masters:
            m.stop(timeout=5)
        for node_id in self.node_ids:
            cgroups.remove_node(node_id)

    def dump_logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.log_tail(60)}" for p in [*self.masters, *self.nodelets.values()])


def kill9(p: procs.Proc) -> None:
    p.popen.send_signal(signal.SIGKILL)
    p.popen.wait(5)


DATA_DIRS: dict[str, Path] = {}  # node id → the data directory of the nodelet a test started


class SlotGroup(cgroups.TaskCgroup):
    """A task's view of the slot it runs in: only the processes of the task's own session
    (its wrapper's, which the task's pid 1 inherits); the slot's server and a later task in
    the same slot are not the task's. `exists()`: some process of the task is still there."""

    def __init__(self, relpath: str, wrapper: int) -> None:
        super().__init__(relpath)
        self.wrapper = wrapper

    def pids(self) -> list[int]:
        out = []
        for pid in super().pids():
            try:
                if pid == self.wrapper or os.getsid(pid) == self.wrapper:
                    out.append(pid)
            except ProcessLookupError:
                pass
        return out

    def exists(self) -> bool:
        return super().exists() and bool(self.pids())


def task_cgroup(node_id: str, task_id: str, attempt: int) -> cgroups.TaskCgroup:
    """A task's cgroup on a node, under whichever cluster id the node serves: the slot its
    handle names (see SlotGroup), or a group of its own."""
    data = DATA_DIRS.get(node_id)
    if data is not None:
        try:
            handle = json.loads((data / "tasks" / f"{task_id.replace('/', '_')}-{attempt}" / "handle.json").read_text())
        except (OSError, ValueError):
            handle = {}
        if handle.get("extra", {}).get("slot_server"):
            return SlotGroup(handle["cgroup"], int(handle.get("pid", 0)))
    name = f"{task_id.replace('@', '_').replace(':', '_')}-{attempt}"
    for rel in cgroups.node_groups(node_id):
        cg = cgroups.TaskCgroup(f"{rel}/{name}")
        if cg.exists():
            return cg
    return cgroups.TaskCgroup(f"corral/-none-/{node_id}/{name}")  # one that does not exist


def task_pids(node_id: str, task: pb.TaskExecution) -> list[int]:
    cg = task_cgroup(node_id, task.task_id, task.attempt)
    return cg.pids() if cg.exists() else []
