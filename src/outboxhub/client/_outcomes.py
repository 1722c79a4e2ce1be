"""What a handler can say besides "done" (return) and "failed" (raise any other exception: NACK for a
retry): ``Retry`` (redeliver after a delay) and ``Terminate`` (dead-letter at once); and what an inbox is to
the SDK (``subscribe(..., inbox=...)``; the implementations are in ``outboxhub.inbox``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["InboxRunner", "Retry", "Terminate"]

C_co = TypeVar("C_co", covariant=True)


class Retry(Exception):
    """Raise from a handler to have the event redelivered after ``delay_ms`` (NACK with that delay).

    ``delay_ms=None`` leaves the delay to the group's backoff. ``reason`` is recorded in the dead-letter
    headers if the group's ``max_deliver`` runs out. Unlike any other exception, it is not logged as a
    handler failure::

        if not inventory_ready():
            raise Retry(delay_ms=5_000, reason="inventory not loaded yet")
    """

    def __init__(self, delay_ms: int | None = None, reason: str | None = None) -> None:
        if delay_ms is not None and (isinstance(delay_ms, bool) or not isinstance(delay_ms, int)):
            raise TypeError(f"Retry(delay_ms=...) must be an int of milliseconds, got {delay_ms!r:.40}")
        if delay_ms is not None and delay_ms < 0:
            raise ValueError(f"Retry(delay_ms=...) must be >= 0, got {delay_ms}")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"Retry(reason=...) must be a str, got {type(reason).__name__}")
        super().__init__(reason or (f"retry in {delay_ms} ms" if delay_ms is not None else "retry"))
        self.delay_ms = delay_ms
        self.reason = reason


class Terminate(Exception):
    """Raise in a handler to dead-letter the event at once, with ``reason``, and never retry it (a
    terminal ``NACK``: it goes to ``dlq.<group>.<topic>`` whatever attempt this is)."""

    def __init__(self, reason: str = "terminated by the handler") -> None:
        super().__init__(reason)
        self.reason = reason


class InboxRunner(Protocol[C_co]):
    """What ``subscribe(..., inbox=...)`` needs; :class:`outboxhub.inbox.Inbox` implements it."""

    @property
    def asynchronous(self) -> bool:
        """True if handlers must be ``async``; False if they must be synchronous (run in a thread)."""

    async def run(
        self, group: str, topic: str, event_id: str, work: Callable[[C_co], Awaitable[None] | None]
    ) -> bool:
        """Run ``work(db)`` in a transaction that records the delivery; False if it was recorded before."""
