"""What the bus asks of a store that can park a member's next claim (the SQLite store: its writer runs a
parked claim inside the write batch that appends a matching event, ``store/sqlite/parking.py``; the
PostgreSQL store: in the group commit's statement, ``store/postgres/parked.py``)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

__all__ = ["ClaimParking", "ParkedClaimHandle"]


class ParkedClaimHandle(Protocol):
    """A claim parked with a store: ``future`` resolves with ``(deliveries, last_seq)`` when it ran."""

    @property
    def future(self) -> asyncio.Future[Any]: ...

    def withdraw(self) -> bool:
        """Take the claim back; False when it already ran or is running (then await ``future``)."""
        ...

    def covers(self, seq: int) -> bool:
        """True when the claim ran in a batch that committed at least up to ``seq``."""
        ...


@runtime_checkable
class ClaimParking(Protocol):
    """A store that can run a member's next claim inside the write batch that appends a matching event."""

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
    ) -> ParkedClaimHandle: ...
