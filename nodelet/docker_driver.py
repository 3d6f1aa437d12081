"""The Docker driver: a task is a container made through the Docker SDK, with its limits
(cpu → nano_cpus, memory with swap equal to it, pids) read back after start; no network,
no capabilities and no new privileges, as the uid the cluster gave the task's owner (never
privileged, never a host mount or device: the API has no way to ask for one); labels that let a restarted nodelet
find its containers again. Output streams into the task's log as it is produced; an exited
container is removed once its logs are collected. No container runs without the node's
container watchdog (container_watchdog.py), which kills them all once the node lease runs
out, also while the nodelet is paused or dead.

Every SDK call blocks, so each runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from corral.v1 import types_pb2 as pb

from . import logtimes
from .driver import DriverError, Handle, Outcome, classify

log = logging.getLogger("corral.docker")

PULL_TIMEOUT = 120.0


class DockerDriver:
    name = "docker"

    def __init__(self, node_id: str, *, log_cap: int = 16 * 1024 * 1024, client: Any = None, data_dir: Path | None = None) -> None:
        self.node_id = node_id
        self.cluster_id = ""  # set by the nodelet: containers carry it; only ours are cleaned up
        self.log_cap = log_cap
        self._client = client
        self._pulls: dict[str, asyncio.Future[None]] = {}
        self._log_threads: dict[str, threading.Thread] = {}
        # the node lease for containers (container_watchdog.py); None: no lease (unit use)
        self.data_dir = data_dir.resolve() if data_dir is not None else None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_pipe = -1
        self._watchdog_lock = threading.Lock()

    def ensure_watchdog(self) -> None:
        """Start this node's container watchdog unless ours runs: a container must never run
        without one (it kills containers once the node lease runs out, whatever the nodelet
        does). The pipe's write end stays here; its end of file tells the watchdog we are gone."""
        if self.data_dir is None:
            return
        with self._watchdog_lock:
            if self._watchdog is not None and self._watchdog.poll() is None:
                return
            if self._watchdog_pipe >= 0:
                os.close(self._watchdog_pipe)
            r, w = os.pipe()
            try:
                self._watchdog = subprocess.Popen(
                    [sys.executable, "-m", f"{__package__}.container_watchdog", "--node-id", self.node_id,
                     "--data-dir", str(self.data_dir), "--lock", str(self.data_dir / "container-watchdog.lock"),
                     "--nodelet-fd", str(r)],
                    pass_fds=[r], start_new_session=True, stdin=subprocess.DEVNULL, cwd=str(self.data_dir),
                )
            finally:
                os.close(r)
            self._watchdog_pipe = w

    # ---- engine ---------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=30)
        return self._client

    def fingerprint(self) -> tuple[bool, str]:
        try:
            self.client().ping()
        except Exception as e:  # noqa: BLE001 - any failure means "not usable now"
            self._client = None
            return False, f"docker daemon unreachable: {type(e).__name__}"
        return True, ""

    # ---- images -----------------------------------------------------------------------------

    async def _ensure_image(self, image: str, policy: int) -> None:
        """Make the image present per the pull policy; concurrent starts share one pull."""
        from docker.errors import ImageNotFound

        if policy != pb.ALWAYS:
            try:
                await asyncio.to_thread(self.client().images.get, image)
                return
            except ImageNotFound:
                if policy == pb.NEVER:
                    raise DriverError(f"image not found: {image} (pull policy NEVER)") from None
        pending = self._pulls.get(image)
        if pending is None:
            pending = asyncio.ensure_future(self._pull(image))
            self._pulls[image] = pending
            pending.add_done_callback(lambda _: self._pulls.pop(image, None))
        await asyncio.shield(pending)

    async def _pull(self, image: str) -> None:
        repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        try:
            await asyncio.wait_for(asyncio.to_thread(self.client().images.pull, repo, tag=tag or "latest"), PULL_TIMEOUT)
        except TimeoutError:
            raise DriverError(f"image not found: {image} (pull timed out after {PULL_TIMEOUT:.0f}s)") from None
        except Exception as e:  # noqa: BLE001 - registry errors come in many classes
            raise DriverError(f"image not found: {image} ({_short(e)})") from None

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self, task: pb.TaskExecution, directory: Path) -> Handle:
        spec = task.spec
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self.ensure_watchdog)
        await self._ensure_image(spec.image, spec.pull_policy)
        handle = Handle(task_id=task.task_id, attempt=task.attempt, driver=self.name, dir=str(directory), start_time=time.time())
        timeout = spec.timeout.seconds + spec.timeout.nanos / 1e9
        if timeout:
            handle.deadline = handle.start_time + timeout
        cpu = spec.cpu_limit or spec.cpu_request
        mem = spec.mem_limit or spec.mem_request
        pids = spec.pids_limit or 512
        env = {
            "CORRAL_TASK_ID": task.task_id,
            "CORRAL_TEMPLATE_ID": task.template_id,
            "CORRAL_ATTEMPT": str(task.attempt),
            "CORRAL_SCHEDULED_TIME": task.due_time.ToJsonString(),
            **dict(spec.env),
        }
        if spec.run_script:
            command: list[str] | None = ["/bin/sh", "-c", spec.run_script, *spec.args]
        else:
            command = list(spec.args) or None
        if not spec.user.isdigit():
            raise DriverError(f"no run-as uid for this task (user {spec.user[:40]!r}); the master decides it")
        user = f"{spec.user}:{spec.user}"  # the owner's uid as the cluster decided, its gid alike
        kwargs: dict[str, Any] = dict(
            image=spec.image,
            command=command,
            environment=env,
            working_dir=spec.working_dir or None,
            user=user,
            nano_cpus=cpu * 1_000_000,
            mem_limit=mem,
            memswap_limit=mem,
            pids_limit=pids,
            network_mode=spec.network or "none",
            read_only=spec.read_only_rootfs,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            labels={"corral.task_id": task.task_id, "corral.node_id": self.node_id, "corral.attempt": str(task.attempt),
                    "corral.cluster_id": self.cluster_id, "corral.on_disconnect": spec.on_disconnect or "kill"},
            name=_container_name(f"{self.cluster_id}-{self.node_id}", task.task_id, task.attempt),
            detach=True,
        )
        try:
            container = await asyncio.to_thread(self._create_and_start, kwargs)
        except DriverError:
            raise
        except Exception as e:  # noqa: BLE001 - docker errors: a clear reason for the task
            raise DriverError(f"container start failed: {_short(e)}") from None
        handle.container_id = container.id
        handle.start_time = time.time()  # RUNNING from the moment the engine started it
        if timeout:
            handle.deadline = handle.start_time + timeout
        await asyncio.to_thread(handle.save)
        problem = await asyncio.to_thread(self._check_limits, container, cpu, mem, pids)
        if problem:
            await asyncio.to_thread(self._remove, container.id)
            raise DriverError(f"limits not applied: {problem}")
        self._follow_logs(handle)
        return handle

    def _create_and_start(self, kwargs: dict[str, Any]) -> Any:
        from docker.errors import NotFound

        c = self.client()
        with contextlib.suppress(NotFound):  # a leftover of an earlier try of this attempt
            c.containers.get(kwargs["name"]).remove(force=True)
        container = c.containers.create(**kwargs)
        try:
            container.start()
        except Exception:
            container.remove(force=True)
            raise
        return container

    def _check_limits(self, container: Any, cpu: int, mem: int, pids: int) -> str:
        container.reload()
        hc = container.attrs.get("HostConfig", {})
        want = {"NanoCpus": cpu * 1_000_000, "Memory": mem, "MemorySwap": mem, "PidsLimit": pids}
        wrong = [f"{k} is {hc.get(k)}, wanted {v}" for k, v in want.items() if hc.get(k) != v]
        return "; ".join(wrong)

    def _follow_logs(self, handle: Handle) -> None:
        """Copy the container's output into output.log (capped) as it is produced."""
        path = Path(handle.dir) / "output.log"

        def run() -> None:
            written = 0
            try:
                container = self.client().containers.get(handle.container_id)
                with open(path, "wb") as f, open(logtimes.path_for(path), "wb") as times:
                    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                        if written < self.log_cap:
                            part = chunk[: self.log_cap - written]
                            times.write(logtimes.line(written, time.time()))
                            times.flush()
                            f.write(part)
                            f.flush()
                            written += len(part)
            except Exception as e:  # noqa: BLE001 - the container may vanish under us
                log.debug("log follower for %s ended: %s", handle.task_id, e)

        t = threading.Thread(target=run, name=f"logs-{handle.task_id}", daemon=True)
        self._log_threads[handle.key] = t
        t.start()

    async def recover(self, handle: Handle) -> bool:
        from docker.errors import NotFound

        if not handle.container_id:
            return False
        await asyncio.to_thread(self.ensure_watchdog)
        try:
            container = await asyncio.to_thread(self.client().containers.get, handle.container_id)
        except NotFound:
            return False
        if container.status in ("running", "created", "restarting", "paused"):
            self._follow_logs(handle)
            return True
        # exited while we were away: collect its logs once, then wait() reports it
        self._follow_logs(handle)
        return True

    async def wait(self, handle: Handle) -> Outcome:
        from docker.errors import NotFound

        try:
            container = await asyncio.to_thread(self.client().containers.get, handle.container_id)
            result = await asyncio.to_thread(container.wait)
            finished = time.time()  # it ended here; what follows is clean-up
            await asyncio.to_thread(container.reload)
        except NotFound:
            return Outcome(handle.stop_state or pb.LOST, -1, handle.stop_reason or "the container disappeared", time.time())
        code = int(result.get("StatusCode", -1))
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        try:  # the container watchdog killed it: the node lease ran out
            lost = (Path(handle.dir) / "lost").read_text().strip()
        except OSError:
            lost = ""
        if lost and not handle.stop_state:
            handle.stop_state, handle.stop_reason = pb.LOST, lost
        t = self._log_threads.pop(handle.key, None)
        if t is not None:
            await asyncio.to_thread(t.join, 10)
        await asyncio.to_thread(self._remove, handle.container_id)
        return classify(handle, code, oom, finished)

    def _remove(self, container_id: str) -> None:
        from docker.errors import APIError, NotFound

        with contextlib.suppress(NotFound, APIError):
            self.client().containers.get(container_id).remove(force=True)

    async def signal_stop(self, handle: Handle) -> None:
        await asyncio.to_thread(self._signal, handle.container_id, "SIGTERM")

    async def kill(self, handle: Handle) -> None:
        await asyncio.to_thread(self._signal, handle.container_id, "SIGKILL")

    def _signal(self, container_id: str, sig: str) -> None:
        from docker.errors import APIError, NotFound

        with contextlib.suppress(NotFound, APIError):
            self.client().containers.get(container_id).kill(signal=sig)

    def usage(self, handle: Handle) -> tuple[int, int]:
        """From the container's cgroup files (the stats API takes a second per call)."""
        cid = handle.container_id
        for base in (Path("/sys/fs/cgroup/memory/docker") / cid, Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope")):
            for name in ("memory.usage_in_bytes", "memory.current"):
                p = base / name
                if p.exists():
                    mem = int(p.read_text() or 0)
                    cpu_file = Path("/sys/fs/cgroup/cpuacct/docker") / cid / "cpuacct.usage"
                    cpu = int(cpu_file.read_text() or 0) if cpu_file.exists() else 0
                    return cpu, mem
        return 0, 0

    def orphans(self, known: set[str]) -> list[str]:
        """Ids of this node's containers that no task directory knows (to be removed)."""
        if not self.cluster_id:
            return []  # not knowing our cluster, nothing is surely ours
        out = []
        labels = [f"corral.node_id={self.node_id}", f"corral.cluster_id={self.cluster_id}"]
        for c in self.client().containers.list(all=True, filters={"label": labels}):
            if c.id not in known:
                out.append(c.id)
        return out

    def remove(self, container_id: str) -> None:
        self._remove(container_id)


def _container_name(node_id: str, task_id: str, attempt: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in f"corral-{node_id}-{task_id}-{attempt}")
    return safe[:200]


def _short(e: Exception) -> str:
    text = getattr(e, "explanation", None) or str(e)
    return str(text).splitlines()[0][:300]
