"""The SQLite writer's batch INSERT path: multi-row INSERT statements, duplicates across statement boundaries,
per-topic counters of a batch mixing topics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.model import NewEvent
from outboxhub.store.sqlite.store import SQLiteStore


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'hub.db'}")
    yield store
    await store.close()


def _trace_event_inserts(store: SQLiteStore) -> list[str]:
    """Statements run by the writer's connection that insert into ``events`` (from now on)."""
    conn = store._writer._conn
    assert conn is not None
    seen: list[str] = []
    conn.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("INSERT INTO events") else None)
    return seen


async def test_a_large_batch_is_inserted_with_few_multi_row_statements(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    seen = _trace_event_inserts(sqlite_store)
    results = await sqlite_store.publish_batch([NewEvent(topic="big.t", payload=i) for i in range(300)])
    # 300 = 128 + 128 + 32 + 8 + 4: one statement per chunk, not one per row
    assert len(seen) == 5, f"{len(seen)} INSERT statements for 300 rows"
    seqs = [r.seq for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    events = await sqlite_store.scan("big.t", limit=1000)
    assert [(e.seq, e.id, e.payload) for e in events] == [(r.seq, r.id, i) for i, r in enumerate(results)]
    seen.clear()
    await sqlite_store.publish(NewEvent(topic="big.t", payload="one"))
    assert len(seen) == 1


async def test_duplicates_across_statement_chunks_keep_their_original_seqs(sqlite_store: SQLiteStore) -> None:
    stored = await sqlite_store.publish_batch(
        [NewEvent(topic="t.b", id="old-130", payload="first"), NewEvent(topic="t.c", id="old-260")]
    )
    topics = ("t.a", "t.b", "t.c")
    batch = [NewEvent(topic=topics[i % 3], id=f"e{i}", payload=i) for i in range(300)]
    batch[130] = NewEvent(topic="t.b", id="old-130", payload="again")  # stored: in the second 128-row chunk
    batch[260] = NewEvent(topic="t.c", id="old-260")  # stored: in the third chunk
    batch[200] = NewEvent(topic=topics[5 % 3], id="e5", payload="repeat")  # repeats row 5 of the first chunk
    batch[201] = NewEvent(topic="t.a", id="e5")  # same id, another topic: a new event
    results = await sqlite_store.publish_batch(batch)

    duplicates = {i for i, r in enumerate(results) if r.duplicate}
    assert duplicates == {130, 200, 260}
    assert results[130].seq == stored[0].seq and results[260].seq == stored[1].seq
    assert results[200].seq == results[5].seq
    fresh = [r.seq for i, r in enumerate(results) if i not in duplicates]
    assert fresh == list(range(fresh[0], fresh[0] + 297))  # consecutive, in batch order
    assert (await sqlite_store.get_event("old-130", "t.b")).payload == "first"  # type: ignore[union-attr]

    info = {t.topic: t for t in await sqlite_store.topics()}
    for topic in topics:
        mine = [r.seq for i, r in enumerate(results) if i not in duplicates and batch[i].topic == topic]
        earlier = 1 if topic in ("t.b", "t.c") else 0
        assert info[topic].count == len(mine) + earlier == await sqlite_store.count(topic)
        assert info[topic].last_seq == max(mine)
        assert [e.seq for e in await sqlite_store.scan(topic, limit=1000)][earlier:] == mine


async def test_queued_batches_of_many_publishers_share_commits_in_order(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # batches queue up behind the lock and go into one transaction
    try:
        tasks = [
            asyncio.ensure_future(
                sqlite_store.publish_batch([NewEvent(topic=f"p{n}.t", payload=[n, i]) for i in range(n + 1)])
            )
            for n in range(40)
        ]
        await asyncio.sleep(0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    batches = await asyncio.gather(*tasks)
    seqs = [r.seq for results in batches for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for n, results in enumerate(batches):
        events = await sqlite_store.scan(f"p{n}.t")
        assert [(e.seq, e.payload) for e in events] == [(r.seq, [n, i]) for i, r in enumerate(results)]
