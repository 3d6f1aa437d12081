"""`corral master`: one master replica. Wires the store, cache, servicers and leader loops,
serves gRPC (plus the standard health and reflection services) and stops cleanly on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import corral.scheduler_core as sc
from corral import __version__, credentials, http_endpoint, logs, tls
from corral.errors import CorralError
from corral.v1 import api_pb2, api_pb2_grpc, nodelet_pb2, nodelet_pb2_grpc

from . import gc_tuning, http_api, metrics, reflection, uids
from .api_nodes import ClusterServicer, NodeServicer
from .api_tasks import TaskServicer
from .api_templates import TemplateServicer
from .api_users import AuditServicer, TokenServicer, UserServicer
from .audit import AuditLog
from .auth import Authenticator, ensure_bootstrap_admin
from .cache import Cache
from .cron_loop import CronLoop
from .gateway import Gateway
from .leader import LeaderLoops
from .leadership import Always, Elected
from .liveness import Liveness
from .quotas import Quotas
from .scheduling import Scheduler
from .store import EtcdStore

log = logging.getLogger("corral.master")

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    # a half-open nodelet stream (its host gone, a cut cable) is noticed within seconds, not
    # when the next message would be written; nodelets ping as often (nodelet/agent.py)
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
]


def _duration(text: str) -> float:
    from corral import units

    try:
        return units.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _uid_range(text: str) -> tuple[int, int]:
    from . import uids

    try:
        return uids.parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bytes(text: str) -> int:
    from corral import units

    try:
        return units.parse_memory(text) if text.strip() != "0" else 0
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--etcd", default=env("CORRAL_ETCD", "127.0.0.1:2379"), help="etcd endpoint host:port, or a comma-separated list of ip:port members (env CORRAL_ETCD)")
    p.add_argument("--prefix", default=env("CORRAL_PREFIX", "/corral/"), help="key prefix in etcd (env CORRAL_PREFIX)")
    p.add_argument("--listen", default=env("CORRAL_LISTEN", "127.0.0.1:7070"), help="gRPC listen address; port 0 picks a free one")
    p.add_argument("--advertise", default=env("CORRAL_ADVERTISE", ""), help="address clients and nodelets reach this master at")
    p.add_argument("--name", default=env("CORRAL_NAME", socket.gethostname()), help="member name shown in cluster status")
    credentials.add_secret_arguments(p, "bootstrap-token", "CORRAL_BOOTSTRAP_TOKEN", "token of the first admin user")
    p.add_argument(
        "--uid-range", type=_uid_range, default=env("CORRAL_UID_RANGE", "2000000-2999999"),
        help="uids given to users, one each, for their tasks to run as (default 2000000-2999999); keep it apart from the nodes' own accounts",
    )
    p.add_argument(
        "--user-max-records", type=int, default=int(env("CORRAL_USER_MAX_RECORDS", "200000")),
        help="records (tasks of any state, templates) a user-role account may keep stored unless its quota says otherwise (default 200000; 0: no limit)",
    )
    p.add_argument(
        "--user-max-bytes", type=_bytes, default=env("CORRAL_USER_MAX_BYTES", "256Mi"),
        help="bytes of those records a user-role account may keep stored unless its quota says otherwise (default 256Mi; 0: no limit)",
    )
    p.add_argument(
        "--store-quota", type=_bytes, default=env("CORRAL_STORE_QUOTA", "2Gi"),
        help="etcd's --quota-backend-bytes (default 2Gi, etcd's own default): new work is refused once 80%% of it is in use, keeping room for the work already accepted",
    )
    p.add_argument("--heartbeat-interval", type=float, default=float(env("CORRAL_HEARTBEAT_INTERVAL", "1")), help="seconds between nodelet heartbeats")
    p.add_argument("--heartbeat-timeout", type=float, default=float(env("CORRAL_HEARTBEAT_TIMEOUT", "10")), help="seconds of silence before a node is DOWN")
    p.add_argument("--http", default=env("CORRAL_HTTP", "127.0.0.1:7071"), help="address of the HTTP side: /metrics, /healthz, the JSON API under /v1 (HTTPS with --tls); empty to disable")
    p.add_argument("--placement", choices=["binpack", "spread"], default=env("CORRAL_PLACEMENT", "binpack"), help="placement strategy: binpack (fill nodes, default) or spread (even out)")
    p.add_argument("--user-weights", default=env("CORRAL_USER_WEIGHTS", ""), help="fair-share weights, e.g. alice=3,bob=1 (default 1 each)")
    p.add_argument(
        "--lookahead", type=float, default=float(env("CORRAL_LOOKAHEAD", "1")),
        help="seconds before its due time a delayed or cron task is placed and sent to its node, which starts it on time",
    )
    p.add_argument(
        "--commit-batch", type=int, default=int(env("CORRAL_COMMIT_BATCH", "480")),
        help="most writes per etcd transaction when concurrent writes are committed together (etcd's --max-txn-ops must allow it)",
    )
    p.add_argument(
        "--retention", type=_duration, default=env("CORRAL_RETENTION", "7d"),
        help="delete finished task records this long after they ended, e.g. 7d or 12h; 0 keeps them all",
    )
    p.add_argument(
        "--audit-keep", type=int, default=int(env("CORRAL_AUDIT_KEEP", "100000")),
        help="audit records kept in etcd (the oldest beyond it are deleted; every record is also logged)",
    )
    tls.add_arguments(p)
    tls.add_etcd_arguments(p)
    p.add_argument("--lease-ttl", type=int, default=int(env("CORRAL_LEASE_TTL", "2")), help="leader lease in whole seconds: how fast a dead leader is replaced")
    p.add_argument("--test-force-leader", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ready-file", default="", help="write the bound address here once serving (for scripts and tests)")
    logs.add_arguments(p)
    p.add_argument(
        "--event-loop", choices=["uvloop", "asyncio"], default=env("CORRAL_EVENT_LOOP", "uvloop"),
        help="uvloop (default: 15%% more unary submissions/s, measured) or the standard library's loop",
    )


class Master:
    """The parts of one master replica, built from its options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tls = tls.tls_files(args.tls_ca, args.tls_cert, args.tls_key)
        self.store = EtcdStore(args.etcd, args.prefix, tls=tls.tls_files(args.etcd_ca, args.etcd_cert, args.etcd_key, flags="--etcd"),
                                 server_name=args.etcd_server_name)
        self.cache = Cache(self.store)
        self.leadership: Elected | Always = Always() if args.test_force_leader else Elected()
        self.audit = AuditLog(self.store, args.name, keep=args.audit_keep)
        self.quotas = Quotas(self.cache, user_max_records=args.user_max_records, user_max_bytes=args.user_max_bytes, store_quota=args.store_quota)
        self.auth = Authenticator(self.cache, self.audit, self.quotas)
        from .group_commit import GroupCommit
        from .taskops import TaskWriter

        self.commit = GroupCommit(self.store, max_ops=args.commit_batch)
        self.writer = TaskWriter(self.store, self.cache, self.leadership, self.commit)
        self.liveness = Liveness(self.store, self.cache, self.writer, self.leadership, timeout=args.heartbeat_timeout)
        self.gateway = Gateway(
            self.store, self.cache, self.writer, self.auth, self.leadership,
            heartbeat_interval=args.heartbeat_interval, heartbeat_timeout=args.heartbeat_timeout,
            on_heard=self.liveness.heard,
        )
        self.scheduler = Scheduler(self.cache, self.writer, self.gateway, config=placement_config(args), lookahead=args.lookahead)
        self.gateway.on_change = self.scheduler.wake
        self.gateway.on_prepare = self.scheduler.node_prepare
        from .retention import Retention

        self.retention = Retention(self.cache, self.commit, self.leadership, keep=args.retention, audit=self.audit)
        self.cron = CronLoop(self.store, self.cache, self.leadership, lookahead=args.lookahead, commit=self.commit, writer=self.writer)
        self.scheduler.on_lookahead = lambda seconds: setattr(self.cron, "lookahead", seconds)
        self.server = grpc.aio.server(options=GRPC_OPTIONS)
        self.leader: LeaderLoops | None = None
        self.cluster_id = ""
        self.address = ""
        self.http_address = ""

    def _add_services(self, address: str) -> None:
        s = self.server
        self.cluster = ClusterServicer(self.store, self.cache, self.auth, self.leadership, name=self.args.name, address=address, etcd=[self.args.etcd])
        self.cluster.cluster_id = self.cluster_id
        # the public services, also served as HTTP/JSON (http_api.py)
        self.servicers = {
            "templates": TemplateServicer(self.store, self.cache, self.auth, self.writer),
            "tasks": TaskServicer(self.store, self.cache, self.auth, self.writer, self.gateway, self.leadership, tls=self.tls),
            "nodes": NodeServicer(self.store, self.cache, self.auth, self.gateway),
            "cluster": self.cluster,
            "users": UserServicer(self.store, self.cache, self.auth, uid_range=self.args.uid_range),
            "tokens": TokenServicer(self.store, self.cache, self.auth),
            "audit": AuditServicer(self.auth, self.audit),
        }
        api_pb2_grpc.add_TemplateServiceServicer_to_server(self.servicers["templates"], s)
        api_pb2_grpc.add_TaskServiceServicer_to_server(self.servicers["tasks"], s)
        api_pb2_grpc.add_NodeServiceServicer_to_server(self.servicers["nodes"], s)
        api_pb2_grpc.add_ClusterServiceServicer_to_server(self.cluster, s)
        api_pb2_grpc.add_UserServiceServicer_to_server(self.servicers["users"], s)
        api_pb2_grpc.add_TokenServiceServicer_to_server(self.servicers["tokens"], s)
        api_pb2_grpc.add_AuditServiceServicer_to_server(self.servicers["audit"], s)
        nodelet_pb2_grpc.add_NodeletServiceServicer_to_server(self.gateway, s)
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, s)
        self.service_names = [
            api_pb2.DESCRIPTOR.services_by_name[n].full_name
            for n in ("TemplateService", "TaskService", "NodeService", "ClusterService", "UserService", "TokenService", "AuditService")
        ] + [nodelet_pb2.DESCRIPTOR.services_by_name["NodeletService"].full_name]
        reflection.enable([*self.service_names, health.SERVICE_NAME], s)

    async def run(self) -> None:
        await self.store.connect()
        if self.args.bootstrap_token:
            await ensure_bootstrap_admin(self.store, self.args.bootstrap_token, self.args.uid_range)
        self.cluster_id = self.gateway.cluster_id = await ensure_cluster_id(self.store)
        if assigned := await uids.assign_missing(self.store, self.args.uid_range):
            log.info("gave %d users made before uids their own uid", assigned)
        if self.tls is not None:
            port = self.server.add_secure_port(self.args.listen, self.tls.server_credentials())
        else:
            port = self.server.add_insecure_port(self.args.listen)
        host = self.args.listen.rpartition(":")[0]
        self.address = self.gateway.address = self.args.advertise or f"{host}:{port}"
        self._add_services(self.address)
        await self.server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.cache.run())
                tg.create_task(self.audit.run())
                tg.create_task(self.quotas.watch_store(self.store))
                await self.cache.ready.wait()
                gc_tuning.freeze_loaded()
                await _set_serving(self.health, ["", *self.service_names])
                member = api_pb2.Member(name=self.args.name, address=self.address, pid=os.getpid(), version=__version__)
                if isinstance(self.leadership, Elected):
                    self.leader = LeaderLoops(
                        self.store, self.leadership, member, [self.scheduler.run, self.liveness.run, self.cron.run, self.retention.run],
                        lease_ttl=self.args.lease_ttl, on_lost=self.gateway.close_all,
                    )
                    self.cluster.leader_loops = self.leader
                    tg.create_task(self.leader.run())
                else:
                    log.warning("--test-force-leader: running the leader loops without an election")
                    tg.create_task(self.scheduler.run())
                    tg.create_task(self.liveness.run())
                    tg.create_task(self.cron.run())
                    tg.create_task(self.retention.run())
                http = None
                if self.args.http:
                    app = metrics.app(self.cache, self.gateway, self.scheduler, self.writer, self.leadership)
                    http_api.add_routes(app, self.servicers)
                    http_api.add_ui(app)
                    http = await http_endpoint.start(self.args.http, app, ssl_context=http_api.ssl_context(self.tls) if self.tls else None)
                if http is not None:
                    self.http_address = http.address
                log.info("master %s serving on %s (etcd %s, metrics %s)", self.args.name, self.address, self.args.etcd, self.http_address or "off")
                if self.args.ready_file:
                    await asyncio.to_thread(_write_ready, self.args.ready_file, self.address, self.http_address)
                await stop.wait()
                log.info("master stopping")
                if http is not None:
                    await http.stop()
                if self.leader is not None:
                    await self.leader.resign()
                    self.gateway.close_all()  # nodelets go to the next leader now, not after the grace
                await self.server.stop(grace=1.0)
                raise _Stop
        except* _Stop:
            pass
        finally:
            await self.server.stop(grace=None)
            await self.store.close()


async def ensure_cluster_id(store: EtcdStore) -> str:
    """The cluster's identity, made once (create-if-absent) by the first master to start."""
    import secrets

    from . import keys
    from .store import Cmp, Put

    await store.txn([Cmp(keys.CLUSTER_ID, 0)], [Put(keys.CLUSTER_ID, secrets.token_hex(4).encode())])
    kv = await store.get(keys.CLUSTER_ID)
    assert kv is not None
    return kv.value.decode()


def placement_config(args: argparse.Namespace) -> sc.PlaceConfig:
    weights = []
    for item in filter(None, (x.strip() for x in args.user_weights.split(","))):
        user, _, w = item.partition("=")
        try:
            weights.append((user, float(w)))
        except ValueError:
            raise SystemExit(f"--user-weights: {item!r} is not user=weight") from None
    return sc.PlaceConfig(strategy=args.placement, user_weights=tuple(weights))


def _write_ready(path: str, address: str, http: str) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(f"{address}\n{http}\n")
    tmp.rename(path)


async def _run(args: argparse.Namespace) -> None:
    await Master(args).run()


class _Stop(Exception):
    pass


async def _set_serving(h: object, names: list[str]) -> None:
    """SERVING for the server ("") and for each corral service by its full name, as the
    standard health protocol lets clients ask (`grpc_health_probe -service corral.v1.TaskService`)."""
    for name in names:
        result = h.set(name, health_pb2.HealthCheckResponse.SERVING)  # type: ignore[attr-defined]
        if asyncio.iscoroutine(result):
            await result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="corral master", description="Run one corral master replica.")
    add_arguments(p)
    args = p.parse_args(argv)
    args.bootstrap_token = credentials.resolve_secret(p, args, "bootstrap-token", "CORRAL_BOOTSTRAP_TOKEN")
    logs.setup(args.log_level, args.log_format)
    gc_tuning.tune()
    try:
        if args.event_loop == "uvloop":
            uvloop.run(_run(args))
        else:
            asyncio.run(_run(args))
    except KeyboardInterrupt:
        pass
    except CorralError as e:
        print(f"corral master: {e}", file=sys.stderr)
        return 2
    return 0
