"""The document of an outbox record in MongoDB: writing it (``record_doc``) and reading it back
(``decode_record``).

**The original shape.** The original TypeScript outbox (the service outboxhub replaces) wrote records as
``{_id, topic, payload, headers?, status: "pending", ts, attempts: 0}`` with ``_id`` a string or an
ObjectId, ``ts`` a JS number, and ``"error"`` as the terminal status. "Records in the original shape"
means those, in this package. outboxhub writes a superset, adding what a safe drainer needs::

    {_id, topic, payload, headers?, key?, status: "pending", ts, attempts: 0,          # the original shape
     available_at, ord, claimed_by?, claim_token?, lease_until?, last_err?, sent_at?}

Records in the original shape are drained as they are: a missing ``available_at`` means "available now",
and a status ``"error"`` counts as ``"dead"``. Order is ``(ord, ts, _id)``: ``ord`` is a per-process
monotonic microsecond stamp set by ``add`` (``ts`` has only millisecond resolution), so records added by one
process keep their order; records without ``ord`` (in the original shape) sort first.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from bson import ObjectId
from bson.int64 import Int64

from outboxhub.outbox.model import OutboxRecord, PreparedRecord, Status
from outboxhub.store.mongo.events import decode_payload, encode_payload

__all__ = ["Doc", "decode_record", "id_values", "next_ord", "record_doc", "to_ms"]

Doc = dict[str, Any]

_ord_lock = threading.Lock()
_last_ord = 0


def next_ord() -> int:
    """A microsecond stamp, strictly increasing within this process (the outbox order of ``add``)."""
    global _last_ord
    with _ord_lock:
        _last_ord = max(time.time_ns() // 1000, _last_ord + 1)
        return _last_ord


def record_doc(record: PreparedRecord) -> Doc:
    """The document ``add`` writes for ``record`` (without ``_id``, which the upsert's filter sets)."""
    doc: Doc = {"topic": record.topic}
    encode_payload(record.payload_json, doc)
    if record.key is not None:
        doc["key"] = record.key
    if record.headers is not None:
        doc["headers"] = record.headers
    doc.update(
        status="pending",
        ts=Int64(record.ts),
        attempts=0,
        available_at=Int64(record.ts),
        ord=Int64(next_ord()),
    )
    return doc


def _id_text(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, ObjectId):
        return str(raw)
    return None


def id_values(record_id: str) -> list[Any]:
    """The ``_id`` values a record id may stand for (records in the original shape may have ObjectId ids)."""
    return [record_id, ObjectId(record_id)] if ObjectId.is_valid(record_id) else [record_id]


def to_ms(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{value!r} is not a time in milliseconds")


def decode_record(doc: Doc, *, lenient: bool = False) -> OutboxRecord | str:
    """An ``OutboxRecord`` from a document, or why it cannot be drained (the record then goes dead).

    With ``lenient`` (operators listing records) unreadable fields are shown as well as possible."""
    record_id = _id_text(doc.get("_id"))
    if record_id is None:
        if not lenient:
            return f"record _id {doc.get('_id')!r} must be a string or an ObjectId"
        record_id = repr(doc.get("_id"))
    topic = doc.get("topic")
    if not isinstance(topic, str):
        if not lenient:
            return f"topic {topic!r} is not a string"
        topic = repr(topic)
    key = doc.get("key")
    if key is not None and not isinstance(key, str):
        if not lenient:
            return f"key {key!r} is not a string"
        key = repr(key)
    headers = doc.get("headers")
    if headers is not None and not (
        isinstance(headers, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        if not lenient:
            return f"headers are not an object of strings: {headers!r:.200}"
        headers = None
    try:
        payload = decode_payload(doc)
    except msgspec.DecodeError as exc:
        if not lenient:
            return f"payload is not valid JSON: {exc}"
        payload = doc.get("payload_json")
    status = doc.get("status")
    status_value: Status = (
        "dead"
        if status == "error"
        else status
        if status in ("pending", "claimed", "sent", "dead")
        else "pending"
    )
    try:
        ts = to_ms(doc.get("ts"))
        lease_until = doc.get("lease_until")
        sent_at = doc.get("sent_at")
        return OutboxRecord(
            id=record_id,
            topic=topic,
            payload=payload,
            key=key,
            headers=dict(headers) if headers else None,
            status=status_value,
            ts=ts,
            attempts=int(doc.get("attempts") or 0),
            available_at=to_ms(doc.get("available_at"), ts),
            claimed_by=doc.get("claimed_by"),
            claim_token=doc.get("claim_token"),
            lease_until=None if lease_until is None else to_ms(lease_until),
            last_err=doc.get("last_err"),
            sent_at=None if sent_at is None else to_ms(sent_at),
        )
    except (ValueError, TypeError) as exc:
        if lenient:
            return f"unreadable record {record_id}: {exc}"
        return f"unreadable field: {exc}"
