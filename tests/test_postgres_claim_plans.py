"""The claim functions plan the page statement of kinds 0 and 1 once per connection
(``store/postgres/schema.py``, schema version 7): ``claim_new`` and ``claim_parked`` switch to
``plan_cache_mode = force_generic_plan`` for those kinds, under a ``SET`` clause of their own that restores
the session's value; kinds 2 and 3 keep custom plans. A version 6 schema is upgraded, and its claims of
every topic filter kind, parked and direct, answer as before. ``auto_explain`` (as in
``test_postgres_publish_plan.py``) shows that the page statement keeps one generic plan from the first
call, in the scans' index order."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import psycopg
import pytest

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.claim import filter_args_of
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema
from pg_support import explaining_session

pytestmark = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
TIMEOUT_MS = 30_000
LIMITS = {"ack_timeout_ms": TIMEOUT_MS, "max_deliver": 5}
SCOPED = "plan_cache_mode=auto"  # the SET clause that confines the switch to the call
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


_CLAIM_NEW = "SELECT count(*) FROM claim_new(%s, 'g', 'm', 0, %s, 10, %s, %s, %s, %s)"
_PUBLISH_CLAIM = (
    "SELECT count(*) FROM publish_claim(ARRAY[%s], ARRAY[%s], ARRAY[0::bigint], ARRAY[NULL::text],"
    " ARRAY['1'], ARRAY[NULL::text], 'plans_test', ARRAY[%s], ARRAY['g'], ARRAY['m'], 0,"
    " ARRAY[%s::bigint], ARRAY[10], ARRAY[%s::integer], ARRAY[%s], ARRAY[%s], ARRAY[%s])"
)
_FAR = 2**62  # a deadline never due


async def _explained_pages(schema: str, pattern: str, parked: bool, calls: int) -> list[str]:
    """Claim ``calls`` times on one new session with ``auto_explain`` on (a new event each time for the
    parked claims, which ride on ``publish_claim``); the plan of the page statement of each call."""
    async with explaining_session(schema) as (raw, plans):
        kind, a, b, c = filter_args_of(pattern)
        for i in range(calls):
            if parked:
                await raw.execute(_PUBLISH_CLAIM, (f"p{i}", "a.b", pattern, _FAR, kind, a, b, c))
            else:
                await raw.execute(_CLAIM_NEW, (pattern, _FAR, kind, a, b, c))
    return [plan for plan in plans if "Query Text: WITH page" in plan]


_PAGE_PLANS = [
    ("**", "events_pkey", True),
    ("a.b", "events_topic_seq", True),
    ("a.**", "topics_topic_key", False),
]
"""A pattern, the index its page statement reads, and whether that plan is generic (kinds 0, 1 and 3)."""


@pytest.mark.parametrize("parked", [False, True], ids=["claim_new", "claim_parked"])
async def test_the_page_statement_of_kinds_0_and_1_keeps_one_generic_plan_in_index_order(
    pg_url: str, parked: bool
) -> None:
    store = await open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        # No ANALYZE: the statistics of a new schema, as a hub's first claims see them.
        await store.publish_batch([NewEvent(topic="a.b", payload=i) for i in range(3)])
        for pattern, _, _ in _PAGE_PLANS:
            await store.ensure_group(pattern, "g", EARLIEST)
        pages = {
            pattern: await _explained_pages(store.schema, pattern, parked, calls=7)
            for pattern, _, _ in _PAGE_PLANS
        }
    finally:
        await store.close()
    for pattern, index, generic in _PAGE_PLANS:
        assert len(pages[pattern]) == 7, pattern
        for page in pages[pattern]:
            # A custom plan has the frontier as a literal (``seq > '3'::bigint``), a generic one a parameter.
            assert bool(re.search(r"seq > \$\d+", page)) == generic, page
            assert index in page, page
            assert "Seq Scan" not in page, (
                page
            )  # a prefix pattern reads topics by index range (a literal LIKE)


def test_the_patterns_cover_every_filter_kind() -> None:
    assert [filter_args_of(pattern)[0] for pattern in PATTERNS] == [0, 1, 2, 3]


async def test_the_claim_functions_restore_the_sessions_plan_cache_mode(pg_url: str) -> None:
    store = await open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        settings = await _settings(store.schema)
    finally:
        await store.close()
    assert sorted(settings) == ["claim_new", "claim_parked"]
    for name, config in settings.items():
        assert SCOPED in config, name


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
        assert all(SCOPED not in config for config in (await _settings(schema)).values())
    finally:
        mp.undo()
    new = await open_store(pg_url)
    assert isinstance(new, PostgresStore)
    try:
        assert await _version(new.schema) == pg_schema.SCHEMA_VERSION
        assert all(SCOPED in config for config in (await _settings(new.schema)).values())
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
