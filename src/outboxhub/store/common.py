"""Backend-independent pieces of the group semantics in ``base.py``: dead-letter events and ack-floor maths.

Every backend builds dead-letter events and moves ack floors the same way, so these live here rather than
in each backend; the contract suite checks the observable result.
"""

from __future__ import annotations

import hashlib

from outboxhub.model import MAX_EVENT_ID, Event, NewEvent
from outboxhub.store.base import dlq_topic

__all__ = [
    "ACK_TIMEOUT_REASON",
    "NACK_REASON",
    "ack_floor",
    "dead_letter_event",
    "dead_letter_id",
]

ACK_TIMEOUT_REASON = "ack timeout"
"""``x-reason`` of an event dead-lettered because its last delivery was never acked (nor nacked)."""

NACK_REASON = "nack"
"""``x-reason`` of an event dead-lettered by a NACK that gave no reason."""


def dead_letter_id(event_id: str, pattern: str, group: str) -> str:
    """The id of ``event_id``'s dead-letter event for the group ``(pattern, group)``.

    Deterministic, so a dead-letter written twice (a retried transaction, two hub processes racing) is
    stored once thanks to idempotent publish. It names the pattern (by a short digest) as well as the group:
    two groups may share a name on different patterns, and each dead-letters on its own. Readable as
    ``<event id>:dlq:<group>:<digest>`` when that fits in ``MAX_EVENT_ID`` characters (so a subscriber of
    ``dlq.**`` can ACK it), else a digest of all three (the original id is in the ``x-original-id`` header).
    """
    digest = hashlib.blake2b(pattern.encode(), digest_size=6).hexdigest()
    readable = f"{event_id}:dlq:{group}:{digest}"
    if len(readable) <= MAX_EVENT_ID:
        return readable
    whole = hashlib.blake2b("\0".join((event_id, pattern, group)).encode(), digest_size=16).hexdigest()
    return f"dlq:{whole}"


def dead_letter_event(
    event: Event, pattern: str, group: str, *, attempts: int, reason: str, now: int
) -> NewEvent:
    """The event published to ``dlq.<group>.<topic>`` when ``event`` exhausts its deliveries in the group
    ``(pattern, group)``.

    It keeps the original payload, key, tags and sid; its headers are the original headers plus
    ``x-original-topic``, ``x-original-id``, ``x-group``, ``x-attempts`` and ``x-reason``; ``caused_by`` names
    the original event.
    """
    headers = dict(event.headers or {})
    headers.update(
        {
            "x-original-topic": event.topic,
            "x-original-id": event.id,
            "x-group": group,
            "x-attempts": str(attempts),
            "x-reason": reason,
        }
    )
    return NewEvent(
        topic=dlq_topic(group, event.topic),
        payload=event.payload,
        id=dead_letter_id(event.id, pattern, group),
        key=event.key,
        headers=headers,
        tags=event.tags,
        caused_by=[event.id],
        sid=event.sid,
        ts=now,
    )


def ack_floor(min_pending_seq: int | None, frontier: int) -> int:
    """The ack floor: just below the oldest pending seq, or the frontier when nothing is pending."""
    if min_pending_seq is None:
        return frontier
    return min(min_pending_seq - 1, frontier)
