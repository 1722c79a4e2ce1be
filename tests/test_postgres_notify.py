"""NOTIFY only when another node listens (``store/postgres/registry.py``, schema version 6).

A lone store's commits send no NOTIFY, so its LISTEN connection hears none of them; with a second node
registered both hear every commit; a node registers under the counter lock (so a publish either sees its
row or is read by its first poll); rows of server processes that are gone are dropped when a node
registers, and a closed store removes its own; a connection that names no node notifies whenever a node
listens; a version 5 schema is upgraded.

Notifications are counted, never timed: a NOTIFY sent by hand after the publishes is delivered after
theirs (PostgreSQL delivers a channel's notifications in commit order), so once it has arrived the count
says how many the publishes sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from outboxhub.model import NewEvent
from outboxhub.store import open_store
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.schema import channel_name, quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema
from waiting import until

pytestmark = pytest.mark.postgres

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold
NO_POLL_S = 3600.0  # the listener's fallback poll never runs within a test: what arrives came by NOTIFY
SENTINEL = "sentinel"  # not a seq: the listener counts it and ignores it


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with throwaway_schema("notify") as url:
        yield url


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    await configure_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


async def _open(url: str) -> PostgresStore:
    store = await open_store(url, poll_interval_s=NO_POLL_S)
    assert isinstance(store, PostgresStore)
    await asyncio.wait_for(store.listener.connected.wait(), WAIT_S)
    return store


async def _heard(stores: list[PostgresStore], admin: psycopg.AsyncConnection[Any]) -> list[int]:
    """How many notifications each store's listener heard before a sentinel sent now, the first sentinel
    of the test on their channel (left out of the counts)."""
    before = [store.listener.notifications for store in stores]
    await admin.execute("SELECT pg_notify(%s, %s)", (channel_name(stores[0].schema), SENTINEL))
    for store, count in zip(stores, before, strict=True):
        await until(lambda s=store, c=count: s.listener.notifications > c, "the sentinel arrives")
    return [store.listener.notifications - 1 for store in stores]


async def _listeners(admin: psycopg.AsyncConnection[Any], schema: str) -> dict[str, int]:
    cur = await admin.execute(f"SELECT node, pid FROM {quote_ident(schema)}.listeners")
    return {str(node): int(pid) for node, pid in await cur.fetchall()}


_PUBLISH_ONE = (
    "SELECT seq FROM publish_events(ARRAY[%s], ARRAY['n.t'], ARRAY[0::bigint], ARRAY[NULL::text],"
    " ARRAY['1'], ARRAY[NULL::text], %s)"
)
"""One event through ``publish_events`` on a connection that names no node."""


async def test_a_lone_store_hears_none_of_its_own_commits(
    pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    store = await _open(pg_url)
    try:
        seen: list[int] = []
        store.add_commit_listener(seen.append)
        results = [await store.publish(NewEvent(topic="n.t", payload=i)) for i in range(10)]
        results += await store.publish_batch([NewEvent(topic="n.t", payload=i) for i in range(5)])
        assert await _heard([store], admin) == [0]
        assert seen == [r.seq for r in results[:10]] + [results[-1].seq]
    finally:
        await store.close()


async def test_with_a_second_node_every_commit_is_notified_to_both(
    pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    node_a = await _open(pg_url)
    node_b = await _open(pg_url)
    try:
        woken_a: asyncio.Queue[int] = asyncio.Queue()
        woken_b: asyncio.Queue[int] = asyncio.Queue()
        node_a.add_commit_listener(woken_a.put_nowait)
        node_b.add_commit_listener(woken_b.put_nowait)
        from_a = await node_a.publish(NewEvent(topic="n.t", payload="a"))
        assert await asyncio.wait_for(woken_b.get(), WAIT_S) == from_a.seq
        from_b = await node_b.publish(NewEvent(topic="n.t", payload="b"))
        while await asyncio.wait_for(woken_a.get(), WAIT_S) != from_b.seq:
            pass
        # A NOTIFY goes to every listener of the channel, the publisher's own included.
        assert await _heard([node_a, node_b], admin) == [2, 2]
    finally:
        await node_a.close()
        await node_b.close()


async def _blocked_by(admin: psycopg.AsyncConnection[Any], pid: int) -> bool:
    cur = await admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
    )
    row = await cur.fetchone()
    return row is not None and row[0] > 0


async def test_a_node_registers_under_the_counter_lock(
    pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    node_a = await _open(pg_url)
    holder = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    node_b: PostgresStore | None = None
    try:
        # A publish in flight holds the counter row until it commits; a node registering meanwhile waits.
        await holder.execute("BEGIN")
        await holder.execute(f"SELECT 1 FROM {quote_ident(node_a.schema)}.counter WHERE id = 1 FOR UPDATE")
        opened = await open_store(pg_url, poll_interval_s=NO_POLL_S)
        assert isinstance(opened, PostgresStore)
        node_b = opened
        pid = holder.info.backend_pid
        for _ in range(int(WAIT_S / 0.01)):
            if await _blocked_by(admin, pid):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the registering listener never waited for the counter lock")
        assert not node_b.listener.connected.is_set()
        assert await _listeners(admin, node_a.schema) == {node_a.node: node_a.listener.backend_pid}
        await holder.execute("COMMIT")
        await asyncio.wait_for(node_b.listener.connected.wait(), WAIT_S)
        woken: asyncio.Queue[int] = asyncio.Queue()
        node_b.add_commit_listener(woken.put_nowait)
        result = await node_a.publish(NewEvent(topic="n.t"))
        assert await asyncio.wait_for(woken.get(), WAIT_S) == result.seq
    finally:
        await holder.close()
        await node_a.close()
        if node_b is not None:
            await node_b.close()


async def test_rows_of_gone_processes_are_dropped_and_a_closed_store_removes_its_own(
    pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    first = await _open(pg_url)
    schema = quote_ident(first.schema)
    await first.close()
    assert await _listeners(admin, first.schema) == {}
    # A hub process that died without closing: its server process is gone, its row is not.
    await admin.execute(f"INSERT INTO {schema}.listeners (node, pid, since) VALUES ('ghost', 2147483647, 0)")
    store = await _open(pg_url)
    try:
        assert await _listeners(admin, store.schema) == {store.node: store.listener.backend_pid}
        await store.publish(NewEvent(topic="n.t"))
        assert await _heard([store], admin) == [0]
    finally:
        await store.close()


async def test_a_publish_from_a_connection_without_a_node_is_notified(
    pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    store = await _open(pg_url)
    try:
        woken: asyncio.Queue[int] = asyncio.Queue()
        store.add_commit_listener(woken.put_nowait)
        await admin.execute(f"SET search_path = {quote_ident(store.schema)}")
        cur = await admin.execute(_PUBLISH_ONE, ("x1", channel_name(store.schema)))
        row = await cur.fetchone()
        assert row is not None
        assert await asyncio.wait_for(woken.get(), WAIT_S) == row[0]
    finally:
        await store.close()


async def test_a_version_5_schema_is_upgraded_and_a_lone_store_stops_notifying(
    pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    mp = pytest.MonkeyPatch()
    mp.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:5])
    mp.setattr(pg_schema, "SCHEMA_VERSION", 5)
    try:
        url = pg_url
        async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
            schema = url.rsplit("schema=", 1)[1]
            assert await pg_schema.migrate(conn, schema) == 0
            await conn.execute(f"SET search_path = {quote_ident(schema)}")
            await conn.execute(_PUBLISH_ONE, ("before", channel_name(schema)))
    finally:
        mp.undo()
    store = await _open(url)
    try:
        cur = await admin.execute(f"SELECT version FROM {quote_ident(store.schema)}.schema_version")
        assert await cur.fetchone() == (pg_schema.SCHEMA_VERSION,)
        assert (await store.publish(NewEvent(topic="n.t"))).seq == 2
        assert await _heard([store], admin) == [0]
    finally:
        await store.close()
