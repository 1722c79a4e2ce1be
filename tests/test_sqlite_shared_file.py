"""The SQLite writer keeps the log's last seq and the topic catalog between its transactions while no other
connection commits to the file (``WriteTx.begin`` reads them again only when ``PRAGMA data_version``
changed or its last transaction did not commit). Other hubs, outbox drainers and scripts on the same file
must still find their seqs and topic ids right."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.model import NewEvent
from outboxhub.store.codec import prepare
from outboxhub.store.sqlite.schema import configure, migrate
from outboxhub.store.sqlite.store import SQLiteStore
from outboxhub.store.sqlite.topics import TopicCatalog
from outboxhub.store.sqlite.tx import WriteTx
from sqlite_support import QUIET, writer_settled

_OTHER_PROCESS = """
import asyncio, sys
from outboxhub.model import NewEvent
from outboxhub.store.sqlite.store import SQLiteStore

async def main() -> None:
    store = await SQLiteStore.open(sys.argv[1])
    try:
        for topic in sys.argv[2:]:
            result = await store.publish(NewEvent(topic=topic, payload=topic))
            print(result.seq)
    finally:
        await store.close()

asyncio.run(main())
"""


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(url_for(tmp_path / "shared.db"))
    yield opened
    await opened.close()


async def _publish_traced(store: SQLiteStore, topic: str, payload: int) -> tuple[int, bool]:
    """Publish one event on ``store``: its seq, and whether its transaction read the log's last seq again.

    (Inline or on the writer thread: the trace follows the write connection on either.)"""
    await asyncio.sleep(0)
    conn = store._writer._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        result = await store.publish(NewEvent(topic=topic, payload=payload))
    finally:
        conn.set_trace_callback(None)
    return result.seq, any("max(seq)" in statement for statement in statements)


async def _other_process(path: Path, *topics: str) -> list[int]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OTHER_PROCESS,
        url_for(path),
        *topics,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    return [int(line) for line in out.split()]


async def test_commits_of_another_store_between_two_of_ours_keep_seqs_and_topic_ids_right(
    store: SQLiteStore, tmp_path: Path
) -> None:
    # QUIET: `other` checkpoints once, after its first commit, and then starts the WAL over with a write of
    # its own (a commit of another connection for `store`); waiting for that keeps it out of the publishes
    # below whose reads are counted.
    other = await SQLiteStore.open(f"{url_for(tmp_path / 'shared.db')}?{QUIET}")
    try:
        assert await _publish_traced(store, "mine.a", 1) == (1, True)  # its first transaction reads
        assert await _publish_traced(store, "mine.a", 2) == (2, False)  # nobody else committed since
        await other.publish(NewEvent(topic="theirs.b", payload=3))  # a topic `store` has never seen
        await other.publish(NewEvent(topic="mine.a", payload=4))
        await writer_settled(other)
        assert await _publish_traced(store, "mine.a", 5) == (5, True)
        assert await _publish_traced(store, "mine.c", 6) == (6, False)  # a new topic: id after theirs.b
        assert await _publish_traced(other, "theirs.b", 7) == (7, True)
    finally:
        await other.close()
    catalog = store._catalog
    assert [catalog.topic_id(name) for name in ("mine.a", "theirs.b", "mine.c")] == [1, 2, 3]
    events = await store.scan("**")
    assert [(e.seq, e.topic, e.payload) for e in events] == [
        (1, "mine.a", 1),
        (2, "mine.a", 2),
        (3, "theirs.b", 3),
        (4, "mine.a", 4),
        (5, "mine.a", 5),
        (6, "mine.c", 6),
        (7, "theirs.b", 7),
    ]
    assert [(t.topic, t.count, t.last_seq) for t in await store.topics()] == [
        ("mine.a", 4, 5),
        ("mine.c", 1, 6),
        ("theirs.b", 2, 7),
    ]


async def test_commits_of_another_process_between_two_of_ours_keep_seqs_and_topic_ids_right(
    store: SQLiteStore, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    assert await _publish_traced(store, "p.mine", 1) == (1, True)
    assert await _publish_traced(store, "p.mine", 2) == (2, False)
    assert await _other_process(path, "p.theirs", "p.mine") == [3, 4]
    assert await _publish_traced(store, "p.mine", 5) == (5, True)
    assert await _publish_traced(store, "p.new", 6) == (6, False)
    assert await _other_process(path, "p.new", "p.later") == [7, 8]
    assert await _publish_traced(store, "p.later", 9) == (9, True)
    catalog = store._catalog
    names = ("p.mine", "p.theirs", "p.new", "p.later")
    assert [catalog.topic_id(name) for name in names] == [1, 2, 3, 4]
    assert [(e.seq, e.topic) for e in await store.scan("p.*")] == [
        (1, "p.mine"),
        (2, "p.mine"),
        (3, "p.theirs"),
        (4, "p.mine"),
        (5, "p.mine"),
        (6, "p.new"),
        (7, "p.new"),
        (8, "p.later"),
        (9, "p.later"),
    ]


def test_a_transaction_rolled_back_is_not_trusted_by_the_next(tmp_path: Path) -> None:
    """The next seq of a rolled-back transaction is not the log's: the next begin reads it again, though
    no other connection committed."""
    conn = sqlite3.connect(tmp_path / "rollback.db", isolation_level=None)
    try:
        configure(conn, synchronous="normal", busy_timeout_ms=1000, writer=True)
        migrate(conn)
        catalog = TopicCatalog()
        tx = WriteTx(conn, catalog)
        for expected in (1, 2):
            conn.execute("BEGIN IMMEDIATE")
            tx.begin()
            assert [r.seq for r in tx.append([prepare(NewEvent(topic="kept.t", payload=expected))])] == [
                expected
            ]
            conn.execute("COMMIT")
            tx.committed()
        conn.execute("BEGIN IMMEDIATE")
        tx.begin()
        assert [r.seq for r in tx.append([prepare(NewEvent(topic="gone.t", payload=0))])] == [3]
        conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        tx.begin()
        assert tx.next_seq == 3
        assert tx.topic_id_for("new.t") == 2  # gone.t's id was rolled back: not in the catalog either
        conn.execute("ROLLBACK")
        assert catalog.topic_id("gone.t") is None
    finally:
        conn.close()
