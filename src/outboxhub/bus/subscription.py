"""The ``Subscription`` handle the bus returns, and the ``DeliverFn`` callback it calls."""

from __future__ import annotations

import abc
from collections.abc import Callable

from outboxhub.model import Delivery

__all__ = ["DeliverFn", "HoldFn", "Subscription"]

DeliverFn = Callable[[Delivery], bool]
"""Hands one delivery to a member. Must not block or await: put it on the member's send queue and return
True, or return False when the queue is full. False means *not accepted*: the bus keeps the delivery, pauses
the subscription, and offers the same delivery again after ``resume()`` (if its ack deadline has not passed
by then; otherwise the store redelivers it, possibly to another member). ``deliver`` may call ``pause()``
on its own subscription and still return True (accepted, but stop after this one)."""

HoldFn = Callable[[bool], None]
"""Optional companion of a ``DeliverFn``: called with True before the bus hands a member several deliveries
in a row (one claim's), and with False after the last: what ``deliver`` queued in between may be held and
sent together (one socket write for a claim of 256 EVENTs instead of 256)."""


class Subscription(abc.ABC):
    """One member's subscription: a competing member of ``(pattern, group)``, or an ephemeral live tail
    when ``group`` is None."""

    __slots__ = ("group", "member", "pattern")

    def __init__(self, pattern: str, group: str | None, member: str) -> None:
        self.pattern = pattern
        self.group = group
        self.member = member

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Deliveries handed to (or held for) this member and not yet acked, nacked or timed out.

        Always 0 for an ephemeral subscription.
        """

    @property
    @abc.abstractmethod
    def paused(self) -> bool:
        """True while the subscription does not take new deliveries (``pause()`` or a refused delivery)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @abc.abstractmethod
    def pause(self) -> None:
        """Stop handing out deliveries (flow control). Claims already held keep their deadlines."""

    @abc.abstractmethod
    def resume(self) -> None:
        """Start again: first the deliveries that were refused, then new claims."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the subscription. A group member's unacked claims are released so other members get them
        at once. Idempotent."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else "paused" if self.paused else "active"
        return (
            f"<{type(self).__name__} pattern={self.pattern!r} group={self.group!r} member={self.member!r}"
            f" {state} in_flight={self.in_flight}>"
        )
