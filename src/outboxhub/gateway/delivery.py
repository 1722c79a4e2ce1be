"""Delivery to one connection: the callback the bus calls with each event of a subscription.

It encodes the EVENT into the connection's send queue, or refuses it when the queue is full (the bus then
pauses that subscription until the queue drains to half; see :mod:`outboxhub.gateway.connection`).

Dead letters pass one more check before they are queued: ``withhold`` (set by the connection) applies the
dead-letter rule of :mod:`outboxhub.auth.decide` and settles an event the principal may not read.
"""

from __future__ import annotations

from collections.abc import Callable

from outboxhub.bus.subscription import Subscription
from outboxhub.gateway.sendqueue import SendQueue
from outboxhub.gateway.stats import GatewayStats
from outboxhub.model import Delivery
from outboxhub.protocol.codec import encode_event

__all__ = ["SocketSub"]


class SocketSub:
    """One subscription of a connection: the bus subscription plus the EVENT encoder for it."""

    __slots__ = ("group", "out", "pattern", "paused", "stats", "subscription", "withhold")

    def __init__(
        self,
        out: SendQueue,
        paused: dict[SocketSub, None],
        stats: GatewayStats,
        pattern: str,
        group: str | None,
    ) -> None:
        self.out = out
        self.paused = paused
        self.stats = stats
        self.pattern = pattern
        self.group = group
        self.subscription: Subscription | None = None
        self.withhold: Callable[[SocketSub, Delivery], bool] | None = None
        """Called for each dead letter (``dlq.*``): True keeps it from this connection."""

    def deliver(self, delivery: Delivery) -> bool:
        """Called by the bus (must not block): queue the EVENT, or refuse when the send queue is full."""
        out = self.out
        stats = self.stats
        withhold = self.withhold
        if withhold is not None and delivery.event.topic.startswith("dlq.") and withhold(self, delivery):
            return True
        if out.is_full():
            out.refuse_event()
            self.paused[self] = None
            stats.events_refused += 1
            return False
        out.put_event(encode_event(self.pattern, self.group, delivery.event, delivery.attempt), self)
        stats.events_out += 1
        if delivery.attempt > 1:
            stats.redeliveries += 1
        return True
