"""The nodelet's session with the masters: registers with the leader, holds one stream,
heartbeats, keeps the node lease from the leader's acknowledgements, and hands the
master's commands to the task runner (runner.py), whose statuses it sends back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

from corral import __version__, channels
from corral.batching import Drainer, LeaseFirstQueue, nodelet_batch, unbatch
from corral.tls import TlsFiles
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import nodelet_pb2_grpc
from corral.v1 import types_pb2 as pb

from . import metrics
from .driver import Driver
from .runner import TaskRunner

log = logging.getLogger("corral.nodelet")

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


class MasterSilent(Exception):
    """The stream must be dropped and opened again: the master stopped answering heartbeats
    (dead, paused or cut off), or what this node offers changed."""


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
        self.runner = TaskRunner(node_id, data_dir, drivers)
        self.heartbeat_interval = 1.0
        self.connected = asyncio.Event()
        self._last_heard = time.monotonic()
        self._registered_once = False
        self.last_heartbeat = npb.Heartbeat()  # the last one sent (for /metrics)
        self._offered: list[str] = []
        self._bg: set[asyncio.Task[None]] = set()
        # usage figures and driver fingerprints for the heartbeats, off the shared pool
        self._side = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="nodelet-beat")
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
        self.runner.set_cluster(self.cluster_id)

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        # the nodelet's alone: tasks see it as an empty folder (spawner.py), and a task
        # granted root is the only one that could reach it anyway
        self.data_dir.chmod(0o700)
        self.tasks_dir.chmod(0o700)
        await self.runner.recover_all()
        await asyncio.to_thread(self.runner.remove_orphan_containers)
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
                self.runner.send = _nowhere
                if self._registered_once:
                    metrics.RECONNECTS.inc()  # a registered stream ended; the loop opens another
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

    def metrics_collector(self) -> metrics.NodeCollector:
        return metrics.NodeCollector(lambda: self.last_heartbeat, self.connected.is_set, self._capacity())

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
        reg.tasks.extend(self.runner.known_statuses())
        return npb.NodeletMessage(register=reg)

    async def _session(self, addr: str) -> None:
        """One stream to one master, until it breaks or the master falls silent."""
        channel = channels.aio_channel(addr, self.tls, [*KEEPALIVE, *channels.OWN_SUBCHANNELS])
        async with channel:
            stub = nodelet_pb2_grpc.NodeletServiceStub(channel)
            queue: asyncio.Queue[npb.NodeletMessage] = LeaseFirstQueue()
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
            self.runner.set_cluster(reg.cluster_id)
            t = asyncio.create_task(asyncio.to_thread(self.runner.remove_orphan_containers))
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)
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
            self.runner.send = queue.put_nowait
            self._registered_once = True
            self.connected.set()
            # statuses that changed after the Register was built; duplicates are harmless
            for st in list(self.runner.outbox.values()):
                queue.put_nowait(npb.NodeletMessage(status=st))
            log.info("registered with %s as %s", addr, self.node_id)
        elif kind == "start":
            if self.lease > 0 and time.monotonic() >= self.lease_file.deadline:
                # read after the node lease ran out (queued while this process was paused,
                # or while no leader acknowledged it): the cluster may have given it to
                # another node, so it must not start here; reported as not started (LOST),
                # so the leader gives it a new attempt — the stream may go on, and nothing
                # else would ever send it again
                log.warning("not starting %s: this node's lease ran out before the start was read", msg.start.task.task_id)
                self.runner.refuse(msg.start, pb.LOST, "not started: its node lease had run out before the start was read")
                return
            self.runner.start(msg.start)
        elif kind == "stop":
            self.runner.stop(msg.stop)
        elif kind == "ack":
            self.runner.ack(msg.ack)
        elif kind == "heartbeat_ack":
            sent = self._beats_sent.get(msg.heartbeat_ack.seq)
            if sent is not None and self.lease > 0:
                for seq in [q for q in self._beats_sent if q <= msg.heartbeat_ack.seq]:
                    del self._beats_sent[seq]
                self.lease_file.renew(sent + self.lease, self.kill_grace)
        elif kind == "read_logs":
            await queue.put(npb.NodeletMessage(log_data=await asyncio.to_thread(self.runner.read_logs, msg.read_logs)))

    async def _heartbeats(self, queue: asyncio.Queue[npb.NodeletMessage]) -> None:
        """Beat once registered; end (raising MasterSilent) when the master stops answering.

        A beat renews the node lease, so nothing slow stands between the interval and the
        send: the usage figures (cgroup files of every task, which wait on a kernel lock
        while the node is busy) and the driver fingerprint (a Docker ping) are gathered on
        threads of their own, never the shared pool that task starts fill, and each beat
        carries the latest figures gathered so far."""
        psutil.cpu_percent(None)
        loop = asyncio.get_running_loop()
        next_fingerprint = time.monotonic() + FINGERPRINT_EVERY
        fingerprint: asyncio.Future[tuple[list[str], dict[str, str]]] | None = None
        usage: asyncio.Future[npb.Heartbeat] | None = None
        latest = npb.Heartbeat()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if fingerprint is None and time.monotonic() >= next_fingerprint:
                next_fingerprint = time.monotonic() + FINGERPRINT_EVERY
                fingerprint = loop.run_in_executor(self._side, self._fingerprint)
            if fingerprint is not None and fingerprint.done():
                drivers, _ = fingerprint.result()
                fingerprint = None
                if drivers != self._offered:
                    raise MasterSilent(f"drivers changed from {self._offered} to {drivers}; registering again")
            silent = time.monotonic() - self._last_heard
            if silent > max(3.0, MASTER_SILENCE_BEATS * self.heartbeat_interval):
                raise MasterSilent(f"master silent for {silent:.1f}s")
            if not self.connected.is_set():
                continue
            if usage is not None and usage.done():
                try:
                    latest = usage.result()
                except Exception:  # noqa: BLE001 - figures are advisory; the beat goes on
                    log.exception("gathering the node's usage failed")
                usage = None
            if usage is None:
                usage = loop.run_in_executor(self._side, self._heartbeat)
            hb = npb.Heartbeat()
            hb.CopyFrom(latest)
            self.runner.prepare_figures(hb)
            self.last_heartbeat = hb
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
        self.runner.task_usage(hb)
        return hb


def _nowhere(msg: npb.NodeletMessage) -> None:
    """Where the runner's statuses go while no stream is registered: they wait in its
    outbox and go with the next registration."""


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
