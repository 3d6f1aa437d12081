"""The process driver: a task is `/bin/sh -c run_script` in its own cgroup and in new
pid, mount, ipc, uts and (unless it asks for `network: host`) network namespaces, as an
unprivileged user with no capabilities and no new privileges unless it asks for root.

Launch: a small wrapper shell joins the task's cgroups *before* it starts anything (so the
task is never briefly unlimited), waits for the word "go" on its stdin, then runs `unshare` → (setpriv) → an init shell that
forwards SIGTERM to the script (a namespace's pid 1 otherwise ignores it). The wrapper
writes the exit code to a file and pipes the output through a size cap into the log. It
runs in its own session, so it outlives a nodelet restart; the new nodelet finds it by pid
(checked against the cgroup) and waits on it through a pidfd.

Why the wait for "go": a task due later is forked ahead of its instant (its cgroup made,
the wrapper joined to it and parked on a pipe), so at the instant the nodelet only writes
to the pipe. Forking a hundred wrappers at one instant, each then building namespaces,
would make the last ones start tens of milliseconds late on a small machine. A wrapper
whose pipe closes without "go" (stopped before its instant, or the nodelet died) exits
without running anything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from corral.v1 import types_pb2 as pb

from .cgroups import Limits, TaskCgroup, detect
from .driver import DriverError, Handle, Outcome, classify

NOBODY = 65534
LOG_CAP = 16 * 1024 * 1024

# $1 exit file, $2 log file, $3 log cap, $4 uid ("root" for none), $5 script, $6 network
# ("host" shares the node's; anything else is a new network namespace with only a loopback,
# down), then procs files.
WRAPPER = r"""
exitfile=$1; logfile=$2; cap=$3; uid=$4; script=$5; net=$6; shift 6
ns="--pid --fork --mount-proc --ipc --uts --kill-child"
[ "$net" = host ] || ns="$ns --net"
umask 077
for f in "$@"; do echo $$ > "$f" || exit 125; done
read -r go || exit 0
[ "$go" = go ] || exit 0
init='trap "kill -TERM \$c 2>/dev/null" TERM INT; /bin/sh -c "$0" & c=$!; while :; do wait $c; r=$?; kill -0 $c 2>/dev/null || exit $r; done'
run() {
  if [ "$uid" = root ]; then
    exec unshare $ns -- /bin/sh -c "$init" "$script"
  else
    exec unshare $ns -- \
      setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \
      /bin/sh -c "$init" "$script"
  fi
}
{ (umask 022; run); echo $? > "$exitfile.tmp"; mv "$exitfile.tmp" "$exitfile"; } 2>&1 </dev/null | { head -c "$cap" > "$logfile"; cat > /dev/null; }
"""


@dataclass
class Prepared:
    handle: Handle
    proc: subprocess.Popen[bytes]  # the wrapper, parked until it reads "go"
    timeout: float
    released: bool = False
    error: str = ""


def _uid(spec: pb.TaskTemplate) -> str:
    if spec.user == "root":
        return "root"
    if spec.user.isdigit():
        return spec.user
    return str(NOBODY)


def _prepare_dirs(directory: Path, work: Path, uid: str) -> None:
    """The task's folder (readable by the nodelet) and a work folder the task's user owns."""
    directory.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    if uid != "root":
        os.chown(work, int(uid), int(uid))
        os.chmod(directory, 0o711)


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

    def __init__(self, node_id: str, *, cgroup_root: str = "corral", log_cap: int = LOG_CAP) -> None:
        self.node_id = node_id
        self.cgroup_root = cgroup_root
        self.log_cap = log_cap
        self.version = detect()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._prepare_pool = ThreadPoolExecutor(8, thread_name_prefix="prepare")

    def fingerprint(self) -> tuple[bool, str]:
        for tool in ("unshare", "setpriv"):
            if shutil.which(tool) is None:
                return False, f"{tool} not found"
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
        work = directory / "work"
        uid = _uid(spec)
        _prepare_dirs(directory, work, uid)
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
        limits = Limits(spec.cpu_limit or spec.cpu_request, spec.mem_limit or spec.mem_request, spec.pids_limit or 512)
        try:
            cg.create(limits)
        except OSError as e:
            cg.remove()
            raise DriverError(f"cgroup setup failed: {e}") from e
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(work),
            "CORRAL_TASK_ID": task.task_id,
            "CORRAL_TEMPLATE_ID": task.template_id,
            "CORRAL_ATTEMPT": str(task.attempt),
            "CORRAL_SCHEDULED_TIME": task.due_time.ToJsonString(),
        }
        env.update(spec.env)
        argv = [
            "/bin/sh", "-c", WRAPPER, "corral-task",
            str(directory / "exit"), str(directory / "output.log"), str(self.log_cap), uid,
            spec.run_script, spec.network or "none", *cg.procs_files(),
        ]
        try:
            proc = subprocess.Popen(
                argv, env=env, cwd=spec.working_dir or str(work), start_new_session=True,
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
