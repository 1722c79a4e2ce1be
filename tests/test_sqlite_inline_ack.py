"""ACKs committed on the event loop thread (SQLite, ``Writer.submit(..., inline=True)``): a small ACK with
the writer thread idle commits right away on the loop, one queued behind the thread's work waits for the
thread's commit, a large one goes to the thread, and a failure inside the inline transaction answers an
error and leaves the group as it was. Real SQLite files; failures come from real SQLite triggers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.errors import StoreError
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store.sqlite.store import INLINE_ACK_MAX, SQLiteStore
from sqlite_support import QUIET, pending_rows, writer_settled

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold
EARLIEST = StartPosition(kind="earliest")

FAILING_TRIGGERS = {
    # the ACK's own DELETE fails inside its savepoint; the (empty) transaction still commits
    "job": "CREATE TRIGGER boom BEFORE DELETE ON pending BEGIN SELECT RAISE(ABORT, 'boom'); END",
    # the row is deleted, then the DELETE fails after it (nothing else runs before COMMIT since the ack floor
    # is derived, schema version 3): the whole batch rolls back, the row is pending again
    "after": "CREATE TRIGGER boom AFTER DELETE ON pending BEGIN SELECT RAISE(ABORT, 'boom'); END",
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db?{QUIET}")
    yield s
    await s.close()


def run_sql(path: str, sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


async def held(store: SQLiteStore, count: int, topic: str = "acks.t") -> list[str]:
    """Publish ``count`` events and claim them for member m1 of group g; return their ids."""
    await store.ensure_group("acks.*", "g", EARLIEST)
    ids = [(await store.publish(NewEvent(topic=topic, payload=i))).id for i in range(count)]
    deliveries = await store.claim("acks.*", "g", "m1", limit=count, ack_timeout_ms=60_000, max_deliver=5)
    assert [d.event.id for d in deliveries] == ids
    await writer_settled(store)  # and a new loop iteration: the last publish's inline turn is over
    return ids


async def test_a_lone_ack_commits_on_the_loop_thread_and_is_durable_when_answered(store: SQLiteStore) -> None:
    [event_id] = await held(store, 1)
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    assert await store.ack("acks.*", "g", [event_id], member="m1") == 1
    assert (stats.inline_commits, stats.commits) == (inline + 1, commits + 1)
    assert pending_rows(store.path) == 0  # committed before it was answered
    [info] = await store.groups()
    assert info.in_flight == 0 and info.ack_floor == info.frontier


async def test_an_inline_ack_is_four_statements(store: SQLiteStore) -> None:
    # no SAVEPOINT for the batch's one job (a failure rolls the whole transaction back), no frontier read
    # to find the group, no ack floor to move (derived when read, schema version 3)
    [event_id] = await held(store, 1)
    conn = store._writer._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        assert await store.ack("acks.*", "g", [event_id], member="m1") == 1
    finally:
        conn.set_trace_callback(None)
    # (a PRAGMA busy_timeout may come first: a connection setting, outside the transaction)
    transaction = [sql for sql in statements if not sql.startswith("PRAGMA busy_timeout")]
    assert [sql.split()[0] for sql in transaction] == ["BEGIN", "PRAGMA", "DELETE", "COMMIT"]
    assert pending_rows(store.path) == 0


async def test_an_ack_behind_the_writer_threads_work_waits_for_its_commit(store: SQLiteStore) -> None:
    [event_id] = await held(store, 1)
    stats = store.writer_stats
    inline = stats.inline_commits
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer thread waits for this lock with the publish queued
    try:
        publish = asyncio.ensure_future(store.publish(NewEvent(topic="other.t")))
        await asyncio.sleep(0)
        # a later loop iteration: only the busy writer thread keeps the ACK off the loop
        await asyncio.sleep(0)
        ack = asyncio.ensure_future(store.ack("acks.*", "g", [event_id], member="m1"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not publish.done() and not ack.done()  # nothing answered before its commit
        assert stats.inline_commits == inline
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await asyncio.wait_for(ack, WAIT_S) == 1
    await asyncio.wait_for(publish, WAIT_S)
    assert stats.inline_commits == inline  # both committed by the writer thread
    assert pending_rows(store.path) == 0


async def test_a_large_ack_batch_goes_to_the_writer_thread(store: SQLiteStore) -> None:
    ids = await held(store, INLINE_ACK_MAX + 1)
    stats = store.writer_stats
    inline = stats.inline_commits
    assert await store.ack("acks.*", "g", ids, member="m1") == len(ids)
    assert stats.inline_commits == inline
    assert pending_rows(store.path) == 0


@pytest.mark.parametrize("where", sorted(FAILING_TRIGGERS))
async def test_a_failing_inline_ack_answers_an_error_and_leaves_the_group_as_it_was(
    store: SQLiteStore, where: str
) -> None:
    [event_id] = await held(store, 1)
    [before] = await store.groups()
    stats = store.writer_stats
    run_sql(store.path, FAILING_TRIGGERS[where])
    inline = stats.inline_commits
    with pytest.raises(StoreError, match="boom"):
        await store.ack("acks.*", "g", [event_id], member="m1")
    assert stats.inline_commits == inline + 1  # it was the inline path that failed
    assert pending_rows(store.path) == 1
    assert await store.groups() == [before]
    # The connection is usable again on either path: the next write on the loop, the ACK once fixed.
    run_sql(store.path, "DROP TRIGGER boom")
    await asyncio.sleep(0)
    published = await store.publish(NewEvent(topic="acks.t", payload="after"))
    assert published.seq == before.frontier + 1
    await asyncio.sleep(0)
    assert await store.ack("acks.*", "g", [event_id], member="m1") == 1
    assert stats.inline_commits == inline + 3
    assert pending_rows(store.path) == 0


async def test_an_ack_over_the_socket_whose_commit_fails_is_answered_err_and_stays_held(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    store = hub.store
    assert isinstance(store, SQLiteStore)
    c = await ws_connect(hub.ws_url, token=token())
    opts = {"ack_timeout_ms": 60_000}
    assert (await c.request("SUBSCRIBE", topic="sock.*", group="g", opts=opts))["op"] == "OK"
    await c.request("PUBLISH", topic="sock.x", payload=1)
    event = await c.next_event()
    ids = {"topic": "sock.*", "group": "g", "id": event["event"]["id"], "seq": event["event"]["seq"]}
    run_sql(store.path, FAILING_TRIGGERS["after"])
    err = await c.request("ACK", **ids)
    assert err["op"] == "ERR" and err["code"] == "internal", err
    assert pending_rows(store.path) == 1
    [info] = [g for g in await store.groups() if g.group == "g"]
    assert info.in_flight == 1
    run_sql(store.path, "DROP TRIGGER boom")
    assert (await c.request("ACK", **ids))["op"] == "OK"
    assert pending_rows(store.path) == 0
