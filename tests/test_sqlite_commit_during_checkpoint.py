"""Commits during a checkpoint (SQLite): while the checkpointer copies the WAL into the database, a lone
publish still commits on the event loop thread when the WAL holds frames no checkpoint has copied (it
appends to the WAL, it cannot start it over), and after such a checkpoint no WAL restart is asked of the
writer thread. The commit that does start the WAL over (and syncs its header) stays the writer thread's.
Real SQLite file and checkpointer thread; the checkpoint is held open after its copy by the checkpointer's
own callback; restarts read from the WAL file's header; counts only, never wall-clock time."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from outboxhub.model import NewEvent
from outboxhub.store.sqlite.checkpoint import WalIndex
from outboxhub.store.sqlite.store import SQLiteStore
from sqlite_support import writer_settled

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold


def wal_checkpoint_seq(path: Path) -> int:
    """The checkpoint sequence number of the WAL's header: SQLite adds one each time the WAL restarts."""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


async def test_a_publish_during_a_checkpoint_commits_on_the_loop_when_frames_are_left_to_copy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "during.db"
    store = await SQLiteStore.open(f"sqlite:///{path}?checkpoint_interval_ms=1000")
    writer = store._writer
    checkpointer = writer._checkpointer
    stats = store.writer_stats
    copied, release = threading.Event(), threading.Event()
    counted = checkpointer._on_checkpoint

    def held() -> None:  # the checkpointer thread, after its checkpoint copied and before it reports
        counted()
        copied.set()
        release.wait(WAIT_S)

    try:
        await store.publish(NewEvent(topic="c.t", payload=0))
        await writer_settled(store)
        await asyncio.sleep(1.2)  # past the interval: the checkpointer waits for the next commit
        checkpointer._on_checkpoint = held
        await store.publish(NewEvent(topic="c.t", payload=1))  # its checkpoint copies the whole WAL
        assert await asyncio.to_thread(copied.wait, WAIT_S)
        checkpointer._on_checkpoint = counted
        inline, restarts = stats.inline_commits, stats.restarts
        # Nothing is left to copy: the next write starts the WAL over and syncs its header. The thread's.
        seq = wal_checkpoint_seq(path)
        await store.publish(NewEvent(topic="c.t", payload=2))
        assert stats.inline_commits == inline
        assert wal_checkpoint_seq(path) == seq + 1
        await asyncio.sleep(0)  # a new loop iteration, the thread's batch answered
        # Frames left to copy now: the checkpoint is still running, yet this commit only appends.
        done = store.publish_soon([NewEvent(topic="c.t", payload=3)])
        assert stats.inline_commits == inline + 1
        assert wal_checkpoint_seq(path) == seq + 1
        await done
        release.set()
        async with asyncio.timeout(WAIT_S):
            while checkpointer.running:  # noqa: ASYNC110 - another thread's state, no event to wait on
                await asyncio.sleep(0.002)
        # The checkpoint left frames behind it (written while it ran): no restart is due, none asked for.
        assert not writer._restarts.due
        await store.publish(NewEvent(topic="c.t", payload=4))
        assert stats.restarts == restarts
        assert wal_checkpoint_seq(path) == seq + 1
        assert [e.payload for e in await store.scan("c.t", limit=10)] == [0, 1, 2, 3, 4]
    finally:
        release.set()
        await store.close()


def test_the_wal_index_tells_whether_every_frame_was_copied(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "index.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x)")
    index = WalIndex.open(str(path))  # once the WAL is open: its -shm file exists
    try:
        assert index.all_copied() is False
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        assert index.all_copied() is True
        conn.execute("INSERT INTO t VALUES (1)")  # starts the WAL over
        assert index.all_copied() is False
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        conn.execute("INSERT INTO t VALUES (2)")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the reader's snapshot holds the last frames back
        assert index.all_copied() is False
        reader.rollback()
        reader.close()
    finally:
        index.close()
        conn.close()
    assert WalIndex.open(str(tmp_path / "missing.db")).all_copied() is None
