"""The nodelet's task runner: starts tasks through their drivers (at their due instant if
the master sent them early), watches them to their end, stops and kills them, keeps every
status until the master acknowledges it, and re-adopts what it finds on disk after a
restart. It knows nothing of streams or masters: the session (agent.py) hands it the
master's commands and sends what it reports through `send`.

Task directories live under `<data_dir>/tasks/<task>-<attempt>/` with `handle.json` (how to
re-attach), `output.log`, `exit`, `outcome.json` once ended, renamed `outcome.acked` once the master
has committed the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from . import logtimes, metrics
from .driver import Driver, DriverError, Handle, Outcome, PreparingDriver
from .prepare_queue import PrepareQueue, PrepareStats, deadline_of
from .release import ReleaseTimer

log = logging.getLogger("corral.nodelet")

TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED, pb.TIMED_OUT, pb.STOPPED, pb.LOST, pb.PREEMPTED, pb.SKIPPED}
TIMEOUT_GRACE = 5.0


def _ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def dir_name(task_id: str, attempt: int) -> str:
    return f"{task_id.replace('/', '_')}-{attempt}"


def driver_of(task: pb.TaskExecution) -> str:
    """The name of the driver that runs `task` (the key of TaskRunner.drivers)."""
    return "docker" if task.spec.driver == pb.DOCKER else "process"


class TaskRunner:
    def __init__(self, node_id: str, data_dir: Path, drivers: dict[str, Driver]) -> None:
        self.node_id = node_id
        self.tasks_dir = data_dir / "tasks"
        self.drivers = drivers
        self.handles: dict[str, Handle] = {}          # task_id → current attempt's handle
        self.dirs: dict[str, Path] = {}               # task_id → latest directory (for logs)
        self.outbox: dict[tuple[str, int], npb.TaskStatus] = {}
        # how statuses leave: the session sets it while a stream is registered
        self.send: Callable[[npb.NodeletMessage], None] = lambda msg: None
        self._monitors: dict[str, asyncio.Task[None]] = {}  # handle key → its watcher
        self._last_cpu: dict[str, tuple[float, int]] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self.release_timer = ReleaseTimer()
        self._release_futs: dict[str, asyncio.Future[None]] = {}
        self._waiting: dict[str, int] = {}  # task → attempt, sleeping until its due time
        self._stopped_early: dict[str, npb.StopTask] = {}
        self._bg: set[asyncio.Task[None]] = set()
        # prepares in deadline order, a few at a time per driver (prepare_queue.py)
        self.prepare_queues: dict[str, PrepareQueue] = {name: PrepareQueue(8) for name in drivers}
        self.prepare_stats = PrepareStats(lanes=8)  # process driver prepares: what heartbeats report
        # the task files written after a start (outcome, acked marker, stop state): on one
        # thread of their own, in order, so the event loop that releases due tasks never
        # waits on the file system (an inode allocation cost milliseconds in profiles)
        self._files = ThreadPoolExecutor(1, thread_name_prefix="task-files")

    def _write(self, fn: Callable[..., object], *args: object) -> None:
        self._files.submit(fn, *args)

    def _ended(self, task: pb.TaskExecution, directory: Path) -> bool:
        """This attempt started (or was refused) before: its status waits in the outbox, or
        its handle is on disk (the outbox covers the moment before the file is written)."""
        return (task.task_id, task.attempt) in self.outbox or (directory / "handle.json").exists()

    def set_cluster(self, cluster_id: str) -> None:
        for d in self.drivers.values():
            d.cluster_id = cluster_id

    # ---- what the session asks ---------------------------------------------------------

    def known_statuses(self) -> list[npb.TaskStatus]:
        """Every task this node knows, for a registration: unacknowledged statuses and the
        running attempts."""
        known = dict(self.outbox)
        for h in self.handles.values():
            known.setdefault((h.task_id, h.attempt), self._running_status(h))
        return list(known.values())

    def start(self, start: npb.StartTask) -> None:
        """Starts run side by side (a container start takes a while); a stop that arrives
        meanwhile waits for its start first (see stop)."""
        task_id = start.task.task_id
        if task_id not in self._starting:
            self._starting[task_id] = asyncio.create_task(self._start_guarded(start))

    def refuse(self, start: npb.StartTask, state: int, reason: str) -> None:
        """End a start that must not run here as `state` (never started), unless this
        attempt is already starting or known (a resent start of one that runs)."""
        task = start.task
        current = self.handles.get(task.task_id)
        directory = self.tasks_dir / dir_name(task.task_id, task.attempt)
        if task.task_id in self._starting or (current is not None and current.attempt >= task.attempt) or self._ended(task, directory):
            return
        self._end_unstarted(task, directory, driver_of(task), state, reason)

    def stop(self, stop: npb.StopTask) -> None:
        self._background(self._stop(stop))

    def prepare_figures(self, hb: npb.Heartbeat) -> None:
        """The node's measured prepare rate and p99, and how many prepares wait now."""
        hb.prepare_per_s, hb.prepare_p99_ms = self.prepare_stats.figures()
        hb.prepare_waiting = sum(q.busy() for q in self.prepare_queues.values())

    def task_usage(self, hb: npb.Heartbeat) -> None:
        """Each running task's cpu (millicores since the last beat) and memory, into `hb`."""
        now = time.monotonic()
        for h in list(self.handles.values()):
            driver = self.drivers.get(h.driver)
            if driver is None:
                continue
            try:
                cpu_ns, mem_b = driver.usage(h)
            except (OSError, ValueError):
                continue
            prev = self._last_cpu.get(h.key)
            self._last_cpu[h.key] = (now, cpu_ns)
            millis = 0
            if prev is not None and now > prev[0]:
                millis = int((cpu_ns - prev[1]) / 1e6 / (now - prev[0]))
            hb.tasks.add(task_id=h.task_id, cpu=max(0, millis), memory=mem_b)

    # ---- recovery ----------------------------------------------------------------------------

    def remove_orphan_containers(self) -> None:
        """Containers labelled for this node that no task directory knows are removed."""
        driver = self.drivers.get("docker")
        if driver is None or not driver.fingerprint()[0]:
            return
        known = set()
        for d in self.tasks_dir.glob("*"):
            try:
                known.add(Handle.load(d).container_id)
            except (OSError, ValueError, TypeError):
                continue
        for cid in driver.orphans(known):  # type: ignore[attr-defined]
            log.warning("removing container %s: no task of this node knows it", cid[:12])
            driver.remove(cid)  # type: ignore[attr-defined]

    async def recover_all(self) -> None:
        """Re-adopt running tasks and queue unacknowledged outcomes found on disk."""
        for d in sorted(self.tasks_dir.glob("*")):
            if not (d / "handle.json").exists():
                continue
            try:
                handle = Handle.load(d)
            except (OSError, ValueError, TypeError):
                log.error("unreadable task handle in %s; leaving it", d)
                continue
            self.dirs[handle.task_id] = d
            if (d / "outcome.acked").exists() or (d / "acked").exists():  # "acked": an older nodelet's marker
                continue
            outcome = Outcome.load(d)
            if outcome is not None:
                self._queue_outcome(handle, outcome)
                continue
            driver = self.drivers.get(handle.driver)
            if driver is None:
                continue
            self.handles[handle.task_id] = handle
            if await driver.recover(handle):
                log.info("re-adopted task %s attempt %d (pid %d)", handle.task_id, handle.attempt, handle.pid)
                self._set_status(self._running_status(handle))
            else:
                log.info("task %s ended while the nodelet was down", handle.task_id)
            self._monitor(handle)

    # ---- tasks ------------------------------------------------------------------------------

    def _set_status(self, st: npb.TaskStatus) -> None:
        """Remember a status until the master acknowledges it, and send it now if connected."""
        self.outbox[(st.task_id, st.attempt)] = st
        self.send(npb.NodeletMessage(status=st))

    def ack(self, ack: npb.StatusAck) -> None:
        key = (ack.task_id, ack.attempt)
        st = self.outbox.get(key)
        if st is not None and st.state == ack.state:
            del self.outbox[key]
        if ack.state in TERMINAL:
            d = self.dirs.get(ack.task_id)
            if d is not None and d.name == dir_name(ack.task_id, ack.attempt):
                self._write(_mark_acked, d)

    def _running_status(self, h: Handle) -> npb.TaskStatus:
        return npb.TaskStatus(task_id=h.task_id, attempt=h.attempt, state=pb.RUNNING, start_time=_ts(h.start_time))

    def _queue_outcome(self, h: Handle, o: Outcome) -> None:
        st = npb.TaskStatus(
            task_id=h.task_id, attempt=h.attempt, state=o.state, exit_code=o.exit_code, reason=o.reason, finish_time=_ts(o.finish_time)
        )
        if h.start_time:  # 0: it never started (stopped before its instant, or refused)
            st.start_time.CopyFrom(_ts(h.start_time))
        self._set_status(st)

    def _background(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _start_guarded(self, start: npb.StartTask) -> None:
        task = start.task
        try:
            await self._start(task, start.run_as if start.HasField("run_as") else None)
        except Exception as e:  # noqa: BLE001 - one task's failure must not end the stream
            log.exception("starting task %s failed", task.task_id)
            # reported, not left ASSIGNED for ever: the master then applies its retry policy
            # (seen when a nodelet ran where cgroups were not mounted)
            current = self.handles.get(task.task_id)
            directory = self.tasks_dir / dir_name(task.task_id, task.attempt)
            if (current is None or current.attempt < task.attempt) and not self._ended(task, directory):
                driver_name = driver_of(task)
                self._end_unstarted(task, directory, driver_name, pb.FAILED, f"node {self.node_id} could not start it: {e}")
        finally:
            self._starting.pop(task.task_id, None)

    async def _start(self, task: pb.TaskExecution, run_as: npb.RunAs | None) -> None:
        """Start a task, at its due time if that is still ahead: the master sends tasks a
        little early (its look-ahead), the driver prepares everything it can, and the
        nodelet's own timer launches it on the instant."""
        current = self.handles.get(task.task_id)
        if current is not None and current.attempt >= task.attempt:
            return  # already running this attempt (a resent start)
        directory = self.tasks_dir / dir_name(task.task_id, task.attempt)
        if self._ended(task, directory):
            return  # started before; its status is in the outbox
        driver_name = driver_of(task)
        driver = self.drivers.get(driver_name)
        self.dirs[task.task_id] = directory
        if run_as is None or run_as.refused:
            why = run_as.refused if run_as is not None else "the master sent no run-as uid (an older master?); not started"
            self._end_unstarted(task, directory, driver_name, pb.FAILED, why)
            return
        # drivers read the uid the cluster decided from here, never what the submitter wrote
        task.spec.user = str(run_as.uid)
        if driver is None:
            self._end_unstarted(task, directory, driver_name, pb.FAILED, f"driver {driver_name} is not available on node {self.node_id}")
            return
        due = task.due_time.seconds + task.due_time.nanos / 1e9
        ahead = due > time.time()
        if ahead:
            self._waiting[task.task_id] = task.attempt  # a stop from now on means "never start"
        try:
            preparing = driver if ahead and isinstance(driver, PreparingDriver) else None
            queue = self.prepare_queues.setdefault(driver_name, PrepareQueue(8))
            if preparing is not None:
                async with queue.turn(deadline_of(due, time.time())):
                    began = time.monotonic()
                    with metrics.PREPARE.labels(driver_name).time():
                        prepared = await preparing.prepare(task, directory)
                    if driver_name == "process":
                        self.prepare_stats.add(time.monotonic() - began)
            else:
                prepared = None
            try:
                await self._until(task.task_id, due, functools.partial(preparing.release, prepared) if preparing is not None else None)
            except asyncio.CancelledError:
                if preparing is not None:
                    await preparing.abandon(prepared)
                raise
            with metrics.LAUNCH.labels(driver_name).time():
                if preparing is not None:
                    handle = await preparing.launch(prepared)
                else:
                    async with queue.turn(deadline_of(due, time.time())):
                        began = time.monotonic()
                        handle = await driver.start(task, directory)
                        if driver_name == "process":
                            self.prepare_stats.add(time.monotonic() - began)
            if handle.start_time:
                metrics.LATENESS.labels(driver_name).observe(max(0.0, handle.start_time - due))
        except asyncio.CancelledError:
            stop = self._stopped_early.pop(task.task_id, None)
            if stop is None:
                raise
            self._end_unstarted(task, directory, driver_name, stop.state or pb.STOPPED, stop.reason or "stopped before it started")
            return
        except DriverError as e:
            self._end_unstarted(task, directory, driver_name, pb.FAILED, str(e))
            return
        finally:
            self._waiting.pop(task.task_id, None)
        self.handles[task.task_id] = handle
        self._set_status(self._running_status(handle))
        self._monitor(handle)

    async def _until(self, task_id: str, due: float, release: Callable[[], None] | None) -> None:
        """Wait for the wall-clock instant `due` (never before it); `release` runs at the
        instant together with the other tasks due then (see release.py)."""
        if task_id in self._stopped_early:
            raise asyncio.CancelledError  # stopped while it was being prepared
        if due <= time.time():
            if release is not None:
                release()
            return
        fut = self.release_timer.at(due, release)
        self._release_futs[task_id] = fut
        try:
            await fut
        finally:
            self._release_futs.pop(task_id, None)

    def _end_unstarted(self, task: pb.TaskExecution, directory: Path, driver_name: str, state: int, reason: str) -> None:
        h = Handle(task.task_id, task.attempt, driver_name, str(directory), 0.0)
        self._write(_save_handle, h)
        self._finish(h, Outcome(state, -1, reason, time.time()))

    def _monitor(self, handle: Handle) -> None:
        t = asyncio.create_task(self._watch(handle))
        self._monitors[handle.key] = t
        t.add_done_callback(lambda _: self._monitors.pop(handle.key, None))

    async def _watch(self, handle: Handle) -> None:
        driver = self.drivers[handle.driver]
        timer: asyncio.TimerHandle | None = None
        if handle.deadline:
            delay = max(0.0, handle.deadline - time.time())
            timer = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.create_task(self._kill(handle, pb.TIMED_OUT, "past its timeout", TIMEOUT_GRACE))
            )
        try:
            outcome = await driver.wait(handle)
        finally:
            if timer:
                timer.cancel()
        self._finish(handle, outcome)

    def _finish(self, handle: Handle, outcome: Outcome) -> None:
        self._write(outcome.save, Path(handle.dir))
        metrics.outcome(handle.driver, outcome.state)
        if self.handles.get(handle.task_id) is handle:
            del self.handles[handle.task_id]
        self._last_cpu.pop(handle.key, None)
        self._queue_outcome(handle, outcome)
        log.info("task %s attempt %d ended: %s %s", handle.task_id, handle.attempt, pb.TaskState.Name(outcome.state), outcome.reason)

    async def _stop(self, stop: npb.StopTask) -> None:
        starting = self._starting.get(stop.task_id)
        if starting is not None and self._waiting.get(stop.task_id) == stop.attempt:
            fut = self._release_futs.get(stop.task_id)
            if fut is None or not fut.done():
                # stopped before its instant: it never starts
                self._stopped_early[stop.task_id] = stop
                if fut is not None:
                    fut.cancel()
                return
        if starting is not None:
            await asyncio.shield(starting)
        h = self.handles.get(stop.task_id)
        if h is None or h.attempt != stop.attempt:
            return
        grace = stop.grace_period.seconds + stop.grace_period.nanos / 1e9
        state = pb.STOPPED if stop.state in (0, pb.SKIPPED) else stop.state  # it started: never SKIPPED
        await self._kill(h, state, stop.reason or "stopped", grace)

    async def _kill(self, h: Handle, state: int, reason: str, grace: float) -> None:
        if h.stop_state:
            return
        h.stop_state = state
        h.stop_reason = reason
        self._write(h.save)
        driver = self.drivers[h.driver]
        await driver.signal_stop(h)
        watcher = self._monitors.get(h.key)
        if grace > 0 and watcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), grace)
        if self.handles.get(h.task_id) is h:
            await driver.kill(h)

    def read_logs(self, req: npb.ReadLogs) -> npb.LogData:
        d = self.dirs.get(req.task_id)
        if d is None:
            return npb.LogData(request_id=req.request_id, error=f"no logs for task {req.task_id} on node {self.node_id}")
        try:
            with open(d / "output.log", "rb") as f:
                f.seek(req.offset)
                data = f.read(max(1, min(req.max_bytes, 1 << 20)))
        except FileNotFoundError:
            data = b""
        marks = logtimes.read(d / "output.log", req.offset, req.offset + len(data)) if data else []
        return npb.LogData(request_id=req.request_id, data=data, offset=req.offset,
                           mark_offsets=[m[0] for m in marks], mark_times=[m[1] for m in marks])


def _mark_acked(d: Path) -> None:
    """The master committed the outcome: a rename, not a new file (every file made per task
    is an inode the file system must find; on an aged ext4 that cost milliseconds)."""
    with contextlib.suppress(OSError):
        (d / "outcome.json").replace(d / "outcome.acked")


def _save_handle(h: Handle) -> None:
    Path(h.dir).mkdir(parents=True, exist_ok=True)
    h.save()
