"""Writing outbox records in the application's own transaction: ``add`` and ``add_async``.

The record is inserted with the caller's connection (or session), so it commits or rolls back with the
business write; ``add`` never commits. Everything about the record is checked before anything is written:
the target type, the table name, the topic, that the payload encodes to JSON, the id, key and headers.
An id that already exists leaves the stored record unchanged (idempotent add), like a publish to the hub.

Supported targets:

=================================  ===========  ===================================================
target                             call         inserted with
=================================  ===========  ===================================================
``sqlite3.Connection``             either       the connection (``add_async`` runs it inline)
``psycopg.Connection``             ``add``      the connection
``psycopg.AsyncConnection``        ``add_async`` the connection
SQLAlchemy ``Session``/Connection  ``add``      ``text()`` on the session (sqlite or postgresql)
SQLAlchemy ``AsyncSession``/Conn.  ``add_async`` ``text()`` on the session (postgresql+psycopg, …)
pymongo ``Database``               ``add``      ``outboxhub.outbox.mongo`` with ``session=``
pymongo ``AsyncDatabase``          ``add_async`` ``outboxhub.outbox.mongo`` with ``session=``
=================================  ===========  ===================================================

For pymongo targets the record is upserted (``$setOnInsert``) by ``outboxhub.outbox.mongo``
(``insert_mongo`` / ``insert_mongo_async``) with ``session=``, the ``ClientSession`` of the caller's
transaction: it commits or aborts with the business writes. Transactions need a replica set or a sharded
cluster; on a standalone server, ``add`` with a session raises ``OutboxError`` saying so before anything is
written. Without ``session=`` the record is written on its own.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Literal

import msgspec

from outboxhub import tracing
from outboxhub._extras import missing_extra, needs_extra
from outboxhub.errors import OutboxError, TopicError
from outboxhub.ids import new_id, now_ms
from outboxhub.outbox import sqlite as _sqlite
from outboxhub.outbox._sql import split_table
from outboxhub.outbox.model import PreparedRecord
from outboxhub.topics import validate_topic

__all__ = ["MAX_ID_LENGTH", "add", "add_async", "prepare_record"]

MAX_ID_LENGTH = 256
"""Longest record id: the record id becomes the event id, which the wire protocol caps at 256."""

_Kind = Literal["sqlite", "psycopg", "psycopg_async", "sa", "sa_async", "mongo", "mongo_async"]
_ASYNC_KINDS = frozenset({"psycopg_async", "sa_async", "mongo_async"})
_SUPPORTED = (
    "sqlite3.Connection, psycopg.Connection / AsyncConnection, SQLAlchemy Session / AsyncSession / "
    "Connection, or pymongo Database / AsyncDatabase"
)
_encoder = msgspec.json.Encoder()


def prepare_record(
    topic: str,
    payload: Any,
    *,
    id: str | None = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> PreparedRecord:
    """Validate a record and encode its payload; raise ``OutboxError`` naming the first problem."""
    try:
        validate_topic(topic)
    except TopicError as exc:
        raise OutboxError(f"outbox record refused: {exc}") from exc
    try:
        payload_json = _encoder.encode(payload).decode()
    except (TypeError, ValueError, OverflowError) as exc:
        raise OutboxError(f"outbox record refused: payload is not JSON-serialisable: {exc}") from exc
    if id is None:
        record_id = new_id()
    elif not isinstance(id, str) or not id or len(id) > MAX_ID_LENGTH:
        raise OutboxError(
            f"outbox record refused: id must be a non-empty string of at most {MAX_ID_LENGTH} "
            f"characters, got {id!r:.80}"
        )
    else:
        record_id = id
    if key is not None and (not isinstance(key, str) or not key):
        raise OutboxError(f"outbox record refused: key must be a non-empty string or None, got {key!r:.80}")
    headers_dict: dict[str, str] | None = None
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise OutboxError(
                "outbox record refused: headers must be a mapping of str to str, "
                f"got {type(headers).__name__}"
            )
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise OutboxError(
                    f"outbox record refused: header {name!r:.80} must map a str to a str, "
                    f"got {type(name).__name__} → {type(value).__name__}"
                )
        headers_dict = dict(headers) or None
    return PreparedRecord(
        id=record_id,
        topic=topic,
        payload=payload,
        payload_json=payload_json,
        key=key,
        headers=headers_dict,
        headers_json=None if headers_dict is None else _encoder.encode(headers_dict).decode(),
        ts=now_ms(),
    )


def _classify(target: object) -> _Kind | None:
    if isinstance(target, sqlite3.Connection):
        return "sqlite"
    # Optional libraries are only consulted when the application has imported them already: an object
    # of their types cannot exist otherwise, and importing them here would slow every add down (and
    # psycopg and pymongo are optional: the 'postgres' and 'mongo' extras).
    if sys.modules.get("psycopg") is not None:
        import psycopg

        if isinstance(target, psycopg.AsyncConnection):
            return "psycopg_async"
        if isinstance(target, psycopg.Connection):
            return "psycopg"
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session

        if isinstance(target, Session | SAConnection):
            return "sa"
        if "sqlalchemy.ext.asyncio" in sys.modules:
            from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
            from sqlalchemy.ext.asyncio import AsyncSession

            if isinstance(target, AsyncSession | SAAsyncConnection):
                return "sa_async"
    if sys.modules.get("pymongo") is not None:
        from pymongo.asynchronous.database import AsyncDatabase
        from pymongo.database import Database

        if isinstance(target, AsyncDatabase):
            return "mongo_async"
        if isinstance(target, Database):
            return "mongo"
    return None


def _check_target(target: object, session: object, *, is_async: bool) -> _Kind:
    kind = _classify(target)
    name = type(target).__qualname__
    if kind is None:
        raise OutboxError(f"outbox target {name} is not supported; pass a {_SUPPORTED}")
    if not is_async and kind in _ASYNC_KINDS:
        raise OutboxError(f"outbox target {name} is asynchronous: use `await add_async(...)`")
    if is_async and kind not in _ASYNC_KINDS and kind != "sqlite":
        raise OutboxError(f"outbox target {name} is synchronous: use add(...)")
    if session is not None and kind not in ("mongo", "mongo_async"):
        raise OutboxError("session= is only for pymongo targets (the ClientSession of the transaction)")
    return kind


def _sa_dialect(target: Any) -> Literal["sqlite", "postgresql"]:
    bind = target.get_bind() if hasattr(target, "get_bind") else target
    dialect = str(bind.dialect.name)
    if dialect not in ("sqlite", "postgresql"):
        raise OutboxError(
            f"SQLAlchemy dialect {dialect!r} is not supported by the outbox (sqlite, postgresql)"
        )
    return "sqlite" if dialect == "sqlite" else "postgresql"


def _sa_statement(dialect: Literal["sqlite", "postgresql"], table: str) -> str:
    if dialect == "sqlite":
        return _sqlite.insert_statement(table, paramstyle="named")
    statement: str = _pg().insert_statement(table, paramstyle="named")
    return statement


def _sa_params(record: PreparedRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "topic": record.topic,
        "payload": record.payload_json,
        "key": record.key,
        "headers": record.headers_json,
        "ts": record.ts,
    }


def _sa_missing_table(exc: Exception, table: str) -> OutboxError | None:
    orig = getattr(exc, "orig", None)
    psycopg = sys.modules.get("psycopg")  # a psycopg error implies psycopg is imported
    if (psycopg is not None and isinstance(orig, psycopg.errors.UndefinedTable)) or (
        isinstance(orig, sqlite3.OperationalError) and "no such table" in str(orig)
    ):
        return OutboxError(
            f"outbox table {table!r} does not exist; create it with ensure_schema() "
            "or the DDL in docs/outbox.md"
        )
    return None


def _pg() -> Any:
    """``outboxhub.outbox.postgres`` (the 'postgres' extra), imported on first PostgreSQL use."""
    try:
        return importlib.import_module("outboxhub.outbox.postgres")
    except ModuleNotFoundError as exc:
        if missing_extra(exc) != "postgres":
            raise
        raise OutboxError(needs_extra("a PostgreSQL outbox", "postgres")) from exc


def _mongo_module() -> ModuleType:
    # The dispatch point for MongoDB (the 'mongo' extra).
    try:
        return importlib.import_module("outboxhub.outbox.mongo")
    except ModuleNotFoundError as exc:
        if missing_extra(exc) == "mongo":
            raise OutboxError(needs_extra("a MongoDB outbox", "mongo")) from exc
        if exc.name != "outboxhub.outbox.mongo":
            raise
        raise OutboxError("MongoDB outbox support is not installed yet (outboxhub.outbox.mongo)") from exc


def _check_table(kind: _Kind, target: object, table: str) -> Literal["sqlite", "postgresql"] | None:
    dialect: Literal["sqlite", "postgresql"] | None = None
    if kind == "sqlite":
        dialect = "sqlite"
    elif kind in ("psycopg", "psycopg_async"):
        dialect = "postgresql"
    elif kind in ("sa", "sa_async"):
        dialect = _sa_dialect(target)
    if dialect is not None:
        split_table(table, allow_schema=dialect == "postgresql")
    return dialect


def add(
    target: Any,
    topic: str,
    payload: Any,
    *,
    id: str | None = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    session: Any = None,
    table: str = "outbox",
) -> str:
    """Insert an outbox record with ``target`` inside the caller's transaction; return its id.

    The id (default: a new UUIDv7) becomes the event id in the hub. With ``opentelemetry-api``
    installed, the current trace context is added to the headers (``outboxhub.tracing``). Raises
    ``OutboxError`` before anything is written when the target, table, topic, payload, id, key or
    headers are invalid. The caller commits (or rolls back) as usual; the record follows the transaction.
    """
    kind = _check_target(target, session, is_async=False)
    dialect = _check_table(kind, target, table)
    record = prepare_record(topic, payload, id=id, key=key, headers=tracing.inject(headers))
    if kind == "sqlite":
        _sqlite.insert_sqlite(target, record, table)
    elif kind == "psycopg":
        _pg().insert_postgres(target, record, table)
    elif kind == "sa":
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import text

        assert dialect is not None
        try:
            target.execute(text(_sa_statement(dialect, table)), _sa_params(record))
        except sa_exc.DBAPIError as exc:
            missing = _sa_missing_table(exc, table)
            if missing is None:
                raise
            raise missing from exc
    else:
        _mongo_module().insert_mongo(target, record, table, session=session)
    return record.id


async def add_async(
    target: Any,
    topic: str,
    payload: Any,
    *,
    id: str | None = None,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    session: Any = None,
    table: str = "outbox",
) -> str:
    """``add`` for asynchronous targets (psycopg ``AsyncConnection``, SQLAlchemy ``AsyncSession``,
    pymongo ``AsyncDatabase``); a ``sqlite3.Connection`` is accepted too and inserted inline."""
    kind = _check_target(target, session, is_async=True)
    dialect = _check_table(kind, target, table)
    record = prepare_record(topic, payload, id=id, key=key, headers=tracing.inject(headers))
    if kind == "sqlite":
        _sqlite.insert_sqlite(target, record, table)
    elif kind == "psycopg_async":
        await _pg().insert_postgres_async(target, record, table)
    elif kind == "sa_async":
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import text

        assert dialect is not None
        try:
            await target.execute(text(_sa_statement(dialect, table)), _sa_params(record))
        except sa_exc.DBAPIError as exc:
            missing = _sa_missing_table(exc, table)
            if missing is None:
                raise
            raise missing from exc
    else:
        await _mongo_module().insert_mongo_async(target, record, table, session=session)
    return record.id
