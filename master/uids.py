"""Each user's own uid: allocated once, from the master's --uid-range, when the user is
created; never reused (a counter in the store only goes up), so files or processes a
deleted user left behind never belong to a new one.

The counter and the user record are written in one transaction that compares the
counter's revision, so two masters creating users at once cannot hand out one uid twice.
"""

from __future__ import annotations

from corral.errors import ResourceExhausted, Unavailable
from corral.v1 import types_pb2 as pb

from . import records
from .store import Cmp, EtcdStore, Put

NEXT_KEY = "uid_next"
DEFAULT_RANGE = (2_000_000, 2_999_999)


def parse_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"{text!r} is not FIRST-LAST, e.g. 2000000-2999999")
    lo, hi = int(first), int(last)
    if not 1000 <= lo <= hi < 2**31 - 1:
        raise ValueError(f"{text!r}: uids between 1000 and 2147483646, first ≤ last")
    return lo, hi


async def reserve(store: EtcdStore, uid_range: tuple[int, int]) -> tuple[int, Cmp, Put]:
    """The next free uid, with the compare and put that claim it; commit them together
    with the user record (a lost race: call again)."""
    kv = await store.get(NEXT_KEY)
    n = max(int(kv.value) if kv is not None else 0, uid_range[0])
    if n > uid_range[1]:
        raise ResourceExhausted(f"every uid in the range {uid_range[0]}-{uid_range[1]} is taken; widen --uid-range")
    return n, Cmp(NEXT_KEY, kv.mod_revision if kv else 0), Put(NEXT_KEY, str(n + 1).encode())


async def create_user(store: EtcdStore, key: str, user: pb.User, uid_range: tuple[int, int],
                      compares: list[Cmp], extra: list[Put]) -> tuple[bool, int]:
    """Write a new or changed user record with a fresh uid. (succeeded, revision); False
    when one of `compares` failed. Retries a lost race on the counter itself."""
    for _ in range(20):
        uid, cmp, put = await reserve(store, uid_range)
        user.uid = uid
        result = await store.txn([cmp, *compares], [put, Put(key, user.SerializeToString()), *extra])
        if result.succeeded:
            return True, result.revision
        if not await _counter_moved(store, cmp):
            return False, 0  # the counter held: one of the caller's compares failed
    raise Unavailable("could not allocate a uid: too many concurrent user creations; try again")


async def _counter_moved(store: EtcdStore, cmp: Cmp) -> bool:
    kv = await store.get(NEXT_KEY)
    return (kv.mod_revision if kv else 0) != cmp.mod_revision


async def assign_missing(store: EtcdStore, uid_range: tuple[int, int]) -> int:
    """Give a uid to every user record that has none (made before users had uids).
    Run at master start; how many were assigned."""
    from . import keys

    kvs, _ = await store.range(keys.USERS)
    assigned = 0
    for kv in kvs:
        user = records.parse(pb.User(), kv.value, kv.key)
        if user is None or user.uid:
            continue
        ok, _ = await create_user(store, kv.key, user, uid_range, [Cmp(kv.key, kv.mod_revision)], [])
        assigned += ok
    return assigned
