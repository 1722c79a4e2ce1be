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
PyMySQL / mysqlclient connection   ``add``      the connection (MySQL/MariaDB)
aiomysql / asyncmy connection      ``add_async`` the connection (MySQL/MariaDB)
SQLAlchemy ``Session``/Connection  ``add``      ``text()`` on the session (sqlite, postgresql, mysql)
SQLAlchemy ``AsyncSession``/Conn.  ``add_async`` ``text()`` on the session (postgresql+psycopg, mysql+…)
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

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, Literal, cast, get_args

import msgspec

from outboxhub import tracing
from outboxhub._extras import missing_extra, needs_extra
from outboxhub._targets import Kind, check_kind, is_missing_table, sa_dialect
from outboxhub.errors import OutboxError, TopicError
from outboxhub.ids import new_id, now_ms
from outboxhub.outbox import mysql_sql as _mysql_sql
from outboxhub.outbox import sqlite as _sqlite
from outboxhub.outbox._sql import missing_table_error, split_table
from outboxhub.outbox.model import PreparedRecord
from outboxhub.topics import validate_topic

__all__ = ["MAX_ID_LENGTH", "add", "add_async", "prepare_record"]

MAX_ID_LENGTH = 256
"""Longest record id: the record id becomes the event id, which the wire protocol caps at 256."""

_KINDS: frozenset[Kind] = frozenset(get_args(Kind))
_Dialect = Literal["sqlite", "postgresql", "mysql"]
_SUPPORTED = (
    "sqlite3.Connection, psycopg.Connection / AsyncConnection, a PyMySQL / mysqlclient / aiomysql / "
    "asyncmy connection, SQLAlchemy Session / AsyncSession / Connection, or pymongo Database / AsyncDatabase"
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


def _check_target(target: object, session: object, *, is_async: bool) -> Kind:
    return check_kind(
        target,
        session,
        is_async=is_async,
        accepted=_KINDS,
        role="outbox",
        call="add",
        supported=_SUPPORTED,
        error=OutboxError,
    )


def _sa_dialect(target: Any) -> _Dialect:
    dialect = sa_dialect(target, supported=get_args(_Dialect), role="outbox", error=OutboxError)
    return cast(_Dialect, dialect)


def _sa_insert(dialect: _Dialect, table: str, record: PreparedRecord) -> tuple[Any, dict[str, Any]]:
    """The SQLAlchemy ``text()`` insert of ``record`` into ``table`` and its named parameters."""
    from sqlalchemy import text

    if dialect == "sqlite":
        statement = _sqlite.insert_statement(table, paramstyle="named")
    elif dialect == "mysql":
        _mysql_sql.check_record(record)
        statement = _mysql_sql.insert_statement(table, paramstyle="named")
    else:
        statement = _pg().insert_statement(table, paramstyle="named")
    params = {
        "id": record.id,
        "topic": record.topic,
        "payload": record.payload_json,
        "key": record.key,
        "headers": record.headers_json,
        "ts": record.ts,
    }
    return text(statement), params


@contextlib.contextmanager
def _sa_naming_missing_table(table: str) -> Iterator[None]:
    """Turn SQLAlchemy's error for a missing outbox table (SQLite, PostgreSQL or MySQL underneath) into the
    ``OutboxError`` that says how to create it; any other database error passes through."""
    from sqlalchemy import exc as sa_exc

    try:
        yield
    except sa_exc.DBAPIError as exc:
        if is_missing_table(exc.orig):
            raise missing_table_error(table) from exc
        raise


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


def _check_table(kind: Kind, target: object, table: str) -> _Dialect | None:
    dialect: _Dialect | None = None
    if kind == "sqlite":
        dialect = "sqlite"
    elif kind in ("psycopg", "psycopg_async"):
        dialect = "postgresql"
    elif kind in ("mysql", "mysql_async"):
        dialect = "mysql"
    elif kind in ("sa", "sa_async"):
        dialect = _sa_dialect(target)
    if dialect is not None:
        split_table(table, allow_schema=dialect != "sqlite")
    return dialect


def _prepare(
    target: object,
    session: object,
    table: str,
    topic: str,
    payload: Any,
    *,
    id: str | None,
    key: str | None,
    headers: Mapping[str, str] | None,
    is_async: bool,
) -> tuple[Kind, _Dialect | None, PreparedRecord]:
    """What ``add`` and ``add_async`` check before anything is written: the target (and that it suits
    the call), the table name for its dialect, then the record itself (with the current trace context in
    its headers when OpenTelemetry is installed)."""
    kind = _check_target(target, session, is_async=is_async)
    dialect = _check_table(kind, target, table)
    return kind, dialect, prepare_record(topic, payload, id=id, key=key, headers=tracing.inject(headers))


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
    kind, dialect, record = _prepare(
        target, session, table, topic, payload, id=id, key=key, headers=headers, is_async=False
    )
    if kind == "sqlite":
        _sqlite.insert_sqlite(target, record, table)
    elif kind == "psycopg":
        _pg().insert_postgres(target, record, table)
    elif kind == "mysql":
        _mysql_sql.insert_mysql(target, record, table)
    elif kind == "sa":
        assert dialect is not None
        statement, params = _sa_insert(dialect, table, record)
        with _sa_naming_missing_table(table):
            target.execute(statement, params)
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
    """``add`` for asynchronous targets (psycopg ``AsyncConnection``, aiomysql/asyncmy connections,
    SQLAlchemy ``AsyncSession``, pymongo ``AsyncDatabase``); a ``sqlite3.Connection`` is accepted too
    and inserted inline."""
    kind, dialect, record = _prepare(
        target, session, table, topic, payload, id=id, key=key, headers=headers, is_async=True
    )
    if kind == "sqlite":
        _sqlite.insert_sqlite(target, record, table)
    elif kind == "psycopg_async":
        await _pg().insert_postgres_async(target, record, table)
    elif kind == "mysql_async":
        await _mysql_sql.insert_mysql_async(target, record, table)
    elif kind == "sa_async":
        assert dialect is not None
        statement, params = _sa_insert(dialect, table, record)
        with _sa_naming_missing_table(table):
            await target.execute(statement, params)
    else:
        await _mongo_module().insert_mongo_async(target, record, table, session=session)
    return record.id
