"""Counters of the SQLite writer thread (``writer.py``), for tests and metrics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WriterStats"]


@dataclass
class WriterStats:
    """Counters for tests and metrics (read without locking; they only grow)."""

    commits: int = 0
    inline_commits: int = 0
    """Commits run on the event loop thread (``Writer.publish``, ``Writer.submit``); also in ``commits``."""
    jobs: int = 0
    events: int = 0
    checkpoints: int = 0
    """Checkpoints run by the checkpointer thread (the writer's backstop ones are not counted)."""
    backstops: int = 0
    """Checkpoints run by the writer thread because the WAL had grown past the backstop."""
    restarts: int = 0
    """Writes of the writer thread of its own that started the WAL over (not in ``commits``)."""
    split_runs: int = 0
    """Runs of publishes whose shared append failed and were split in halves to find the bad job."""
    plain_retries: int = 0
    """Batches of publishes only whose append without savepoints failed (a duplicate id, a bad row): rolled
    back and run again with a SAVEPOINT per run of publishes."""
