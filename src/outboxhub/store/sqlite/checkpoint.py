"""WAL checkpoints of a SQLite store, run by a thread of their own instead of the writer.

A checkpoint copies the pages the WAL holds into the database file and syncs both files. SQLite runs one
in the connection that commits as soon as the WAL passes ``wal_autocheckpoint`` pages (1,000 by default),
so the writer thread, and every publish waiting on it, stalled for a copy and two fsyncs every 4 MiB of WAL
(four times a second at 1,000 one-at-a-time publishes a second). Here a checkpointer thread with its own
connection runs a PASSIVE checkpoint (it neither waits for nor blocks the writer and the readers) soon
after commits: at once after a quiet spell, then at most every ``INTERVAL_S`` while commits keep coming.
The writer's own automatic checkpoint stays as the backstop, at ``BACKSTOP_BYTES`` of WAL.

Durability with ``synchronous=normal``: the WAL is synced before each checkpoint, so a power loss can take
back about ``INTERVAL_S`` of commits while the checkpointer keeps up, at most ``BACKSTOP_BYTES`` of WAL.
The cost: under sustained writes the WAL cannot restart from its beginning (frames keep arriving behind a
running checkpoint), so the file grows towards the backstop instead of staying near 4 MiB
(``journal_size_limit`` cuts it back to that size after a restart).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

__all__ = ["BACKSTOP_BYTES", "INTERVAL_S", "Checkpointer"]

_log = logging.getLogger("outboxhub.store.sqlite.store")

INTERVAL_S = 0.1
"""Most time between a commit and the checkpoint that covers it (while the checkpointer keeps up)."""

BACKSTOP_BYTES = 64 * 1024 * 1024
"""WAL after which the writer checkpoints by itself (its ``wal_autocheckpoint``, in pages of this size)."""


class Checkpointer:
    """A thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on the database at ``path`` after commits."""

    def __init__(
        self,
        path: str,
        *,
        url: str,
        synchronous: str,
        on_checkpoint: Callable[[], None],
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._path = path
        self._url = url
        self._synchronous = synchronous
        self._on_checkpoint = on_checkpoint
        self._interval_s = interval_s
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="outboxhub-sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def committed(self) -> None:
        """Called by the writer after each commit (cheap: sets a flag)."""
        # Mostly set already (the checkpointer clears it, then waits INTERVAL_S): then skip Event.set's
        # lock and notify. A clear racing this read comes before the checkpoint, which covers this commit.
        if not self._due.is_set():
            self._due.set()

    def stop(self) -> None:
        """Stop the thread (after a checkpoint in progress) and close its connection."""
        self._stopping.set()
        self._due.set()
        if self._thread.is_alive():
            self._thread.join()

    def _main(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")  # what a checkpoint syncs
        except sqlite3.Error as exc:
            _log.warning("sqlite store %s: no checkpointer (%s); the writer checkpoints", self._url, exc)
            return
        failing = False
        try:
            while True:
                self._due.wait()
                if self._stopping.is_set():
                    return
                self._due.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                    self._on_checkpoint()
                except sqlite3.Error as exc:
                    if not failing:  # one line per spell of failures; the writer's backstop still runs
                        _log.warning("sqlite store %s: checkpoint failed: %s", self._url, exc)
                    failing = True
                # Commits in the meantime set the flag again: one checkpoint covers them all.
                if self._stopping.wait(self._interval_s):
                    return
        finally:
            conn.close()
