"""The HTTP/JSON API on a live master: every route refuses a call without credentials, the
admin submits, reads and follows a task, and a plain user sees only their own tasks and
cannot do what their role does not allow — the same rules as the gRPC API, checked over
HTTP with urllib (no corral client code)."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from corral import pki
from corral.master.http_api import ROUTES

from harness import TOKEN, Cluster, wait_for

pytestmark = pytest.mark.integration


def call(base: str, method: str, path: str, token: str | None = TOKEN, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"{base}{path}", method=method, data=json.dumps(body).encode() if body is not None else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            data = r.read()
            return r.status, json.loads(data) if r.headers.get_content_type() == "application/json" else data.decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_every_route_refuses_a_call_without_credentials(cluster: Cluster) -> None:
    base = "http://" + cluster.start_master().info["http"]
    for r in [*ROUTES, *(type(ROUTES[0])("GET", p, "", "", ROUTES[0].request) for p in ("/v1/events", "/v1/tasks/{task_id}/logs"))]:
        path = re.sub(r"\{(\w+)\}", "x1", r.path)
        status, err = call(base, r.method, path, token=None, body={} if r.method in ("POST", "PATCH") else None)
        assert status == 401 and err["code"] == "UNAUTHENTICATED", f"{r.method} {path}: {status} {err}"
        status, err = call(base, r.method, path, token="not-a-token", body={} if r.method in ("POST", "PATCH") else None)
        assert status == 401, f"{r.method} {path} with a bad token: {status} {err}"


def test_submit_follow_and_read_a_task_and_users_see_only_theirs(cluster: Cluster) -> None:
    base = "http://" + cluster.start_master().info["http"]
    cluster.start_nodelet("a")
    status, t = call(base, "POST", "/v1/tasks", body={"spec": {"run_script": "echo from-http"}})
    assert status == 200 and t["state"] == "PENDING" and t["task_id"], t
    task_id = t["task_id"]

    # the event stream of that task, as server-sent events, until it ends
    req = urllib.request.Request(f"{base}/v1/events?task_id={task_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    states = []
    deadline = time.monotonic() + 30
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers.get_content_type() == "text/event-stream"
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: {}":
                states.append(json.loads(line[6:])["task"]["state"])
            if states and states[-1] == "SUCCEEDED" or time.monotonic() > deadline:
                break
    assert states[-1] == "SUCCEEDED" and "RUNNING" in states, states

    status, got = call(base, "GET", f"/v1/tasks/{task_id}")
    assert status == 200 and got["state"] == "SUCCEEDED" and got["spec"]["run_script"] == "echo from-http"
    status, text = call(base, "GET", f"/v1/tasks/{task_id}/logs")
    assert status == 200 and text == "from-http\n"
    status, listed = call(base, "GET", "/v1/tasks?state=SUCCEEDED&page_size=10")
    assert status == 200 and [x["task_id"] for x in listed["tasks"]] == [task_id]

    # bad input: a 400 whose message names the field
    status, err = call(base, "POST", "/v1/tasks", body={"spec": {"run_script": ""}})
    assert status == 400 and err["code"] == "INVALID_ARGUMENT" and "run_script" in err["message"], err
    status, err = call(base, "POST", "/v1/tasks", body={"spec": {"runscript": "true"}})
    assert status == 400 and "runscript" in err["message"], err
    status, err = call(base, "GET", "/v1/tasks/t-no-such-task")
    assert status == 404 and err["code"] == "NOT_FOUND"

    # a plain user: their own tasks only, no user administration
    status, alice = call(base, "POST", "/v1/users", body={"user_id": "alice", "role": "user"})
    assert status == 200 and alice["secret"], alice
    status, mine = call(base, "POST", "/v1/tasks", token=alice["secret"], body={"spec": {"run_script": "true"}})
    assert status == 200 and mine["user_id"] == "alice"
    status, listed = call(base, "GET", "/v1/tasks", token=alice["secret"])
    assert status == 200 and [x["task_id"] for x in listed["tasks"]] == [mine["task_id"]]
    status, err = call(base, "GET", f"/v1/tasks/{task_id}", token=alice["secret"])
    assert status in (403, 404) and err["code"] in ("PERMISSION_DENIED", "NOT_FOUND"), (status, err)
    status, err = call(base, "GET", "/v1/users", token=alice["secret"])
    assert status == 403 and err["code"] == "PERMISSION_DENIED"
    status, err = call(base, "POST", f"/v1/nodes/{cluster.node_id('a')}/cordon", token=alice["secret"])
    assert status == 403
    status, nodes = call(base, "GET", "/v1/nodes", token=alice["secret"])
    assert status == 200 and nodes["nodes"][0]["state"] == "READY"

    # the admin cordons through the API; the cluster's record shows it
    status, node = call(base, "POST", f"/v1/nodes/{cluster.node_id('a')}/cordon")
    assert status == 200 and node["state"] == "CORDONED"
    wait_for(lambda: call(base, "GET", "/v1/cluster")[1]["nodes_by_state"] == {"CORDONED": 1}, 10, what="cordoned in the status")


def test_over_https_a_client_certificate_is_an_identity(cluster: Cluster, tmp_path: Path) -> None:
    """A master on mutual TLS serves its HTTP side over HTTPS: the admin's client certificate
    authenticates without a token, no certificate and no token is 401, and a certificate
    from another CA does not get through the handshake."""
    d, other = tmp_path / "pki", tmp_path / "other"
    pki.init_ca(d)
    pki.init_ca(other)
    pki.issue(d, "master", "m")
    pki.issue(d, "client", "admin")
    pki.issue(other, "client", "admin")
    m = cluster.start_master(extra=["--tls-ca", str(d / "ca.crt"), "--tls-cert", str(d / "master" / "m.crt"), "--tls-key", str(d / "master" / "m.key")])
    url = f"https://{m.info['http']}/v1/cluster"

    def get(cert_dir: Path | None) -> int:
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        ctx.check_hostname = False  # corral pki's master certificates name the master's address, not 127.0.0.1's
        if cert_dir is not None:
            ctx.load_cert_chain(str(cert_dir / "client" / "admin.crt"), str(cert_dir / "client" / "admin.key"))
        try:
            with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert get(d) == 200
    assert get(None) == 401
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        get(other)
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://{m.info['http']}/v1/cluster", timeout=10)
