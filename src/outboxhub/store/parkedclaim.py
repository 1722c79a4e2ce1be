"""What a claim parked with a store is, whatever the store (SQLite's writer thread, PostgreSQL's group
commit): a future that resolves with ``(deliveries, last_seq)`` once the commit that ran it is in, and
the lot it waits in, from which the member can take it back until the store has taken it; and the
``park_claim`` both stores offer the bus (``bus/parking.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from outboxhub.model import Delivery
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.topics import compile_pattern

__all__ = ["ClaimParkingStore", "ParkedClaimBase"]


class _Lot(Protocol):
    def remove(self, claim: Any) -> bool: ...


class ParkedClaimBase:
    """One parked claim: ``matches`` says which committed topics it waits for; ``future`` carries
    ``(deliveries, last_seq)``, ``last_seq`` the counter its commit reached (-1: it did not run)."""

    __slots__ = ("_lot", "future", "matches")

    def __init__(
        self,
        lot: _Lot,
        future: asyncio.Future[tuple[list[Delivery], int]],
        matches: Callable[[str], object],
    ) -> None:
        self._lot = lot
        self.future = future
        self.matches = matches

    def withdraw(self) -> bool:
        """Take the claim back; False when the store has already taken it (then await ``future``)."""
        return self._lot.remove(self)

    def covers(self, seq: int) -> bool:
        """True when the claim ran in a commit that reached at least ``seq``."""
        future = self.future
        if not future.done() or future.cancelled() or future.exception() is not None:
            return False
        return future.result()[1] >= seq


class ClaimParkingStore:
    """``park_claim`` for a store whose writer can run a parked claim (mixed into the store class): the
    claim's request, its ``now`` taken when it runs, handed to the store's :meth:`_park`."""

    __slots__ = ()

    def park_claim(
        self,
        pattern: str,
        group: str,
        member: str,
        *,
        limit: int,
        ack_timeout_ms: int,
        max_deliver: int,
        ordered_by_key: bool = False,
    ) -> ParkedClaimBase:
        """Park a claim: it runs in the first commit that appends an event matching ``pattern``."""
        request = ClaimRequest(
            pattern=pattern,
            group=group,
            member=member,
            limit=limit,
            ack_timeout_ms=ack_timeout_ms,
            max_deliver=max_deliver,
            ordered=ordered_by_key,
            now=0,
        )
        return self._park(request, compile_pattern(pattern).match)

    def _park(self, request: ClaimRequest, matches: Callable[[str], object]) -> ParkedClaimBase:
        """Park ``request`` (refused when the store is closed) until a commit appends a topic ``matches``."""
        raise NotImplementedError
