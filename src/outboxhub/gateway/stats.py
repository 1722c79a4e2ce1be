"""The gateway's counters, read by the ops API and ``/metrics``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["GatewayStats"]


@dataclass(slots=True)
class GatewayStats:
    """Counters for the ops API / Prometheus (read-only for them; the gateway increments)."""

    connections_total: int = 0
    frames_in: int = 0
    publishes: int = 0
    events_out: int = 0
    events_refused: int = 0
    redeliveries: int = 0
    acks: int = 0
    nacks: int = 0
    events_withheld: int = 0
    """Dead letters not delivered because the principal may not read their original topic."""
    errors: Counter[str] = field(default_factory=Counter)
    quota_refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    """PUBLISHes refused by a quota, by (kind, pattern): kind "principal", "topic" or "token"."""
    extends: int = 0
