"""Batched nodelet streams: what queued up behind a busy stream goes as one MasterBatch or
NodeletBatch, handled in order as if each message had come alone; a task's RUNNING and its
outcome in one batch commit together. Spoken over a raw stream, as a nodelet would."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from corral.v1 import api_pb2
from corral.v1 import nodelet_pb2 as npb
from corral.v1 import types_pb2 as pb

from harness import TOKEN, Cluster, wait_for

pytestmark = pytest.mark.integration

TASKS = 200


class RawNodelet:
    """A nodelet stream driven by the test: messages out through a queue, everything the
    master sends collected by a reader thread."""

    def __init__(self, addr: str, node_id: str, *, batches: bool) -> None:
        self.channel = grpc.insecure_channel(addr)
        connect = self.channel.stream_stream(
            "/corral.v1.NodeletService/Connect",
            request_serializer=npb.NodeletMessage.SerializeToString, response_deserializer=npb.MasterMessage.FromString,
        )
        self.out: queue.Queue[npb.NodeletMessage | None] = queue.Queue()
        self.out.put(npb.NodeletMessage(register=npb.Register(
            node_id=node_id, address="127.0.0.1:1", capacity=pb.Resources(cpu=1_000_000, memory=1 << 40, pids=1 << 20),
            drivers=["process"], batches=batches)))
        self.received: list[npb.MasterMessage] = []
        self._lock = threading.Lock()
        self.stream = connect(iter(self.out.get, None), metadata=(("authorization", f"Bearer {TOKEN}"),))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for msg in self.stream:
                with self._lock:
                    self.received.append(msg)
        except grpc.RpcError:
            pass

    def messages(self) -> Iterator[npb.MasterMessage]:
        """Every message received, batches unpacked, in order."""
        with self._lock:
            got = list(self.received)
        for m in got:
            yield from (m.batch.messages if m.WhichOneof("msg") == "batch" else (m,))

    def of_kind(self, kind: str) -> list[npb.MasterMessage]:
        return [m for m in self.messages() if m.WhichOneof("msg") == kind]

    def close(self) -> None:
        self.out.put(None)
        self.stream.cancel()
        self.channel.close()


@pytest.mark.parametrize("batches", [True, False], ids=["batches", "single-messages"])
def test_batched_streams_start_and_finish_every_task(cluster: Cluster, batches: bool) -> None:
    cluster.start_master()
    c = cluster.client()
    # a raw stream does not retry as a nodelet does: open it once the master leads
    wait_for(lambda: c.cluster_status().leader.address, 20, what="a leader")  # type: ignore[attr-defined]
    node_id = cluster.node_id("raw")
    raw = RawNodelet(cluster.addr, node_id, batches=batches)
    try:
        wait_for(lambda: raw.of_kind("registered"), 20, what="registered")
        cluster.wait_node_ready(node_id)
        spec = pb.TaskTemplate(run_script="sim", cpu_request=10, mem_request=8 << 20)
        reply = c.submit_tasks(tasks=[api_pb2.SubmitTaskRequest(spec=spec) for _ in range(TASKS)])
        ids = {r.task_id for r in reply.results if r.code == 0}
        assert len(ids) == TASKS, reply.results[0]
        wait_for(lambda: {m.start.task.task_id for m in raw.of_kind("start")} >= ids, 30, what="every StartTask")
        sent_as_batch = [m for m in raw.received if m.WhichOneof("msg") == "batch"]
        if batches:
            # the assignments committed together, so their starts queued up together
            assert sent_as_batch and max(len(m.batch.messages) for m in sent_as_batch) > 1
            assert all(m.WhichOneof("msg") != "batch" for b in sent_as_batch for m in b.batch.messages), "never nested"
        else:
            assert not sent_as_batch, "a nodelet that did not ask for batches got one"

        now = time.time()
        statuses = []
        for i, task_id in enumerate(sorted(ids)):
            running = npb.TaskStatus(task_id=task_id, attempt=1, state=pb.RUNNING)
            running.start_time.FromNanoseconds(int((now + i) * 1e9))
            done = npb.TaskStatus(task_id=task_id, attempt=1, state=pb.SUCCEEDED if i % 2 else pb.FAILED, exit_code=0 if i % 2 else 3)
            done.finish_time.FromNanoseconds(int((now + i + 0.5) * 1e9))
            statuses += [running, done]
        # both reports of every task in one batch (or, without batches, one message each)
        if batches:
            half = len(statuses) // 2
            for chunk in (statuses[:half], statuses[half:]):
                raw.out.put(npb.NodeletMessage(batch=npb.NodeletBatch(messages=[npb.NodeletMessage(status=s) for s in chunk])))
        else:
            for s in statuses:
                raw.out.put(npb.NodeletMessage(status=s))

        def acked() -> bool:
            return {(a.ack.task_id, a.ack.state) for a in raw.of_kind("ack")} >= {(s.task_id, s.state) for s in statuses}

        wait_for(acked, 30, what="an ack for every status")
        for i, task_id in enumerate(sorted(ids)):
            t = c.get_task(task_id=task_id)
            assert t.state == (pb.SUCCEEDED if i % 2 else pb.FAILED), (task_id, t.state)
            assert t.exit_code == (0 if i % 2 else 3)
            assert t.node_id == node_id and t.attempt == 1
            # the RUNNING report's start time survived its outcome committing in the same write
            assert abs(t.start_time.ToNanoseconds() / 1e9 - (now + i)) < 1e-3
            assert abs(t.finish_time.ToNanoseconds() / 1e9 - (now + i + 0.5)) < 1e-3
    finally:
        raw.close()


def test_heartbeats_and_their_acks_go_before_a_backlog() -> None:
    """A stream with thousands of starts queued: the heartbeat ack queued last is written
    first (its round trip must stay within the node lease); the rest keep their order."""
    from corral.batching import LeaseFirstQueue

    async def run() -> list[str]:
        q: asyncio.Queue[npb.MasterMessage] = LeaseFirstQueue()
        for i in range(3000):
            q.put_nowait(npb.MasterMessage(start=npb.StartTask(task=pb.TaskExecution(task_id=f"t{i}"))))
        q.put_nowait(npb.MasterMessage(heartbeat_ack=npb.HeartbeatAck(seq=7)))
        got = [await q.get() for _ in range(q.qsize())]
        return [m.WhichOneof("msg") + (":" + m.start.task.task_id if m.HasField("start") else "") for m in got]

    order = asyncio.run(run())
    assert order[0] == "heartbeat_ack"
    assert order[1:] == [f"start:t{i}" for i in range(3000)]
