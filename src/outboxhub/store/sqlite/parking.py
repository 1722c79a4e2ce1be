"""Claims parked with the SQLite writer: run inside the next write batch that appends a matching event.

A group member with nothing to claim parks its next claim instead of only sleeping. The writer runs every
parked claim whose pattern matches a topic the batch appended, after the batch's publishes and in the same
transaction, so an event published to a waiting member is claimed by the commit that makes it durable:
one write transaction per event on the delivery path instead of two (publish, then the member's claim).
The claim's result reaches the loop with the batch's other results, before the commit notification.

The member withdraws the claim (``ParkedClaim.withdraw``) when it wakes for any other reason. The writer
takes parked claims under the same lock, so exactly one side wins: either the claim is withdrawn and never
runs, or it runs and its future carries the deliveries, which the member then hands out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

from outboxhub.store.parkedclaim import ParkedClaimBase

__all__ = ["ParkedClaim", "ParkingLot"]


class ParkedClaim(ParkedClaimBase):
    """One parked claim, run as ``fn(tx, *args)`` in the batch that takes it. ``future`` resolves with
    ``(deliveries, last_seq)`` once its batch commits: ``last_seq`` is the highest seq the claim saw, so a
    commit notification up to it brings nothing new."""

    __slots__ = ("args", "fn")

    def __init__(
        self,
        lot: ParkingLot,
        future: asyncio.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        matches: Callable[[str], object],
    ) -> None:
        super().__init__(lot, future, matches)
        self.fn = fn
        self.args = args


class ParkingLot:
    """The parked claims of one writer; the loop adds and withdraws, the writer thread takes."""

    __slots__ = ("_claims", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[ParkedClaim, None] = {}  # insertion-ordered: the first parked runs first

    def __len__(self) -> int:
        return len(self._claims)

    def add(self, claim: ParkedClaim) -> None:
        with self._lock:
            self._claims[claim] = None

    def remove(self, claim: ParkedClaim) -> bool:
        with self._lock:
            return self._claims.pop(claim, 0) is None

    def take(self, topics: Iterable[str]) -> list[ParkedClaim]:
        """Remove and return the claims whose pattern matches one of ``topics`` (writer thread)."""
        names = tuple(topics)
        with self._lock:
            taken = [claim for claim in self._claims if any(claim.matches(name) for name in names)]
            for claim in taken:
                del self._claims[claim]
        return taken

    def take_all(self) -> list[ParkedClaim]:
        with self._lock:
            taken = list(self._claims)
            self._claims.clear()
        return taken
