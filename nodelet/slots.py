"""Task slots: cgroups made once per node and joined once by a resident server process,
so that starting a task never moves a process between cgroups.

Why: a join (a write to `cgroup.procs` of each v1 hierarchy, or mkdir/rmdir of the groups)
takes the kernel's cgroup locks; with the CPUs busy its p99 was 0.4–1.9 s per task, longer
than the leader's lookahead, and every later run queued behind it. A slot's server (see
spawner.py) forks each wrapper inside the slot's cgroups; a task taking a slot costs only
writes to the slot's limit files. The pool keeps `spare` joined slots ready (made on a
thread of its own, ahead of need) and drops idle ones beyond `max_idle`.

A slot is busy from a task's prepare until the task's last process is gone (the slot's
cgroups then hold only its server). Figures that the kernel counts for the life of a
group (cpu time, OOM kills) are read at the task's start and subtracted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .cgroups import Limits, TaskCgroup

log = logging.getLogger("corral.nodelet")


class SlotError(Exception):
    """A slot could not be made or did not answer."""


@dataclass
class Slot:
    index: int
    relpath: str
    cgroup: TaskCgroup
    server: int = 0                       # the slot server's pid
    sock: socket.socket | None = None     # to the slot server
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spawn(self, request: dict[str, object], go_read: int) -> tuple[int, int]:
        """(wrapper pid, pidfd or -1), forked by this slot's server."""
        if self.sock is None:
            raise SlotError("the slot has no server")
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], [go_read])
                msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 1)
            except OSError as e:
                raise SlotError(f"the slot's server does not answer: {e}") from e
        if not msg:
            raise SlotError("the slot's server is gone")
        answer = json.loads(msg)
        if "pid" not in answer:
            raise SlotError(answer.get("error", "the slot's server refused"))
        return int(answer["pid"]), (fds[0] if fds else -1)

    def alive(self) -> bool:
        """The server still holds its end: an idle server never writes, so a readable or
        hung-up socket means it is gone (killed, or its groups removed under it)."""
        if self.sock is None:
            return False
        p = select.poll()
        p.register(self.sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        return not p.poll(0)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the server exits at end of file
            self.sock = None


class SlotPool:
    """The node's slots. `make_server(procs)` asks the spawner for a slot server joined to
    the cgroups whose `cgroup.procs` files are `procs`, and returns (pid, socket)."""

    def __init__(
        self,
        make_server: Callable[[list[str]], tuple[int, socket.socket]],
        version: str,
        *,
        spare: int = 8,
        max_idle: int = 64,
    ) -> None:
        self.make_server = make_server
        self.version = version
        self.spare = spare
        self.max_idle = max_idle
        self.base = ""                       # "<cgroup root>/<cluster>/<node>"; set by the driver
        self._free: list[Slot] = []
        self._busy: dict[int, Slot] = {}
        self._taken: set[int] = set()        # indexes in use: free, busy, or held by a re-adopted task
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._filler: threading.Thread | None = None
        self.made = 0                        # slots made (joins), for metrics and tests

    # ---- what the driver asks ----------------------------------------------------------

    def take(self) -> Slot:
        """A joined slot with nothing in it; made on the spot only if none is ready."""
        stale = []
        with self._lock:
            # made for another cluster id, or its server is gone: dropped, never handed out
            while self._free and (self._free[-1].relpath.rsplit("/", 1)[0] != self.base or not self._free[-1].alive()):
                stale.append(self._free.pop())
            slot = self._free.pop() if self._free else None
            if slot is not None:
                self._busy[slot.index] = slot
        for old in stale:
            self._discard(old)
        self._fill_soon()
        if slot is None:
            slot = self._make()
            with self._lock:
                self._busy[slot.index] = slot
        return slot

    def give_back(self, slot: Slot) -> None:
        """The task is over: kill what is left of it, and the slot is free again (or dropped
        if it could not be emptied, or if enough are idle)."""
        emptied = slot.cgroup.kill_all(spare=slot.server) if slot.cgroup.exists() else False
        with self._lock:
            self._busy.pop(slot.index, None)
            keep = emptied and slot.sock is not None and not self._closed and len(self._free) < self.max_idle
            if keep:
                self._free.append(slot)
        if not keep:
            self._discard(slot)

    def hold(self, relpath: str) -> int:
        """A re-adopted task runs in slot `relpath` (from its handle): that index is not
        handed out until `release_held`. Returns the index, or -1 if it is not a slot."""
        name = relpath.rsplit("/", 1)[-1]
        if not name.startswith("slot-") or not name[5:].isdigit():
            return -1
        with self._lock:
            self._taken.add(int(name[5:]))
        return int(name[5:])

    def release_held(self, relpath: str) -> None:
        """A re-adopted task in slot `relpath` ended: its group goes (no server of ours is in it)."""
        index = self.hold(relpath)
        if index < 0:
            return
        with self._lock:
            owned = index in self._busy or any(s.index == index for s in self._free)
        if not owned:
            with contextlib.suppress(OSError):
                TaskCgroup(relpath, self.version).remove()
            with self._lock:
                self._taken.discard(index)

    def warm(self) -> None:
        """Start keeping `spare` slots ready (a thread of its own)."""
        self._fill_soon()

    def close(self) -> None:
        """Drop every idle slot (servers exit, groups removed). Busy ones stay for their
        tasks (a nodelet restart re-adopts them)."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        self._wake.set()
        for slot in free:
            self._discard(slot)

    def counts(self) -> tuple[int, int]:
        """(free, busy)."""
        with self._lock:
            return len(self._free), len(self._busy)

    # ---- making and dropping ---------------------------------------------------------------

    def _fill_soon(self) -> None:
        if self.spare <= 0:
            return
        if self._filler is None or not self._filler.is_alive():
            self._filler = threading.Thread(target=self._fill, name="slots", daemon=True)
            self._filler.start()
        self._wake.set()

    def _fill(self) -> None:
        while not self._closed:
            self._wake.wait(5.0)
            self._wake.clear()
            while not self._closed:
                with self._lock:
                    short = len(self._free) < self.spare and bool(self.base)
                if not short:
                    break
                try:
                    slot = self._make()
                except (SlotError, OSError) as e:
                    log.warning("could not make a task slot: %s", e)
                    time.sleep(1.0)
                    break
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._free.append(slot)
                if closed:
                    self._discard(slot)
                    return

    def _next_index(self) -> int:
        with self._lock:
            i = 0
            while i in self._taken:
                i += 1
            self._taken.add(i)
            return i

    def _make(self) -> Slot:
        """A new slot: its groups (limits rewritten per task), and a server joined to them."""
        while True:
            index = self._next_index()
            relpath = f"{self.base}/slot-{index}"
            cg = TaskCgroup(relpath, self.version)
            if cg.exists() and cg.pids():
                continue  # a task from before a restart still runs there: keep the index taken
            break
        try:
            cg.create(Limits(1000, 64 << 20, 64))
            pid, sock = self.make_server(cg.procs_files())
            msg = sock.recv(4096)  # {"joined": true} once the server is in the groups
            answer = json.loads(msg) if msg else {"error": "the slot's server exited"}
            if not answer.get("joined"):
                sock.close()
                raise SlotError(str(answer.get("error", "the slot's server did not join")))
        except BaseException:
            with self._lock:
                self._taken.discard(index)
            with contextlib.suppress(OSError):
                cg.remove()
            raise
        self.made += 1
        return Slot(index, relpath, cg, pid, sock)

    def _discard(self, slot: Slot) -> None:
        slot.close()
        with contextlib.suppress(OSError):
            slot.cgroup.remove()  # kills the server if it has not exited yet
        with self._lock:
            self._taken.discard(slot.index)
