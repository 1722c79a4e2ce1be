"""``claim``: record a delivery in the consumer's own transaction, and say whether it is new.

Supported targets (as for ``outbox.add``):

=================================  ==============  ==================================================
target                             call            the row is written with
=================================  ==============  ==================================================
``sqlite3.Connection``             either          the connection (``claim_async`` runs it inline)
``psycopg.Connection``             ``claim``       the connection
``psycopg.AsyncConnection``        ``claim_async`` the connection
SQLAlchemy ``Session``/Connection  ``claim``       ``text()`` on the session (sqlite or postgresql)
SQLAlchemy ``AsyncSession``/Conn.  ``claim_async`` ``text()`` on the session
pymongo ``Database``               ``claim``       an upsert with ``session=`` (required)
pymongo ``AsyncDatabase``          ``claim_async`` an upsert with ``session=`` (required)
=================================  ==============  ==================================================

Nothing here commits except ``ensure_schema``: ``claim`` and ``cleanup`` run in the caller's transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from outboxhub._targets import Kind, check_kind, is_missing_table, sa_dialect
from outboxhub.errors import InboxError
from outboxhub.ids import now_ms
from outboxhub.inbox import sql

__all__ = ["claim", "claim_async", "cleanup", "cleanup_async", "ensure_schema", "ensure_schema_async"]

_KINDS: frozenset[Kind] = frozenset(
    {"sqlite", "psycopg", "psycopg_async", "sa", "sa_async", "mongo", "mongo_async"}
)
_SUPPORTED = (
    "sqlite3.Connection, psycopg.Connection / AsyncConnection, SQLAlchemy Session / AsyncSession / "
    "Connection, or pymongo Database / AsyncDatabase"
)
_MISSING = (
    "inbox table {table!r} does not exist; create it with outboxhub.inbox.ensure_schema() or the DDL in "
    "docs/client.md"
)
_OPEN_TX = "ensure_schema: the connection has an open transaction; commit or roll back first"


def _kind(target: object, session: object, *, is_async: bool, what: str) -> Kind:
    return check_kind(
        target,
        session,
        is_async=is_async,
        accepted=_KINDS,
        role="inbox",
        call=what,
        supported=_SUPPORTED,
        error=InboxError,
    )


def _dialect(kind: Kind, target: Any) -> Literal["sqlite", "postgresql"] | None:
    if kind == "sqlite":
        return "sqlite"
    if kind in ("psycopg", "psycopg_async"):
        return "postgresql"
    if kind in ("sa", "sa_async"):
        name = sa_dialect(target, supported=("sqlite", "postgresql"), role="inbox", error=InboxError)
        return "sqlite" if name == "sqlite" else "postgresql"
    return None


def _table(kind: Kind, target: Any, table: str) -> str:
    dialect = _dialect(kind, target)
    if dialect is None:
        from outboxhub.inbox.mongo import collection_name

        return collection_name(table)
    return sql.check_table(table, allow_schema=dialect == "postgresql")


@contextlib.contextmanager
def _naming_missing_table(table: str) -> Iterator[None]:
    """Turn a driver's (or SQLAlchemy's) error for a missing inbox table into the ``InboxError`` that says
    how to create it; any other error passes through."""
    try:
        yield
    except Exception as exc:
        if is_missing_table(getattr(exc, "orig", None) or exc):
            raise InboxError(_MISSING.format(table=table)) from exc
        raise


def _mongo() -> Any:
    try:
        from outboxhub.inbox import mongo
    except ModuleNotFoundError as exc:  # pragma: no cover - a pymongo handle implies pymongo
        raise InboxError("the MongoDB inbox needs the 'mongo' extra: pip install 'outboxhub[mongo]'") from exc
    return mongo


def claim(
    target: Any, group: str, topic: str, event_id: str, *, session: Any = None, table: str = "inbox"
) -> bool:
    """Record delivery ``(group, topic, event_id)`` with ``target``, in the caller's transaction.

    Returns True when the delivery is new (run the handler's writes in the same transaction, then commit,
    then ACK) and False when it was recorded before (skip the work; just ACK). Never commits. Raises
    ``InboxError`` before writing anything when the target, table, group, topic or id is invalid, and
    when the table does not exist.
    """
    kind = _kind(target, session, is_async=False, what="claim")
    name = _table(kind, target, table)
    sql.check_key(group, topic, event_id)
    if kind in ("mongo", "mongo_async"):
        return bool(_mongo().claim_mongo(target, name, group, topic, event_id, now_ms(), session=session))
    params = (group, topic, event_id, now_ms())
    with _naming_missing_table(name):
        if kind == "sqlite":
            return int(target.execute(sql.claim_statement(name, "qmark"), params).rowcount) == 1
        if kind == "psycopg":
            return int(target.execute(sql.claim_statement(name, "format"), params).rowcount) == 1
        from sqlalchemy import text

        result = target.execute(text(sql.claim_statement(name, "named")), _named(params))
        return int(result.rowcount) == 1


async def claim_async(
    target: Any, group: str, topic: str, event_id: str, *, session: Any = None, table: str = "inbox"
) -> bool:
    """``claim`` for asynchronous targets (psycopg ``AsyncConnection``, SQLAlchemy ``AsyncSession``,
    pymongo ``AsyncDatabase``); a ``sqlite3.Connection`` is accepted too and used inline."""
    kind = _kind(target, session, is_async=True, what="claim")
    name = _table(kind, target, table)
    sql.check_key(group, topic, event_id)
    if kind == "mongo_async":
        return bool(
            await _mongo().claim_mongo_async(target, name, group, topic, event_id, now_ms(), session=session)
        )
    params = (group, topic, event_id, now_ms())
    with _naming_missing_table(name):
        if kind == "sqlite":
            return int(target.execute(sql.claim_statement(name, "qmark"), params).rowcount) == 1
        if kind == "psycopg_async":
            cursor = await target.execute(sql.claim_statement(name, "format"), params)
            return int(cursor.rowcount) == 1
        from sqlalchemy import text

        result = await target.execute(text(sql.claim_statement(name, "named")), _named(params))
        return int(result.rowcount) == 1


def _named(params: tuple[str, str, str, int]) -> dict[str, Any]:
    return dict(zip(("group", "topic", "event_id", "processed_at"), params, strict=True))


def _check_retention(older_than_ms: object) -> int:
    if isinstance(older_than_ms, bool) or not isinstance(older_than_ms, int) or older_than_ms <= 0:
        raise InboxError(f"inbox cleanup: older_than_ms must be a positive int, got {older_than_ms!r:.40}")
    return now_ms() - older_than_ms


def cleanup(target: Any, older_than_ms: int, *, session: Any = None, table: str = "inbox") -> int:
    """Delete the records of deliveries processed more than ``older_than_ms`` ago; the number deleted.

    Runs in the caller's transaction (commit afterwards). Keep records for longer than any event can
    still be redelivered or replayed to the group: a record deleted too early lets that event run again.
    """
    kind = _kind(target, session, is_async=False, what="cleanup")
    name = _table(kind, target, table)
    cutoff = _check_retention(older_than_ms)
    if kind == "mongo":
        return int(_mongo().cleanup_mongo(target, name, cutoff, session=session))
    if kind == "sqlite":
        return int(target.execute(sql.cleanup_statement(name, "qmark"), (cutoff,)).rowcount)
    if kind == "psycopg":
        return int(target.execute(sql.cleanup_statement(name, "format"), (cutoff,)).rowcount)
    from sqlalchemy import text

    return int(target.execute(text(sql.cleanup_statement(name, "named")), {"cutoff": cutoff}).rowcount)


async def cleanup_async(target: Any, older_than_ms: int, *, session: Any = None, table: str = "inbox") -> int:
    """``cleanup`` for asynchronous targets (and ``sqlite3.Connection``, inline)."""
    kind = _kind(target, session, is_async=True, what="cleanup")
    name = _table(kind, target, table)
    cutoff = _check_retention(older_than_ms)
    if kind == "mongo_async":
        return int(await _mongo().cleanup_mongo_async(target, name, cutoff, session=session))
    if kind == "sqlite":
        return int(target.execute(sql.cleanup_statement(name, "qmark"), (cutoff,)).rowcount)
    if kind == "psycopg_async":
        cursor = await target.execute(sql.cleanup_statement(name, "format"), (cutoff,))
        return int(cursor.rowcount)
    from sqlalchemy import text

    result = await target.execute(text(sql.cleanup_statement(name, "named")), {"cutoff": cutoff})
    return int(result.rowcount)


def _pg_lock(table: str) -> tuple[str, tuple[str]]:
    # Serialises concurrent CREATE TABLE IF NOT EXISTS, which can otherwise fail on PostgreSQL's catalog.
    key = f"outboxhub.inbox.ensure_schema:{table}"
    return "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,)


def ensure_schema(target: Any, table: str = "inbox") -> None:
    """Create the inbox table and its retention index if missing (idempotent).

    On a ``sqlite3.Connection`` or ``psycopg.Connection`` it commits, so it refuses a connection with an
    open transaction. On an SQLAlchemy ``Connection``/``Session`` it runs the DDL in the caller's
    transaction (use ``with engine.begin() as conn:``). On a pymongo ``Database`` it creates the index.
    """
    kind = _kind(target, None, is_async=False, what="ensure_schema")
    name = _table(kind, target, table)
    if kind == "sqlite":
        if target.in_transaction:
            raise InboxError(_OPEN_TX)
        for statement in sql.sqlite_ddl(name):
            target.execute(statement)
        target.commit()
    elif kind == "psycopg":
        import psycopg

        if target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise InboxError(_OPEN_TX)
        with target.transaction():
            target.execute(*_pg_lock(name))
            for statement in sql.postgres_ddl(name):
                target.execute(statement)
        if not target.autocommit:
            target.commit()
    elif kind == "sa":
        from sqlalchemy import text

        ddl = sql.sqlite_ddl(name) if _dialect(kind, target) == "sqlite" else sql.postgres_ddl(name)
        for statement in ddl:
            target.execute(text(statement))
    else:
        _mongo().ensure_schema_mongo(target, name)


async def ensure_schema_async(target: Any, table: str = "inbox") -> None:
    """``ensure_schema`` for asynchronous targets (and ``sqlite3.Connection``)."""
    kind = _kind(target, None, is_async=True, what="ensure_schema")
    name = _table(kind, target, table)
    if kind == "sqlite":
        ensure_schema(target, table)
    elif kind == "psycopg_async":
        import psycopg

        if target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise InboxError(_OPEN_TX)
        async with target.transaction():
            await target.execute(*_pg_lock(name))
            for statement in sql.postgres_ddl(name):
                await target.execute(statement)
        if not target.autocommit:
            await target.commit()
    elif kind == "sa_async":
        from sqlalchemy import text

        ddl = sql.sqlite_ddl(name) if _dialect(kind, target) == "sqlite" else sql.postgres_ddl(name)
        for statement in ddl:
            await target.execute(text(statement))
    else:
        await _mongo().ensure_schema_mongo_async(target, name)
