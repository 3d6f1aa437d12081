"""Users, roles, tokens, quotas, audit and secrets, against a real master and etcd, as an
attacker with a valid account would try them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from corral import errors
from corral.client import Client
from corral.client.sdk import RpcMethod, rpc_methods
from corral.master import authz
from corral.v1 import api_pb2
from corral.v1 import types_pb2 as pb

from harness import Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def people(cluster: Cluster) -> Iterator[dict[str, Client]]:
    """admin (the bootstrap token), an operator and two users, each with their own client."""
    cluster.start_master()
    admin = cluster.client()
    out = {"admin": admin}
    for user_id, role in (("ops", "operator"), ("alice", "user"), ("bob", "user")):
        made = admin.create_user(user_id=user_id, role=role)
        assert made.user.roles == [role] and made.secret.startswith("crl_")
        out[user_id] = Client(cluster.addr, made.secret, timeout=20)
    try:
        yield out
    finally:
        for name, c in out.items():
            if name != "admin":
                c.close()


def _code(fn: Callable[[], Any]) -> str:
    try:
        result = fn()
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            next(iter(result), None)
    except errors.CorralError as e:
        return e.code.name
    return "OK"


# One request per RPC. Ids name nothing that exists, so a role the table allows gets past
# the authorizer and fails on the record (NOT_FOUND / INVALID_ARGUMENT) or succeeds; a role
# it denies gets PERMISSION_DENIED before the method looks at anything.
REQUESTS: dict[str, dict[str, Any]] = {
    "CreateTemplate": {"template": pb.TaskTemplate()},
    "GetTemplate": {"template_id": "no-such-template"},
    "UpdateTemplate": {"template": pb.TaskTemplate(name="no-such-template")},
    "DeleteTemplate": {"template_id": "no-such-template"},
    "ListTemplates": {},
    "PauseTemplate": {"template_id": "no-such-template"},
    "ResumeTemplate": {"template_id": "no-such-template"},
    "NextTemplateFires": {"template_id": "no-such-template"},
    "TemplateHistory": {"template_id": "no-such-template"},
    "SubmitTask": {"spec": pb.TaskTemplate()},
    "SubmitTasks": {"tasks": [api_pb2.SubmitTaskRequest()]},
    "SubmitTaskStream": {},
    "StopTask": {"task_id": "no-such-task"},
    "GetTask": {"task_id": "no-such-task"},
    "ListTasks": {},
    "WatchTasks": {"task_id": "no-such-task"},
    "TaskLogs": {"task_id": "no-such-task"},
    "RetryTask": {"task_id": "no-such-task"},
    "ListNodes": {},
    "GetNode": {"node_id": "no-such-node"},
    "CordonNode": {"node_id": "no-such-node"},
    "UncordonNode": {"node_id": "no-such-node"},
    "DrainNode": {"node_id": "no-such-node"},
    "DeleteNode": {"node_id": "no-such-node"},
    "ClusterStatus": {},
    "CreateUser": {"user_id": ""},
    "ListUsers": {},
    "UpdateUser": {"user_id": "no-such-user"},
    "DeleteUser": {"user_id": "no-such-user"},
    "CreateToken": {"description": "x" * 300},
    "RevokeToken": {"token_id": "no-such-token"},
    "ListTokens": {},
    "ListAudit": {},
}


def test_every_rpc_is_in_the_role_table() -> None:
    public = {m.name for m in rpc_methods()} | {"SubmitTaskStream"}
    assert set(authz.POLICY) == public
    assert set(REQUESTS) == public


def test_every_rpc_times_every_role(people: dict[str, Client]) -> None:
    methods = {m.name: m for m in rpc_methods()}
    seen: dict[tuple[str, str], str] = {}
    for name, fields in REQUESTS.items():
        for person, role in (("admin", "admin"), ("ops", "operator"), ("alice", "user")):
            c = people[person]
            if name == "SubmitTaskStream":
                code = _code(lambda c=c: c.submit_many([]))
            else:
                m: RpcMethod = methods[name]
                code = _code(lambda c=c, m=m, fields=fields: c.call(m, timeout=10, **fields))
            seen[(name, role)] = code
    wrong = []
    for (name, role), code in seen.items():
        allowed = role in authz.POLICY[name]
        if allowed and code in ("PERMISSION_DENIED", "UNAUTHENTICATED", "INTERNAL", "UNKNOWN"):
            wrong.append(f"{name} as {role}: {code}, the table allows it")
        if not allowed and code != "PERMISSION_DENIED":
            wrong.append(f"{name} as {role}: {code}, the table denies it")
    assert not wrong, "\n".join(wrong)
    # the table is not vacuous: each role is refused something and allowed something
    for role in ("operator", "user"):
        assert any(c == "PERMISSION_DENIED" for (n, r), c in seen.items() if r == role)
        assert any(c != "PERMISSION_DENIED" for (n, r), c in seen.items() if r == role)


def test_users_see_and_touch_only_their_own(people: dict[str, Client]) -> None:
    alice, bob, ops, admin = people["alice"], people["bob"], people["ops"], people["admin"]
    t = alice.submit_task(spec=pb.TaskTemplate(run_script="sleep 60"))
    tpl = alice.create_template(template=pb.TaskTemplate(name="alices", run_script="true"))

    for attempt in (
        lambda: bob.stop_task(task_id=t.task_id),
        lambda: bob.get_task(task_id=t.task_id),
        lambda: bob.retry_task(task_id=t.task_id),
        lambda: next(iter(bob.task_logs(task_id=t.task_id))),
        lambda: next(iter(bob.watch_tasks(task_id=t.task_id))),
        lambda: bob.get_template(template_id="alices"),
        lambda: bob.update_template(template=pb.TaskTemplate(name="alices", run_script="rm -rf /")),
        lambda: bob.delete_template(template_id="alices"),
        lambda: bob.pause_template(template_id="alices"),
        lambda: bob.submit_task(template_id="alices"),
        lambda: ops.stop_task(task_id=t.task_id),
        lambda: ops.submit_task(spec=pb.TaskTemplate(run_script="true")),
    ):
        with pytest.raises(errors.PermissionDenied):
            attempt()
    assert t.task_id not in {x.task_id for x in bob.list_tasks().tasks}
    assert "alices" not in {x.name for x in bob.list_templates().templates}
    # bob's own work is his to see; operators and admins see everyone's
    mine = bob.submit_task(spec=pb.TaskTemplate(run_script="true"))
    assert {x.task_id for x in bob.list_tasks().tasks} == {mine.task_id}
    assert ops.get_task(task_id=t.task_id).user_id == "alice"
    assert {t.task_id, mine.task_id} <= {x.task_id for x in ops.list_tasks().tasks}
    assert ops.get_template(template_id=tpl.template_id).owner == "alice"
    # the task is untouched by all of that; its owner and an admin may stop it
    assert alice.get_task(task_id=t.task_id).state == pb.PENDING
    assert admin.stop_task(task_id=t.task_id).stop_requested
    # a user's list pages through their own tasks only, newest first
    for _ in range(3):
        admin.submit_task(spec=pb.TaskTemplate(run_script="true"))
    ids = [t.task_id] + [alice.submit_task(spec=pb.TaskTemplate(run_script="true")).task_id for _ in range(4)]
    seen, token = [], ""
    while True:
        page = alice.list_tasks(page_size=2, page_token=token)
        seen += [x.task_id for x in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]


def test_tokens_are_hashed_and_revocation_is_immediate(cluster: Cluster, people: dict[str, Client]) -> None:
    admin, alice = people["admin"], people["alice"]
    made = alice.create_token(description="ci")
    assert made.token.user_id == "alice" and made.secret.startswith(f"crl_{made.token.token_id}_")
    ci = Client(cluster.addr, made.secret, timeout=10)
    try:
        assert ci.list_tasks() is not None
        # a user may not mint or revoke tokens for someone else
        with pytest.raises(errors.PermissionDenied):
            alice.create_token(user_id="bob")
        bobs = people["bob"].list_tokens().tokens
        with pytest.raises(errors.PermissionDenied):
            alice.revoke_token(token_id=bobs[0].token_id)
        # no secret is stored, and no hash is shown
        assert all(not t.token_hash for t in admin.list_tokens(user_id="*").tokens)
        for kv in _etcd_values(cluster):
            assert made.secret.encode() not in kv
        # revoked: refused from the very next call on
        alice.revoke_token(token_id=made.secret)
        with pytest.raises(errors.Unauthenticated):
            ci.list_tasks()
        with pytest.raises(errors.NotFound):  # audited by the token's id, never its secret
            alice.revoke_token(token_id=made.secret)
        audit = str(admin.list_audit(limit=1000))
        assert f"crl_{made.token.token_id}_…" in audit and made.secret.split("_", 2)[2][:8] not in audit
        # a deleted user's tokens all stop at once
        assert admin.delete_user(user_id="bob").tokens_revoked == 1
        with pytest.raises(errors.Unauthenticated):
            people["bob"].list_tasks()
        # an expired token is refused
        short = admin.create_token(user_id="alice", ttl=Duration(seconds=1))
        gone = Client(cluster.addr, short.secret, timeout=10)
        try:
            assert gone.list_tasks() is not None
            time.sleep(1.2)
            with pytest.raises(errors.Unauthenticated, match="expired"):
                gone.list_tasks()
        finally:
            gone.close()
    finally:
        ci.close()


def _etcd_values(cluster: Cluster) -> list[bytes]:
    """Every value under the cluster's prefix, read straight from etcd."""
    from corral.master.store import EtcdStore

    async def read() -> list[bytes]:
        store = EtcdStore(cluster.etcd, cluster.prefix)
        await store.connect()
        try:
            kvs, _ = await store.range("")
            return [kv.value for kv in kvs]
        finally:
            await store.close()

    return asyncio.run(read())


def test_quotas_trip_with_resource_exhausted(cluster: Cluster, people: dict[str, Client]) -> None:
    admin = people["admin"]
    made = admin.create_user(user_id="carol", max_tasks=3, max_cpu=1000, max_memory=256 * 1024**2)
    carol = Client(cluster.addr, made.secret, timeout=10)
    made_d = admin.create_user(user_id="dave", max_submit_rate=2)
    dave = Client(cluster.addr, made_d.secret, timeout=10)
    try:
        spec = pb.TaskTemplate(run_script="sleep 60", cpu_request=100, mem_request=16 * 1024**2)
        for _ in range(3):
            carol.submit_task(spec=spec)
        with pytest.raises(errors.ResourceExhausted, match="max_tasks is 3"):
            carol.submit_task(spec=spec)
        # a batch: each task is admitted or refused on its own
        first = carol.list_tasks().tasks[0]
        carol.stop_task(task_id=first.task_id)
        resp = carol.submit_tasks(tasks=[api_pb2.SubmitTaskRequest(spec=spec) for _ in range(3)])
        assert resp.accepted == 1
        assert [r.code for r in resp.results].count(8) == 2  # RESOURCE_EXHAUSTED
        assert all("max_tasks" in r.error for r in resp.results if r.code)
        # cpu and memory
        for t in carol.list_tasks().tasks:
            if t.state == pb.PENDING:
                carol.stop_task(task_id=t.task_id)
        with pytest.raises(errors.ResourceExhausted, match="max_cpu is 1"):
            carol.submit_task(spec=pb.TaskTemplate(run_script="true", cpu_request=1500))
        with pytest.raises(errors.ResourceExhausted, match="max_memory is 256"):
            carol.submit_task(spec=pb.TaskTemplate(run_script="true", mem_request=300 * 1024**2))
        # submissions per second
        codes = [_code(lambda: dave.submit_task(spec=pb.TaskTemplate(run_script="true"))) for _ in range(8)]
        assert codes.count("RESOURCE_EXHAUSTED") >= 4 and codes[0] == "OK"
        with pytest.raises(errors.ResourceExhausted, match="max_submit_rate"):
            for _ in range(5):
                dave.submit_task(spec=pb.TaskTemplate(run_script="true"))
        # an admin is not limited by someone else's quota, and sees carol's
        assert admin.list_users().users[[u.user_id for u in admin.list_users().users].index("carol")].quota.max_tasks == 3
    finally:
        carol.close()
        dave.close()


def test_audit_and_secret_env(cluster: Cluster, people: dict[str, Client]) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    secret = "s3cr3t-" + "q7w8e9"
    cluster.start_nodelet("a")
    digest = hashlib.sha256(secret.encode()).hexdigest()
    t = alice.submit_task(spec=pb.TaskTemplate(
        run_script=f'[ "$(printf %s "$PASSWORD" | sha256sum | cut -c1-64)" = {digest} ] && echo got-it',
        env={"PASSWORD": secret, "MODE": "x"}, secret_env=["PASSWORD"],
    ))
    assert t.spec.env["PASSWORD"] == "<secret>" and t.spec.env["MODE"] == "x"
    done = alice.wait_task(t.task_id, timeout=60)
    assert done.state == pb.SUCCEEDED, done.reason
    assert b"".join(x.data for x in alice.task_logs(task_id=t.task_id)) == b"got-it\n"  # the task got the value
    with pytest.raises(errors.PermissionDenied):
        bob.stop_task(task_id=t.task_id)
    tpl = alice.create_template(template=pb.TaskTemplate(name="with-secret", run_script="true", env={"K": secret}, secret_env=["K"]))
    # a submission from the template that overrides env cannot un-mark the secret
    from_tpl = alice.submit_task(template_id="with-secret", spec=pb.TaskTemplate(env={"OTHER": "1"}))
    with pytest.raises(errors.InvalidArgument, match="secret_env"):
        alice.submit_task(spec=pb.TaskTemplate(run_script="true", secret_env=["NOPE"]))

    shown = [
        str(alice.get_task(task_id=t.task_id)), str(admin.list_tasks()), str(alice.get_template(template_id="with-secret")),
        str(tpl), str(from_tpl), str(admin.list_templates()), str(admin.list_audit(limit=1000)),
    ]
    for text in shown:
        assert secret not in text
    assert all("<secret>" in text for text in shown[:6])
    for p in cluster.masters:
        assert secret not in p.log_path.read_text(errors="replace")

    # the audit log: who did what to which target, with the result, in etcd and in the log
    records = admin.list_audit(limit=1000).records
    by = {(r.who, r.what, r.target, r.result) for r in records}
    assert ("alice", "SubmitTask", t.task_id, "OK") in by
    assert ("bob", "StopTask", t.task_id, "PERMISSION_DENIED") in by
    assert ("admin", "CreateUser", "bob", "OK") in by
    assert ("alice", "CreateTemplate", tpl.template_id, "OK") in by
    assert not any(r.what in ("GetTask", "ListTasks") for r in records), "reads are not audited"
    lines = [dict(_logfmt(line)) for line in cluster.masters[0].log_path.read_text(errors="replace").splitlines() if "logger=corral.audit" in line]
    assert any(x["who"] == "bob" and x["what"] == "StopTask" and x["target"] == t.task_id and x["result"] == "PERMISSION_DENIED" for x in lines)
    with pytest.raises(errors.PermissionDenied):
        alice.list_audit()
    assert people["ops"].list_audit(who="alice", limit=5).records[0].who == "alice"


def _logfmt(line: str) -> Iterator[tuple[str, str]]:
    for part in shlex.split(line):
        k, _, v = part.partition("=")
        yield k, v


def test_audit_is_bounded(cluster: Cluster) -> None:
    # --retention 2s makes the leader's sweep (which also trims the audit log) run every second
    cluster.start_master(extra=["--audit-keep", "20", "--retention", "2s"])
    c = cluster.client()
    for i in range(40):
        c.create_template(template=pb.TaskTemplate(name=f"t{i}", run_script="true"))
    wait_for(lambda: len(c.list_audit(limit=1000).records) <= 20, 15, what="audit trimmed to 20")
    newest = c.list_audit(limit=1000).records
    assert newest[0].what == "CreateTemplate" and newest[0].target == c.get_template(template_id="t39").template_id
    assert len(newest) >= 10


def test_cli_users_and_tokens(cluster: Cluster) -> None:
    import subprocess
    import sys

    cluster.start_master()

    def corral(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = cluster.corral_env() | ({"CORRAL_TOKEN": token} if token else {})
        return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, env=env, timeout=60)

    r = corral("user", "create", "erin", "--role", "user", "--max-tasks", "5", "--max-cpu", "2", "--max-memory", "1Gi",
               "--max-submit-rate", "10", "-o", "json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    secret = made["secret"]
    assert made["user"]["quota"] == {"max_tasks": "5", "max_cpu": "2000", "max_memory": str(1024**3), "max_submit_rate": 10.0,
                                     "max_stored_records": "0", "max_stored_bytes": "0"}
    listed = corral("user", "list")
    assert "erin" in listed.stdout and secret not in listed.stdout
    r = corral("user", "update", "erin", "--grant", "host_network", "--grant", "run_as_uid", "--max-stored-bytes", "64Mi")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("erin"))
    assert "host_network,run_as_uid" in row and "stored 64Mi" in row, r.stdout
    r = corral("user", "update", "erin", "--revoke", "run_as_uid", "-o", "json")
    assert json.loads(r.stdout)["permissions"] == ["host_network"]
    bad = corral("user", "update", "erin", "--grant", "sudo")
    assert bad.returncode != 0 and "not a permission" in bad.stderr and "run_as_root" in bad.stderr
    r = corral("token", "create", "--description", "laptop", "-o", "json", token=secret)
    assert r.returncode == 0, r.stderr
    tok = json.loads(r.stdout)
    assert corral("task", "list", token=tok["secret"]).returncode == 0
    assert corral("token", "revoke", tok["token"]["token_id"], token=secret).returncode == 0
    denied = corral("task", "list", token=tok["secret"])
    assert denied.returncode != 0 and "not valid" in denied.stderr
    audit = corral("audit", "list", "--who", "erin")
    assert "RevokeToken" in audit.stdout and "CreateToken" in audit.stdout, audit.stdout + audit.stderr
    assert tok["secret"] not in audit.stdout
