"""The group commit runs its parked claims inline (``store/postgres/schema10.py``, schema version 10):
``publish_claim`` and ``publish_claim_acks`` no longer call ``claim_parked``, and answer as before: claims
of every topic filter kind in one call, each page of kinds 0 and 1 on its generic plan and of kinds 2
and 3 on a custom one, a held group row or a due pending event answered ``fallback`` with nothing changed,
the session's ``plan_cache_mode`` and ``lock_timeout`` as they were. A schema of the version before is
upgraded while a hub on it keeps working. Real PostgreSQL; function calls counted by its statistics
(``track_functions``), plans shown by ``auto_explain``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import EventRef
from outboxhub.store.codec import prepare
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.store.postgres import ackride, parked
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.ackride import AckJob
from outboxhub.store.postgres.claim import filter_args_of
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.schema import channel_name, quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema
from pg_support import explaining_session

pytestmark = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
TIMEOUT_MS = 30_000
LIMITS = {"ack_timeout_ms": TIMEOUT_MS, "max_deliver": 5}
PATTERNS = ["**", "a.b", "*.b", "a.**"]  # claim.filter_args' kinds 0, 1, 2 and 3


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with throwaway_schema("inline") as url:
        opened = await open_store(url)
        assert isinstance(opened, PostgresStore)
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def raw(store: PostgresStore) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    await configure_connection(conn)
    await conn.execute(f"SET search_path = {quote_ident(store.schema)}")
    try:
        yield conn
    finally:
        await conn.close()


def _request(pattern: str, group: str = "g") -> ClaimRequest:
    return ClaimRequest(pattern=pattern, group=group, member="m", limit=10, ordered=False, now=0, **LIMITS)


async def _one(conn: psycopg.AsyncConnection[Any], sql: str, *params: Any) -> Any:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def _group_commit(
    store: PostgresStore,
    raw: psycopg.AsyncConnection[Any],
    requests: Sequence[ClaimRequest],
    acks: Sequence[AckJob] = (),
) -> tuple[int, list[tuple[list[Any], int]], list[int | None], dict[str, int]]:
    """One event on ``a.b`` with ``requests`` parked (and ``acks`` riding) in one transaction that counts
    the function calls; its seq, the claims' outcomes, the ACKs' counts and the calls per function."""
    async with raw.transaction():
        await raw.execute("SET LOCAL track_functions = 'all'")
        results, top, outcomes, acked = await parked.publish_claim(
            raw,
            channel_name(store.schema),
            [prepare(NewEvent(topic="a.b", payload=1))],
            requests,
            1_000,
            acks,
        )
        cur = await raw.execute("SELECT funcname, calls FROM pg_stat_xact_user_functions")
        calls = {str(name): int(n) for name, n in await cur.fetchall()}
    assert [r.seq for r in results] == [top]
    return top, outcomes, acked, calls


@pytest.mark.parametrize("with_ack", [False, True], ids=["publish_claim", "publish_claim_acks"])
async def test_claims_of_every_kind_run_inline_and_the_session_settings_stay(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any], with_ack: bool
) -> None:
    for pattern in PATTERNS:
        await store.ensure_group(pattern, "g", EARLIEST)
    [old] = await store.publish_batch([NewEvent(topic="a.b", payload=0)])
    [taken] = await store.claim("a.b", "g", "m", limit=1, **LIMITS)
    acks: list[AckJob] = []
    if with_ack:
        answer = asyncio.get_running_loop().create_future()
        acks.append(AckJob("a.b", "g", [EventRef(taken.event.id, taken.event.seq)], "m", answer))
    await raw.execute("SET plan_cache_mode = force_custom_plan")
    await raw.execute("SET lock_timeout = '7s'")
    top, outcomes, acked, calls = await _group_commit(store, raw, [_request(p) for p in PATTERNS], acks)
    assert "claim_parked" not in calls and calls["publish_events"] == 1
    # Every claim took the new event; the one-topic group (its first event claimed and acked) only that.
    expected = {"**": [old.seq, top], "a.b": [top], "*.b": [old.seq, top], "a.**": [old.seq, top]}
    for pattern, (deliveries, last) in zip(PATTERNS, outcomes, strict=True):
        assert [d.event.seq for d in deliveries] == expected[pattern], pattern
        assert last == top
    assert acked == ([1] if with_ack else [])
    frontiers = await raw.execute("SELECT pattern, frontier FROM groups ORDER BY pattern")
    assert await frontiers.fetchall() == sorted((p, top) for p in PATTERNS)
    pending = await _one(raw, "SELECT count(*) FROM pending")
    assert pending == sum(len(v) for v in expected.values()) + (0 if with_ack else 1)
    assert await _one(raw, "SELECT current_setting('plan_cache_mode')") == "force_custom_plan"
    assert await _one(raw, "SELECT current_setting('lock_timeout')") == "7s"


async def test_a_held_group_or_a_due_event_answers_fallback_and_changes_nothing(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    for group in ("held", "due", "free"):
        await store.ensure_group("a.*", group, EARLIEST)
    [first] = await store.publish_batch([NewEvent(topic="a.b", payload=0)])
    await store.claim("a.*", "due", "m", limit=1, **LIMITS)
    await raw.execute("UPDATE pending SET deadline = 0")  # the "due" group's delivery expired
    before = await (await raw.execute("SELECT * FROM groups ORDER BY gid")).fetchall()
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as other:
        await other.execute(f"SET search_path = {quote_ident(store.schema)}")
        async with other.transaction():
            await other.execute("SELECT 1 FROM groups WHERE name = 'held' FOR UPDATE")
            top, outcomes, _, calls = await _group_commit(
                store, raw, [_request("a.*", "held"), _request("a.*", "due"), _request("a.*", "free")]
            )
    assert "claim_parked" not in calls
    assert outcomes[0] is parked.NOT_RUN and outcomes[1] is parked.NOT_RUN
    assert [d.event.seq for d in outcomes[2][0]] == [first.seq, top]
    after = await (await raw.execute("SELECT * FROM groups WHERE name <> 'free' ORDER BY gid")).fetchall()
    assert after == [row for row in before if row[2] != "free"]
    pending = await raw.execute("SELECT g.name, p.seq FROM pending p JOIN groups g USING (gid) ORDER BY 1, 2")
    assert await pending.fetchall() == [("due", first.seq), ("free", first.seq), ("free", top)]


_PUBLISH_TWO_CLAIMS = (
    "SELECT count(*) FROM publish_claim(ARRAY[%s], ARRAY['a.b'], ARRAY[0::bigint], ARRAY[NULL::text],"
    " ARRAY['1'], ARRAY[NULL::text], 'inline_test', ARRAY['a.b', 'a.**'], ARRAY['g', 'g'], ARRAY['m', 'm'],"
    f" 0, ARRAY[{2**62}, {2**62}]::bigint[], ARRAY[10, 10], %s::integer[], %s::text[], %s::text[],"
    " %s::text[])"
)


async def test_after_a_generic_page_the_next_claims_page_of_kind_3_is_planned_per_call(
    store: PostgresStore,
) -> None:
    """The switch to generic plans for a claim of kind 1 ends with its page: the prefix claim after it
    in the same call reads the topics by index range (a custom plan, the literal ``LIKE``)."""
    for pattern in ("a.b", "a.**"):
        await store.ensure_group(pattern, "g", EARLIEST)
    filters = [filter_args_of(pattern) for pattern in ("a.b", "a.**")]
    async with explaining_session(store.schema) as (conn, plans):
        for i in range(7):  # past the plan cache's five custom plans
            await conn.execute(_PUBLISH_TWO_CLAIMS, (f"e{i}", *([f[n] for f in filters] for n in range(4))))
    assert not [plan for plan in plans if "claim_parked(" in plan]
    pages = [plan for plan in plans if "Query Text: WITH page" in plan]
    assert len(pages) == 14
    for kind1, kind3 in zip(pages[::2], pages[1::2], strict=True):
        assert re.search(r"seq > \$\d+", kind1) and "events_topic_seq" in kind1, kind1
        assert not re.search(r"seq > \$\d+", kind3) and "topics_topic_key" in kind3, kind3


_FUNCTIONS = (
    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = current_schema() AND p.proname IN ('claim_parked', 'publish_claim',"
    " 'publish_claim_acks', 'publish_events') ORDER BY 1"
)


async def test_the_previous_version_is_upgraded_and_a_running_hub_on_it_keeps_working() -> None:
    version = pg_schema.MIGRATIONS.index(pg_schema._v10) + 1  # the version that inlines the claims
    async with throwaway_schema("upgrade10") as url:
        mp = pytest.MonkeyPatch()
        mp.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[: version - 1])
        mp.setattr(pg_schema, "SCHEMA_VERSION", version - 1)
        try:
            old = await open_store(url)
        finally:
            mp.undo()
        assert isinstance(old, PostgresStore)
        try:
            await old.ensure_group("a.*", "g", EARLIEST)
            new = await open_store(url)  # migrates while the older hub runs
            assert isinstance(new, PostgresStore)
            try:
                async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as admin:
                    await admin.execute(f"SET search_path = {quote_ident(new.schema)}")
                    assert await _one(admin, "SELECT version FROM schema_version") == pg_schema.SCHEMA_VERSION
                    names = await (await admin.execute(_FUNCTIONS)).fetchall()
                    assert [n for (n,) in names] == [
                        "claim_parked",
                        "publish_claim",
                        "publish_claim_acks",
                        "publish_events",
                    ]
                # The older hub's group commit with a parked claim, then a riding ACK, on the new functions.
                with pytest.MonkeyPatch.context() as ride:
                    ride.setattr(ackride, "RIDE_S", 600.0)
                    claim = old.park_claim("a.*", "g", "m", limit=5, **LIMITS)
                    [first] = await old.publish_batch([NewEvent(topic="a.b", payload=1)])
                    deliveries, last = claim.future.result()
                    assert [d.event.seq for d in deliveries] == [first.seq] and last == first.seq
                    await asyncio.gather(
                        old.publish_soon([NewEvent(topic="x", payload=2)]),
                        old.publish_soon([NewEvent(topic="x", payload=3)]),
                    )
                    done = old.ack_soon("a.*", "g", [EventRef(first.id, first.seq)], member="m")
                    assert not done.done()
                    [second] = await old.publish_batch([NewEvent(topic="a.c", payload=4)])
                    assert done.result() == 1
                # The new hub's group commit with a parked claim.
                claim = new.park_claim("a.*", "g", "n", limit=5, **LIMITS)
                [fourth] = await new.publish_batch([NewEvent(topic="a.c", payload=5)])
                deliveries, _ = claim.future.result()
                assert [d.event.seq for d in deliveries] == [second.seq, fourth.seq]
            finally:
                await new.close()
        finally:
            await old.close()
