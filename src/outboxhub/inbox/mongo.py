"""The inbox on MongoDB: one document per processed delivery in the caller's transaction (needs pymongo).

``_id`` is ``{"g": group, "t": topic, "e": event_id}``, so the key is unique without another index;
``processed_at`` (epoch ms) is indexed for retention cleanup. A claim is an upsert with
``$setOnInsert`` in the session's transaction: it inserts when the delivery is new and matches the
existing document otherwise, so a duplicate never raises (a write error would abort the transaction).
"""

from __future__ import annotations

import re
from typing import Any

from pymongo import ASCENDING

from outboxhub.errors import InboxError

__all__ = [
    "claim_mongo",
    "claim_mongo_async",
    "cleanup_mongo",
    "cleanup_mongo_async",
    "collection_name",
    "ensure_schema_mongo",
    "ensure_schema_mongo_async",
]

_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,119}")


def collection_name(table: object) -> str:
    """``table`` as a collection name, or ``InboxError`` naming what is wrong with it."""
    if not isinstance(table, str) or not _COLLECTION.fullmatch(table) or table.startswith("system."):
        raise InboxError(
            f"inbox collection {table!r:.80} must be 1-120 letters, digits, '_' or '.', not starting with a "
            "digit, '.' or 'system.'"
        )
    return table


def _check_session(session: Any) -> None:
    if session is None:
        raise InboxError(
            "inbox on MongoDB needs session= (the ClientSession of your transaction): without it the "
            "inbox record would not commit together with your writes"
        )
    if not session.in_transaction:
        raise InboxError(
            "inbox: the session has no transaction: call session.start_transaction() (or use "
            "session.with_transaction) first, otherwise the inbox record would commit on its own"
        )


def _key(group: str, topic: str, event_id: str) -> dict[str, str]:
    return {"g": group, "t": topic, "e": event_id}


def claim_mongo(
    db: Any, table: str, group: str, topic: str, event_id: str, now_ms: int, *, session: Any
) -> bool:
    """Record the delivery in ``session``'s transaction; True if it is new (never commits)."""
    _check_session(session)
    result = db[collection_name(table)].update_one(
        {"_id": _key(group, topic, event_id)},
        {"$setOnInsert": {"processed_at": now_ms}},
        upsert=True,
        session=session,
    )
    return result.upserted_id is not None


async def claim_mongo_async(
    db: Any, table: str, group: str, topic: str, event_id: str, now_ms: int, *, session: Any
) -> bool:
    """``claim_mongo`` for an ``AsyncDatabase`` and an ``AsyncClientSession``."""
    _check_session(session)
    result = await db[collection_name(table)].update_one(
        {"_id": _key(group, topic, event_id)},
        {"$setOnInsert": {"processed_at": now_ms}},
        upsert=True,
        session=session,
    )
    return result.upserted_id is not None


def cleanup_mongo(db: Any, table: str, cutoff_ms: int, *, session: Any = None) -> int:
    """Delete the documents processed before ``cutoff_ms``; the number deleted."""
    result = db[collection_name(table)].delete_many({"processed_at": {"$lt": cutoff_ms}}, session=session)
    return int(result.deleted_count)


async def cleanup_mongo_async(db: Any, table: str, cutoff_ms: int, *, session: Any = None) -> int:
    """``cleanup_mongo`` for an ``AsyncDatabase``."""
    result = await db[collection_name(table)].delete_many(
        {"processed_at": {"$lt": cutoff_ms}}, session=session
    )
    return int(result.deleted_count)


def ensure_schema_mongo(db: Any, table: str) -> None:
    """Create the retention index on ``processed_at`` (the key is ``_id``)."""
    db[collection_name(table)].create_index([("processed_at", ASCENDING)], name="processed_at")


async def ensure_schema_mongo_async(db: Any, table: str) -> None:
    """``ensure_schema_mongo`` for an ``AsyncDatabase``."""
    await db[collection_name(table)].create_index([("processed_at", ASCENDING)], name="processed_at")
