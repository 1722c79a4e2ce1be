"""No WAL upkeep on the event loop thread (SQLite): the write connection, which also commits on the loop,
never checkpoints by itself; when the WAL grows past ``BACKSTOP_BYTES`` the writer thread checkpoints, and
the WAL restarts and is cut back; the commit that starts the WAL over (and syncs its new header) is the
writer thread's. Real SQLite files, a real reader holding a snapshot to make the WAL grow, checkpoint
statements observed with SQLite's trace callback, restarts read from the WAL file's header."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
from pathlib import Path

from outboxhub.model import NewEvent
from outboxhub.store.sqlite.checkpoint import BACKSTOP_BYTES, Checkpointer
from outboxhub.store.sqlite.store import SQLiteStore

WAIT_S = 60.0  # an upper bound for "soon", never a measured threshold
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # schema.configure


def wal_size(path: Path) -> int:
    return os.path.getsize(f"{path}-wal")


def wal_checkpoint_seq(path: Path) -> int:
    """The checkpoint sequence number of the WAL's header: SQLite adds one each time the WAL restarts."""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


async def test_the_backstop_checkpoint_runs_on_the_writer_thread_and_restarts_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = await SQLiteStore.open(f"sqlite:///{path}")
    writer = store._writer
    conn = writer._conn
    assert conn is not None
    checkpoints: list[int] = []  # the thread of every checkpoint statement run on the write connection

    def trace(sql: str) -> None:
        if "wal_checkpoint" in sql.lower():
            checkpoints.append(threading.get_ident())

    try:
        # SQLite's automatic checkpoint would run in whichever thread commits past it: the loop's too.
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        conn.set_trace_callback(trace)
        await store.publish(NewEvent(topic="wal.t", payload=0))
        # A reader holding a snapshot: no checkpoint can complete, so the WAL grows past the backstop.
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        inline = store.writer_stats.inline_commits
        big = "x" * (1 << 20)
        async with asyncio.timeout(WAIT_S):
            while store.writer_stats.backstops == 0:
                await store.publish(NewEvent(topic="wal.t", payload=big))
                await asyncio.sleep(0)  # the next publish commits inline again (one per loop iteration)
        assert wal_size(path) > BACKSTOP_BYTES
        assert store.writer_stats.inline_commits - inline > BACKSTOP_BYTES // len(big) // 2
        assert checkpoints
        assert set(checkpoints) == {writer._thread.ident} != {threading.get_ident()}
        # Read only now: when the reader began after the checkpointer had copied the whole WAL, it reads
        # the database file alone, and the first big publish may still have started the WAL over.
        restarts = wal_checkpoint_seq(path)
        reader.rollback()
        reader.close()
        # Nothing holds the WAL now: a checkpoint completes and a later commit starts it over, cut back.
        async with asyncio.timeout(WAIT_S):
            while wal_checkpoint_seq(path) == restarts:
                await store.publish(NewEvent(topic="wal.t", payload=1))
                await asyncio.sleep(0.01)
        # the commit that restarted it (maybe the writer thread's, seen half-way) is over after this one
        await store.publish(NewEvent(topic="wal.t", payload=2))
        assert wal_size(path) <= JOURNAL_SIZE_LIMIT
        assert set(checkpoints) == {writer._thread.ident}
        assert [e.payload for e in await store.scan("wal.t", limit=1)] == [0]
    finally:
        conn.set_trace_callback(None)
        await store.close()


async def test_the_commit_that_restarts_the_wal_never_runs_on_the_loop_thread(tmp_path: Path) -> None:
    """After a checkpoint has copied the whole WAL the next commit starts it over, writing and syncing its
    header. Checkpoints every millisecond and pauses between publishes make that happen over and over; the
    WAL's header is read right before and right after each publish is handed to the store, which is when an
    inline commit runs, so a restart by a commit on the loop thread would show."""
    path = tmp_path / "restart.db"
    store = await SQLiteStore.open(f"sqlite:///{path}?checkpoint_interval_ms=1")
    rng = random.Random(16)
    try:
        await store.publish(NewEvent(topic="r.t", payload=-1))
        stats = store.writer_stats
        first, inline = wal_checkpoint_seq(path), 0
        for i in range(150):
            before, committed = wal_checkpoint_seq(path), stats.inline_commits
            done = store.publish_soon([NewEvent(topic="r.t", payload=i)])
            if stats.inline_commits > committed:  # it committed right there, on this (the loop) thread
                inline += 1
                assert wal_checkpoint_seq(path) == before, f"publish {i} restarted the WAL on the loop thread"
            await done
            await asyncio.sleep(rng.choice([0, 0.001, 0.003, 0.01]))
        # the case did arise: publishes committed on the loop thread, and the WAL started over many times
        restarts = wal_checkpoint_seq(path) - first
        assert inline >= 10 and restarts >= 3 and stats.restarts >= 3, (inline, restarts, stats.restarts)
        assert [e.payload for e in await store.scan("r.t", limit=200)] == list(range(-1, 150))
    finally:
        await store.close()


def test_past_the_backstop_checkpoints_run_back_to_back_until_one_copies_little(tmp_path: Path) -> None:
    """The writer's backstop checkpoint copies and syncs, with nothing written meanwhile, what no checkpoint
    has copied yet. Past the backstop the checkpointer first runs checkpoints back to back while each still
    copies much (frames written during the one before), so that little is left for that stall; one that
    copies little ends the series."""
    path = tmp_path / "catchup.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x BLOB)")
    page = os.urandom(4000)

    def write(pages: int) -> None:
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO t VALUES (?)", [(page,) for _ in range(pages)])
        writer.execute("COMMIT")

    # A reader with a snapshot of everything written so far: checkpoints copy all of it, and the WAL cannot
    # start over under the next write (as under a steady stream of writes, where it never does).
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def read() -> None:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()

    passes: list[int] = []  # the WAL's size after each checkpoint
    backstops = threading.Event()

    def checkpointed() -> None:
        passes.append(os.path.getsize(f"{path}-wal"))
        if len(passes) <= 2:  # written right after the first two: 1,500 and 1,100 frames behind them
            write(1500 if len(passes) == 1 else 1100)
            reader.rollback()
            read()

    checkpointer = Checkpointer(
        str(path),
        url="sqlite:///catchup.db",
        synchronous="normal",
        on_checkpoint=checkpointed,
        on_backstop=backstops.set,
        on_restart=lambda: None,
        interval_s=600.0,  # never a second round by the interval within this test
    )
    try:
        write(300)
        read()
        assert checkpointer.open(backstop_frames=200)
        checkpointer.committed()
        assert backstops.wait(WAIT_S)
        # 1: 300 frames, past the backstop; 2: the 1,500 written after the first; 3: the 1,100 written
        # after the second (more than 1,024); 4: nothing new, so the backstop is asked for
        assert len(passes) == 4, passes
        assert passes[0] < passes[1] < passes[2] == passes[3]  # the WAL grew: no restart in between
    finally:
        checkpointer.stop()
        reader.close()
        writer.close()


def test_a_reader_holding_frames_back_ends_the_series_at_once(tmp_path: Path) -> None:
    """A checkpoint that copies nothing because a reader holds the WAL is not run again and again."""
    path = tmp_path / "held.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x BLOB)")
    writer.execute("INSERT INTO t VALUES (1)")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany("INSERT INTO t VALUES (?)", [(os.urandom(4000),) for _ in range(3000)])
    writer.execute("COMMIT")
    passes: list[int] = []
    backstops = threading.Event()
    checkpointer = Checkpointer(
        str(path),
        url="sqlite:///held.db",
        synchronous="normal",
        on_checkpoint=lambda: passes.append(1),
        on_backstop=backstops.set,
        on_restart=lambda: None,
        interval_s=600.0,
    )
    try:
        assert checkpointer.open(backstop_frames=200)
        checkpointer.committed()
        assert backstops.wait(WAIT_S)
        assert len(passes) == 2  # the first, and one more that found nothing more to copy
    finally:
        checkpointer.stop()
        reader.close()
        writer.close()


async def test_a_backstop_asked_of_a_busy_writer_thread_runs_before_its_next_batch(tmp_path: Path) -> None:
    """The checkpointer asks the writer thread itself for the backstop: a backstop asked for while the thread
    runs a batch runs right after it, before the publishes queued meanwhile, not behind them after a hop
    through the event loop (the WAL grows all that time). The marker that also goes through the loop (for a
    thread waiting for work) then finds it done: one backstop. The thread is held busy by a job of its own;
    the request is the checkpointer's callback; the order is read from SQLite's trace callback."""
    path = tmp_path / "direct.db"
    store = await SQLiteStore.open(f"sqlite:///{path}")
    writer = store._writer
    conn = writer._conn
    assert conn is not None
    statements: list[str] = []

    def trace(sql: str) -> None:
        text = sql.lower()
        if "wal_checkpoint" in text:
            statements.append("checkpoint")
        elif text.startswith("insert into events"):
            statements.append("insert")

    entered, release = threading.Event(), threading.Event()

    def hold(tx: object) -> None:  # runs on the writer thread, in a batch
        entered.set()
        release.wait(WAIT_S)

    try:
        await store.publish(NewEvent(topic="d.t", payload=0))
        conn.set_trace_callback(trace)
        held = writer.submit(hold)
        assert await asyncio.to_thread(entered.wait, WAIT_S)
        published = store.publish_soon([NewEvent(topic="d.t", payload=1)])  # queued behind the busy thread
        writer._backstop_wanted()  # what the checkpointer calls when the WAL is past the backstop
        release.set()
        async with asyncio.timeout(WAIT_S):
            await held
            await published
            # queued by the loop before ``held`` was answered: this publish waits for it, or finds it done
            await store.publish(NewEvent(topic="d.t", payload=2))
        # (the backstop's checkpoint is tried again while the checkpointer's own one is running)
        assert "checkpoint" in statements and "insert" in statements, statements
        assert statements.index("checkpoint") < statements.index("insert"), statements
        assert store.writer_stats.backstops == 1
        assert [e.payload for e in await store.scan("d.t", limit=10)] == [0, 1, 2]
    finally:
        conn.set_trace_callback(None)
        await store.close()
