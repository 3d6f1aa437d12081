"""Simulated nodelets: thousands of protocol-faithful nodelets in a few processes.

Each one holds a real gRPC stream to the master (NodeletService.Connect with the bearer
token), registers with a capacity, heartbeats at the interval the master asks for, answers
every StartTask with RUNNING and then SUCCEEDED after `--task-seconds`, answers StopTask,
and drops what the master acknowledges. Execution is simulated: no processes, no cgroups.
So the master's stream handling, liveness and scheduling can be measured at cluster scale
on one machine.

As a script: `python bench/sim_nodelets.py --master ADDR --token T --nodes 1000` runs until
interrupted. bench/throughput.py starts it as child processes (`start_fleet`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
import time
from multiprocessing.process import BaseProcess

import grpc

from corral.batching import Drainer, nodelet_batch, unbatch
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import nodelet_pb2_grpc
from corral.v1 import types_pb2 as pb

STREAMS_PER_CHANNEL = 100  # HTTP/2 streams per connection
TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.STOPPED, pb.LOST, pb.TIMED_OUT, pb.OOM_KILLED, pb.SKIPPED}


def _now_ts() -> object:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.GetCurrentTime()
    return t


class SimNodelet:
    def __init__(self, node_id: str, channel: grpc.aio.Channel, token: str, task_seconds: float) -> None:
        self.node_id = node_id
        self.channel = channel
        self.token = token
        self.task_seconds = task_seconds
        self.queue: asyncio.Queue[npb.NodeletMessage] = asyncio.Queue()
        self.interval = 1.0
        self.running: dict[str, int] = {}
        self.started = 0

    def _register(self) -> npb.NodeletMessage:
        return npb.NodeletMessage(register=npb.Register(
            node_id=self.node_id, address="sim", drivers=["process"], version="sim",
            capacity=pb.Resources(cpu=16_000, memory=64 << 30, pids=1 << 20), labels={"sim": "1"}, batches=True,
        ))

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except (grpc.aio.AioRpcError, ConnectionError):
                await asyncio.sleep(0.5)

    async def _session(self) -> None:
        stub = nodelet_pb2_grpc.NodeletServiceStub(self.channel)
        self.queue = asyncio.Queue()
        await self.queue.put(self._register())

        call = stub.Connect(metadata=(("authorization", f"Bearer {self.token}"),))
        beats = asyncio.create_task(self._beats())
        writer = asyncio.create_task(self._write(call))
        writer.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is the reader's too
        try:
            async for msg in call:
                for m in unbatch(msg):
                    self._on_message(m)  # type: ignore[arg-type]
        finally:
            beats.cancel()
            writer.cancel()
            call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        drainer = Drainer(self.queue, nodelet_batch)  # as the real nodelet does
        while True:
            await call.write(await drainer.next())

    def _on_message(self, msg: npb.MasterMessage) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "registered":
            hb = msg.registered.heartbeat_interval
            self.interval = max(0.05, hb.seconds + hb.nanos / 1e9)
        elif kind == "start":
            t = msg.start.task
            if t.task_id not in self.running:
                self.running[t.task_id] = t.attempt
                self.started += 1
                self._status(t.task_id, t.attempt, pb.RUNNING)
                asyncio.get_running_loop().call_later(self.task_seconds, self._finish, t.task_id, t.attempt, pb.SUCCEEDED)
        elif kind == "stop":
            self._finish(msg.stop.task_id, msg.stop.attempt, msg.stop.state or pb.STOPPED)

    def _status(self, task_id: str, attempt: int, state: int) -> None:
        st = npb.TaskStatus(task_id=task_id, attempt=attempt, state=state)
        if state == pb.RUNNING:
            st.start_time.CopyFrom(_now_ts())
        else:
            st.finish_time.CopyFrom(_now_ts())
        self.queue.put_nowait(npb.NodeletMessage(status=st))

    def _finish(self, task_id: str, attempt: int, state: int) -> None:
        if self.running.get(task_id) == attempt:
            del self.running[task_id]
            self._status(task_id, attempt, state)

    async def _beats(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.queue.put_nowait(npb.NodeletMessage(heartbeat=npb.Heartbeat(used=pb.Resources(cpu=100, memory=1 << 30))))


async def run_fleet(master: str, token: str, prefix: str, first: int, count: int, task_seconds: float) -> None:
    channels = [grpc.aio.insecure_channel(master) for _ in range((count + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)]
    sims = [SimNodelet(f"{prefix}-{first + i:05d}", channels[i // STREAMS_PER_CHANNEL], token, task_seconds) for i in range(count)]
    tasks = []
    for i, s in enumerate(sims):
        tasks.append(asyncio.create_task(s.run()))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # register in waves, as a fleet coming up would
    await asyncio.gather(*tasks)


# The simulated fleet stands in for other machines: on this one it runs at a lower CPU
# priority, so it cannot starve the etcd and master it measures (with 5,000 nodes at normal
# priority, etcd answered the leader's lease refreshes too late and leadership flapped).
FLEET_NICE = 10


def _fleet_main(master: str, token: str, prefix: str, first: int, count: int, task_seconds: float) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.nice(FLEET_NICE)
    asyncio.run(run_fleet(master, token, prefix, first, count, task_seconds))


def start_fleet(master: str, token: str, nodes: int, *, procs: int = 4, prefix: str = "sim", task_seconds: float = 0.0) -> list[BaseProcess]:
    """Start `nodes` simulated nodelets in `procs` child processes; stop them with .terminate()."""
    ctx = mp.get_context("spawn")
    per = (nodes + procs - 1) // procs
    out: list[BaseProcess] = []
    for p in range(procs):
        count = min(per, nodes - p * per)
        if count <= 0:
            break
        proc = ctx.Process(target=_fleet_main, args=(master, token, prefix, p * per, count, task_seconds), daemon=True)
        proc.start()
        out.append(proc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--master", required=True, help="master address host:port")
    ap.add_argument("--token", default=os.environ.get("CORRAL_TOKEN", ""), help="bearer token (env CORRAL_TOKEN)")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--task-seconds", type=float, default=0.0, help="how long a simulated task runs")
    ap.add_argument("--prefix", default="sim")
    args = ap.parse_args()
    fleet = start_fleet(args.master, args.token, args.nodes, procs=args.procs, prefix=args.prefix, task_seconds=args.task_seconds)
    print(f"{args.nodes} simulated nodelets in {len(fleet)} processes; Ctrl-C stops them", file=sys.stderr)
    try:
        while all(p.is_alive() for p in fleet):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    for p in fleet:
        p.terminate()
        p.join(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
