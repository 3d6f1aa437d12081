"""Hostile input for every public RPC: hypothesis builds request messages from the proto
descriptors (huge, empty, unicode, negative and boundary values, unknown enum numbers,
out-of-range timestamps) and sends them to a real master. No call may end INTERNAL or
UNKNOWN, the master must stay up, and every task it acknowledged must still be there."""

from __future__ import annotations

import os
from typing import Any

import pytest
from google.protobuf import descriptor as _d
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import errors
from corral.client import Client
from corral.client.sdk import RpcMethod, rpc_methods
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

from harness import Cluster

pytestmark = pytest.mark.integration

FD = _d.FieldDescriptor
EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "25"))  # per RPC; raise it for a longer hunt

_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "..", "../../etc/passwd", "a\x00b", "名前", "🦀" * 30, "x" * 150_000, "no-such", "@", "*", "-1",
                     "0 0 * * *", "*/1 * * * * *", "Europe/Berlin", "Mars/Olympus", "root", "host", "bridge", "binpack"]),
)
_int32 = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
_int64 = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 10**12, 2**40]), st.integers(-(2**63), 2**63 - 1))
_uint64 = st.one_of(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
_double = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308]))


def _scalar(f: Any) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FD.TYPE_STRING:
        return _strings
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_ENUM:
        return st.integers(-3, 40)  # unknown numbers too: proto3 enums are open
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return _int32
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return _int64
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return _uint64
    return _double


@st.composite
def messages(draw: st.DrawFn, cls: type[Message], depth: int = 0) -> Message:
    msg = cls()
    for f in cls.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, val_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                k = draw(_scalar(key_f))
                if val_f.message_type is None:
                    getattr(msg, f.name)[k] = draw(_scalar(val_f))
            continue
        if f.message_type is not None:
            if depth >= 2:
                continue
            sub_cls = type(getattr(cls(), f.name).add()) if f.is_repeated else type(getattr(cls(), f.name))
            count = draw(st.integers(0, 3)) if f.is_repeated else 1
            for _ in range(count):
                sub = draw(messages(sub_cls, depth + 1))
                if f.is_repeated:
                    getattr(msg, f.name).add().CopyFrom(sub)
                else:
                    getattr(msg, f.name).CopyFrom(sub)
            continue
        if f.is_repeated:
            getattr(msg, f.name).extend(draw(st.lists(_scalar(f), max_size=3)))
        else:
            setattr(msg, f.name, draw(_scalar(f)))
    return msg


@st.composite
def plausible_submits(draw: st.DrawFn) -> api_pb2.SubmitTaskRequest:
    """A submission that may well be accepted, with hostile text where text is free: the
    accepted ones are what the "nothing lost" check counts."""
    words = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
    spec = pb.TaskTemplate(
        run_script=draw(words.filter(str.strip)) or "true",
        cpu_request=draw(st.integers(0, 4000)), mem_request=draw(st.integers(0, 2**30)),
        priority=draw(st.integers(0, 100)), secret_env=[],
    )
    for k, v in draw(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), words, max_size=3)).items():
        spec.env[k] = v
    for k, v in draw(st.dictionaries(st.text(min_size=1, max_size=20), words, max_size=3)).items():
        spec.labels[k] = v
    return api_pb2.SubmitTaskRequest(spec=spec, name=draw(words), idempotency_key=draw(st.sampled_from(["", "k1", "k2", "ключ"])))


def requests_for(method: RpcMethod) -> st.SearchStrategy[Message]:
    if method.name == "SubmitTask":
        return st.one_of(messages(method.input), plausible_submits())
    if method.name == "SubmitTasks":
        return st.one_of(messages(method.input), st.lists(plausible_submits(), max_size=5).map(lambda r: api_pb2.SubmitTasksRequest(tasks=r)))
    return messages(method.input)


BAD = {"INTERNAL", "UNKNOWN", "DATA_LOSS"}


@pytest.fixture(scope="module")
def fuzz_cluster(etcd: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    c = Cluster(etcd, tmp_path_factory.mktemp("fuzz"), "fuzz")
    try:
        c.start_master()
        yield c
    finally:
        c.stop()


def _call(c: Client, m: RpcMethod, req: Message) -> tuple[str, Any]:
    try:
        result = c.call(m, req, timeout=2)
        if m.server_streaming:
            items = []
            for item in result:
                items.append(item)
                if len(items) >= 3:
                    result.cancel()
                    break
            return "OK", items
        return "OK", result
    except errors.CorralError as e:
        return e.code.name, str(e)


ACKED: list[str] = []


@pytest.mark.parametrize("method", [m for m in rpc_methods()], ids=lambda m: m.name)
def test_fuzz_rpc(fuzz_cluster: Cluster, method: RpcMethod) -> None:
    c = fuzz_cluster.client()
    master = fuzz_cluster.masters[0]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests_for(method))
    def one(req: Message) -> None:
        code, result = _call(c, method, req)
        assert code not in BAD, f"{method.name}({str(req)[:400]!r}) → {code}: {result}"
        if code == "OK" and method.name == "SubmitTask":
            ACKED.append(result.task_id)
        if code == "OK" and method.name == "SubmitTasks":
            ACKED.extend(r.task_id for r in result.results if r.task_id)

    one()
    assert master.alive(), "the master died"


def test_fuzz_stream_submit(fuzz_cluster: Cluster) -> None:
    c = fuzz_cluster.client()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(messages(api_pb2.SubmitTaskRequest), plausible_submits()), max_size=5))
    def one(reqs: list[api_pb2.SubmitTaskRequest]) -> None:
        try:
            resp = c.submit_many(reqs, timeout=10)
        except errors.CorralError as e:
            assert e.code.name not in BAD, f"SubmitTaskStream → {e.code.name}: {e}"
            return
        ACKED.extend(r.task_id for r in resp.results if r.task_id)

    one()


def test_fuzz_nothing_acknowledged_was_lost(fuzz_cluster: Cluster) -> None:
    """Runs after the fuzzers (file order): every acknowledged task is still there."""
    c = fuzz_cluster.client()
    assert fuzz_cluster.masters[0].alive()
    assert ACKED, "the fuzzers got no task accepted at all: they test nothing of submission"
    missing = []
    for task_id in ACKED:
        try:
            c.get_task(task_id=task_id)
        except errors.NotFound:
            missing.append(task_id)
    assert not missing, f"{len(missing)} acknowledged tasks are gone: {missing[:5]}"
    log = fuzz_cluster.masters[0].log_path.read_text(errors="replace")
    assert "internal error" not in log
