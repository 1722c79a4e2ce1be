"""Handler outcomes and the inbox in the SDK, against a real hub: ``raise Retry(delay_ms=…)`` NACKs with that
delay; ``subscribe(..., inbox=...)`` runs the handler in the inbox's transaction, ACKs after the commit,
skips a delivery recorded before and rolls back (and NACKs) a handler that raises; ``raise Terminate`` and
``msg.terminate`` dead-letter at once, ``msg.in_progress()`` keeps a delivery past its ack timeout, and
publishes refused by a quota are re-sent in order after ``retry_after_ms``."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from outboxhub import inbox
from outboxhub.app import Hub
from outboxhub.client import BadRequest, Event, HubClient, Retry, SubscribeContext, Terminate
from outboxhub.inbox import AsyncSqlAlchemyInbox, SqliteInbox

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ALL = ("publish:**", "subscribe:**")


async def _until(check: Callable[[], Awaitable[object]]) -> None:
    """Wait (up to 20 s) until ``check()`` is truthy; state changed by other tasks or threads."""
    async with asyncio.timeout(20):
        while not await check():  # noqa: ASYNC110 - polls state other threads and the hub change
            await asyncio.sleep(0.05)


async def _now(value: object) -> object:
    return value


@pytest.fixture
async def client(hub: Hub, token: Callable[..., str]) -> AsyncIterator[HubClient]:
    async with HubClient(hub.ws_url, token(scopes=ALL)) as c:
        yield c


def test_retry_checks_its_arguments() -> None:
    assert Retry(delay_ms=250).delay_ms == 250 and str(Retry(delay_ms=250)) == "retry in 250 ms"
    assert Retry(reason="not yet").reason == "not yet" and Retry().delay_ms is None
    with pytest.raises(ValueError, match=">= 0"):
        Retry(delay_ms=-1)
    with pytest.raises(TypeError, match="int of milliseconds"):
        Retry(delay_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int of milliseconds"):
        Retry(delay_ms=True)


async def test_retry_nacks_with_its_delay_and_the_event_comes_back(client: HubClient) -> None:
    seen: list[tuple[int, float]] = []
    done = asyncio.Event()

    def handler(event: Event, ctx: SubscribeContext) -> None:
        seen.append((ctx.attempt, time.monotonic()))
        if ctx.attempt == 1:
            raise Retry(delay_ms=700, reason="not ready")
        done.set()

    await client.subscribe("retry.t", "g", handler, start="earliest")
    await client.publish("retry.t", {"n": 1})
    async with asyncio.timeout(20):
        await done.wait()
    assert [a for a, _ in seen] == [1, 2]
    # A lower bound only (a busy machine makes it later, never earlier): the hub held it for the delay.
    assert seen[1][1] - seen[0][1] >= 0.6


async def test_retry_with_no_delay_is_redelivered_promptly_with_the_reason(
    client: HubClient, hub: Hub
) -> None:
    attempts: list[int] = []

    def handler(event: Event, ctx: SubscribeContext) -> None:
        attempts.append(ctx.attempt)
        raise Retry(delay_ms=0, reason="still not ready")

    sub = await client.subscribe("retry.dl", "g", handler, start="earliest", max_deliver=2)
    await client.publish("retry.dl", {"n": 1})
    await _until(lambda: hub.store.count("dlq.g.retry.dl"))
    await sub.unsubscribe()
    assert attempts == [1, 2]
    dead = await hub.store.tail("dlq.g.retry.dl")
    assert dead is not None and "still not ready" in str(dead.headers)


# -- the inbox in the SDK ----------------------------------------------------------------------------------


def _tables(path: Path) -> None:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE applied (event_id TEXT, n INTEGER)")
        inbox.ensure_schema(c)
    c.close()


def _applied(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as c:
        rows = c.execute("SELECT event_id, n FROM applied ORDER BY n").fetchall()
    c.close()
    return [(r[0], r[1]) for r in rows]


async def test_the_handler_writes_in_the_inbox_transaction_and_recorded_events_are_skipped(
    client: HubClient, hub: Hub, tmp_path: Path
) -> None:
    path = tmp_path / "app.db"
    _tables(path)
    first = await client.publish("inbox.t", {"n": 1})
    second = await client.publish("inbox.t", {"n": 2})
    with sqlite3.connect(path) as c:  # as if a consumer had committed event 1 and died before its ACK
        assert inbox.claim(c, "g", "inbox.t", first.id)
    c.close()
    ran: list[int] = []

    def apply(event: Event, ctx: SubscribeContext, conn: sqlite3.Connection) -> None:
        assert conn.in_transaction
        conn.execute("INSERT INTO applied VALUES (?, ?)", (ctx.id, event.payload["n"]))
        ran.append(event.payload["n"])

    box = SqliteInbox(path)
    sub = await client.subscribe("inbox.t", "g", apply, inbox=box, start="earliest")
    await _until(lambda: _now(bool(ran)))
    await sub.unsubscribe()  # after the ACKs, on the same socket: unacked events would be released
    await box.close()
    assert ran == [2], "event 1 was recorded before: the handler did not run for it"
    assert _applied(path) == [(second.id, 2)]
    left = await hub.store.claim("inbox.t", "g", "probe", limit=10, ack_timeout_ms=60_000, max_deliver=10)
    assert left == [], "both events were ACKed, the skipped one included"


async def test_a_failing_handler_rolls_back_its_writes_and_the_record(
    client: HubClient, tmp_path: Path
) -> None:
    path = tmp_path / "app.db"
    _tables(path)
    attempts: list[int] = []

    def apply(event: Event, ctx: SubscribeContext, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO applied VALUES (?, ?)", (ctx.id, ctx.attempt))
        if ctx.attempt == 1:
            raise RuntimeError("boom after a write")
        attempts.append(ctx.attempt)

    box = SqliteInbox(path)
    await client.subscribe("inbox.fail", "g", apply, inbox=box, start="earliest", nack_delay_ms=0)
    await client.publish("inbox.fail", {"n": 1})
    await _until(lambda: _now(attempts == [2]))
    await client.drain()
    await box.close()
    assert [n for _, n in _applied(path)] == [2], "attempt 1's write was rolled back; attempt 2 ran"


@pytest.mark.postgres
async def test_async_inboxes_on_postgres_run_async_handlers(client: HubClient) -> None:
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from outboxhub.inbox import AsyncPsycopgInbox
    from outboxhub.testing.postgres import base_url, fresh_schema, search_path_url

    async with fresh_schema("inbox") as schema:
        url = search_path_url(base_url(), schema)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            await c.execute("CREATE TABLE applied (event_id TEXT, via TEXT)")
            await inbox.ensure_schema_async(c)
        engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        via: list[str] = []

        async def with_session(event: Event, ctx: SubscribeContext, session: Any) -> None:
            await session.execute(text("INSERT INTO applied VALUES (:i, 'sa')"), {"i": ctx.id})
            via.append("sa")

        async def with_conn(event: Event, ctx: SubscribeContext, conn: Any) -> None:
            await conn.execute("INSERT INTO applied VALUES (%s, 'pg')", (ctx.id,))
            via.append("pg")

        pg_box = AsyncPsycopgInbox(url)
        try:
            box = AsyncSqlAlchemyInbox(async_sessionmaker(engine))
            await client.subscribe("inbox.sa", "g", with_session, inbox=box, start="earliest")
            await client.subscribe("inbox.pg", "g", with_conn, inbox=pg_box, start="earliest")
            await client.publish("inbox.sa", {})
            await client.publish("inbox.pg", {})
            await _until(lambda: _now(len(via) == 2))
            await client.drain()
        finally:
            await pg_box.close()
            await engine.dispose()
        async with await psycopg.AsyncConnection.connect(url) as c:
            cur = await c.execute("SELECT count(*) FROM inbox")
            assert await cur.fetchone() == (2,)
        assert sorted(via) == ["pg", "sa"]


async def test_subscribe_refuses_an_inbox_it_cannot_use(client: HubClient, tmp_path: Path) -> None:
    box = SqliteInbox(tmp_path / "app.db")

    async def async_handler(event: Event, ctx: SubscribeContext, conn: sqlite3.Connection) -> None:
        return None

    with pytest.raises(TypeError, match="make the handler a plain def"):
        await client.subscribe("inbox.x", "g", async_handler, inbox=box)
    with pytest.raises(ValueError, match="needs a consumer group"):
        await client.subscribe("inbox.x", None, lambda e, c, d: None, inbox=box)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be an outboxhub\.inbox\.Inbox"):
        await client.subscribe("inbox.x", "g", lambda e, c, d: None, inbox=object())  # type: ignore[arg-type]


# -- Terminate, in_progress, quotas ------------------------------------------------------------------------


async def _dead(client: HubClient, topic: str) -> Any:
    stream = client.messages(topic, "inspect", start="earliest")
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    await msg.ack()
    await stream.unsubscribe()
    return msg


async def test_raise_terminate_dead_letters_on_the_first_attempt(client: HubClient) -> None:
    attempts: list[int] = []

    def handler(event: Event, ctx: SubscribeContext) -> None:
        attempts.append(ctx.attempt)
        raise Terminate("order 7 refers to a deleted account")

    await client.subscribe("acct.*", "g", handler, start="earliest", max_deliver=5)
    published = await client.publish("acct.close", {"order": 7})
    dead = await _dead(client, "dlq.g.acct.close")
    headers = dead.event.headers or {}
    assert headers["x-reason"] == "order 7 refers to a deleted account"
    assert headers["x-attempts"] == "1" and headers["x-original-id"] == published.id
    await asyncio.sleep(0.3)
    assert attempts == [1]


async def test_msg_terminate(client: HubClient) -> None:
    stream = client.messages("t2.*", "g", start="earliest")
    await client.publish("t2.x", 1)
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    await msg.terminate("no")
    dead = await _dead(client, "dlq.g.t2.x")
    assert (dead.event.headers or {})["x-reason"] == "no"
    await stream.unsubscribe()


async def test_in_progress_keeps_the_delivery(hub: Hub, client: HubClient, token: Callable[..., str]) -> None:
    stream = client.messages("slow.*", "g", start="earliest", ack_timeout_ms=1_500, max_in_flight=1)
    await client.publish("slow.x", 1)
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    async with HubClient(hub.ws_url, token(scopes=ALL)) as other_client:
        other = other_client.messages("slow.*", "g", ack_timeout_ms=1_500)
        await other.__aenter__()
        for _ in range(8):  # four ack timeouts of "work"
            await msg.in_progress()
            await asyncio.sleep(0.5)
        await msg.ack()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await other.__anext__()
        await other.unsubscribe()
    assert msg.attempt == 1
    with pytest.raises(RuntimeError, match="already acked"):
        await msg.in_progress()
    await stream.unsubscribe()


async def test_in_progress_of_a_delivery_no_longer_held_is_refused(client: HubClient) -> None:
    stream = client.messages("late.*", "g", start="earliest")
    await client.publish("late.x", 1)
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    await client._settle(msg.context, ack=True, reason=None, delay_ms=None, confirm=True)  # settled
    with pytest.raises(BadRequest, match="not held by this connection"):
        await msg.in_progress()
    await stream.unsubscribe()


async def test_publishes_over_quota_are_resent_in_order(hub_factory: Any, token: Callable[..., str]) -> None:
    hub = await hub_factory(quotas=["q.**=20/s:2"])
    async with HubClient(hub.ws_url, token(scopes=ALL)) as c:
        results = await asyncio.gather(*(c.publish("q.t", i) for i in range(10)))
    assert [r.seq for r in results] == sorted(r.seq for r in results)
    stored = await hub.store.scan("q.**")
    assert [e.payload for e in stored] == list(range(10))
    assert hub.gateway.stats.quota_refusals[("principal", "q.**")] >= 1
