"""Who runs the leader-only loops, and the fence every leader write carries.

`Elected` follows an etcd election: while this master leads, `fence()` is the compare on
its election key's create revision, so a deposed leader's writes fail. `Always` is the
test-only form that leads without an election (to show that fencing and create-if-absent,
not luck, prevent doubles when two masters run the loops at once).
"""

from __future__ import annotations

from typing import Protocol

from .election import Election
from .store import Cmp


class Leadership(Protocol):
    def fence(self) -> list[Cmp]: ...

    def still_leader(self) -> bool: ...

    def is_leader(self) -> bool: ...

    def lease_valid(self) -> bool: ...

    def step_down(self) -> None: ...


class Elected:
    def __init__(self) -> None:
        self.election: Election | None = None

    def won(self, election: Election) -> None:
        self.election = election

    def lost(self) -> None:
        self.election = None

    def step_down(self) -> None:
        """A fenced write found another leader: end this term now."""
        if self.election is not None:
            self.election.session.lost.set()

    def is_leader(self) -> bool:
        e = self.election
        return e is not None and e.leading and not e.session.lost.is_set()

    def lease_valid(self) -> bool:
        """Leading, and the election lease surely unexpired right now: only then may this
        master renew node leases (a new leader can only be elected once it has expired)."""
        e = self.election
        return e is not None and e.leading and e.session.valid()

    def still_leader(self) -> bool:
        return self.is_leader()

    def fence(self) -> list[Cmp]:
        e = self.election
        if e is None:
            # not the leader: a compare that can never hold, so nothing is written
            return [Cmp("election/-none-", -1, create=True)]
        return e.fence()

    @property
    def term(self) -> int:
        return self.election.revision if self.election else 0


class Always:
    """Test-only: lead without an election, with no fence."""

    term = 0

    def is_leader(self) -> bool:
        return True

    def lease_valid(self) -> bool:
        return True

    def still_leader(self) -> bool:
        return True

    def fence(self) -> list[Cmp]:
        return []

    def step_down(self) -> None:
        pass
