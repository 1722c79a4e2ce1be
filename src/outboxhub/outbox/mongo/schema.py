"""The indexes of an outbox collection and ``ensure_schema`` for MongoDB (``docs/mongodb.md``)."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import OperationFailure

from outboxhub.errors import OutboxError, StoreURLError
from outboxhub.store.mongo.conn import validate_collection_name

__all__ = ["collection_name", "ensure_schema_mongo", "ensure_schema_mongo_async", "outbox_indexes"]

log = logging.getLogger("outboxhub.outbox")


def collection_name(table: str) -> str:
    try:
        return validate_collection_name(table, what="outbox collection")
    except StoreURLError as exc:
        raise OutboxError(str(exc)) from exc


def outbox_indexes() -> list[IndexModel]:
    """The indexes of an outbox collection, with default names (docs/mongodb.md says what each is for).

    The first and third are the original TypeScript outbox's ``{status: 1, lease_until: 1}`` and
    ``{ts: 1}``, under the same names. (``_id`` would complete the ``(status, ord, ts)`` order, but the
    nx-27017 stand-in cannot index it in a compound index; the rare ties on ``(ord, ts)`` are sorted in
    memory.)
    """
    return [
        IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("available_at", ASCENDING)]),
        IndexModel([("ts", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("ord", ASCENDING), ("ts", ASCENDING)]),
        IndexModel([("key", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("claim_token", ASCENDING)], sparse=True),
        IndexModel([("status", ASCENDING), ("sent_at", ASCENDING)]),
    ]


_INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict: the index exists in another form


def ensure_schema_mongo(db: Database[Any], table: str = "outbox") -> None:
    """Create the outbox indexes on ``db[table]`` with pymongo's synchronous API (the collection itself is
    created by MongoDB on first write). Idempotent; an index that exists under another name or with other
    options is kept as it is (logged). Driver errors propagate."""
    collection = db[collection_name(table)]
    models = outbox_indexes()
    try:
        collection.create_indexes(models)
    except OperationFailure as exc:
        if exc.code not in _INDEX_CONFLICTS:
            raise
        for model in models:  # one by one, keeping the ones that exist in another form
            try:
                collection.create_indexes([model])
            except OperationFailure as one:
                if one.code not in _INDEX_CONFLICTS:
                    raise
                log.warning(
                    "%s: keeping the existing index %s (%s)", collection.full_name, model.document, one
                )


async def ensure_schema_mongo_async(db: AsyncDatabase[Any], table: str = "outbox") -> None:
    """``ensure_schema_mongo`` for a pymongo ``AsyncDatabase``."""
    from outboxhub.store.mongo.store import create_indexes

    await create_indexes(db[collection_name(table)], outbox_indexes())
