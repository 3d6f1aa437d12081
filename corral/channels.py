"""gRPC channel settings every corral process shares.

Why the reconnect settings: gRPC's default backoff after a failed connection grows to two
minutes, and subchannels are shared process-wide, so a fresh channel to a master (or etcd)
that was down for a while inherited a long wait: after a two-minute outage a nodelet found
the new leader only after 40 s, long enough to be marked DOWN. Capped at a second or two,
a member that comes back is found within that.
"""

from __future__ import annotations

import grpc

from .tls import TlsFiles

# (name, value) pairs for grpc channel options
RECONNECT: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# a channel of its own each time (not the process-wide subchannel pool): a new session
# starts connecting at once, whatever an earlier channel to the same address went through
OWN_SUBCHANNELS: list[tuple[str, int | str]] = [("grpc.use_local_subchannel_pool", 1)]


def aio_channel(addr: str, tls: TlsFiles | None, options: list[tuple[str, int | str]]) -> grpc.aio.Channel:
    """A channel to `addr`: mutual TLS with `tls`'s files, else plaintext (loopback, tests)."""
    opts = [*RECONNECT, *options]
    if tls is not None:
        return grpc.aio.secure_channel(addr, tls.channel_credentials(), options=opts)
    return grpc.aio.insecure_channel(addr, options=opts)
