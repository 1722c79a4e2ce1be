"""Small ACKs that ride on the next loop-thread batch (SQLite, ``store/sqlite/riders.py``): while a claim is
parked and publishes come often, an ACK waits for the next publish and commits in its transaction (one
commit for both), or commits on its own when none comes in time; it is answered only after the commit
that carries it, and its failure stays its own. Real SQLite files; the failure comes from a real trigger.
``RIDE_S`` is set per test so that nothing depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.errors import StoreError
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store.base import EventRef
from outboxhub.store.sqlite import riders
from outboxhub.store.sqlite.store import SQLiteStore
from sqlite_support import QUIET, pending_rows, writer_settled

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold
EARLIEST = StartPosition(kind="earliest")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db?{QUIET}")
    yield s
    await s.close()


async def held_while_parked(store: SQLiteStore) -> EventRef:
    """One event claimed by member m1 of group g; a claim parked for another group (a member waiting for
    ``other.*``, which nothing here publishes to); then two publishes handed over in one loop iteration
    (publishes come often). Returns the held delivery."""
    await store.ensure_group("acks.*", "g", EARLIEST)
    await store.ensure_group("other.*", "waiting", EARLIEST)
    await store.publish(NewEvent(topic="acks.t", payload=0))
    [delivery] = await store.claim("acks.*", "g", "m1", limit=1, ack_timeout_ms=60_000, max_deliver=5)
    store.park_claim("other.*", "waiting", "m9", limit=4, ack_timeout_ms=60_000, max_deliver=5)
    first = store.publish_soon([NewEvent(topic="acks.later", payload=1)])
    second = store.publish_soon([NewEvent(topic="acks.later", payload=2)])
    await asyncio.gather(first, second)
    await writer_settled(store)
    return EventRef(delivery.event.id, delivery.event.seq)


async def test_an_ack_rides_on_the_next_publish_and_is_answered_after_that_commit(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(riders, "RIDE_S", 600.0)
    ref = await held_while_parked(store)
    stats = store.writer_stats
    commits = stats.commits
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    for _ in range(5):
        await asyncio.sleep(0)
    assert not done.done() and stats.commits == commits  # waiting for a batch to ride on
    assert pending_rows(store.path) == 1
    conn = store._writer._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        result = await store.publish(NewEvent(topic="acks.t", payload="next"))
    finally:
        conn.set_trace_callback(None)
    assert done.done() and done.result() == 1
    assert stats.commits == commits + 1  # the publish and the ACK in one transaction
    assert [s.split()[0] for s in statements].count("COMMIT") == 1
    assert pending_rows(store.path) == 0  # the ACK was durable when answered
    assert (await store.get_event(result.id)) is not None


async def test_an_ack_with_no_batch_to_ride_on_commits_on_its_own(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(riders, "RIDE_S", 0.2)
    ref = await held_while_parked(store)
    stats = store.writer_stats
    commits = stats.commits
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    await asyncio.sleep(0)
    assert not done.done()
    assert await asyncio.wait_for(done, WAIT_S) == 1
    assert stats.commits == commits + 1
    assert pending_rows(store.path) == 0


async def test_when_publishes_come_seldom_an_ack_commits_at_once(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(riders, "RIDE_S", 600.0)
    ref = await held_while_parked(store)
    monkeypatch.setattr(riders, "RIDE_S", 0.0)  # the last two publishes came "too far apart"
    stats = store.writer_stats
    commits = stats.commits
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    assert done.done() and done.result() == 1  # committed inline, right away
    assert stats.commits == commits + 1 and pending_rows(store.path) == 0


async def test_a_failing_rider_fails_alone_and_the_publish_it_rode_on_commits(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(riders, "RIDE_S", 600.0)
    ref = await held_while_parked(store)
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        conn.execute("CREATE TRIGGER boom BEFORE DELETE ON pending BEGIN SELECT RAISE(ABORT, 'boom'); END")
    finally:
        conn.close()
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    result = await store.publish(NewEvent(topic="acks.t", payload="next"))
    with pytest.raises(StoreError, match="boom"):
        await done
    assert (await store.get_event(result.id)) is not None  # committed, and read back by a reader
    assert pending_rows(store.path) == 1  # the ACK changed nothing


async def test_closing_the_store_commits_a_waiting_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(riders, "RIDE_S", 600.0)
    store = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db?{QUIET}")
    try:
        ref = await held_while_parked(store)
        done = store.ack_soon("acks.*", "g", [ref], member="m1")
        assert not done.done()
    finally:
        await store.close()
    assert done.done() and done.result() == 1
    assert pending_rows(str(tmp_path / "hub.db")) == 0
