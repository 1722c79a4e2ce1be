"""Helpers of the SQLite store tests (no tests here).

A lone write commits on the event loop thread only while the writer thread has nothing queued and no WAL
restart is due (``store/sqlite/checkpoint.py``: after a checkpoint that copied the whole WAL, the next
commit syncs the WAL's new header, which the writer thread does). Tests that check which thread commits
open their store with ``QUIET`` (one checkpoint right after the first commit, the next not for ten
minutes) and wait with :func:`writer_settled` after their warm-up writes.
"""

from __future__ import annotations

import asyncio
import sqlite3

from outboxhub.store.sqlite.store import SQLiteStore

__all__ = ["QUIET", "pending_rows", "writer_settled"]

QUIET = "checkpoint_interval_ms=600000"
"""URL option: after the first checkpoint, none for ten minutes (longer than any test)."""

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold


async def writer_settled(store: SQLiteStore) -> None:
    """Wait until the first checkpoint has run and its WAL restart is done, the writer thread has nothing
    queued or unresolved, and a new loop iteration began: the next lone write commits on the loop thread."""
    writer = store._writer
    async with asyncio.timeout(WAIT_S):
        while (  # noqa: ASYNC110 - state of other threads, no event to wait on
            store.writer_stats.checkpoints == 0
            or writer._checkpointer.running
            or writer._restarts.due
            or writer._outstanding
        ):
            await asyncio.sleep(0.002)
    await asyncio.sleep(0)  # a new loop iteration: an inline write of this one has used its inline turn


def pending_rows(path: str) -> int:
    """Pending rows as committed, read through a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
    finally:
        conn.close()
