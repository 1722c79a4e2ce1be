"""The writer's pipeline (``store/postgres/pipe.py``) against the real server.

Each test holds the seq counter's row lock in a session of its own, so that the first group commit waits
on it and the next ones surely queue behind it, then lets go. Batches queued while one is in flight are
sent behind it on the same connection and commit in the order queued; a batch that fails with a later one
in the pipeline is split and re-run before that later one commits (the guard); a connection cut with two
batches in the pipeline has both run again, in order; and the connection goes back out of pipeline mode
and idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import pq

from outboxhub.errors import StoreError
from outboxhub.model import NewEvent, PublishResult
from outboxhub.store import open_store
from outboxhub.store.postgres.conn import configure_connection
from outboxhub.store.postgres.schema import quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema

pytestmark = pytest.mark.postgres

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with throwaway_schema("pipe") as url:
        opened = await open_store(url)
        assert isinstance(opened, PostgresStore)
        # Registered (registry.py: under the counter lock) before a test takes that lock itself.
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


async def _writer_pid(watcher: psycopg.AsyncConnection[Any]) -> int:
    """The backend of the first group commit, once it waits for the counter lock."""
    while True:
        cur = await watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%publish_events%'"
        )
        row = await cur.fetchone()
        if row is not None:
            return int(row[0])
        await asyncio.sleep(0.005)  # a database state: there is nothing to await


async def _hold_counter(raw: psycopg.AsyncConnection[Any]) -> None:
    await raw.execute("BEGIN")
    await raw.execute("SELECT last_seq FROM counter WHERE id = 1 FOR UPDATE")


def _event(n: int, topic: str = "t.a") -> NewEvent:
    return NewEvent(topic=topic, id=f"e{n}", payload=n)


async def _seqs(futures: list[asyncio.Future[list[PublishResult]]]) -> list[int]:
    return [r.seq for f in futures for r in await asyncio.wait_for(f, WAIT_S)]


async def test_batches_queued_behind_one_in_flight_are_sent_behind_it_and_commit_in_order(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    await _hold_counter(raw)
    first = store.publish_soon([_event(0)])
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as watcher:
        await _writer_pid(watcher)
        queued = [store.publish_soon([_event(n)]) for n in range(1, 6)]
        # The second batch goes out while the first still waits for the lock: before base's writer would
        # even have staged it.
        for _ in range(20):
            if store._writer.sent_behind:
                break
            await asyncio.sleep(0)
        assert store._writer.sent_behind == 1
        await raw.execute("COMMIT")
    seqs = await _seqs([first, *queued])
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    events = await store.scan("t.*", after_seq=0, limit=10)
    assert [e.id for e in events] == [f"e{n}" for n in range(6)]


async def test_a_failed_batch_is_split_and_rerun_before_the_batch_behind_it_commits(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    """The first batch holds a bad event (a payload that is not JSON, refused by ``publish_events``' cast
    once it holds the counter); the batch sent behind it must not commit before the first batch's good
    jobs, re-run after the split."""
    await _hold_counter(raw)
    good1 = store.publish_soon([_event(1)])
    bad = store._writer.submit_soon([("bad", "t.a", 0, None, b"{not json", None)])
    good3 = store.publish_soon([_event(3)])
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as watcher:
        await _writer_pid(watcher)
        behind = store.publish_soon([_event(4)])
        for _ in range(20):
            if store._writer.sent_behind:
                break
            await asyncio.sleep(0)
        assert store._writer.sent_behind == 1, "the last batch is in the pipeline behind the first"
        await raw.execute("COMMIT")
    with pytest.raises(StoreError):
        await asyncio.wait_for(bad, WAIT_S)
    seqs = await _seqs([good1, good3, behind])
    assert seqs == sorted(seqs), "the batch behind the failed one committed before its re-runs"
    assert store._writer.split_runs >= 1
    events = await store.scan("t.*", after_seq=0, limit=10)
    assert [e.id for e in events] == ["e1", "e3", "e4"]


async def test_a_connection_cut_with_two_batches_in_the_pipeline_runs_both_again_in_order(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    await _hold_counter(raw)
    first = store.publish_soon([_event(1)])
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as watcher:
        pid = await _writer_pid(watcher)
        second = store.publish_soon([_event(2)])
        for _ in range(20):
            if store._writer.sent_behind:
                break
            await asyncio.sleep(0)
        assert store._writer.sent_behind == 1
        await watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await raw.execute("COMMIT")
    seqs = await _seqs([first, second])
    assert seqs == sorted(seqs)
    events = await store.scan("t.*", after_seq=0, limit=10)
    assert [e.id for e in events] == ["e1", "e2"]
    # The store goes on (the broken connection was discarded).
    assert (await store.publish(_event(3))).id == "e3"


async def test_the_pipelines_connection_goes_back_out_of_pipeline_mode_and_idle(
    store: PostgresStore, raw: psycopg.AsyncConnection[Any]
) -> None:
    await _hold_counter(raw)
    first = store.publish_soon([_event(1)])
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as watcher:
        await _writer_pid(watcher)
        second = store.publish_soon([_event(2)])
        for _ in range(20):
            if store._writer.sent_behind:
                break
            await asyncio.sleep(0)
        assert store._writer.sent_behind == 1
        await raw.execute("COMMIT")
    await _seqs([first, second])
    spare = store._spare
    assert spare is not None, "the writer's connection came back as the spare"
    assert spare.pgconn.pipeline_status == pq.PipelineStatus.OFF
    assert spare.pgconn.transaction_status == pq.TransactionStatus.IDLE
    # Ordinary operations (psycopg's own, not wire's) work on it.
    assert await store.count("t.*") == 2
    assert await store.get_event("e2", "t.a") is not None
