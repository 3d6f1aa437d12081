"""The public API over HTTP/JSON (`/v1/…`), served beside /metrics on the master's `--http`.

Each route calls the gRPC servicer method itself, through an adapter that looks like a gRPC
call to it: the same authentication (a bearer token in `Authorization`, or, over HTTPS, a
client certificate), the same role table, the same error sentences and the same audit
line. JSON is protobuf's own mapping (`json_format`) with the proto field names, so a task
reads the same here as in `corral task get -o json`. The task event stream and following a
task's log are server-sent events (`text/event-stream`).

    GET  /v1/tasks?state=RUNNING&template_id=…&node_id=…&page_size=…&page_token=…
    POST /v1/tasks                       {"spec": {...}, "run_at": …}   (a SubmitTaskRequest)
    GET  /v1/tasks/{task_id}             POST /v1/tasks/{task_id}/stop | /retry
    GET  /v1/tasks/{task_id}/logs        text; ?follow=true: events with the new output
    GET  /v1/events?task_id=…&template_id=…   task changes as events
    GET  /v1/templates                   POST /v1/templates        {"template": {...}}
    GET|PATCH|DELETE /v1/templates/{template_id}    POST …/pause | …/resume
    GET  /v1/templates/{template_id}/history | /next
    GET  /v1/nodes                       GET|DELETE /v1/nodes/{node_id}
    POST /v1/nodes/{node_id}/cordon | /uncordon | /drain
    GET  /v1/cluster                     GET /v1/audit
    GET|POST /v1/users                   DELETE /v1/users/{user_id}
    GET|POST /v1/tokens                  DELETE /v1/tokens/{token_id}
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from corral.errors import CorralError
from corral.tls import TlsFiles
from corral.v1 import api_pb2

# gRPC status → HTTP status, as Google's API design guide maps them
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class CallEnded(Exception):
    """What `abort` raises for an HTTP call (gRPC raises its own AbortError there)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class HttpCall:
    """The parts of a gRPC ServicerContext the servicers and the authenticator use, filled
    from an HTTP request."""

    def __init__(self, request: web.Request) -> None:
        self.request = request

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        md = []
        if "Authorization" in self.request.headers:
            md.append(("authorization", self.request.headers["Authorization"]))
        if "X-Corral-Request-Id" in self.request.headers:
            md.append(("corral-request-id", self.request.headers["X-Corral-Request-Id"]))
        return tuple(md)

    def peer(self) -> str:
        peer = self.request.transport.get_extra_info("peername") if self.request.transport else None
        return f"http:{peer[0]}:{peer[1]}" if peer else "http:unknown"

    def auth_context(self) -> dict[str, list[bytes]]:
        """The verified client certificate's names, in the form gRPC gives them."""
        cert = self.request.transport.get_extra_info("peercert") if self.request.transport else None
        if not cert:
            return {}
        parts = {k: v for rdn in cert.get("subject", ()) for k, v in rdn}
        cn, ou = parts.get("commonName", ""), parts.get("organizationalUnitName", "")
        if not cn:
            return {}
        return {"x509_common_name": [cn.encode()], "x509_subject": [f"CN={cn},OU={ou}".encode()]}

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: object = None) -> None:
        raise CallEnded(code, details)


def to_json(msg: Message) -> Any:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def error(code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response({"code": code.name, "message": message}, status=HTTP_STATUS.get(code, 500))


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    service: str
    rpc: str
    request: type[Message]
    body_field: str = ""  # the request field the path's ids go into ("" = the request itself)


ROUTES = [
    Route("GET", "/v1/tasks", "tasks", "ListTasks", api_pb2.ListTasksRequest),
    Route("POST", "/v1/tasks", "tasks", "SubmitTask", api_pb2.SubmitTaskRequest),
    Route("GET", "/v1/tasks/{task_id}", "tasks", "GetTask", api_pb2.GetTaskRequest),
    Route("POST", "/v1/tasks/{task_id}/stop", "tasks", "StopTask", api_pb2.StopTaskRequest),
    Route("POST", "/v1/tasks/{task_id}/retry", "tasks", "RetryTask", api_pb2.RetryTaskRequest),
    Route("GET", "/v1/templates", "templates", "ListTemplates", api_pb2.ListTemplatesRequest),
    Route("POST", "/v1/templates", "templates", "CreateTemplate", api_pb2.CreateTemplateRequest),
    Route("GET", "/v1/templates/{template_id}", "templates", "GetTemplate", api_pb2.GetTemplateRequest),
    Route("PATCH", "/v1/templates/{template_id}", "templates", "UpdateTemplate", api_pb2.UpdateTemplateRequest, "template"),
    Route("DELETE", "/v1/templates/{template_id}", "templates", "DeleteTemplate", api_pb2.DeleteTemplateRequest),
    Route("POST", "/v1/templates/{template_id}/pause", "templates", "PauseTemplate", api_pb2.PauseTemplateRequest),
    Route("POST", "/v1/templates/{template_id}/resume", "templates", "ResumeTemplate", api_pb2.ResumeTemplateRequest),
    Route("GET", "/v1/templates/{template_id}/history", "templates", "TemplateHistory", api_pb2.TemplateHistoryRequest),
    Route("GET", "/v1/templates/{template_id}/next", "templates", "NextTemplateFires", api_pb2.NextTemplateFiresRequest),
    Route("GET", "/v1/nodes", "nodes", "ListNodes", api_pb2.ListNodesRequest),
    Route("GET", "/v1/nodes/{node_id}", "nodes", "GetNode", api_pb2.GetNodeRequest),
    Route("DELETE", "/v1/nodes/{node_id}", "nodes", "DeleteNode", api_pb2.DeleteNodeRequest),
    Route("POST", "/v1/nodes/{node_id}/cordon", "nodes", "CordonNode", api_pb2.CordonNodeRequest),
    Route("POST", "/v1/nodes/{node_id}/uncordon", "nodes", "UncordonNode", api_pb2.UncordonNodeRequest),
    Route("POST", "/v1/nodes/{node_id}/drain", "nodes", "DrainNode", api_pb2.DrainNodeRequest),
    Route("GET", "/v1/cluster", "cluster", "ClusterStatus", api_pb2.ClusterStatusRequest),
    Route("GET", "/v1/users", "users", "ListUsers", api_pb2.ListUsersRequest),
    Route("POST", "/v1/users", "users", "CreateUser", api_pb2.CreateUserRequest),
    Route("DELETE", "/v1/users/{user_id}", "users", "DeleteUser", api_pb2.DeleteUserRequest),
    Route("GET", "/v1/tokens", "tokens", "ListTokens", api_pb2.ListTokensRequest),
    Route("POST", "/v1/tokens", "tokens", "CreateToken", api_pb2.CreateTokenRequest),
    Route("DELETE", "/v1/tokens/{token_id}", "tokens", "RevokeToken", api_pb2.RevokeTokenRequest),
    Route("GET", "/v1/audit", "audit", "ListAudit", api_pb2.ListAuditRequest),
]


def _from_query(cls: type[Message], query: Any) -> dict[str, Any]:
    """Query parameters as a JSON object for `cls`: booleans and repeated fields converted,
    the rest left to json_format (which takes numbers and enum names as strings)."""
    out: dict[str, Any] = {}
    fields = cls.DESCRIPTOR.fields_by_name
    for key in query:
        f = fields.get(key)
        values = query.getall(key)
        if f is None:
            out[key] = values[-1]  # json_format names the unknown field in its error
        elif f.is_repeated:
            out[key] = values
        elif f.type == f.TYPE_BOOL:
            out[key] = values[-1].lower() in ("1", "true", "yes")
        else:
            out[key] = values[-1]
    return out


async def _request(route: Route, request: web.Request) -> Message:
    data: dict[str, Any] = {}
    if request.method in ("POST", "PATCH") and request.can_read_body:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError) as e:
            raise CallEnded(grpc.StatusCode.INVALID_ARGUMENT, f"the body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise CallEnded(grpc.StatusCode.INVALID_ARGUMENT, "the body must be a JSON object")
    else:
        data = _from_query(route.request, request.query)
    patch_paths = _merge_patch_paths(route, data, request) if request.method == "PATCH" else []
    for k, v in request.match_info.items():
        if route.body_field:  # e.g. PATCH /v1/templates/{template_id}: template.template_id
            data.setdefault(route.body_field, {})[k] = v
        else:
            data[k] = v
    msg = route.request()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as e:
        raise CallEnded(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
    if patch_paths:
        mask: Any = msg.update_mask  # type: ignore[attr-defined]  # (only UpdateTemplateRequest is PATCHed)
        mask.paths.extend(patch_paths)
    return msg


def _merge_patch_paths(route: Route, data: dict[str, Any], request: web.Request) -> list[str]:
    """PATCH changes what the body names and nothing else (a merge patch): without an
    explicit `update_mask`, the mask is the fields of the body's record, in proto names."""
    body = data.get(route.body_field or "")
    record: Any = route.request.DESCRIPTOR.fields_by_name[route.body_field].message_type if route.body_field else None
    if "update_mask" in data or not isinstance(body, dict) or record is None:
        return []
    names: dict[str, str] = {f.json_name: f.name for f in record.fields} | {f.name: f.name for f in record.fields}
    return [names.get(str(k), str(k)) for k in body if k not in request.match_info]


async def _authenticated(servicer: Any, call: HttpCall) -> None:
    """Refuse an unauthenticated caller first (the servicer method checks again, with the
    role table): a stranger learns nothing from how the body would have been parsed."""
    try:
        await servicer.auth.authenticate(call)
    except CorralError as e:
        raise CallEnded(e.code, str(e)) from None


def _unary(route: Route, servicer: Any) -> Callable[[web.Request], Any]:
    method = getattr(servicer, route.rpc)

    async def handle(request: web.Request) -> web.StreamResponse:
        call = HttpCall(request)
        try:
            await _authenticated(servicer, call)  # 401 before any word about the body
            msg = await _request(route, request)
            result = await method(msg, call)
        except CallEnded as e:
            return error(e.code, e.details)
        return web.json_response(to_json(result))

    return handle


async def _events(request: web.Request, items: AsyncIterator[Message], render: Callable[[Message], str]) -> web.StreamResponse:
    """Server-sent events: one `data:` line of JSON per item, until the stream ends or the
    client goes away. An error before the first item is an ordinary JSON error response."""
    it = items.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = None
    except CallEnded as e:
        return error(e.code, e.details)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        if first is not None:
            await resp.write(f"data: {render(first)}\n\n".encode())
            async for item in it:
                await resp.write(f"data: {render(item)}\n\n".encode())
        await resp.write(b"event: end\ndata: {}\n\n")
    except CallEnded as e:
        await resp.write(f"event: error\ndata: {json.dumps({'code': e.code.name, 'message': e.details})}\n\n".encode())
    except ConnectionError:  # the client went away
        pass
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:  # the servicer's stream ends now, not when collected
            await aclose()
    return resp


def add_routes(app: web.Application, servicers: dict[str, Any]) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _unary(route, servicers[route.service]))
    tasks = servicers["tasks"]

    async def watch(request: web.Request) -> web.StreamResponse:
        try:
            await _authenticated(tasks, HttpCall(request))
            msg = api_pb2.WatchTasksRequest()
            json_format.ParseDict(_from_query(api_pb2.WatchTasksRequest, request.query), msg)
        except json_format.ParseError as e:
            return error(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except CallEnded as e:
            return error(e.code, e.details)
        return await _events(request, tasks.WatchTasks(msg, HttpCall(request)), lambda m: json.dumps(to_json(m)))

    async def logs(request: web.Request) -> web.StreamResponse:
        try:
            await _authenticated(tasks, HttpCall(request))
            msg = api_pb2.TaskLogsRequest()
            json_format.ParseDict({**_from_query(api_pb2.TaskLogsRequest, request.query), **request.match_info}, msg)
        except json_format.ParseError as e:
            return error(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except CallEnded as e:
            return error(e.code, e.details)
        chunks = tasks.TaskLogs(msg, HttpCall(request))
        if msg.follow:
            return await _events(request, chunks, lambda c: json.dumps(
                {"offset": c.offset, "text": c.data.decode("utf-8", "replace")}))  # type: ignore[attr-defined]
        out = bytearray()
        try:
            async for c in chunks:
                out += c.data
        except CallEnded as e:
            return error(e.code, e.details)
        return web.Response(body=bytes(out), content_type="text/plain", charset="utf-8")

    app.router.add_get("/v1/events", watch)
    app.router.add_get("/v1/tasks/{task_id}/logs", logs)


WEB = Path(__file__).parent / "web"
_WEB_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png", ".svg": "image/svg+xml"}


def add_ui(app: web.Application) -> None:
    """The web UI: static files (web/) that talk to /v1 with the user's token; nothing in
    them is per user, so they are served without credentials."""
    files = {p.name: p for p in WEB.iterdir() if p.suffix in _WEB_TYPES}

    def serve(name: str) -> web.Response:
        p = files[name]
        return web.Response(body=p.read_bytes(), content_type=_WEB_TYPES[p.suffix], charset="utf-8" if p.suffix != ".png" else None,
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'self'; img-src 'self' data:"})

    async def index(_: web.Request) -> web.Response:
        return serve("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return serve(name)

    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", asset)


def ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """HTTPS with the master's certificate; a client certificate from the cluster's CA is
    asked for but optional (a bearer token does too)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
    ctx.load_cert_chain(tls.cert, tls.key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
