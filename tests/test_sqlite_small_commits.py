"""Pages a small commit writes (SQLite schema version 3, ``store/sqlite/schema.py``): a one-at-a-time publish
writes the event's row and its two index entries, not the topic's row (its count is folded once per
``FOLD_EVERY`` appends); an ACK writes the pending rows' two b-trees, not the group's row (the ack floor is
derived when read); a claim writes no ``pending_member`` index. The reads that used the stored values
answer the same, also with two stores appending to one file, and a version 2 file is upgraded.

Pages are read from the real WAL file after each commit: its frame headers (https://www.sqlite.org/fileformat.html,
"WAL file format": a 32-byte header, then per frame a 24-byte header whose first field is the page number)
mapped to b-trees by the ``dbstat`` virtual table."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.model import GroupInfo, NewEvent, StartPosition, TopicInfo
from outboxhub.store.base import EventRef
from outboxhub.store.sqlite import schema
from outboxhub.store.sqlite.store import SQLiteStore
from outboxhub.store.sqlite.tx import FOLD_EVERY
from sqlite_support import QUIET, writer_settled

EARLIEST = StartPosition(kind="earliest")
CLAIM = {"limit": 1, "ack_timeout_ms": 60_000, "max_deliver": 5}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db?{QUIET}")
    yield s
    await s.close()


def wal_pages(path: str) -> list[int]:
    """Page numbers of the WAL's current frames, in order (frames of an older WAL generation, whose salt
    differs from the header's, are not counted)."""
    data = Path(path + "-wal").read_bytes()
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    pages: list[int] = []
    offset = 32
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salt:
        pages.append(struct.unpack(">I", data[offset : offset + 4])[0])
        offset += 24 + page_size
    return pages


def btrees(path: str, pages: list[int]) -> set[str]:
    """The tables and indexes ``pages`` belong to. Pages of none are left out: page 1 (the file header,
    rewritten when the file grows) and the free list's (a new file has a few: its migrations rebuild
    tables, and a new page is taken from the list)."""
    conn = sqlite3.connect(path)
    try:
        owner = dict(conn.execute("SELECT pageno, name FROM dbstat WHERE name != 'sqlite_schema'"))
    finally:
        conn.close()
    return {owner[page] for page in pages if page in owner}


class WalWatch:
    """Which b-trees each commit wrote: the WAL frames added since the last look."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen = len(wal_pages(path))

    def written(self) -> set[str]:
        pages = wal_pages(self.path)
        assert len(pages) > self.seen, "the WAL restarted in between: the test's store must be QUIET"
        new, self.seen = pages[self.seen :], len(pages)
        return btrees(self.path, new)


async def warm(store: SQLiteStore, events: int) -> None:
    """A group with a history (every event claimed and acked), then a settled writer."""
    await store.ensure_group("pages.*", "g", EARLIEST)
    for n in range(events):
        await store.publish(NewEvent(topic="pages.t", payload=n))
        [delivery] = await store.claim("pages.*", "g", "m1", **CLAIM)
        await store.ack("pages.*", "g", [EventRef(delivery.event.id, delivery.event.seq)], member="m1")
    await writer_settled(store)


async def test_a_publish_a_claim_and_an_ack_write_only_their_own_btrees(store: SQLiteStore) -> None:
    await warm(store, 10)
    watch = WalWatch(store.path)
    await store.publish(NewEvent(topic="pages.t", payload="one"))
    assert watch.written() == {"events", "sqlite_autoindex_events_1", "events_topic_seq"}
    [delivery] = await store.claim("pages.*", "g", "m1", **CLAIM)
    assert watch.written() == {"pending", "pending_deadline", "groups"}  # the frontier moved
    await store.ack("pages.*", "g", [EventRef(delivery.event.id, delivery.event.seq)], member="m1")
    assert watch.written() == {"pending", "pending_deadline"}
    # and a parked claim taken by the publish: one commit, the two sets
    parked = store.park_claim("pages.*", "g", "m1", limit=4, ack_timeout_ms=60_000, max_deliver=5)
    await store.publish(NewEvent(topic="pages.t", payload="two"))
    deliveries, _ = await parked.future
    assert [d.event.payload for d in deliveries] == ["two"]
    assert watch.written() == {
        "events",
        "sqlite_autoindex_events_1",
        "events_topic_seq",
        "pending",
        "pending_deadline",
        "groups",
    }
    [info] = await store.groups()
    assert (info.ack_floor, info.frontier, info.in_flight) == (11, 12, 1)


async def test_the_topic_row_is_written_once_per_fold_and_the_stats_stay_exact(store: SQLiteStore) -> None:
    await store.publish(NewEvent(topic="fold.t", payload=0))  # the first append of this writer folds
    await writer_settled(store)
    watch = WalWatch(store.path)
    topic_row_writes = 0
    for n in range(1, 2 * FOLD_EVERY + 3):
        published = await store.publish(NewEvent(topic="fold.t", payload=n))
        topic_row_writes += "topics" in watch.written()
        [info] = await store.topics()
        assert (info.count, info.last_seq, info.topic) == (n + 1, published.seq, "fold.t")
        assert info.last_ts == (await store.get_event(published.id, "fold.t")).ts  # type: ignore[union-attr]
        assert await store.count("fold.*") == n + 1
    assert topic_row_writes == 2


async def test_two_stores_on_one_file_count_each_others_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db?{QUIET}"
    first, second = await SQLiteStore.open(url), await SQLiteStore.open(url)
    try:
        await first.ensure_group("two.*", "g", EARLIEST)
        for n in range(FOLD_EVERY + 10):
            await first.publish(NewEvent(topic="two.a", payload=n))
            await second.publish(NewEvent(topic="two.a", payload=n))
            await second.publish(NewEvent(topic="two.b", payload=n))
        total = 3 * (FOLD_EVERY + 10)
        for reader in (first, second):
            assert [(t.topic, t.count, t.last_seq) for t in await reader.topics()] == [
                ("two.a", 2 * (FOLD_EVERY + 10), total - 1),
                ("two.b", FOLD_EVERY + 10, total),
            ]
            assert await reader.count("two.*") == total
            lag = await reader.lag("two.*", "g")
            assert lag is not None and (lag.tail_seq, lag.lag_count) == (total, total)
        # what a reader counts from the index instead of the row: under FOLD_EVERY events per writer
        conn = sqlite3.connect(first.path)
        try:
            behind = dict(conn.execute("SELECT topic, counted_to FROM topics"))
        finally:
            conn.close()
        assert total - 1 - behind["two.a"] < 2 * FOLD_EVERY and total - behind["two.b"] < FOLD_EVERY
    finally:
        await first.close()
        await second.close()


async def test_a_version_2_file_is_upgraded_with_its_stats_and_floors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/v2.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    await (await SQLiteStore.open(url)).close()
    monkeypatch.undo()
    with sqlite3.connect(tmp_path / "v2.db") as conn:  # the rows as version 2's writer stored them
        conn.executemany(
            "INSERT INTO topics (topic_id, topic, count, last_seq, last_ts) VALUES (?, ?, ?, ?, ?)",
            [(1, "orders.paid", 3, 3, 1003), (2, "orders.new", 1, 4, 1004)],
        )
        conn.executemany(
            "INSERT INTO events (seq, id, topic_id, ts, key, payload, meta)"
            " VALUES (?, ?, ?, ?, NULL, ?, NULL)",
            [(seq, f"e{seq}", 1 if seq < 4 else 2, 1000 + seq, str(seq).encode()) for seq in range(1, 5)],
        )
        conn.execute(
            "INSERT INTO groups (gid, pattern, name, ack_floor, frontier, dead_letters, created_ts)"
            " VALUES (1, 'orders.*', 'g', 1, 4, 2, 0)"
        )
        conn.executemany(
            "INSERT INTO pending (gid, seq, event_id, key, member, deadline, attempts)"
            " VALUES (1, ?, ?, NULL, 'm1', 99999999999999, 1)",
            [(2, "e2"), (4, "e4")],
        )
    store = await SQLiteStore.open(url)
    try:
        assert await store.topics() == [
            TopicInfo(topic="orders.new", count=1, last_seq=4, last_ts=1004),
            TopicInfo(topic="orders.paid", count=3, last_seq=3, last_ts=1003),
        ]
        assert await store.count("orders.*") == 4
        assert await store.groups() == [
            GroupInfo(pattern="orders.*", group="g", ack_floor=1, frontier=4, in_flight=2, dead_letters=2)
        ]
        cursor = await store.cursor("orders.*", "g")
        assert cursor is not None and (cursor.seq, cursor.last_id, cursor.last_ts) == (1, "e1", 1001)
        lag = await store.lag("orders.*", "g")
        assert lag is not None and (lag.tail_seq, lag.lag_count, lag.lag_ms) == (4, 3, 3)
        assert await store.release("orders.*", "g", "m1") == 2
        assert await store.ack("orders.*", "g", [EventRef("e2", 2)]) == 1
        published = await store.publish(NewEvent(topic="orders.paid", payload=5))
        assert published.seq == 5
        [info] = await store.groups()
        assert (info.ack_floor, info.frontier) == (3, 4)
        assert [(t.topic, t.count, t.last_seq) for t in await store.topics()] == [
            ("orders.new", 1, 4),
            ("orders.paid", 4, 5),
        ]
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "v2.db")
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (3,)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "pending_member" not in indexes and "pending_deadline" in indexes
        assert "ack_floor" not in {row[1] for row in conn.execute("PRAGMA table_info(groups)")}
    finally:
        conn.close()


async def test_a_members_release_walks_only_its_own_groups_pending_rows(store: SQLiteStore) -> None:
    # with no pending_member index, a release reads its group's range of the (gid, seq) key: another
    # tenant's groups' rows are never visited
    await store.ensure_group("mine.*", "g", EARLIEST)
    await store.ensure_group("theirs.*", "g", EARLIEST)
    for n in range(5):
        await store.publish(NewEvent(topic="mine.t", payload=n))
        await store.publish(NewEvent(topic="theirs.t", payload=n))
    await store.claim("mine.*", "g", "m1", limit=5, ack_timeout_ms=60_000, max_deliver=5)
    await store.claim("theirs.*", "g", "m1", limit=5, ack_timeout_ms=60_000, max_deliver=5)
    conn = store._writer._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        assert await store.release("mine.*", "g", "m1") == 5
    finally:
        conn.set_trace_callback(None)
    [update] = [sql for sql in statements if sql.startswith("UPDATE pending")]
    reader = sqlite3.connect(store.path)
    try:
        plan = [row[3] for row in reader.execute(f"EXPLAIN QUERY PLAN {update}")]
        held = reader.execute(
            "SELECT g.pattern, count(p.member) FROM groups g JOIN pending p USING (gid) GROUP BY g.pattern"
        ).fetchall()
    finally:
        reader.close()
    assert plan == ["SEARCH pending USING PRIMARY KEY (gid=?)"]
    assert held == [("mine.*", 0), ("theirs.*", 5)]
