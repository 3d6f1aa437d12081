"""No record can stop the control plane: a schedule that never fires is refused, and
records the API would never write (written straight into etcd: a never-firing schedule, a
schedule croniter rejects, undecodable bytes under every key prefix) leave the masters
serving and the other templates firing — also across a master restart. Evidence: a
healthy per-second template's marker file (one line per executed instant) and a one-off
task's marker, besides the API's answers."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import grpc
import pytest

from corral.master import keys, records
from corral.master.store import EtcdStore
from corral.v1 import types_pb2 as pb

from harness import Cluster, wait_for

pytestmark = pytest.mark.integration

GARBAGE = b"\xff\xfe\x00 not a protobuf \x80\x81"


def test_a_schedule_that_never_fires_is_refused_naming_the_field(cluster: Cluster) -> None:
    cluster.start_master()
    c = cluster.client()
    for expr in ("0 0 30 2 *", "0 0 31 4 *", "0 0 31 11 * 0"):
        with pytest.raises(Exception) as err:
            c.create_template(template=pb.TaskTemplate(name="never", run_script="true", cron_schedule=expr))
        assert getattr(err.value, "code", None) == grpc.StatusCode.INVALID_ARGUMENT or "INVALID_ARGUMENT" in repr(err.value), err.value
        assert "cron_schedule" in str(err.value) and "never fires" in str(err.value)
    leap = c.create_template(template=pb.TaskTemplate(name="leap", run_script="true", cron_schedule="0 0 29 2 *"))
    assert leap.next_fires and all(time.gmtime(ts.seconds)[1:3] == (2, 29) for ts in leap.next_fires)
    with pytest.raises(Exception) as err:
        c.update_template(template=pb.TaskTemplate(template_id=leap.template_id, run_script="true", cron_schedule="0 0 30 2 *"))
    assert "cron_schedule" in str(err.value)
    assert c.cluster_status().leader.address  # the master is alive and leads


def _write_raw(cluster: Cluster, puts: dict[str, bytes]) -> None:
    async def main() -> None:
        store = EtcdStore(cluster.etcd, prefix=cluster.prefix)
        await store.connect()
        try:
            for k, v in puts.items():
                await store.put(k, v)
        finally:
            await store.close()

    asyncio.run(main())


def _instants(path: Path) -> collections.Counter[int]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(int(line.split()[0]) for line in path.read_text().splitlines() if line.strip())


def test_bad_records_in_etcd_leave_the_masters_serving(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()
    cluster.start_nodelet("a")
    c = cluster.client()
    ticks = tmp_path / "ticks"
    good = c.create_template(template=pb.TaskTemplate(
        name="good", cron_schedule="* * * * * *", user="root",
        run_script=f'echo "$(date -d "$CORRAL_SCHEDULED_TIME" +%s)" >> {ticks}'))
    wait_for(lambda: len(_instants(ticks)) >= 2, 20, what="the good template firing")

    now = records.ts(time.time())
    never = pb.TaskTemplate(template_id="bad-never", name="bad-never", owner="admin", run_script="true",
                            cron_schedule="0 0 30 2 *", create_time=now, update_time=now)
    nonsense = pb.TaskTemplate(template_id="bad-nonsense", name="bad-nonsense", owner="admin", run_script="true",
                               cron_schedule="every tuesday", create_time=now, update_time=now)
    # decodable, but nothing the API would accept: they must not stall the scheduler's passes
    odd_specs = [
        pb.TaskTemplate(run_script="true", cpu_request=-5, mem_request=-1),
        pb.TaskTemplate(run_script="true", cpu_request=10**15, mem_request=1 << 62),
        pb.TaskTemplate(run_script="true", driver=99),
        pb.TaskTemplate(run_script="true", constraints=[pb.Constraint(key="", op="??", values=["x"])]),
        pb.TaskTemplate(run_script="true", gang="g", gang_size=0),
        pb.TaskTemplate(run_script="true", priority=-1000, placement="sideways"),
    ]
    odd = {keys.task(f"odd-{i}"): pb.TaskExecution(task_id=f"odd-{i}", user_id="admin", state=pb.PENDING, attempt=1,
                                                     submit_time=now, due_time=now, spec=spec).SerializeToString()
           for i, spec in enumerate(odd_specs)}
    odd[keys.task("odd-ghost")] = pb.TaskExecution(task_id="odd-ghost", user_id="admin", state=pb.ASSIGNED, attempt=1,
                                                   node_id="ghost", submit_time=now, due_time=now,
                                                   spec=pb.TaskTemplate(run_script="true")).SerializeToString()
    _write_raw(cluster, odd)
    _write_raw(cluster, {  # in this order: bad-never's cron state is unreadable before the loop sees it
        keys.CRON + "bad-never": GARBAGE,
        keys.template(never.template_id): never.SerializeToString(),
        keys.template(nonsense.template_id): nonsense.SerializeToString(),
        keys.template("bad-bytes"): GARBAGE,
        keys.CRON + good.template_id + "-x": GARBAGE,
        keys.task("bad-bytes"): GARBAGE,
        keys.node("bad-bytes"): GARBAGE,
        keys.user("bad-bytes"): GARBAGE,
        keys.token("bad-bytes"): GARBAGE,
        keys.idempotency("admin", "bad-bytes"): GARBAGE,
        keys.MEMBERS + "bad-bytes": GARBAGE,
        keys.REQUESTS + "bad-bytes": GARBAGE,
        keys.AUDIT + "bad-bytes": GARBAGE,
        keys.template_name("bad-bytes"): GARBAGE,
    })

    def serving(phase: str) -> None:
        before = len(_instants(ticks))
        out = tmp_path / f"one-off-{len(phase)}"
        t = c.submit_task(spec=pb.TaskTemplate(run_script=f"echo ran > {out}", user="root"))
        done = c.wait_task(t.task_id, timeout=30)
        assert done.state == pb.SUCCEEDED and out.read_text() == "ran\n", f"{phase}: a one-off task runs"
        assert c.list_tasks(page_size=10).tasks, f"{phase}: tasks list"
        names = {x.name for x in c.list_templates().templates}
        assert {"good", "bad-never", "bad-nonsense"} <= names, f"{phase}: templates list: {names}"
        assert c.get_node(node_id=cluster.node_id("a")).state == pb.READY
        wait_for(lambda: len(_instants(ticks)) >= before + 3, 20, what=f"{phase}: the good template still firing")

    serving("after the bad records")
    sideways = wait_for(lambda: (x := c.get_task(task_id="odd-5")).state == pb.FAILED and x, 10, what="the unplaceable task ended")
    assert "cannot place" in sideways.reason, sideways.reason
    for name in ("bad-never", "bad-nonsense"):  # an unreadable cron state; a schedule croniter rejects
        got = wait_for(lambda n=name: (x := c.get_template(template_id=n)).suspended and x, 20, what=f"{name} suspended")
        assert "could not handle" in got.suspend_reason, got.suspend_reason

    master = cluster.masters[-1]
    master.stop(timeout=10)
    cluster.start_master()
    wait_for(lambda: c.cluster_status().leader.address, 30, what="a leader after the restart")
    serving("after a master restart")
    assert cluster.masters[-1].alive()

    c.pause_template(template_id="good")
    time.sleep(1.5)
    counts = _instants(ticks)
    twice = [i for i, n in counts.items() if n > 1]
    assert not twice, f"instants executed twice: {twice}"
