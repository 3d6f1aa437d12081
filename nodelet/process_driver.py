"""The process driver: a task is `/bin/sh -c run_script` in its own cgroup and in new
pid, mount, ipc, uts and (unless it may and asks for `network: host`) network namespaces,
as the uid the cluster gave its owner, with no capabilities and no new privileges.

Every task is forked by the node's resident spawner (spawner.py: a root Python process
with a fixed environment, started once, no shell anywhere): a wrapper that joins the
task's cgroups *before* anything of the task's exists (so it is never briefly unlimited),
caps its output into the log and writes its exit code; and the task's pid 1, which builds
its view of the machine, drops to its uid and waits for the word "go" before it applies
the task's environment, working directory and script at its final exec. The wrapper runs
in its own session, so it outlives a nodelet restart; the new nodelet finds it by pid
(checked against the cgroup) and waits on it through a pidfd.

Why the wait for "go": a task due later is prepared ahead of its instant (cgroup made,
namespaces and mounts built, privileges dropped, parked on a pipe), so at the instant the
nodelet only writes to the pipe. A task whose pipe closes without "go" (stopped before its
instant, or the nodelet died) exits without running anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from corral.v1 import types_pb2 as pb

from . import logtimes
from .cgroups import Limits, TaskCgroup, detect
from .driver import DriverError, Handle, Outcome, classify
from .slots import Slot, SlotError, SlotPool

LOG_CAP = 16 * 1024 * 1024
SPAWNER = str(Path(__file__).with_name("spawner.py"))
# What the spawner runs with: nothing of any task's, nothing of the nodelet's.
FIXED_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass
class Prepared:
    handle: Handle
    go: int      # the write end of the task's "go" pipe
    pidfd: int   # the wrapper's (-1: it had ended before the spawner answered)
    timeout: float
    released: bool = False
    error: str = ""


class Spawner:
    """The nodelet's side of spawner.py: started on first use and again if it died;
    requests go one at a time over a unix socket (a round trip is well under 1 ms)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SPAWNER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                env=FIXED_ENV, cwd="/", start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def spawn(self, request: dict[str, object], go_read: int) -> tuple[int, int]:
        """(wrapper pid, pidfd or -1). Raises DriverError if the spawner cannot be reached."""
        payload = json.dumps(request).encode()
        with self._lock:
            for _ in range(2):  # a spawner that died is started again, once
                sock = self._sock or self._start()
                try:
                    socket.send_fds(sock, [payload], [go_read])
                    msg, fds, _, _ = socket.recv_fds(sock, 4096, 1)
                except OSError:
                    msg, fds = b"", []
                if msg:
                    answer = json.loads(msg)
                    if "pid" not in answer:
                        raise DriverError(f"could not launch: {answer.get('error', 'the spawner refused')}")
                    return int(answer["pid"]), (fds[0] if fds else -1)
                self.close()
            raise DriverError("could not launch: the node's task spawner does not answer")

    def make_slot(self, procs: list[str]) -> tuple[int, socket.socket]:
        """A slot server joined to the cgroups of `procs`: (its pid, a socket to it)."""
        payload = json.dumps({"op": "slot", "procs": procs}).encode()
        with self._lock:
            for _ in range(2):
                sock = self._sock or self._start()
                try:
                    sock.send(payload)
                    msg, fds, _, _ = socket.recv_fds(sock, 4096, 1)
                except OSError:
                    msg, fds = b"", []
                if msg:
                    answer = json.loads(msg)
                    if "slot_pid" not in answer or not fds:
                        raise SlotError(answer.get("error", "the spawner made no slot"))
                    return int(answer["slot_pid"]), socket.socket(fileno=fds[0])
                self.close()
            raise SlotError("the node's task spawner does not answer")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)  # it exits once its socket closes
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


def _run_as(spec: pb.TaskTemplate) -> int:
    """The uid the cluster decided (the nodelet puts it in spec.user before a driver sees
    the task); anything else is refused rather than guessed."""
    if not spec.user.isdigit():
        raise DriverError(f"no run-as uid for this task (user {spec.user[:40]!r}); the master decides it")
    return int(spec.user)


def _pid_in(pid: int, cg: TaskCgroup) -> bool:
    return pid in cg.pids()


def _task_pids(cg: TaskCgroup) -> list[int]:
    """Processes of the task itself: those inside the new pid namespace (NSpid has 2 ids)."""
    out = []
    for pid in cg.pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and len(line.split()) >= 3:
                    out.append(pid)
        except OSError:
            pass
    return out


class ProcessDriver:
    name = "process"

    def __init__(
        self, node_id: str, *, cgroup_root: str = "corral", log_cap: int = LOG_CAP, hide: list[str] | None = None, lease_file: str = "",
        slots: int = 8,
    ) -> None:
        self.lease_file = lease_file  # the node lease (agent.LeaseFile): every task's wrapper kills it once expired
        self.node_id = node_id
        self.cgroup_root = cgroup_root
        self.log_cap = log_cap
        self.hide = hide or []  # paths a task sees as an empty folder (the nodelet's data)
        self.version = detect()
        self._pidfds: dict[str, int] = {}  # launched tasks' wrappers, to wait on
        self._prepare_pool = ThreadPoolExecutor(8, thread_name_prefix="prepare")
        self.spawner = Spawner()
        # slots: 0 = each task's wrapper joins a cgroup of its own (the way before slots)
        self.slots = SlotPool(self.spawner.make_slot, self.version, spare=slots) if slots > 0 else None
        self._in_slot: dict[str, Slot] = {}  # handle key → the slot its task runs in
        self._cluster_id = ""

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @cluster_id.setter
    def cluster_id(self, value: str) -> None:
        """Known once the node registers: slots live under it, so they are made from then on."""
        self._cluster_id = value
        if self.slots is not None and value:
            self.slots.base = self._group_base()
            self.slots.warm()

    def _group_base(self) -> str:
        return f"{self.cgroup_root}/{self.cluster_id or '-'}/{self.node_id}"

    def fingerprint(self) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, "the process driver needs root (cgroups, namespaces)"
        return True, ""

    def _cgroup(self, handle: Handle) -> TaskCgroup:
        return TaskCgroup(handle.cgroup, handle.cgroup_version or self.version)

    async def start(self, task: pb.TaskExecution, directory: Path) -> Handle:
        return await self.launch(await self.prepare(task, directory))

    async def prepare(self, task: pb.TaskExecution, directory: Path) -> Prepared:
        """Everything but the release: folders, the cgroup with its limits, and the wrapper
        forked, joined to the cgroup and parked on its stdin. A task due later is prepared
        ahead, so at its instant only a write to a pipe is left. One hop to a pool of its
        own: prepares must not queue behind slow clean-ups when a hundred arrive at once."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prepare_pool, self._prepare, task, directory)

    def _prepare(self, task: pb.TaskExecution, directory: Path) -> Prepared:
        spec = task.spec
        uid = _run_as(spec)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # the nodelet's own: log, exit code, handle; never the task's
        safe = task.task_id.replace("@", "_").replace(":", "_")
        handle = Handle(
            task_id=task.task_id,
            attempt=task.attempt,
            driver=self.name,
            dir=str(directory),
            start_time=0.0,
            cgroup=f"{self._group_base()}/{safe}-{task.attempt}",
            cgroup_version=self.version,
        )
        memory = spec.mem_limit or spec.mem_request
        limits = Limits(spec.cpu_limit or spec.cpu_request, memory, spec.pids_limit or 512)
        slot = self._take_slot(handle, limits) if self.slots is not None else None
        cg = self._cgroup(handle)
        if slot is None:
            try:
                cg.create(limits)
            except OSError as e:
                cg.remove()
                raise DriverError(f"cgroup setup failed: {e}") from e
        go_read, go_write = os.pipe()
        request = {
            "uid": uid,
            "scratch": memory or 64 * 1024 * 1024,  # tmpfs pages count against the memory limit too
            "hide": self.hide,
            "network": spec.network,
            "script": spec.run_script,
            "cwd": spec.working_dir,
            "env": {
                "CORRAL_TASK_ID": task.task_id,
                "CORRAL_TEMPLATE_ID": task.template_id,
                "CORRAL_ATTEMPT": str(task.attempt),
                "CORRAL_SCHEDULED_TIME": task.due_time.ToJsonString(),
                **spec.env,
            },
            "procs": [] if slot is not None else cg.procs_files(),
            "log": str(directory / "output.log"),
            "times": str(logtimes.path_for(directory / "output.log")),
            "exit": str(directory / "exit"),
            "lost": str(directory / "lost"),
            "cap": self.log_cap,
            "lease": self.lease_file,
            "watch": bool(self.lease_file) and spec.on_disconnect != "keep",
        }
        try:
            if slot is not None:
                pid, pidfd = self._spawn_in_slot(slot, handle, limits, request, go_read)
            else:
                pid, pidfd = self.spawner.spawn(request, go_read)
        except DriverError:
            os.close(go_write)
            self._free_group(handle)
            raise
        finally:
            os.close(go_read)
        handle.pid = pid
        timeout = spec.timeout.seconds + spec.timeout.nanos / 1e9
        return Prepared(handle, go_write, pidfd, timeout)

    def _spawn_in_slot(self, slot: Slot, handle: Handle, limits: Limits, request: dict[str, object], go_read: int) -> tuple[int, int]:
        """Fork the task's wrapper in `slot`; a slot whose server is gone (killed, or its
        groups removed under it) is dropped and the next one tried, twice at most."""
        for tries_left in (2, 1, 0):
            try:
                return slot.spawn(request, go_read)
            except SlotError as e:
                slot.close()  # the pool drops it instead of handing it out again
                if not tries_left:
                    raise DriverError(f"could not launch: {e}") from e  # the caller frees the slot
                self._free_group(handle)
                slot = self._take_slot(handle, limits)
        raise AssertionError("unreachable")

    def _take_slot(self, handle: Handle, limits: Limits) -> Slot:
        """A free slot for the task, with the task's limits written into it (the slot's
        server counts against its pids limit: one more). Figures the kernel keeps for the
        group's life are noted now, to be subtracted."""
        assert self.slots is not None
        self.slots.base = self._group_base()
        try:
            slot = self.slots.take()
        except (SlotError, OSError) as e:
            raise DriverError(f"no task slot: {e}") from e
        try:
            slot.cgroup.set_limits(Limits(limits.cpu_millis, limits.memory, limits.pids + 1))
        except OSError as e:
            self.slots.give_back(slot)
            raise DriverError(f"cgroup setup failed: {e}") from e
        handle.cgroup = slot.relpath
        handle.extra = {
            "slot_server": str(slot.server), "cpu_base": str(slot.cgroup.cpu_usage_ns()), "oom_base": str(slot.cgroup.oom_kills()),
        }
        self._in_slot[handle.key] = slot
        return slot

    def _free_group(self, handle: Handle) -> None:
        """The task's cgroups after its last process: a slot goes back to the pool, a group
        of its own is removed."""
        slot = self._in_slot.pop(handle.key, None)
        if slot is not None and self.slots is not None:
            self.slots.give_back(slot)
        elif "slot_server" in handle.extra and self.slots is not None:
            self.slots.release_held(handle.cgroup)  # re-adopted after a restart
        else:
            self._cgroup(handle).remove()

    def _spare(self, handle: Handle) -> int:
        """The slot server's pid in the task's cgroups (never killed with the task), or 0."""
        slot = self._in_slot.get(handle.key)
        return slot.server if slot is not None else 0

    def release(self, prep: Prepared) -> None:
        """Let the parked task go; its start time is this instant. Synchronous and cheap (a
        3-byte write into an empty pipe never blocks), so the nodelet can release every
        task due at one instant back to back."""
        prep.released = True
        try:
            os.write(prep.go, b"go\n")
        except OSError as e:  # it died while parked
            prep.error = f"could not launch: {e}"
            return
        finally:
            os.close(prep.go)
            prep.go = -1
        prep.handle.start_time = time.time()
        if prep.timeout:
            prep.handle.deadline = prep.handle.start_time + prep.timeout

    async def launch(self, prep: Prepared) -> Handle:
        """Release the task (if the nodelet's timer has not) and track it."""
        if not prep.released:
            self.release(prep)
        if prep.error:
            await self.abandon(prep)
            raise DriverError(prep.error)
        handle = prep.handle
        if prep.pidfd >= 0:
            self._pidfds[handle.key] = prep.pidfd
        await asyncio.to_thread(handle.save)
        return handle

    async def abandon(self, prep: Prepared) -> None:
        """Undo a prepare whose task will not launch: the parked task reads end of file and
        exits without running anything; then its cgroup goes."""

        def undo() -> None:
            if prep.go >= 0:
                os.close(prep.go)
                prep.go = -1
            cg = self._cgroup(prep.handle)
            deadline = time.monotonic() + 5
            while _pid_in(prep.handle.pid, cg) and time.monotonic() < deadline:
                time.sleep(0.01)
            if prep.pidfd >= 0:
                os.close(prep.pidfd)
            self._free_group(prep.handle)

        await asyncio.to_thread(undo)

    async def recover(self, handle: Handle) -> bool:
        if "slot_server" in handle.extra and self.slots is not None:
            self.slots.hold(handle.cgroup)  # not handed out again while its task runs
        cg = self._cgroup(handle)
        return handle.pid > 0 and await asyncio.to_thread(_pid_in, handle.pid, cg)

    async def wait(self, handle: Handle) -> Outcome:
        pidfd = self._pidfds.pop(handle.key, -1)
        if pidfd >= 0:
            await _wait_fd(pidfd)
        elif handle.pid and await asyncio.to_thread(_pid_in, handle.pid, self._cgroup(handle)):
            await _wait_pid(handle.pid)  # re-adopted after a nodelet restart: not our child
        return await asyncio.to_thread(self._finish, handle)

    def _finish(self, handle: Handle) -> Outcome:
        cg = self._cgroup(handle)
        directory = Path(handle.dir)
        oom = cg.oom_kills() > int(handle.extra.get("oom_base", 0)) if cg.exists() else False
        self._free_group(handle)  # kills what is left of the task first
        try:
            code = int((directory / "exit").read_text().strip())
        except (OSError, ValueError):
            code = -1
        try:  # its wrapper killed it: the node lease ran out
            lost = (directory / "lost").read_text().strip()
        except OSError:
            lost = ""
        if lost and not handle.stop_state:
            handle.stop_state, handle.stop_reason = pb.LOST, lost
        return classify(handle, code, oom, time.time())

    async def signal_stop(self, handle: Handle) -> None:
        cg = self._cgroup(handle)
        await asyncio.to_thread(lambda: cg.signal_all(signal.SIGTERM, _task_pids(cg)))

    async def kill(self, handle: Handle) -> None:
        await asyncio.to_thread(self._cgroup(handle).kill_all, 5.0, self._spare(handle))

    def usage(self, handle: Handle) -> tuple[int, int]:
        cg = self._cgroup(handle)
        return cg.cpu_usage_ns() - int(handle.extra.get("cpu_base", 0)), cg.memory_usage()


async def _wait_pid(pid: int) -> None:
    """Wait for any process (child or not) to exit, through a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    await _wait_fd(fd)


async def _wait_fd(fd: int) -> None:
    """Wait until a pidfd says its process ended; closes it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
        os.close(fd)
