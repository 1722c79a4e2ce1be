"""The SQLite writer's batch INSERT path: multi-row INSERT statements, duplicates across statement boundaries,
per-topic counters of a batch mixing topics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.model import NewEvent, PublishResult, StartPosition
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
    # 300 = 288 + 12: a multiple of 32 rows, then the rest; not one statement per row
    assert len(seen) == 2, f"{len(seen)} INSERT statements for 300 rows"
    seqs = [r.seq for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    events = await sqlite_store.scan("big.t", limit=1000)
    assert [(e.seq, e.id, e.payload) for e in events] == [(r.seq, r.id, i) for i, r in enumerate(results)]
    seen.clear()
    await sqlite_store.publish(NewEvent(topic="big.t", payload="one"))
    assert len(seen) == 1


async def test_large_payloads_are_inserted_with_fewer_rows_per_statement(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    seen = _trace_event_inserts(sqlite_store)
    await sqlite_store.publish_batch([NewEvent(topic="big.t", payload=i) for i in range(64)])
    assert len(seen) == 1
    seen.clear()
    # 64 payloads of 300 KB: 32 rows per statement (their copies stay near 8 MiB), not 64 in one
    results = await sqlite_store.publish_batch(
        [NewEvent(topic="big.t", payload="x" * 300_000) for _ in range(64)]
    )
    assert len(seen) == 2
    assert [r.seq for r in results] == list(range(results[0].seq, results[0].seq + 64))


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


async def _queued_batches(store: SQLiteStore, batches: list[list[NewEvent]]) -> list[list[PublishResult]]:
    """Publish ``batches`` concurrently while another connection holds the write lock, so that the writer
    thread takes them as one batch of jobs."""
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        tasks = [asyncio.ensure_future(store.publish_batch(batch)) for batch in batches]
        await asyncio.sleep(0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    return await asyncio.gather(*tasks)


def _trace_statements(store: SQLiteStore) -> list[str]:
    conn = store._writer._conn
    assert conn is not None
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


async def test_a_batch_of_publishes_only_commits_without_savepoints(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    seen = _trace_statements(sqlite_store)
    batches = await _queued_batches(
        sqlite_store, [[NewEvent(topic=f"s{n}.t", payload=[n, i]) for i in range(30)] for n in range(10)]
    )
    # one transaction: 300 rows in two INSERTs (288 + 12), the new topics and their counters, no SAVEPOINT
    end = seen.index("COMMIT")  # the batch's own BEGIN (an inline one on the loop may have been refused)
    begin = max(i for i in range(end) if seen[i] == "BEGIN IMMEDIATE")
    batch = [" ".join(sql.split()[:3]) for sql in seen[begin : end + 1]]
    assert [sql for sql in batch if not sql.startswith("PRAGMA")] == [
        "BEGIN IMMEDIATE",
        *["INSERT INTO topics"] * 10,
        *["INSERT INTO events"] * 2,
        *["UPDATE topics SET"] * 10,
        "COMMIT",
    ]
    assert sqlite_store.writer_stats.plain_retries == 0
    seqs = [r.seq for results in batches for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    for n, results in enumerate(batches):
        events = await sqlite_store.scan(f"s{n}.t")
        assert [(e.seq, e.payload) for e in events] == [(r.seq, [n, i]) for i, r in enumerate(results)]


async def test_a_stored_id_in_a_batch_of_publishes_is_found_after_a_retry(sqlite_store: SQLiteStore) -> None:
    stored = await sqlite_store.publish(NewEvent(topic="d.t", id="old", payload="first"))
    batches = [[NewEvent(topic="d.t", id=f"e{n}-{i}", payload=i) for i in range(20)] for n in range(5)]
    batches[3][7] = NewEvent(topic="d.t", id="old", payload="again")  # in the second 32-row statement
    seen = _trace_statements(sqlite_store)
    results = [r for rs in await _queued_batches(sqlite_store, batches) for r in rs]

    assert sqlite_store.writer_stats.plain_retries == 1
    assert seen.count("ROLLBACK") == 1 and "SAVEPOINT publish" in seen  # the batch ran again, as on main
    assert [i for i, r in enumerate(results) if r.duplicate] == [67]
    assert results[67].seq == stored.seq
    fresh = [r.seq for r in results if not r.duplicate]
    assert fresh == list(range(stored.seq + 1, stored.seq + 100))
    assert (await sqlite_store.get_event("old", "d.t")).payload == "first"  # type: ignore[union-attr]
    assert [e.seq for e in await sqlite_store.scan("d.t", limit=1000)] == [stored.seq, *fresh]
    info = {t.topic: t for t in await sqlite_store.topics()}
    assert info["d.t"].count == 100 and info["d.t"].last_seq == fresh[-1]
    # the next 64 commits append with savepoints: re-sent ids cannot make every batch run twice
    seen.clear()
    await _queued_batches(sqlite_store, [[NewEvent(topic="d.t", payload=n)] for n in range(3)])
    assert "SAVEPOINT publish" in seen and sqlite_store.writer_stats.plain_retries == 1


async def test_publishes_queued_behind_another_job_append_without_a_retry(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    seen = _trace_statements(sqlite_store)
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:  # one batch of jobs: a group's creation, then publishes
        group = asyncio.ensure_future(sqlite_store.ensure_group("q.*", "g", StartPosition(kind="earliest")))
        tasks = [
            asyncio.ensure_future(
                sqlite_store.publish_batch([NewEvent(topic="q.t", payload=[n, i]) for i in range(5)])
            )
            for n in range(4)
        ]
        await asyncio.sleep(0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await group
    batches = await asyncio.gather(*tasks)
    # the publishes after the group's job are not taken for a batch of publishes only (nothing rolled back)
    assert sqlite_store.writer_stats.plain_retries == 0 and "ROLLBACK" not in seen
    seqs = [r.seq for results in batches for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
