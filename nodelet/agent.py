"""The nodelet agent: registers with the master, holds one stream, heartbeats, runs tasks
through drivers, reports their status until acknowledged, and re-adopts what it finds on
disk after a restart.

Task directories live under `<data_dir>/tasks/<task>-<attempt>/` with `handle.json` (how to
re-attach), `output.log`, `exit`, `outcome.json` once ended, and `acked` once the master
has committed the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf.timestamp_pb2 import Timestamp

from corral import __version__
from corral.batching import Drainer, nodelet_batch, unbatch
from corral.tls import TlsFiles
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import nodelet_pb2_grpc
from corral.v1 import types_pb2 as pb

from .driver import Driver, DriverError, Handle, Outcome, PreparingDriver
from .release import ReleaseTimer

log = logging.getLogger("corral.nodelet")

TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.OOM_KILLED, pb.TIMED_OUT, pb.STOPPED, pb.LOST, pb.PREEMPTED, pb.SKIPPED}
TIMEOUT_GRACE = 5.0
MAX_BACKOFF = 1.0  # seconds; short, so a nodelet finds a newly elected leader soon
FINGERPRINT_EVERY = 10.0  # seconds between driver health checks
# HTTP/2 pings on the stream: a dead master or a cut link ends the call within ~5 s even
# when nothing is being written (the master pings its end as well)
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
MASTER_SILENCE_BEATS = 5  # heartbeat intervals without a word from the master before the nodelet drops the stream (the master answers at least every second beat)


def _ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


class MasterSilent(Exception):
    """The stream must be dropped and opened again: the master stopped answering heartbeats
    (dead, paused or cut off), or what this node offers changed."""


def _dir_name(task_id: str, attempt: int) -> str:
    return f"{task_id.replace('/', '_')}-{attempt}"


class Nodelet:
    def __init__(
        self,
        node_id: str,
        masters: list[str],
        token: str,
        data_dir: Path,
        drivers: dict[str, Driver],
        *,
        cpus: float | None = None,
        memory: int | None = None,
        labels: dict[str, str] | None = None,
        address: str = "",
        tls: TlsFiles | None = None,
    ) -> None:
        self.tls = tls
        self.node_id = node_id
        self.masters = masters
        self.token = token
        self.data_dir = data_dir
        self.tasks_dir = data_dir / "tasks"
        self.drivers = drivers
        self.cpus = cpus
        self.memory = memory
        self.labels = labels or {}
        self.address = address
        self.handles: dict[str, Handle] = {}          # task_id → current attempt's handle
        self.dirs: dict[str, Path] = {}               # task_id → latest directory (for logs)
        self.outbox: dict[tuple[str, int], npb.TaskStatus] = {}
        self.heartbeat_interval = 1.0
        self._queue: asyncio.Queue[npb.NodeletMessage] | None = None
        self._monitors: dict[str, asyncio.Task[None]] = {}  # handle key → its watcher
        self.connected = asyncio.Event()
        self._last_cpu: dict[str, tuple[float, int]] = {}
        self._last_heard = time.monotonic()
        self._registered_once = False
        self._offered: list[str] = []
        self._starting: dict[str, asyncio.Task[None]] = {}
        self.release_timer = ReleaseTimer()
        self._release_futs: dict[str, asyncio.Future[None]] = {}
        self._waiting: dict[str, int] = {}  # task → attempt, sleeping until its due time
        self._stopped_early: dict[str, npb.StopTask] = {}
        self._bg: set[asyncio.Task[None]] = set()
        # the node lease (see Registered.lease): heartbeats by number with their send times,
        # and the file through which every task's wrapper learns the current deadline
        self.lease = 0.0
        self.kill_grace = 0.0
        self._beat_seq = 0
        self._beats_sent: dict[int, float] = {}
        self._register_sent = 0.0
        self.lease_file = LeaseFile(data_dir / "lease")
        # the cluster this node serves (Registered.cluster_id), kept across restarts: its
        # tasks' cgroups and containers carry it, and only those are this node's to clean up
        try:
            self.cluster_id = (data_dir / "cluster_id").read_text().strip()
        except OSError:
            self.cluster_id = ""
        for d in drivers.values():
            d.cluster_id = self.cluster_id

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        # the nodelet's alone: tasks see it as an empty folder (launcher.py), and a task
        # granted root is the only one that could reach it anyway
        self.data_dir.chmod(0o700)
        self.tasks_dir.chmod(0o700)
        await self.recover_all()
        await asyncio.to_thread(self._remove_orphan_containers)
        await self._connect_forever()

    async def _connect_forever(self) -> None:
        """Hold a stream to the leader: try each master in turn, follow redirects, and back
        off (with jitter) only after a whole round of masters has failed."""
        backoff = 0.1
        i = 0
        failed_in_round = 0
        redirect = ""
        while True:
            addr = redirect or self.masters[i % len(self.masters)]
            redirect = ""
            self._registered_once = False
            try:
                await self._session(addr)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                leader = str(dict(e.trailing_metadata() or ()).get("corral-leader", ""))
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION and leader and leader != addr:
                    log.info("%s is not the leader; connecting to %s", addr, leader)
                    redirect = leader
                    continue
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:  # (no leader yet: quietly retry)
                    log.warning("stream to %s ended: %s %s", addr, e.code().name, e.details())
                if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
                    backoff = MAX_BACKOFF
            except Exception as e:  # noqa: BLE001 - keep reconnecting whatever broke
                log.warning("stream to %s failed: %r", addr, e)
            finally:
                self.connected.clear()
                self._queue = None
            i += 1
            if self._registered_once:
                backoff, failed_in_round = 0.1, 0
            failed_in_round += 1
            if failed_in_round < len(self.masters):
                await asyncio.sleep(0.05)  # the next master may be fine
                continue
            failed_in_round = 0
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _remove_orphan_containers(self) -> None:
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
            if (d / "acked").exists():
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

    # ---- the stream -------------------------------------------------------------------------

    def _capacity(self) -> pb.Resources:
        cpus = self.cpus if self.cpus else float(psutil.cpu_count() or 1)
        mem = self.memory if self.memory else psutil.virtual_memory().total
        try:
            pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        except OSError:
            pid_max = 32768
        return pb.Resources(cpu=int(cpus * 1000), memory=int(mem), pids=pid_max)

    def _fingerprint(self) -> tuple[list[str], dict[str, str]]:
        drivers, health = [], {}
        for name, d in self.drivers.items():
            ok, why = d.fingerprint()
            if ok:
                drivers.append(name)
            else:
                health[name] = why
        return drivers, health

    def _register(self, fingerprint: tuple[list[str], dict[str, str]]) -> npb.NodeletMessage:
        drivers, health = fingerprint
        self._offered = drivers
        reg = npb.Register(
            node_id=self.node_id,
            address=self.address,
            capacity=self._capacity(),
            labels=self.labels,
            drivers=drivers,
            driver_health=health,
            version=__version__,
            batches=True,
        )
        known = dict(self.outbox)
        for h in self.handles.values():
            known.setdefault((h.task_id, h.attempt), self._running_status(h))
        reg.tasks.extend(known.values())
        return npb.NodeletMessage(register=reg)

    async def _session(self, addr: str) -> None:
        """One stream to one master, until it breaks or the master falls silent."""
        channel = (grpc.aio.secure_channel(addr, self.tls.channel_credentials(), options=KEEPALIVE) if self.tls
                   else grpc.aio.insecure_channel(addr, options=KEEPALIVE))
        async with channel:
            stub = nodelet_pb2_grpc.NodeletServiceStub(channel)
            queue: asyncio.Queue[npb.NodeletMessage] = asyncio.Queue()
            await queue.put(self._register(await asyncio.to_thread(self._fingerprint)))
            self._register_sent = time.monotonic()

            call = stub.Connect(metadata=(("authorization", f"Bearer {self.token}"),))
            self._last_heard = time.monotonic()
            reader = asyncio.create_task(self._read_stream(call, queue, addr))
            writer = asyncio.create_task(_write_stream(call, queue))
            beats = asyncio.create_task(self._heartbeats(queue))
            try:
                done, _ = await asyncio.wait({reader, writer, beats}, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            finally:
                for t in (reader, writer, beats):
                    t.cancel()
                call.cancel()

    async def _read_stream(self, call: Any, queue: asyncio.Queue[npb.NodeletMessage], addr: str) -> None:
        async for msg in call:
            self._last_heard = time.monotonic()
            for m in unbatch(msg):
                await self._on_message(m, queue, addr)  # type: ignore[arg-type]

    def _on_registered(self, reg: npb.Registered) -> None:
        """A leader with a valid election lease took the node: its answer is the first ack
        of the node lease (counted from when the Register was sent)."""
        if reg.cluster_id and reg.cluster_id != self.cluster_id:
            if self.cluster_id:
                log.warning("this node's data belonged to cluster %s; it now serves cluster %s", self.cluster_id, reg.cluster_id)
            self.cluster_id = reg.cluster_id
            (self.data_dir / "cluster_id").write_text(reg.cluster_id + "\n")
            for d in self.drivers.values():
                d.cluster_id = reg.cluster_id
            self._background(asyncio.to_thread(self._remove_orphan_containers))
        self.lease = reg.lease.ToNanoseconds() / 1e9
        self.kill_grace = reg.kill_grace.ToNanoseconds() / 1e9
        if self.lease > 0:
            self.lease_file.renew(self._register_sent + self.lease, self.kill_grace)

    async def _on_message(self, msg: npb.MasterMessage, queue: asyncio.Queue[npb.NodeletMessage], addr: str) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "registered":
            self._on_registered(msg.registered)
            hb = msg.registered.heartbeat_interval
            self.heartbeat_interval = max(0.05, hb.seconds + hb.nanos / 1e9) or 1.0
            self._queue = queue
            self._registered_once = True
            self.connected.set()
            # statuses that changed after the Register was built; duplicates are harmless
            for st in list(self.outbox.values()):
                queue.put_nowait(npb.NodeletMessage(status=st))
            log.info("registered with %s as %s", addr, self.node_id)
        elif kind == "start":
            if self.lease > 0 and time.monotonic() >= self.lease_file.deadline:
                # read after the node lease ran out (e.g. queued while this process was
                # paused): the cluster may have given it to another node; the leader sends
                # it again when this node registers, if it is still this node's
                log.warning("not starting %s: this node's lease ran out before the start was read", msg.start.task.task_id)
                return
            # starts run side by side (a container start takes a while); a stop that
            # arrives meanwhile waits for its start first (see _stop)
            task_id = msg.start.task.task_id
            if task_id not in self._starting:
                self._starting[task_id] = asyncio.create_task(self._start_guarded(msg.start))
        elif kind == "stop":
            self._background(self._stop(msg.stop))
        elif kind == "ack":
            self._ack(msg.ack)
        elif kind == "heartbeat_ack":
            sent = self._beats_sent.get(msg.heartbeat_ack.seq)
            if sent is not None and self.lease > 0:
                for seq in [q for q in self._beats_sent if q <= msg.heartbeat_ack.seq]:
                    del self._beats_sent[seq]
                self.lease_file.renew(sent + self.lease, self.kill_grace)
        elif kind == "read_logs":
            await queue.put(npb.NodeletMessage(log_data=await asyncio.to_thread(self._read_logs, msg.read_logs)))

    async def _heartbeats(self, queue: asyncio.Queue[npb.NodeletMessage]) -> None:
        """Beat once registered; end (raising MasterSilent) when the master stops answering."""
        psutil.cpu_percent(None)
        next_fingerprint = time.monotonic() + FINGERPRINT_EVERY
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if time.monotonic() >= next_fingerprint:
                next_fingerprint = time.monotonic() + FINGERPRINT_EVERY
                drivers, _ = await asyncio.to_thread(self._fingerprint)
                if drivers != self._offered:
                    raise MasterSilent(f"drivers changed from {self._offered} to {drivers}; registering again")
            silent = time.monotonic() - self._last_heard
            if silent > max(3.0, MASTER_SILENCE_BEATS * self.heartbeat_interval):
                raise MasterSilent(f"master silent for {silent:.1f}s")
            if not self.connected.is_set():
                continue
            hb = await asyncio.to_thread(self._heartbeat)
            self._beat_seq += 1
            hb.seq = self._beat_seq
            self._beats_sent[hb.seq] = time.monotonic()  # before it is sent: the deadline errs early
            while len(self._beats_sent) > 64:
                del self._beats_sent[min(self._beats_sent)]
            await queue.put(npb.NodeletMessage(heartbeat=hb))

    def _heartbeat(self) -> npb.Heartbeat:
        cpu = psutil.cpu_percent(None) / 100 * (psutil.cpu_count() or 1) * 1000
        mem = psutil.virtual_memory()
        hb = npb.Heartbeat(used=pb.Resources(cpu=int(cpu), memory=mem.total - mem.available))
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
        return hb

    def _send(self, msg: npb.NodeletMessage) -> None:
        if self._queue is not None:
            self._queue.put_nowait(msg)

    def _set_status(self, st: npb.TaskStatus) -> None:
        """Remember a status until the master acknowledges it, and send it now if connected."""
        self.outbox[(st.task_id, st.attempt)] = st
        self._send(npb.NodeletMessage(status=st))

    def _ack(self, ack: npb.StatusAck) -> None:
        key = (ack.task_id, ack.attempt)
        st = self.outbox.get(key)
        if st is not None and st.state == ack.state:
            del self.outbox[key]
        if ack.state in TERMINAL:
            d = self.dirs.get(ack.task_id)
            if d is not None and d.name == _dir_name(ack.task_id, ack.attempt):
                with contextlib.suppress(OSError):
                    (d / "acked").touch()

    # ---- tasks ------------------------------------------------------------------------------

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
        except Exception:  # noqa: BLE001 - one task's failure must not end the stream
            log.exception("starting task %s failed", task.task_id)
        finally:
            self._starting.pop(task.task_id, None)

    async def _start(self, task: pb.TaskExecution, run_as: npb.RunAs | None) -> None:
        """Start a task, at its due time if that is still ahead: the master sends tasks a
        little early (its look-ahead), the driver prepares everything it can, and the
        nodelet's own timer launches it on the instant."""
        current = self.handles.get(task.task_id)
        if current is not None and current.attempt >= task.attempt:
            return  # already running this attempt (a resent start)
        directory = self.tasks_dir / _dir_name(task.task_id, task.attempt)
        if directory.exists() and (directory / "handle.json").exists():
            return  # started before; its status is in the outbox
        driver_name = {pb.DOCKER: "docker"}.get(task.spec.driver, "process")
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
            prepared = await preparing.prepare(task, directory) if preparing is not None else None
            try:
                await self._until(task.task_id, due, functools.partial(preparing.release, prepared) if preparing is not None else None)
            except asyncio.CancelledError:
                if preparing is not None:
                    await preparing.abandon(prepared)
                raise
            if preparing is not None:
                handle = await preparing.launch(prepared)
            else:
                handle = await driver.start(task, directory)
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
        directory.mkdir(parents=True, exist_ok=True)
        h = Handle(task.task_id, task.attempt, driver_name, str(directory), 0.0)
        h.save()
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
        outcome.save(Path(handle.dir))
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
        await self._kill(h, stop.state or pb.STOPPED, stop.reason or "stopped", grace)

    async def _kill(self, h: Handle, state: int, reason: str, grace: float) -> None:
        if h.stop_state:
            return
        h.stop_state = state
        h.stop_reason = reason
        h.save()
        driver = self.drivers[h.driver]
        await driver.signal_stop(h)
        watcher = self._monitors.get(h.key)
        if grace > 0 and watcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), grace)
        if self.handles.get(h.task_id) is h:
            await driver.kill(h)

    def _read_logs(self, req: npb.ReadLogs) -> npb.LogData:
        d = self.dirs.get(req.task_id)
        if d is None:
            return npb.LogData(request_id=req.request_id, error=f"no logs for task {req.task_id} on node {self.node_id}")
        try:
            with open(d / "output.log", "rb") as f:
                f.seek(req.offset)
                data = f.read(max(1, min(req.max_bytes, 1 << 20)))
        except FileNotFoundError:
            data = b""
        return npb.LogData(request_id=req.request_id, data=data, offset=req.offset)


async def _write_stream(call: Any, queue: asyncio.Queue[npb.NodeletMessage]) -> None:
    """Send what is queued; what queued up while the stream was busy goes as one batch.
    (Written through call.write, not a request generator: cancelling a stream whose
    generator is waiting raised "aclose(): asynchronous generator is already running".)"""
    drainer = Drainer(queue, nodelet_batch)
    while True:
        await call.write(await drainer.next())


class LeaseFile:
    """The node lease's deadline, where every task's wrapper reads it (spawner.py): the
    monotonic instant after which it kills its task, and the grace before SIGKILL. Written
    in place with the figures twice, so a reader that meets a half-written file sees the two
    differ and keeps its last good reading. Only ever moved later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.deadline = 0.0
        self._fd = -1

    def renew(self, deadline: float, grace: float) -> None:
        if deadline <= self.deadline:
            return
        self.deadline = deadline
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        one = f"{deadline:020.6f} {grace:09.3f}"
        os.pwrite(self._fd, f"{one} {one}\n".encode(), 0)


def default_node_id() -> str:
    return os.uname().nodename
