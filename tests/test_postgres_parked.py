"""Claims parked with the PostgreSQL store's writer (``store/postgres/parked.py``, schema version 5): a
waiting member's claim runs in the statement that publishes a matching event, the commit stays
synchronous, a group row held by another session is skipped (no wait, so no deadlock with a claim that
dead-letters), and a version 4 schema is upgraded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.codec import prepare
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.store.postgres import parked
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.schema import channel_name, quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema
from waiting import until

pytestmark = pytest.mark.postgres

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold
NO_POLL_S = 120.0
EARLIEST = StartPosition(kind="earliest")
TIMEOUT_MS = 30_000


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with throwaway_schema("parked") as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    opened = await open_store(pg_url)
    assert isinstance(opened, PostgresStore)
    # Registered (registry.py: under the counter lock) before a test watches the publishes' lock waits.
    await asyncio.wait_for(opened.listener.connected.wait(), WAIT_S)
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


def _request(pattern: str, *, member: str = "m", limit: int = 10) -> ClaimRequest:
    return ClaimRequest(
        pattern=pattern,
        group="g",
        member=member,
        limit=limit,
        ack_timeout_ms=TIMEOUT_MS,
        max_deliver=5,
        ordered=False,
        now=0,
    )


async def _pending(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute("SELECT p.seq, p.member, p.attempts FROM pending p ORDER BY p.seq")
    return await cur.fetchall()


async def test_a_parked_claim_runs_in_the_publish_that_matches_it(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    await store.ensure_group("a.*", "g", EARLIEST)
    other = store.park_claim("b.*", "g2", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
    claim = store.park_claim("a.*", "g", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
    assert store.parked_claims == 2
    [result] = await store.publish_batch([NewEvent(topic="a.x", payload={"n": 1})])
    assert claim.future.done(), "resolved before the publish returned"
    deliveries, seen = claim.future.result()
    assert [(d.event.id, d.event.seq, d.event.payload, d.attempt) for d in deliveries] == [
        (result.id, result.seq, {"n": 1}, 1)
    ]
    assert seen == result.seq and claim.covers(result.seq)
    assert deliveries[0].deadline > 0
    assert await _pending(raw) == [(result.seq, "m", 1)]
    assert store.parked_claims == 1 and not other.future.done(), "another pattern stays parked"
    assert store.parked_stats.ran == 1
    assert not claim.withdraw()
    assert other.withdraw() and store.parked_claims == 0


async def test_the_publish_with_claims_commits_synchronously(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """``claim_new`` turns its commit asynchronous; the publish that carries parked claims must not."""
    await store.ensure_group("a.*", "g", EARLIEST)
    rows = [prepare(NewEvent(topic="a.x", payload=1))]
    async with raw.transaction():
        _, top, outcomes, _ = await parked.publish_claim(
            raw, channel_name(store.schema), rows, [_request("a.*")], now=1_000
        )
        cur = await raw.execute("SELECT current_setting('synchronous_commit')")
        assert await cur.fetchone() == ("on",)
    [(deliveries, seen)] = outcomes
    assert [d.event.seq for d in deliveries] == [top] and seen == top
    assert deliveries[0].deadline == 1_000 + TIMEOUT_MS


async def _waiting_on_a_lock(conn: psycopg.AsyncConnection[Any], text: str) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (f"%{text}%",),
    )
    row = await cur.fetchone()
    return row is not None and int(row[0]) > 0


async def test_a_group_row_held_elsewhere_is_skipped_not_waited_for(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """The lock order of a claim that dead-letters (group row, then the counter) against a publish with
    parked claims (counter, then group rows): the publish skips the held group row, so the two never
    wait for each other."""
    await store.ensure_group("a.*", "g", EARLIEST)
    claim = store.park_claim("a.*", "g", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
    await raw.execute("BEGIN")
    await raw.execute("SELECT gid FROM groups WHERE pattern = 'a.*' AND name = 'g' FOR UPDATE")
    publish = asyncio.ensure_future(store.publish_batch([NewEvent(topic="a.x", payload=1)]))
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as watcher:
        while not publish.done():
            assert not await _waiting_on_a_lock(watcher, "publish_claim"), "the publish waits for a lock"
            await asyncio.sleep(0.005)
    [result] = await publish
    # The dead-letter's next step: the counter, free again once the publish committed.
    cur = await raw.execute("SELECT last_seq FROM counter WHERE id = 1 FOR UPDATE")
    assert await cur.fetchone() == (result.seq,)
    await raw.execute("COMMIT")
    assert claim.future.result() is parked.NOT_RUN
    assert not claim.covers(result.seq)
    assert await _pending(raw) == [], "nothing claimed"
    assert store.parked_stats.not_run == 1
    got = await store.claim("a.*", "g", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
    assert [d.event.seq for d in got] == [result.seq]


async def test_a_due_redelivery_leaves_the_claim_to_the_planner(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    await store.publish_batch([NewEvent(topic="a.x", payload=0)])
    await store.ensure_group("a.*", "g", EARLIEST)
    [first] = await store.claim("a.*", "g", "m", limit=1, ack_timeout_ms=1, max_deliver=5, now=1)
    before = await _pending(raw)
    claim = store.park_claim("a.*", "g", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
    await store.publish_batch([NewEvent(topic="a.x", payload=1)])
    assert claim.future.result() is parked.NOT_RUN
    assert await _pending(raw) == before == [(first.event.seq, "m", 1)]


async def test_key_ordered_claims_stay_parked(store: PostgresStore) -> None:
    await store.ensure_group("a.*", "g", EARLIEST)
    claim = store.park_claim(
        "a.*", "g", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5, ordered_by_key=True
    )
    await store.publish_batch([NewEvent(topic="a.x", payload=1, key="k")])
    assert not claim.future.done() and store.parked_claims == 1
    assert claim.withdraw()


async def test_one_batch_takes_at_most_its_share_of_parked_claims(store: PostgresStore) -> None:
    count = parked.MAX_CLAIMS_PER_BATCH + 3
    for i in range(count):
        await store.ensure_group("a.*", f"g{i}", EARLIEST)
    claims = [
        store.park_claim("a.*", f"g{i}", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
        for i in range(count)
    ]
    [result] = await store.publish_batch([NewEvent(topic="a.x", payload=1)])
    ran = [c for c in claims if c.future.done()]
    assert len(ran) == parked.MAX_CLAIMS_PER_BATCH == store.parked_stats.ran
    assert all([d.event.seq for d in c.future.result()[0]] == [result.seq] for c in ran)
    assert store.parked_claims == 3


async def test_a_waiting_member_gets_each_event_from_the_publish_statement(
    store: PostgresStore, pg_url: str
) -> None:
    # A second node listening on the schema: commits are NOTIFYed, to this store's LISTEN connection too.
    other = await open_store(pg_url)
    assert isinstance(other, PostgresStore)
    await asyncio.wait_for(other.listener.connected.wait(), WAIT_S)
    await asyncio.wait_for(store.listener.connected.wait(), WAIT_S)
    bus = Bus(store, poll_interval_s=NO_POLL_S)
    await bus.start()
    try:
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        await bus.subscribe(
            "orders.*", "billing", lambda d: inbox.put_nowait(d) or True, options=GroupOptions(start=EARLIEST)
        )
        await until(lambda: store.parked_claims == 1, "the idle member parks its claim")
        announced: list[int] = []
        store.add_topic_listener(lambda seq, topics: announced.append(seq))
        claims = bus.stats.claims
        for i in range(10):
            result = await bus.publish(NewEvent(topic="orders.created", payload={"i": i}))
            delivery = await asyncio.wait_for(inbox.get(), WAIT_S)
            assert delivery.event.id == result.id and delivery.attempt == 1
            assert await bus.ack("orders.*", "billing", delivery.event.id)
            # The commit is announced twice: by the publish, and by its NOTIFY through the LISTEN connection,
            # which arrives after the member parked its next claim and must not wake it into a claim.
            await until(lambda seq=result.seq: announced.count(seq) == 2, "the NOTIFY of the commit arrives")
            await until(lambda: store.parked_claims == 1, "the member parks again")
        assert store.parked_stats.ran == 10
        assert bus.stats.claims == claims, "no claim of its own for any event"
    finally:
        await bus.close()
        await other.close()


async def test_a_version_4_schema_is_upgraded_and_publishes_with_claims(pg_url: str) -> None:
    mp = pytest.MonkeyPatch()
    mp.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:4])
    mp.setattr(pg_schema, "SCHEMA_VERSION", 4)
    try:
        old = await open_store(pg_url)
        try:
            await old.publish_batch([NewEvent(topic="a.b", payload=i) for i in range(2)])
            await old.ensure_group("a.*", "g", EARLIEST)
            first = await old.claim("a.*", "g", "m", limit=1, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
        finally:
            await old.close()
    finally:
        mp.undo()
    assert [d.event.seq for d in first] == [1]
    new = await open_store(pg_url)
    assert isinstance(new, PostgresStore)
    try:
        claim = new.park_claim("a.*", "g", "m", limit=10, ack_timeout_ms=TIMEOUT_MS, max_deliver=5)
        [result] = await new.publish_batch([NewEvent(topic="a.b", payload=2)])
        deliveries, _ = claim.future.result()
        assert [d.event.seq for d in deliveries] == [2, result.seq]
        async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
            await conn.execute(f"SET search_path = {quote_ident(new.schema)}")
            cur = await conn.execute("SELECT version FROM schema_version")
            assert await cur.fetchone() == (pg_schema.SCHEMA_VERSION,)
    finally:
        await new.close()


async def test_a_batch_queued_behind_one_with_a_claim_takes_the_members_next_claim(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """Under load a publish queues while the batch before it commits. That batch ran the member's claim;
    the queued one is staged once it returns, and must wait for the member to park again rather than go
    out without its claim (whose commit would wake the member into a claim of its own)."""
    bus = Bus(store, poll_interval_s=NO_POLL_S)
    await bus.start()
    try:
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        await bus.subscribe(
            "orders.*", "billing", lambda d: inbox.put_nowait(d) or True, options=GroupOptions(start=EARLIEST)
        )
        await until(lambda: store.parked_claims == 1, "the idle member parks its claim")
        claims = bus.stats.claims
        # The first batch waits for the counter lock, so the second surely queues behind it.
        await raw.execute("BEGIN")
        await raw.execute("SELECT last_seq FROM counter WHERE id = 1 FOR UPDATE")
        first = store.publish_soon([NewEvent(topic="orders.created", payload=1)])
        async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as watcher:
            while not await _waiting_on_a_lock(watcher, "publish_claim"):  # noqa: ASYNC110 - a database state
                await asyncio.sleep(0.005)
        second = store.publish_soon([NewEvent(topic="orders.created", payload=2)])
        await raw.execute("COMMIT")
        results = [*(await first), *(await second)]
        deliveries = [await asyncio.wait_for(inbox.get(), WAIT_S) for _ in results]
        assert [d.event.seq for d in deliveries] == [r.seq for r in results]
        assert store.parked_stats.ran == 2
        assert bus.stats.claims == claims, "no claim of its own for the second event"
    finally:
        await bus.close()
