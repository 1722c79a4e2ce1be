"""``outbox.add`` for pymongo: write a record into the caller's transaction.

``add(db, topic, payload, session=s)`` upserts the record (``$setOnInsert``: an existing id is left as it
is, and no duplicate-key error can abort the caller's transaction) with the caller's ``ClientSession``,
inside the transaction the caller started. Transactions need a replica set (or a sharded cluster): with a
standalone server, ``add`` with a session raises ``OutboxError`` saying so, before anything is written. The
deployment is read from the client's topology (a ``hello`` when it is not known yet). A session without a
started transaction is refused too: the record would commit on its own, not with the business write.
Without ``session`` the record is written on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, InvalidOperation, OperationFailure, PyMongoError
from pymongo.mongo_client import MongoClient

from outboxhub.errors import OutboxError
from outboxhub.outbox.model import PreparedRecord
from outboxhub.outbox.mongo.records import record_doc
from outboxhub.outbox.mongo.schema import collection_name
from outboxhub.store.mongo.conn import supports_transactions

__all__ = [
    "TXN_NEEDS_REPLICA_SET",
    "deployment_supports_transactions",
    "insert_mongo",
    "insert_mongo_async",
]

TXN_NEEDS_REPLICA_SET = (
    "MongoDB transactions need a replica set (or a sharded cluster), and {where} is a standalone server: "
    "outbox.add(..., session=...) cannot write the record in your transaction. Run the server as a "
    "replica set (mongod --replSet rs0, then rs.initiate()), or call add() without session= (the record "
    "is then written on its own, not atomically with your other writes)"
)


def deployment_supports_transactions(topology_type: str, server_types: Sequence[str]) -> bool | None:
    """Whether a pymongo topology can run transactions; None while it is not known yet.

    ``topology_type`` and ``server_types`` are pymongo's ``topology_type_name`` and the
    ``server_type_name`` of each known server.
    """
    if topology_type in ("ReplicaSetWithPrimary", "ReplicaSetNoPrimary", "Sharded", "LoadBalanced"):
        return True
    known = [t for t in server_types if t not in ("Unknown", "PossiblePrimary")]
    if not known:
        return None
    return any(t in ("RSPrimary", "RSSecondary", "RSArbiter", "Mongos", "LoadBalancer") for t in known)


def _from_topology(client: MongoClient[Any] | AsyncMongoClient[Any]) -> bool | None:
    description = client.topology_description
    return deployment_supports_transactions(
        description.topology_type_name,
        [s.server_type_name for s in description.server_descriptions().values()],
    )


def _where(client: MongoClient[Any] | AsyncMongoClient[Any]) -> str:
    addresses = [f"{host}:{port}" for host, port in client.topology_description.server_descriptions()]
    return ", ".join(addresses) or "the server"


def _check_session_state(session: Any, supported: bool, client: Any) -> None:
    if not supported:
        raise OutboxError(TXN_NEEDS_REPLICA_SET.format(where=_where(client)))
    if not session.in_transaction:
        raise OutboxError(
            "outbox.add(..., session=...) needs a transaction on that session: call "
            "session.start_transaction() (or use session.with_transaction) before add(), otherwise the "
            "record would commit on its own, not with your other writes"
        )


def _check_sync_session(db: Database[Any], session: Any) -> None:
    if session is None:
        return
    if not isinstance(session, ClientSession):
        raise OutboxError(
            f"session= must be a pymongo ClientSession of the same client, got {type(session).__qualname__}"
        )
    supported = _from_topology(db.client)
    if supported is None:
        supported = supports_transactions(db.client.admin.command("hello"))
    _check_session_state(session, supported, db.client)


async def _check_async_session(db: AsyncDatabase[Any], session: Any) -> None:
    if session is None:
        return
    if not isinstance(session, AsyncClientSession):
        raise OutboxError(
            "session= must be a pymongo AsyncClientSession of the same client, got "
            f"{type(session).__qualname__}"
        )
    supported = _from_topology(db.client)
    if supported is None:
        supported = supports_transactions(await db.client.admin.command("hello"))
    _check_session_state(session, supported, db.client)


def _translate_add(exc: PyMongoError, db: Database[Any] | AsyncDatabase[Any]) -> OutboxError | None:
    if isinstance(exc, OperationFailure) and (
        exc.code == 20 or "Transaction numbers are only allowed" in str(exc)
    ):
        return OutboxError(TXN_NEEDS_REPLICA_SET.format(where=_where(db.client)))
    if isinstance(exc, InvalidOperation):
        return OutboxError(f"outbox.add: {exc}")
    return None


@contextlib.contextmanager
def _add_errors(db: Database[Any] | AsyncDatabase[Any], session: Any) -> Iterator[None]:
    """Around the upsert of ``add``: a duplicate id outside a transaction is fine, driver errors that
    mean "no transactions here" or a misused session become ``OutboxError``."""
    try:
        yield
    except DuplicateKeyError:
        if session is not None:
            raise
        # Two writers upserted the same new id at once outside a transaction: it exists, as wanted.
    except PyMongoError as exc:
        translated = _translate_add(exc, db)
        if translated is None:
            raise
        raise translated from exc


def insert_mongo(db: Database[Any], record: PreparedRecord, table: str, *, session: Any = None) -> None:
    """Write ``record`` into ``db[table]`` inside ``session``'s transaction, if given (never commits)."""
    collection_name(table)
    _check_sync_session(db, session)
    with _add_errors(db, session):
        db[table].update_one(
            {"_id": record.id}, {"$setOnInsert": record_doc(record)}, upsert=True, session=session
        )


async def insert_mongo_async(
    db: AsyncDatabase[Any], record: PreparedRecord, table: str, *, session: Any = None
) -> None:
    """``insert_mongo`` for an ``AsyncDatabase`` and an ``AsyncClientSession``."""
    collection_name(table)
    await _check_async_session(db, session)
    with _add_errors(db, session):
        await db[table].update_one(
            {"_id": record.id}, {"$setOnInsert": record_doc(record)}, upsert=True, session=session
        )
