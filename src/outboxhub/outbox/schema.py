"""``ensure_schema``: create the outbox table, its indexes (and PostgreSQL's notify trigger) if missing.

Idempotent and safe to run from several processes at once. It commits, so it refuses a connection with
an open transaction. Teams that manage migrations themselves apply ``sqlite_ddl()``/``postgres_ddl()``
(printed in docs/outbox.md) instead.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from ..errors import OutboxError
from .postgres import ensure_schema_postgres, ensure_schema_postgres_async
from .sqlite import ensure_schema_sqlite
from .url import open_outbox, parse_outbox_url

__all__ = ["ensure_schema", "ensure_schema_async"]


def ensure_schema(target_or_url: Any, table: str | None = None) -> None:
    """Create the outbox on a ``sqlite3.Connection``, a ``psycopg.Connection``, or an outbox URL
    (``sqlite:///app.db``, ``postgresql://…``, optionally with ``?table=``). The table defaults to
    ``outbox``."""
    if isinstance(target_or_url, sqlite3.Connection):
        ensure_schema_sqlite(target_or_url, table or "outbox")
    elif isinstance(target_or_url, psycopg.Connection):
        ensure_schema_postgres(target_or_url, table or "outbox")
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
            with psycopg.connect(parsed.target, autocommit=True) as pg:
                ensure_schema_postgres(pg, chosen)
        else:
            raise OutboxError(f"ensure_schema: use `await ensure_schema_async(url)` for {parsed.kind} URLs")
    else:
        raise OutboxError(
            f"ensure_schema: unsupported target {type(target_or_url).__qualname__}; "
            "pass a sqlite3.Connection, a psycopg.Connection or an outbox URL"
        )


async def ensure_schema_async(target_or_url: Any, table: str | None = None) -> None:
    """``ensure_schema`` for a ``psycopg.AsyncConnection`` or any outbox URL (MongoDB included)."""
    if isinstance(target_or_url, psycopg.AsyncConnection):
        await ensure_schema_postgres_async(target_or_url, table or "outbox")
    elif isinstance(target_or_url, str):
        store = await open_outbox(target_or_url, table=table)
        try:
            await store.ensure_schema()
        finally:
            await store.close()
    else:
        ensure_schema(target_or_url, table)
