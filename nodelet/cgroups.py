"""Per-task cgroups with cpu quota, memory limit (no swap) and pids limit.

v2 is used where the unified hierarchy at /sys/fs/cgroup offers the cpu, memory and pids
controllers; otherwise v1, with one directory per controller hierarchy (this machine kind
mounts them at /sys/fs/cgroup/{cpu,cpuacct,memory,pids}). A task's group lives at
`corral/<node_id>/<task key>` so several nodelets can share one machine.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    cpu_millis: int
    memory: int
    pids: int


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def detect() -> str:
    """"v2" or "v1": which cgroup layout this machine gives us."""
    controllers = _read(ROOT / "cgroup.controllers").split()
    if {"cpu", "memory", "pids"} <= set(controllers):
        return "v2"
    return "v1"


def missing_controllers() -> list[str]:
    """The controllers task limits need that this machine's /sys/fs/cgroup does not offer
    (empty when all are there): a nodelet checks at start rather than fail every task."""
    if detect() == "v2":
        return []
    return [c for c in ("memory", "cpu", "pids") if not (ROOT / c).exists()]


@functools.cache
def _v1_hierarchies() -> tuple[tuple[str, Path], ...]:
    """The v1 controller directories, one per hierarchy (cpu and cpuacct are often one
    mount under two names). Looked up once: a nodelet builds a TaskCgroup for every
    heartbeat of every task, and resolving links each time showed up in profiles."""
    out = []
    seen: set[Path] = set()
    for ctrl in ("memory", "cpu", "cpuacct", "pids"):
        base = ROOT / ctrl
        if not base.exists():
            continue
        real = base.resolve()
        if real not in seen:
            seen.add(real)
            out.append((ctrl, base))
    return tuple(out)


class TaskCgroup:
    """The cgroup directories of one task, in either layout."""

    def __init__(self, relpath: str, version: str | None = None) -> None:
        self.relpath = relpath.strip("/")
        self.version = version or detect()
        if self.version == "v2":
            self.dirs = {"unified": ROOT / self.relpath}
        else:
            self.dirs = {ctrl: base / self.relpath for ctrl, base in _v1_hierarchies()}

    # -- lifecycle ----------------------------------------------------------------------------

    def create(self, limits: Limits) -> None:
        if self.version == "v2":
            self._create_v2(limits)
        else:
            self._create_v1(limits)

    def _create_v1(self, limits: Limits) -> None:
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self._limits_v1(limits)

    def set_limits(self, limits: Limits) -> None:
        """Rewrite the limits of an existing group (a slot taking its next task): plain
        writes to its files, no process moves."""
        if self.version == "v2":
            self._create_v2(limits)
        else:
            self._limits_v1(limits)

    def _limits_v1(self, limits: Limits) -> None:
        mem = self.dirs["memory"]
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            # memsw may never be below the plain limit: raise it first when growing, after when shrinking
            current = int(_read(mem / "memory.limit_in_bytes") or 0)
            order = [memsw, mem / "memory.limit_in_bytes"] if limits.memory > current else [mem / "memory.limit_in_bytes", memsw]
            for f in order:
                _write(f, str(limits.memory))
        else:
            _write(mem / "memory.limit_in_bytes", str(limits.memory))
            _write(mem / "memory.swappiness", "0")
        cpu = self.dirs["cpu"]
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(max(1000, limits.cpu_millis * CFS_PERIOD_US // 1000)))
        if "pids" in self.dirs:
            _write(self.dirs["pids"] / "pids.max", str(limits.pids))

    def _create_v2(self, limits: Limits) -> None:
        d = self.dirs["unified"]
        parts = Path(self.relpath).parts
        cur = ROOT
        for part in parts[:-1]:
            cur = cur / part
            cur.mkdir(exist_ok=True)
        # enable controllers down the path (no processes live in these parents)
        cur = ROOT
        for part in parts:
            with contextlib.suppress(OSError):
                _write(cur / "cgroup.subtree_control", "+cpu +memory +pids")
            cur = cur / part
        d.mkdir(exist_ok=True)
        _write(d / "memory.max", str(limits.memory))
        with contextlib.suppress(OSError):
            _write(d / "memory.swap.max", "0")
        _write(d / "cpu.max", f"{max(1000, limits.cpu_millis * CFS_PERIOD_US // 1000)} {CFS_PERIOD_US}")
        _write(d / "pids.max", str(limits.pids))

    def procs_files(self) -> list[str]:
        """Files a process writes its pid to in order to join every hierarchy of this group."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs.values())

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            for line in _read(d / "cgroup.procs").split():
                out.add(int(line))
        return sorted(out)

    def signal_all(self, sig: int, only: list[int] | None = None) -> None:
        for pid in only if only is not None else self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill_all(self, timeout: float = 5.0, spare: int = 0) -> bool:
        """SIGKILL every process in the group but `spare` (a slot's server) until none is
        left (bounded); True if it emptied."""
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in self.pids() if p != spare]
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            self.signal_all(signal.SIGKILL, pids)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and delete the directories (retried: rmdir races with exit)."""
        self.kill_all()
        self._uncharge()
        for d in self.dirs.values():
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    time.sleep(0.01)

    def _uncharge(self) -> None:
        """Give back the page cache charged to the group (its log and work files) before it
        is removed. Otherwise a removed memory cgroup lingers in the kernel as a dying one
        for as long as those pages stay cached, and they pile up: on this machine 58,604
        memory cgroups had accumulated (26 after dropping the caches); with this, one run
        of bench/cron_lateness.py (about 35,000 tasks) left 339 instead of 12,705."""
        try:
            if self.version == "v2":
                current = _read(self.dirs["unified"] / "memory.current").strip()
                if current and current != "0" and (self.dirs["unified"] / "memory.reclaim").exists():
                    _write(self.dirs["unified"] / "memory.reclaim", current)
            elif "memory" in self.dirs:
                _write(self.dirs["memory"] / "memory.force_empty", "0")
        except (OSError, KeyError):
            pass  # best effort: the group is removed either way

    # -- figures ------------------------------------------------------------------------------

    def oom_killed(self) -> bool:
        return self.oom_kills() > 0

    def oom_kills(self) -> int:
        """How many processes the kernel killed at this group's memory limit, ever (a slot
        compares it with the count when its task began)."""
        if self.version == "v2":
            text = _read(self.dirs["unified"] / "memory.events")
        else:
            text = _read(self.dirs["memory"] / "memory.oom_control")
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v or 0)
        return 0

    def memory_usage(self) -> int:
        if self.version == "v2":
            v = _read(self.dirs["unified"] / "memory.current")
        else:
            v = _read(self.dirs["memory"] / "memory.usage_in_bytes")
        return int(v or 0)

    def cpu_usage_ns(self) -> int:
        if self.version == "v2":
            for line in _read(self.dirs["unified"] / "cpu.stat").splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    return int(v) * 1000
            return 0
        d = self.dirs.get("cpuacct") or self.dirs["cpu"]
        return int(_read(d / "cpuacct.usage") or 0)

    def limits(self) -> Limits:
        """The limits as the kernel holds them (read back after create)."""
        if self.version == "v2":
            d = self.dirs["unified"]
            q2, p2 = _read(d / "cpu.max").split()
            return Limits(int(q2) * 1000 // int(p2), int(_read(d / "memory.max")), int(_read(d / "pids.max")))
        quota = int(_read(self.dirs["cpu"] / "cpu.cfs_quota_us"))
        period = int(_read(self.dirs["cpu"] / "cpu.cfs_period_us"))
        pids = _read(self.dirs["pids"] / "pids.max").strip() if "pids" in self.dirs else "0"
        return Limits(quota * 1000 // period, int(_read(self.dirs["memory"] / "memory.limit_in_bytes")), int(pids) if pids.isdigit() else 0)


def remove_tree(relpath: str, version: str | None = None) -> None:
    """Remove every task group below `relpath` (used by tests and when a node is wiped)."""
    probe = TaskCgroup(relpath, version)
    for d in probe.dirs.values():
        if not d.exists():
            continue
        # deepest first: a directory can only go once its children are gone
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _kill_dir(sub)
            with contextlib.suppress(OSError):
                sub.rmdir()
        _kill_dir(d)
        with contextlib.suppress(OSError):
            d.rmdir()


def _kill_dir(d: Path) -> None:
    for _ in range(100):
        pids = _read(d / "cgroup.procs").split()
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p), signal.SIGKILL)
        time.sleep(0.01)


def node_groups(node_id: str, version: str | None = None) -> list[str]:
    """The relative paths of a node's cgroup parents, under whatever cluster they belong to
    (`corral/<cluster id>/<node id>`)."""
    found = set()
    for d in TaskCgroup("corral", version).dirs.values():
        for p in d.glob(f"*/{node_id}"):
            found.add(f"corral/{p.parent.name}/{node_id}")
    return sorted(found)


def remove_node(node_id: str, version: str | None = None) -> None:
    """Remove a node's cgroups (every task group below them), and its cluster's parent once
    empty: what tests and benchmarks leave behind."""
    for rel in node_groups(node_id, version):
        remove_tree(rel, version)
        for d in TaskCgroup(rel.rsplit("/", 1)[0], version).dirs.values():
            with contextlib.suppress(OSError):
                d.rmdir()
