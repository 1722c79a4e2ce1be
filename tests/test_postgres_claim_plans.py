"""The claim functions plan their statements once per connection (``store/postgres/schema.py``, schema
version 7): ``claim_new`` and ``claim_parked`` run with ``plan_cache_mode = force_generic_plan``, like
``publish_events``; a version 6 schema is upgraded, and its claims of every topic filter kind, parked and
direct, answer as before."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.claim import filter_args_of
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema

pytestmark = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
TIMEOUT_MS = 30_000
LIMITS = {"ack_timeout_ms": TIMEOUT_MS, "max_deliver": 5}
GENERIC = "plan_cache_mode=force_generic_plan"
PATTERNS = ["**", "a.b", "*.b", "a.**"]  # claim.filter_args' kinds 0, 1, 2 and 3


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with throwaway_schema("plans") as url:
        yield url


async def _settings(schema: str) -> dict[str, list[str]]:
    """Each claim function's ``SET`` clauses (``pg_proc.proconfig``)."""
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT p.proname, coalesce(p.proconfig, '{}') FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s AND p.proname IN ('claim_new', 'claim_parked')",
            (schema,),
        )
        return {str(name): list(config) for name, config in await cur.fetchall()}


async def _version(schema: str) -> int:
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
        cur = await conn.execute(f"SELECT version FROM {pg_schema.quote_ident(schema)}.schema_version")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def test_the_patterns_cover_every_filter_kind() -> None:
    assert [filter_args_of(pattern)[0] for pattern in PATTERNS] == [0, 1, 2, 3]


async def test_the_claim_functions_plan_once_per_connection(pg_url: str) -> None:
    store = await open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        settings = await _settings(store.schema)
    finally:
        await store.close()
    assert sorted(settings) == ["claim_new", "claim_parked"]
    for name, config in settings.items():
        assert GENERIC in config, name


async def test_a_version_6_schema_is_upgraded_and_claims_every_filter_kind(pg_url: str) -> None:
    mp = pytest.MonkeyPatch()
    mp.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:6])
    mp.setattr(pg_schema, "SCHEMA_VERSION", 6)
    try:
        old = await open_store(pg_url)
        assert isinstance(old, PostgresStore)
        try:
            await old.publish_batch([NewEvent(topic="a.b", payload=i) for i in range(2)])
            for pattern in PATTERNS:
                await old.ensure_group(pattern, "direct", EARLIEST)
                await old.ensure_group(pattern, "parked", EARLIEST)
                first = await old.claim(pattern, "direct", "m", limit=1, **LIMITS)
                assert [d.event.seq for d in first] == [1], pattern
            schema = old.schema
        finally:
            await old.close()
        assert await _version(schema) == 6
        assert all(GENERIC not in config for config in (await _settings(schema)).values())
    finally:
        mp.undo()
    new = await open_store(pg_url)
    assert isinstance(new, PostgresStore)
    try:
        assert await _version(new.schema) == pg_schema.SCHEMA_VERSION == 7
        assert all(GENERIC in config for config in (await _settings(new.schema)).values())
        claims = [new.park_claim(pattern, "parked", "m", limit=10, **LIMITS) for pattern in PATTERNS]
        [result] = await new.publish_batch([NewEvent(topic="a.b", payload=2)])
        assert result.seq == 3
        for pattern, claim in zip(PATTERNS, claims, strict=True):
            deliveries, last = claim.future.result()
            assert ([d.event.seq for d in deliveries], last) == ([1, 2, 3], 3), pattern
            direct = await new.claim(pattern, "direct", "m", limit=10, **LIMITS)
            assert [d.event.seq for d in direct] == [2, 3], pattern
    finally:
        await new.close()
