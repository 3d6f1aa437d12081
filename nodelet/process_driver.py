"""The process driver: a task is `/bin/sh -c run_script` in its own cgroup and in new
pid, mount, ipc, uts and (unless it may and asks for `network: host`) network namespaces,
as the uid the cluster gave its owner, with no capabilities and no new privileges.

Launch, in three parts, none of which lets the task's settings near root:
1. a wrapper shell with a fixed environment and absolute paths joins the task's cgroups
   *before* it starts anything (so the task is never briefly unlimited), then runs the
   rest with its output piped through a size cap into the log, and writes the exit code
   to a file. It reads only what the nodelet passes (paths and numbers). It runs in its
   own session, so it outlives a nodelet restart; the new nodelet finds it by pid
   (checked against the cgroup) and waits on it through a pidfd.
2. `unshare` makes the namespaces and waits for the task (killing it if unshare dies).
3. launcher.py, pid 1 of the new namespaces, sets up the task's view of the machine
   (read-only host tree, private tmpfs scratch, its own /proc, the nodelet's data hidden),
   drops to the task's uid, waits for the word "go" on its stdin, and only then applies
   the task's environment, working directory and script at its final exec.

Why the wait for "go": a task due later is prepared ahead of its instant (cgroup made,
namespaces and mounts built, privileges dropped, parked on a pipe), so at the instant the
nodelet only writes to the pipe. A launcher whose pipe closes without "go" (stopped
before its instant, or the nodelet died) exits without running anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from corral.v1 import types_pb2 as pb

from .cgroups import Limits, TaskCgroup, detect
from .driver import DriverError, Handle, Outcome, classify

LOG_CAP = 16 * 1024 * 1024
LAUNCHER = str(Path(__file__).with_name("launcher.py"))
# What the privileged parts run with: nothing of the task's, nothing of the nodelet's.
FIXED_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _tool(name: str) -> str:
    """A system tool by absolute path, never looked up through anyone's $PATH."""
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return ""


UNSHARE, HEAD, CAT = _tool("unshare"), _tool("head"), _tool("cat")

# $1 exit file, $2 log file, $3 log cap, $4 how many cgroup procs files follow, then those
# files, then the command to run (unshare … launcher.py SPEC), which reads "go" from stdin.
WRAPPER = f"""
exitfile=$1; logfile=$2; cap=$3; n=$4; shift 4
umask 077
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done
{{ "$@"; echo $? > "$exitfile"; }} 2>&1 | {{ {HEAD} -c "$cap" > "$logfile"; {CAT} > /dev/null; }}
"""


@dataclass
class Prepared:
    handle: Handle
    proc: subprocess.Popen[bytes]  # the wrapper, parked until it reads "go"
    timeout: float
    released: bool = False
    error: str = ""


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

    def __init__(self, node_id: str, *, cgroup_root: str = "corral", log_cap: int = LOG_CAP, hide: list[str] | None = None) -> None:
        self.node_id = node_id
        self.cgroup_root = cgroup_root
        self.log_cap = log_cap
        self.hide = hide or []  # paths a task sees as an empty folder (the nodelet's data)
        self.version = detect()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._prepare_pool = ThreadPoolExecutor(8, thread_name_prefix="prepare")

    def fingerprint(self) -> tuple[bool, str]:
        for tool, path in (("unshare", UNSHARE), ("head", HEAD), ("cat", CAT)):
            if not path:
                return False, f"{tool} not found in /usr/bin or /bin"
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
            cgroup=f"{self.cgroup_root}/{self.node_id}/{safe}-{task.attempt}",
            cgroup_version=self.version,
        )
        cg = self._cgroup(handle)
        memory = spec.mem_limit or spec.mem_request
        limits = Limits(spec.cpu_limit or spec.cpu_request, memory, spec.pids_limit or 512)
        try:
            cg.create(limits)
        except OSError as e:
            cg.remove()
            raise DriverError(f"cgroup setup failed: {e}") from e
        launch = {
            "uid": uid,
            "gid": uid,
            "scratch": memory or 64 * 1024 * 1024,  # tmpfs pages count against the memory limit too
            "hide": self.hide,
            "script": spec.run_script,
            "cwd": spec.working_dir,
            "env": {
                "CORRAL_TASK_ID": task.task_id,
                "CORRAL_TEMPLATE_ID": task.template_id,
                "CORRAL_ATTEMPT": str(task.attempt),
                "CORRAL_SCHEDULED_TIME": task.due_time.ToJsonString(),
                **spec.env,
            },
        }
        spec_path = directory / "launch.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(launch, f)
        ns = ["--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts"]
        if spec.network != "host":
            ns.append("--net")
        procs = cg.procs_files()
        argv = [
            "/bin/sh", "-c", WRAPPER, "corral-task",
            str(directory / "exit"), str(directory / "output.log"), str(self.log_cap), str(len(procs)), *procs,
            UNSHARE, *ns, "--", sys.executable, "-I", "-S", LAUNCHER, str(spec_path),
        ]
        try:
            proc = subprocess.Popen(
                argv, env=FIXED_ENV, cwd="/", start_new_session=True,
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError as e:
            cg.remove()
            raise DriverError(f"could not launch: {e}") from e
        timeout = spec.timeout.seconds + spec.timeout.nanos / 1e9
        return Prepared(handle, proc, timeout)

    def release(self, prep: Prepared) -> None:
        """Let the parked wrapper go; the task's start time is this instant. Synchronous
        and cheap (a 3-byte write into an empty pipe never blocks), so the nodelet can
        release every task due at one instant back to back."""
        prep.released = True
        assert prep.proc.stdin is not None
        try:
            prep.proc.stdin.write(b"go\n")
            prep.proc.stdin.close()
        except OSError as e:  # the wrapper died while parked
            prep.error = f"could not launch: {e}"
            return
        prep.handle.start_time = time.time()
        if prep.timeout:
            prep.handle.deadline = prep.handle.start_time + prep.timeout

    async def launch(self, prep: Prepared) -> Handle:
        """Release the wrapper (if the nodelet's timer has not) and track the task."""
        if not prep.released:
            self.release(prep)
        if prep.error:
            await self.abandon(prep)
            raise DriverError(prep.error)
        handle = prep.handle
        handle.pid = prep.proc.pid
        self._procs[handle.key] = prep.proc
        await asyncio.to_thread(handle.save)
        return handle

    async def abandon(self, prep: Prepared) -> None:
        """Undo a prepare whose task will not launch: the parked wrapper reads end of file
        and exits without running anything; then its cgroup goes."""

        def undo() -> None:
            if prep.proc.stdin is not None and not prep.proc.stdin.closed:
                prep.proc.stdin.close()
            try:
                prep.proc.wait(5)
            except subprocess.TimeoutExpired:
                self._cgroup(prep.handle).kill_all()
                prep.proc.wait(5)
            self._cgroup(prep.handle).remove()

        await asyncio.to_thread(undo)

    async def recover(self, handle: Handle) -> bool:
        cg = self._cgroup(handle)
        return handle.pid > 0 and await asyncio.to_thread(_pid_in, handle.pid, cg)

    async def wait(self, handle: Handle) -> Outcome:
        proc = self._procs.get(handle.key)
        if proc is not None:
            await _wait_pid(handle.pid)
            proc.wait()
            self._procs.pop(handle.key, None)
        elif handle.pid and await asyncio.to_thread(_pid_in, handle.pid, self._cgroup(handle)):
            await _wait_pid(handle.pid)
        return await asyncio.to_thread(self._finish, handle)

    def _finish(self, handle: Handle) -> Outcome:
        cg = self._cgroup(handle)
        directory = Path(handle.dir)
        oom = cg.oom_killed() if cg.exists() else False
        cg.remove()
        try:
            code = int((directory / "exit").read_text().strip())
        except (OSError, ValueError):
            code = -1
        return classify(handle, code, oom, time.time())

    async def signal_stop(self, handle: Handle) -> None:
        cg = self._cgroup(handle)
        await asyncio.to_thread(lambda: cg.signal_all(signal.SIGTERM, _task_pids(cg)))

    async def kill(self, handle: Handle) -> None:
        await asyncio.to_thread(self._cgroup(handle).kill_all)

    def usage(self, handle: Handle) -> tuple[int, int]:
        cg = self._cgroup(handle)
        return cg.cpu_usage_ns(), cg.memory_usage()


async def _wait_pid(pid: int) -> None:
    """Wait for any process (child or not) to exit, through a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
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
