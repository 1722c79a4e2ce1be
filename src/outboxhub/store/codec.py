"""How events are laid out in stored rows, shared by every backend: JSON bytes for the payload and an
optional ``meta`` JSON blob (headers, tags, caused_by, sid).

``prepare`` runs on the caller's side (the event loop) so the writer thread only binds ready values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from outboxhub.errors import StoreError
from outboxhub.ids import new_id, now_ms
from outboxhub.model import Event, NewEvent

__all__ = ["EVENT_COLUMNS", "EventRow", "Prepared", "decode_event", "prepare"]

Prepared = tuple[str, str, int, str | None, bytes, bytes | None]
"""An event ready to insert: (id, topic, ts, key, payload JSON, meta JSON or None)."""

EventRow = tuple[int, str, int, int, str | None, bytes, bytes | None]
"""A row as selected with ``EVENT_COLUMNS``: (seq, id, topic_id, ts, key, payload, meta)."""

EVENT_COLUMNS = "seq, id, topic_id, ts, key, payload, meta"


class _Meta(msgspec.Struct, omit_defaults=True):
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None


_encode = msgspec.json.Encoder().encode
_decode_payload = msgspec.json.Decoder().decode
_decode_meta = msgspec.json.Decoder(_Meta).decode


def prepare(event: NewEvent) -> Prepared:
    """Fill in id and ts, encode payload and meta. Raises ``StoreError`` for a payload that is not JSON."""
    event_id = event.id if event.id is not None else new_id()
    try:
        payload = _encode(event.payload)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(
            f"event {event_id} on {event.topic!r}: payload is not JSON-encodable: {exc}"
        ) from exc
    meta: bytes | None = None
    if event.headers or event.tags or event.caused_by or event.sid is not None:
        meta = _encode(
            _Meta(
                headers=event.headers or None,
                tags=event.tags or None,
                caused_by=event.caused_by or None,
                sid=event.sid,
            )
        )
    ts = event.ts if event.ts is not None else now_ms()
    return (event_id, event.topic, ts, event.key, payload, meta)


def decode_event(row: EventRow, topic_name: Callable[[int], str]) -> Event:
    """Build an ``Event`` from a selected row; ``topic_name`` maps a topic id to its name."""
    seq, event_id, topic_id, ts, key, payload, meta = row
    value: Any = _decode_payload(payload)
    if meta is None:
        return Event(id=event_id, topic=topic_name(topic_id), seq=seq, ts=ts, payload=value, key=key)
    m = _decode_meta(meta)
    return Event(
        id=event_id,
        topic=topic_name(topic_id),
        seq=seq,
        ts=ts,
        payload=value,
        key=key,
        headers=m.headers,
        tags=m.tags,
        caused_by=m.caused_by,
        sid=m.sid,
    )
