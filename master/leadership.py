"""Who runs the leader-only loops, and the fence every leader write carries.

`SoleLeader` is the single-replica form: always the leader, no fence. The HA issue swaps
in an etcd election whose `fence()` returns the compare on the leader key's create
revision; nothing else changes.
"""

from __future__ import annotations

from typing import Protocol

from .store import Cmp


class Leadership(Protocol):
    def fence(self) -> list[Cmp]: ...

    def still_leader(self) -> bool: ...


class SoleLeader:
    def fence(self) -> list[Cmp]:
        return []

    def still_leader(self) -> bool:
        return True
