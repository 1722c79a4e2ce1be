"""``claim_new``, the PostgreSQL store's one-round-trip claim (``store/postgres/claim.py``).

The contract suites check what every claim hands out; here: that the common claim really is the function
(pending rows, frontier, deliveries as the planner would make them, for every kind of topic filter), that it
changes nothing and falls back when a pending event is due (a redelivery, a ``max_deliver`` dead letter),
that key-ordered claims never take it, and that a schema of version 2 (as main created it) is upgraded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.store.postgres import claim as pg_claim
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.schema import quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.store.postgres.topics import topic_filter
from outboxhub.testing.postgres import base_url, throwaway_schema

pytestmark = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
NOW = 1_000_000
TIMEOUT_MS = 30_000


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with throwaway_schema("claimfn") as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    opened = await open_store(pg_url)
    assert isinstance(opened, PostgresStore)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def conn(store: PostgresStore) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    raw = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    await configure_connection(raw)
    await raw.execute(f"SET search_path = {quote_ident(store.schema)}")
    try:
        yield raw
    finally:
        await raw.close()


def _request(
    pattern: str, *, limit: int, now: int = NOW, max_deliver: int = 5, member: str = "m"
) -> ClaimRequest:
    return ClaimRequest(
        pattern=pattern,
        group="g",
        member=member,
        limit=limit,
        ack_timeout_ms=TIMEOUT_MS,
        max_deliver=max_deliver,
        ordered=False,
        now=now,
    )


async def _state(conn: psycopg.AsyncConnection[Any], pattern: str) -> tuple[int, list[tuple[Any, ...]]]:
    cur = await conn.execute(
        "SELECT g.frontier FROM groups g WHERE g.pattern = %s AND g.name = 'g'", (pattern,)
    )
    row = await cur.fetchone()
    assert row is not None
    cur = await conn.execute(
        "SELECT p.seq, p.event_id, p.key, p.member, p.deadline, p.attempts FROM pending p"
        " JOIN groups g ON g.gid = p.gid WHERE g.pattern = %s AND g.name = 'g' ORDER BY p.seq",
        (pattern,),
    )
    return int(row[0]), await cur.fetchall()


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [("**", 0), ("shop.t1", 1), ("*.t1", 2), ("shop.*", 3)],
    ids=["all", "concrete", "regex", "prefix"],
)
async def test_claim_new_takes_the_next_page_for_every_filter_kind(
    store: PostgresStore, conn: psycopg.AsyncConnection[Any], pattern: str, kind: int
) -> None:
    assert pg_claim.filter_args(topic_filter(pattern))[0] == kind
    for i in range(6):
        await store.publish_batch(
            [NewEvent(topic=t, payload=i, key=f"k{i}") for t in ("shop.t1", "shop.t2", "other.t1")]
        )
    expected = [e.seq for e in await store.scan(pattern)]
    last = await store.last_seq()
    await store.ensure_group(pattern, "g", EARLIEST)

    first = await pg_claim.claim_new(conn, _request(pattern, limit=3))
    assert first is not None
    assert [d.event.seq for d in first] == expected[:3]
    assert all(d.attempt == 1 and d.deadline == NOW + TIMEOUT_MS for d in first)
    frontier, pending = await _state(conn, pattern)
    assert frontier == expected[2], "a full page moves the frontier to its last event"
    assert pending == [(d.event.seq, d.event.id, d.event.key, "m", NOW + TIMEOUT_MS, 1) for d in first]

    rest = await pg_claim.claim_new(conn, _request(pattern, limit=100, member="n"))
    assert rest is not None and [d.event.seq for d in rest] == expected[3:]
    assert [(d.event.topic, d.event.payload) for d in rest] == [
        (e.topic, e.payload) for e in (await store.scan(pattern))[3:]
    ]
    frontier, pending = await _state(conn, pattern)
    assert frontier == last, "a scan that reached the end moves the frontier to the last seq"
    assert [p[0] for p in pending] == expected

    assert await pg_claim.claim_new(conn, _request(pattern, limit=5)) == []
    assert (await _state(conn, pattern))[0] == last


async def test_a_due_pending_event_falls_back_and_changes_nothing(
    store: PostgresStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    await store.publish_batch([NewEvent(topic="a.b", payload=i) for i in range(3)])
    await store.ensure_group("a.*", "g", EARLIEST)
    got = await pg_claim.claim_new(conn, _request("a.*", limit=1))
    assert got is not None and len(got) == 1
    before = await _state(conn, "a.*")

    due = NOW + TIMEOUT_MS  # the first delivery's deadline has passed
    assert await pg_claim.claim_new(conn, _request("a.*", limit=5, now=due)) is None
    assert await _state(conn, "a.*") == before

    # The store's claim then runs the planner: the due event is redelivered first, then the new ones.
    again = await store.claim("a.*", "g", "m2", limit=5, ack_timeout_ms=TIMEOUT_MS, max_deliver=5, now=due)
    assert [(d.event.seq, d.attempt) for d in again] == [(got[0].event.seq, 2), (2, 1), (3, 1)]


async def test_max_deliver_dead_letters_through_the_fallback(
    store: PostgresStore, conn: psycopg.AsyncConnection[Any]
) -> None:
    await store.publish(NewEvent(topic="a.b", id="once", payload=1))
    await store.ensure_group("a.b", "g", EARLIEST)
    got = await pg_claim.claim_new(conn, _request("a.b", limit=1, max_deliver=1))
    assert got is not None and [d.event.id for d in got] == ["once"]
    due = NOW + TIMEOUT_MS
    assert await pg_claim.claim_new(conn, _request("a.b", limit=1, now=due, max_deliver=1)) is None
    assert (
        await store.claim("a.b", "g", "m", limit=1, ack_timeout_ms=TIMEOUT_MS, max_deliver=1, now=due) == []
    )
    (info,) = await store.groups()
    assert info.dead_letters == 1 and info.in_flight == 0
    (letter,) = await store.scan("dlq.**")
    assert letter.topic.startswith("dlq.g.")


async def test_an_unknown_group_falls_back(conn: psycopg.AsyncConnection[Any]) -> None:
    assert await pg_claim.claim_new(conn, _request("none.*", limit=1)) is None


async def test_key_ordered_claims_never_take_claim_new(store: PostgresStore) -> None:
    ordered = ClaimRequest(
        pattern="a.b", group="g", member="m", limit=5, ack_timeout_ms=1, max_deliver=1, ordered=True, now=NOW
    )
    assert not pg_claim.handles(ordered)
    assert not pg_claim.handles(_request("a.b", limit=0))
    # Through the store: the second event of a key is held back while the first is pending.
    await store.publish_batch([NewEvent(topic="a.b", key="k", payload=i) for i in range(2)])
    await store.ensure_group("a.b", "g", EARLIEST)
    got = await store.claim(
        "a.b", "g", "m", limit=5, ack_timeout_ms=TIMEOUT_MS, max_deliver=5, ordered_by_key=True, now=NOW
    )
    assert [d.event.seq for d in got] == [1]


async def test_a_version_2_schema_is_upgraded_and_claims_through_claim_new(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema as main created it (version 2, no ``claim_new``), a group mid-way, opened by this code."""
    monkeypatch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:2])
    monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(pg_claim, "handles", lambda request: False)  # main's claim, no claim_new
    old = await open_store(pg_url)
    try:
        await old.publish_batch([NewEvent(topic="a.b", payload=i) for i in range(4)])
        await old.ensure_group("a.b", "g", EARLIEST)
        first = await old.claim("a.b", "g", "m", limit=2, ack_timeout_ms=TIMEOUT_MS, max_deliver=5, now=NOW)
    finally:
        await old.close()
    assert [d.event.seq for d in first] == [1, 2]
    monkeypatch.undo()
    new = await open_store(pg_url)
    assert isinstance(new, PostgresStore)
    try:
        async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as raw:
            await configure_connection(raw)
            await raw.execute(f"SET search_path = {quote_ident(new.schema)}")
            cur = await raw.execute("SELECT version FROM schema_version")
            assert await cur.fetchone() == (pg_schema.SCHEMA_VERSION,)
            rest = await pg_claim.claim_new(raw, _request("a.b", limit=5))
        assert rest is not None and [(d.event.seq, d.attempt) for d in rest] == [(3, 1), (4, 1)]
        assert await new.ack("a.b", "g", [d.event.id for d in first + rest]) == 4
    finally:
        await new.close()
