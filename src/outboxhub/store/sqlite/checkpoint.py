"""WAL checkpoints of a SQLite store, run by a thread of their own instead of the writer.

A checkpoint copies the pages the WAL holds into the database file and syncs both files. SQLite runs one
in the connection that commits as soon as the WAL passes ``wal_autocheckpoint`` pages (1,000 by default),
so the writer thread, and every publish waiting on it, stalled for a copy and two fsyncs every 4 MiB of WAL
(four times a second at 1,000 one-at-a-time publishes a second). Here a checkpointer thread with its own
connection runs a PASSIVE checkpoint (it neither waits for nor blocks the writer and the readers) soon
after commits: at once after a quiet spell, then at most every ``INTERVAL_S`` while commits keep coming.

The backstop: under sustained writes the WAL cannot restart from its beginning (frames keep arriving
behind a running checkpoint), so it grows. When a checkpoint reports more than ``BACKSTOP_BYTES`` of WAL
(or fails), the checkpointer asks the writer (``on_backstop``), whose thread then checkpoints between two
of its batches, with nothing being written meanwhile, so that the checkpoint completes and the next write
restarts the WAL (``journal_size_limit`` cuts the file back to 64 MiB then). Every publish waits while
it runs, so before asking, the checkpointer runs checkpoints back to back to leave it a short tail
(``Checkpointer._catch_up``). The write connection itself never checkpoints on its own
(``wal_autocheckpoint = 0``): it also commits on the event loop thread (``writer.py``), which must not
stall for a copy and two fsyncs.

The restart: the first commit after a checkpoint that copied the whole WAL starts it over, and writes and
syncs (fdatasync) its new header, whatever ``synchronous`` says short of ``off``. That commit must not run
on the event loop thread either: ``RestartGuard.due`` is set from the start of every checkpoint until it is
known that none is pending (the checkpoint left frames behind, the WAL index shows frames committed after
it began, or the writer thread has committed since). While it is set, the loop thread commits only when the
WAL index (``WalIndex``, the ``-shm`` file) shows, under the write lock, frames that no checkpoint has
copied: such a transaction appends to the WAL and cannot restart it. Under a steady stream of commits that
is the common case (commits land while a checkpoint copies), so the loop keeps committing through the
checkpoint's copy and syncs instead of handing every publish of those milliseconds to the writer thread.

Durability with ``synchronous=normal``: the WAL is synced before each checkpoint, so a power loss can take
back about ``INTERVAL_S`` of commits while the checkpointer keeps up, at most ``BACKSTOP_BYTES`` of WAL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from outboxhub.store.sqlite.errors import rollback

__all__ = [
    "BACKSTOP_BYTES",
    "INTERVAL_S",
    "Checkpointer",
    "RestartGuard",
    "WalIndex",
    "backstop_checkpoint",
    "hand_over",
    "restart_wal",
]

_log = logging.getLogger("outboxhub.store.sqlite.store")

INTERVAL_S = 0.1
"""Most time between a commit and the checkpoint that covers it (while the checkpointer keeps up)."""

BACKSTOP_BYTES = 64 * 1024 * 1024
"""WAL after which the writer thread checkpoints (``Checkpointer.open``'s ``backstop_frames`` in pages)."""


_CATCH_UP_PASSES = 4
"""Most checkpoints run back to back before the backstop (``Checkpointer._catch_up``)."""
_CATCH_UP_FRAMES = 1024
"""A checkpoint that copied at most this many new frames (4 MiB of 4 KiB pages) ends the catch-up."""

_BACKSTOP_TRIES = 200
"""Tries of the writer's backstop checkpoint while the checkpointer runs one (1 ms apart)."""


_WAL_INDEX_BYTES = 100
"""The ``-shm`` file's first bytes read by ``WalIndex``: the first copy of the WAL-index header (``mxFrame``
at offset 16) and the checkpoint info's ``nBackfill`` (offset 96), native byte order
(https://www.sqlite.org/walformat.html, "The WAL-Index Format")."""


class WalIndex:
    """Reads the WAL index of the database at ``path`` (its ``-shm`` file, which SQLite maps into every
    connection's memory: a read of the file sees what the connections wrote): whether every frame of the
    WAL has been copied into the database by a checkpoint. A write transaction that begins in that state
    starts the WAL over (or, on an empty WAL, writes its first header) and syncs the header; one that begins
    with frames not yet copied appends to the WAL and syncs nothing. Read with ``os.pread`` (no mapping: a
    file cut short gives a short read, never a fault); where there is none, or the file cannot be read,
    nothing is known (``None``)."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: str) -> WalIndex:
        """The index of the database at ``path`` (its WAL must be open in a connection of this process, so
        that the ``-shm`` file exists and keeps its contents)."""
        if not hasattr(os, "pread"):  # pragma: no cover - Windows: nothing is known
            return cls(None)
        try:
            return cls(os.open(f"{path}-shm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
        except OSError:
            return cls(None)

    def all_copied(self) -> bool | None:
        """True when no frame of the WAL is left to copy (the next write transaction to begin restarts it),
        False when some are, None when unknown."""
        if self._fd is None:
            return None
        try:
            data = os.pread(self._fd, _WAL_INDEX_BYTES, 0)
        except OSError:
            return None
        if len(data) < _WAL_INDEX_BYTES:
            return None
        return data[16:20] == data[96:100]  # mxFrame == nBackfill (both native-endian u32)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class RestartGuard:
    """Whether the next commit may restart the WAL (and sync its header). Read by the loop thread without a
    lock: ``due`` is set before a checkpoint starts copying and cleared only when the WAL is known to hold
    frames no checkpoint has copied (a checkpoint left some behind, the WAL index showed some after it, or
    a write of the writer thread with no checkpoint running at any time during it added some). While it is
    set, :meth:`may_restart` asks the WAL index."""

    __slots__ = ("_active", "_ended", "_epoch", "_index", "_lock", "_syncs", "due")

    def __init__(self, *, syncs: bool) -> None:
        self._syncs = syncs  # False with synchronous=off: a restart syncs nothing, so nothing is ever due
        self.due = syncs  # an empty WAL (a new file, or after a restart of the process) starts with a header
        self._epoch = 0  # checkpoints begun
        self._ended = 0  # checkpoints ended
        self._active = 0
        self._index = WalIndex(None)  # nothing known until ``read_index``
        self._lock = threading.Lock()

    def read_index(self, index: WalIndex) -> None:
        """Consult ``index`` from now on (set once, before the checkpointer starts)."""
        self._index = index

    def close_index(self) -> None:
        """Stop consulting the WAL index (the store is closing): ``may_restart`` is then ``due``."""
        index, self._index = self._index, WalIndex(None)
        index.close()

    def may_restart(self) -> bool:
        """Whether a write transaction may restart the WAL. Exact when called by the connection that holds the
        write lock (after ``BEGIN IMMEDIATE``): no other connection can add frames then, and checkpoints only
        copy more, so frames left to copy now were left when its snapshot began, and it appends to the WAL.
        Before the lock it is a hint."""
        return self.due and self._index.all_copied() is not False

    def checkpointing(self) -> int:
        """A checkpoint is about to run: a restart may be due after it. Returns the token for
        ``checkpointed``, which must follow whatever happens."""
        with self._lock:
            self._epoch += 1
            self._active += 1
            self.due = self._syncs
            return self._epoch

    def checkpointed(self, token: int, result: tuple[int, int, int] | None) -> None:
        """The checkpoint's ``wal_checkpoint`` result (busy, frames, copied; None: it failed). When it left
        frames behind and no other checkpoint began since, the WAL cannot restart."""
        with self._lock:
            self._active -= 1
            self._ended += 1
            if result is not None and self._epoch == token:
                busy, frames, copied = result
                # Or frames were committed while it copied (it copies what was there when it began): under a
                # steady stream of commits, nearly always. Only this checkpoint ran (none active): no other
                # can copy them before the next one begins, which sets ``due`` again.
                if not busy and (copied < frames or (not self._active and self._index.all_copied() is False)):
                    self.due = False

    def writing(self) -> tuple[int, int, int]:
        """Read before a write of the writer thread: the token for ``written``."""
        with self._lock:
            return self._epoch, self._ended, self._active

    def written(self, token: tuple[int, int, int]) -> None:
        """The writer thread committed a write begun at ``token``: it restarted the WAL if a restart was due,
        or added frames after the last checkpoint, unless a checkpoint ran at some time during it."""
        with self._lock:
            if token == (self._epoch, self._ended, 0) and not self._active:
                self.due = False


class Checkpointer:
    """A thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on the database at ``path`` after commits."""

    def __init__(
        self,
        path: str,
        *,
        url: str,
        synchronous: str,
        on_checkpoint: Callable[[], None],
        on_backstop: Callable[[], None],
        on_restart: Callable[[], None],
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._path = path
        self._url = url
        self._synchronous = synchronous
        self._on_checkpoint = on_checkpoint
        self._on_backstop = on_backstop
        self._on_restart = on_restart
        self._interval_s = interval_s
        self.restarts = RestartGuard(syncs=synchronous != "off")
        self._backstop_frames = 0
        self._conn: sqlite3.Connection | None = None
        self._due = threading.Event()
        self._running = False  # from taking a due flag until its checkpoint's callbacks have run
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="outboxhub-sqlite-checkpoint", daemon=True)

    def open(self, *, backstop_frames: int) -> bool:
        """Open the checkpointer's connection (in the caller's thread) and start the thread; False when the
        connection cannot be opened (then nobody checkpoints but SQLite's automatic checkpoint)."""
        self._backstop_frames = backstop_frames
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            _log.warning("sqlite store %s: no checkpointer (%s); the writer checkpoints", self._url, exc)
            return False
        try:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")  # what a checkpoint syncs
        except sqlite3.Error as exc:
            conn.close()
            _log.warning("sqlite store %s: no checkpointer (%s); the writer checkpoints", self._url, exc)
            return False
        self._conn = conn
        self._thread.start()
        return True

    def attach(self, conn: sqlite3.Connection) -> bool:
        """Set up the writer's connection ``conn`` (on the writer thread) and start the checkpointer; False
        when it has none, and the connection then checkpoints by itself.

        The write connection commits on the loop thread too: it never checkpoints by itself (a copy and two
        fsyncs); the checkpointer runs them and asks the writer thread for the backstop one. Without a
        checkpointer, SQLite's automatic checkpoint is the backstop and nothing may commit on the loop."""
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        backstop = max(1000, BACKSTOP_BYTES // page_size)
        if not self.open(backstop_frames=backstop):
            conn.execute(f"PRAGMA wal_autocheckpoint = {backstop}")
            return False
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        self.restarts.read_index(WalIndex.open(self._path))  # the WAL is open: its -shm file exists
        if self.restarts.due:  # the WAL may be empty: its first commit writes and syncs a header
            restart_wal(conn, self.restarts)
        return True

    @property
    def running(self) -> bool:
        """A checkpoint (or the hand-over of its backstop or restart) is under way."""
        return self._running

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
        elif self._conn is not None:
            self._conn.close()
        self.restarts.close_index()

    def _main(self) -> None:
        conn = self._conn
        assert conn is not None
        failing = False
        try:
            while True:
                self._due.wait()
                if self._stopping.is_set():
                    return
                self._running = True
                self._due.clear()
                result = self._checkpoint(conn, failing)
                if result is not None and result[1] >= self._backstop_frames:
                    result = self._catch_up(conn, result)
                failing = result is None
                frames = self._backstop_frames if result is None else result[1]
                if frames >= self._backstop_frames:
                    self._on_backstop()  # its checkpoint is followed by the restart when that is due
                elif self.restarts.due:
                    self._on_restart()
                self._running = False
                # Commits in the meantime set the flag again: one checkpoint covers them all.
                if self._stopping.wait(self._interval_s):
                    return
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection, failing: bool) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint: its (busy, frames, copied), None when it failed (logged once a spell)."""
        token = self.restarts.checkpointing()
        result = None
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            result = (int(busy), int(frames), int(copied))
            self._on_checkpoint()
        except sqlite3.Error as exc:
            if not failing:  # one line per spell of failures; the writer's backstop still runs
                _log.warning("sqlite store %s: checkpoint failed: %s", self._url, exc)
        finally:
            self.restarts.checkpointed(token, result)
        return result

    def _catch_up(
        self, conn: sqlite3.Connection, result: tuple[int, int, int]
    ) -> tuple[int, int, int] | None:
        """The WAL is past the backstop: the writer thread will stop writing while it copies what no
        checkpoint has, and syncs it. That is what was written since the last checkpoint began (≈ 0.1 s of
        writes: 50-150 ms of stall per backstop at 4 KiB events, every 64 MiB, measured in
        docs/benchmarks.md). Checkpoints run back to back while each still copies much, so that the tail
        left to the writer is what came in during a short one. Returns the last one's result."""
        for _ in range(_CATCH_UP_PASSES):
            copied = result[2]
            again = self._checkpoint(conn, False)
            if again is None:
                return None
            result = again
            if result[0] or result[2] - copied <= _CATCH_UP_FRAMES:  # busy, or a short one (or a reader
                break  # holds frames back: then the next ones would copy nothing either)
        return result


def backstop_checkpoint(conn: sqlite3.Connection, restarts: RestartGuard) -> None:
    """The backstop, on the writer's connection and thread with nothing written meanwhile, so that the
    checkpoint can copy the whole WAL and the WAL start over (waits while the checkpointer runs one)."""
    for _ in range(_BACKSTOP_TRIES):
        token, result = restarts.checkpointing(), None
        try:
            result = busy, _, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            restarts.checkpointed(token, result)
        if not busy:
            return
        time.sleep(0.001)  # the checkpointer's own checkpoint ends within milliseconds


def restart_wal(conn: sqlite3.Connection, restarts: RestartGuard) -> None:
    """Start the WAL over with a write of its own, on the writer's connection and thread: its commit syncs
    the WAL's new header there, and the next publish or ACK commits without that sync. The write flips
    ``user_version`` (unused otherwise), a change of page 1: writing a value a page already holds would
    write no frame, and so restart nothing."""
    token = restarts.writing()
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {version ^ 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    restarts.written(token)


def hand_over(
    conn: sqlite3.Connection,
    restarts: RestartGuard,
    *,
    backstop: bool,
    before_write: Callable[[], None],
    url: str,
) -> tuple[bool, bool]:
    """What the checkpointer asked the writer for, on the writer's connection and thread between two batches:
    the backstop checkpoint (``backstop``), then the WAL restart when it is due (also after the backstop,
    which copied the whole WAL if nothing held it); ``before_write`` runs before the restart's write.
    Returns whether each ran. A failure is logged, not raised: nothing is lost, the checkpointer asks again
    and the next write restarts."""
    checkpointed = restarted = False
    try:
        if backstop:
            backstop_checkpoint(conn, restarts)
            checkpointed = True
        if restarts.due:
            before_write()  # the restart may wait for another process's lock, as a batch does
            restart_wal(conn, restarts)
            restarted = True
    except sqlite3.Error as exc:
        rollback(conn)
        _log.warning("sqlite store %s: WAL maintenance failed: %s", url, exc)
    return checkpointed, restarted
