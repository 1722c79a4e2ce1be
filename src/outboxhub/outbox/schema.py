"""``ensure_schema``: create the outbox table, its indexes (and PostgreSQL's notify trigger) if missing; on
MongoDB, the outbox collection's indexes.

Idempotent and safe to run from several processes at once. On SQL it commits, so it refuses a connection
with an open transaction. Teams that manage migrations themselves apply ``sqlite_ddl()``/``postgres_ddl()``
(printed in docs/outbox.md), or create the MongoDB indexes listed in docs/mongodb.md, instead.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from outboxhub._extras import needs_extra
from outboxhub._targets import classify
from outboxhub.errors import OutboxError
from outboxhub.outbox.mysql_sql import (
    connect_kwargs,
    ensure_schema_mysql,
    ensure_schema_mysql_async,
)
from outboxhub.outbox.sqlite import ensure_schema_sqlite
from outboxhub.outbox.url import import_postgres_outbox, open_outbox, parse_outbox_url

__all__ = ["ensure_schema", "ensure_schema_async"]

_SYNC_TARGETS = (
    "a sqlite3.Connection, a psycopg.Connection, a PyMySQL/mysqlclient connection, a pymongo Database "
    "or an outbox URL"
)


def ensure_schema(target_or_url: Any, table: str | None = None) -> None:
    """Create the outbox on a ``sqlite3.Connection``, a ``psycopg.Connection``, a pymongo ``Database``
    (the indexes of its ``table`` collection, created with pymongo's synchronous API), or an SQLite or
    PostgreSQL outbox URL (``sqlite:///app.db``, ``postgresql://…``, optionally with ``?table=``). The
    table or collection defaults to ``outbox``. For a ``mongodb://`` URL or an ``AsyncDatabase`` use
    ``await ensure_schema_async(...)``."""
    kind = classify(target_or_url)
    if kind == "sqlite":
        ensure_schema_sqlite(target_or_url, table or "outbox")
    elif kind == "psycopg":
        import_postgres_outbox("ensure_schema", OutboxError).ensure_schema_postgres(
            target_or_url, table or "outbox"
        )
    elif kind in ("mysql", "mysql_async"):
        if kind == "mysql_async":
            raise OutboxError(
                "ensure_schema: use `await ensure_schema_async(conn)` for an async MySQL connection"
            )
        ensure_schema_mysql(target_or_url, table or "outbox")
    elif isinstance(target_or_url, str):
        parsed = parse_outbox_url(target_or_url, table=table)
        chosen = parsed.table
        if parsed.kind == "sqlite":
            conn = sqlite3.connect(parsed.target, isolation_level=None)
            try:
                ensure_schema_sqlite(conn, chosen)
            finally:
                conn.close()
        elif parsed.kind == "postgresql":
            postgres = import_postgres_outbox("ensure_schema on a PostgreSQL URL", OutboxError, parsed.target)
            import psycopg

            with psycopg.connect(parsed.target, autocommit=True) as pg:
                postgres.ensure_schema_postgres(pg, chosen)
        elif parsed.kind == "mysql":
            _ensure_schema_mysql_url(parsed.target, chosen)
        else:
            raise OutboxError(
                f"ensure_schema: use `await ensure_schema_async(url)` for {parsed.kind} URLs "
                "(or pass a pymongo Database)"
            )
    elif kind in ("mongo", "mongo_async"):
        if kind == "mongo_async":
            raise OutboxError(
                "ensure_schema: use `await ensure_schema_async(db)` for a pymongo AsyncDatabase"
            )
        from outboxhub.outbox.mongo import ensure_schema_mongo

        ensure_schema_mongo(target_or_url, table or "outbox")
    else:
        raise OutboxError(
            f"ensure_schema: unsupported target {type(target_or_url).__qualname__}; pass {_SYNC_TARGETS}"
        )


def _ensure_schema_mysql_url(url: str, table: str) -> None:
    try:
        import pymysql
    except ModuleNotFoundError as exc:
        raise OutboxError(needs_extra("ensure_schema on a MySQL URL", "mysql")) from exc

    conn = pymysql.connect(**connect_kwargs(url), charset="utf8mb4", autocommit=True)
    try:
        ensure_schema_mysql(conn, table)
    finally:
        conn.close()


async def ensure_schema_async(target_or_url: Any, table: str | None = None) -> None:
    """``ensure_schema`` for a ``psycopg.AsyncConnection``, a pymongo ``AsyncDatabase``, or any outbox
    URL (``mongodb://…`` included); other targets go to ``ensure_schema``."""
    kind = classify(target_or_url)
    if kind == "psycopg_async":
        postgres = import_postgres_outbox("ensure_schema_async", OutboxError)
        await postgres.ensure_schema_postgres_async(target_or_url, table or "outbox")
    elif isinstance(target_or_url, str):
        store = await open_outbox(target_or_url, table=table)
        try:
            await store.ensure_schema()
        finally:
            await store.close()
    elif kind == "mysql_async":
        await ensure_schema_mysql_async(target_or_url, table or "outbox")
    elif kind == "mongo_async":
        from outboxhub.outbox.mongo import ensure_schema_mongo_async

        await ensure_schema_mongo_async(target_or_url, table or "outbox")
    else:
        ensure_schema(target_or_url, table)
