"""For tests and benchmarks (not the hub): the PostgreSQL test server and a throwaway schema on it.

The server is ``OUTBOXHUB_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``). When it
cannot be reached, :func:`require_postgres` calls :func:`outboxhub.testing.unavailable` with a message
naming it: ``ServiceUnavailable`` by default; under pytest, ``tests/conftest.py`` turns that into a skip
(a failure under ``CI=true``). Needs the ``postgres`` extra (psycopg).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg

from outboxhub.store.base import mask_url
from outboxhub.store.postgres.schema import quote_ident
from outboxhub.testing import unavailable
from outboxhub.urls import join_url

__all__ = [
    "base_url",
    "drop_schema",
    "fresh_schema",
    "require_postgres",
    "schema_url",
    "search_path_url",
    "throwaway_schema",
]

DEFAULT_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"

_unreachable: dict[str, str | None] = {}


def base_url() -> str:
    """The test server's URL (no schema)."""
    return os.environ.get("OUTBOXHUB_TEST_PG_URL") or DEFAULT_TEST_URL


def schema_url(url: str, schema: str) -> str:
    """``url`` with its ``schema`` query parameter set to ``schema``."""
    return _with_query(url, "schema", schema)


def _with_query(url: str, key: str, value: str) -> str:
    """``url`` with its query parameter ``key`` set to ``value`` (and only that once)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    query.append((key, value))
    return join_url(parts._replace(query=urlencode(query)))


async def _problem(url: str) -> str | None:
    if url not in _unreachable:
        try:
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=3, autocommit=True)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _unreachable[url] = (
                f"PostgreSQL test server {mask_url(url)} is unreachable ({first}); start it or set "
                "OUTBOXHUB_TEST_PG_URL"
            )
        else:
            await conn.close()
            _unreachable[url] = None
    return _unreachable[url]


async def require_postgres() -> str:
    """The test server's URL; :func:`~outboxhub.testing.unavailable` when it cannot be reached."""
    url = base_url()
    problem = await _problem(url)
    if problem is not None:
        unavailable(problem)
    return url


async def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


def search_path_url(url: str, schema: str) -> str:
    """``url`` (a libpq URL) whose sessions have ``schema`` as their search path: unqualified table names
    (an inbox's, an application's) land in it."""
    return _with_query(url, "options", f"-csearch_path={schema}")


@asynccontextmanager
async def fresh_schema(prefix: str = "t", *, create: bool = True) -> AsyncIterator[str]:
    """Yield the name of a new schema on the test server (``<prefix>_<16 hex>``), created unless ``create``
    is false (a store creates its own); it is dropped with everything in it afterwards, also when the block
    fails. The one place the tests make PostgreSQL schemas: each is dropped by the test that made it."""
    url = await require_postgres()
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    try:
        if create:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        yield schema
    finally:
        await drop_schema(url, schema)


@asynccontextmanager
async def throwaway_schema(prefix: str = "t") -> AsyncIterator[str]:
    """Yield a store URL on a fresh schema of the test server (:func:`fresh_schema`; the store creates it);
    drop the schema afterwards."""
    async with fresh_schema(prefix, create=False) as schema:
        yield schema_url(base_url(), schema)
