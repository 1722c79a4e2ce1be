"""Shared helpers of the PostgreSQL store's tests (beside ``outboxhub.testing.postgres``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from outboxhub.store import open_store
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.schema import quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema


@contextlib.asynccontextmanager
async def explaining_session(schema: str) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], list[str]]]:
    """A new session on ``schema``, configured as the store's, with ``auto_explain`` logging the plan of
    every statement, nested ones included, as a notice: yields the connection and the list each plan is
    appended to (as text)."""
    plans: list[str] = []
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as raw:
        await configure_connection(raw)
        await raw.execute(f"SET search_path = {quote_ident(schema)}")
        await raw.execute("LOAD 'auto_explain'")
        for setting, value in (
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_level", "notice"),
        ):
            await raw.execute("SELECT set_config(%s, %s, false)", (setting, value))
        raw.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        yield raw, plans


async def open_at_version(url: str, version: int) -> PostgresStore:
    """A store opened on ``url`` by a hub that knows the schema versions up to ``version`` only (an older
    release): it creates or migrates the schema to that version and runs that version's statements."""
    mp = pytest.MonkeyPatch()
    mp.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:version])
    mp.setattr(pg_schema, "SCHEMA_VERSION", version)
    try:
        store = await open_store(url)
    finally:
        mp.undo()
    assert isinstance(store, PostgresStore)
    return store


@contextlib.asynccontextmanager
async def opened_store(prefix: str) -> AsyncIterator[PostgresStore]:
    """A store on a throwaway schema named after ``prefix``, closed (and the schema dropped) afterwards."""
    async with throwaway_schema(prefix) as url:
        store = await open_store(url)
        assert isinstance(store, PostgresStore)
        try:
            yield store
        finally:
            await store.close()


async def admin_session(store: PostgresStore) -> psycopg.AsyncConnection[Any]:
    """A new autocommit session on the test server with ``store``'s schema first on the search path."""
    conn = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    await conn.execute(f"SET search_path = {quote_ident(store.schema)}")
    return conn


async def schema_rows(store: PostgresStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` run on an :func:`admin_session` of ``store``'s schema."""
    async with await admin_session(store) as admin:
        cur = await admin.execute(sql, params)
        return await cur.fetchall()
