"""The one writer thread of a SQLite store: group commit of everything that writes.

Callers on the event loop put jobs on a queue and await a future. The thread takes everything queued (up to
``max_batch`` jobs), runs it in one ``BEGIN IMMEDIATE`` transaction in submission order, commits, and only
then resolves the futures, all with one ``call_soon_threadsafe`` per batch. Consecutive publishes share one
append (multi-row INSERTs, ``tx.py``); when it fails the run is split in halves and retried down to the
offending job (publishes of different connections share a batch, so one bad publish must not fail
another's). Every other job runs inside its own SAVEPOINT, so a failing job gets its exception and the rest
of the batch still commits. A failed COMMIT fails every job of the batch. WAL checkpoints run on a thread
of their own (``checkpoint.py``); the write connection never checkpoints on its own. Two maintenance jobs
come from the checkpointer and run on the writer thread between batches: the backstop checkpoint when the
WAL has grown past ``BACKSTOP_BYTES`` (asked of the thread directly, run before its next batch; the
``_BACKSTOP`` marker through the loop covers a thread waiting for work), and the write that starts the WAL
over after a checkpoint copied all of it (``_RESTART``: that commit syncs the WAL's new header).

Claims parked by waiting group members (``park``, ``parking.py``) run after a batch's publishes, in the
same transaction, when one of the batch's topics matches their pattern.

While the thread has nothing queued or unresolved, the first publish or small job (ACK, claim) of a loop
iteration runs as a batch of its own on the event loop thread instead (``_enqueue``), with the same
transaction, savepoints, parked claims and commit-before-answer order: no thread hand-off for a lone write."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from outboxhub.errors import StoreUnavailable
from outboxhub.model import PublishResult
from outboxhub.store.codec import Prepared
from outboxhub.store.sqlite.checkpoint import INTERVAL_S, Checkpointer, hand_over
from outboxhub.store.sqlite.errors import cannot_open, rollback, translate, undo
from outboxhub.store.sqlite.parking import ParkedClaim, ParkingLot
from outboxhub.store.sqlite.riders import Riders
from outboxhub.store.sqlite.schema import configure, migrate
from outboxhub.store.sqlite.topics import TopicCatalog
from outboxhub.store.sqlite.tx import WriteTx
from outboxhub.store.sqlite.writerstats import WriterStats

__all__ = ["JobFn", "Writer", "WriterStats"]

_log = logging.getLogger("outboxhub.store.sqlite.store")

JobFn = Callable[..., Any]
"""A write job: called in the writer thread as ``fn(tx, *args)`` inside the batch's transaction."""

_Job = tuple["asyncio.Future[Any]", JobFn | None, Any]
_Outcome = tuple["asyncio.Future[Any]", BaseException | None, Any]
_STOP: Any = object()
_BACKSTOP: Any = object()
"""Queued by ``_backstop_wanted``: the writer thread checkpoints after its current batch (``_maintain``)."""
_RESTART: Any = object()
"""Queued by ``_restart_wanted``: the writer thread starts the WAL over while that is due (``_maintain``)."""


class Writer:
    """Owns the write connection and the thread that uses it."""

    _plain_from = 0  # commits: no append without savepoints before (64 commits after one failed)

    def __init__(
        self,
        path: str,
        *,
        url: str,
        catalog: TopicCatalog,
        synchronous: str,
        busy_timeout_ms: int,
        max_batch: int,
        inline_claims: int = 0,
        checkpoint_interval_s: float = INTERVAL_S,
        on_commit: Callable[[int, frozenset[str] | None], None],
    ) -> None:
        self._path = path
        self._url = url
        self._catalog = catalog
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        # Most parked claims with which a publish may still commit inline: each may run in that commit (a
        # claim decodes and inserts up to its limit of events) while the loop serves no socket.
        self._inline_claims = inline_claims
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="outboxhub-sqlite-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None  # set by the thread before ``start`` returns
        self._tx: WriteTx | None = None
        self._outstanding = 0  # loop thread: jobs queued to the thread and not yet resolved
        self._inline_used: set[int] = set()  # 1 a publish, 2 a small job committed inline in this iteration
        self._inline = False  # an inline batch is running: ``_post`` resolves at once
        # The connection's busy_timeout is 0 after an inline BEGIN (the loop must not wait for another
        # process's lock) and stays so until the thread needs it back: one-at-a-time publishes, all
        # inline, pay no PRAGMA. Touched only by whichever thread holds the connection.
        self._busy_zero = False
        self._stopping = False
        # A commit that syncs the WAL (synchronous=full/extra) takes milliseconds: never on the loop thread.
        self._inline_allowed = synchronous in ("off", "normal")
        self._parking = ParkingLot()
        self._riders = Riders(self._ride_alone)  # small ACKs waiting for the next loop-thread batch
        self._batch_topics: set[str] = set()  # topics appended by the current batch (writer thread)
        self._taken: list[ParkedClaim] = []  # parked claims taken by the current batch (writer thread)
        self.stats = WriterStats()
        self._maintenance: set[Any] = set()  # loop thread: _BACKSTOP / _RESTART queued and not yet run
        # Set by the checkpointer, taken by the writer thread before its next batch (``_serve``); the
        # _BACKSTOP marker through the loop is for a thread that waits for work (``_backstop_wanted``).
        self._backstop_asked = False
        self._checkpointer = Checkpointer(
            path,
            url=url,
            synchronous=synchronous,
            on_checkpoint=self._checkpointed,
            on_backstop=self._backstop_wanted,
            on_restart=self._restart_wanted,
            interval_s=checkpoint_interval_s,
        )
        # A commit that may restart the WAL syncs its header: it goes to the thread (``checkpoint.py``).
        self._restarts = self._checkpointer.restarts

    async def start(self) -> None:
        """Start the thread; return once the database is open and migrated (or raise why it is not).

        The writer is bound to the running event loop: callers await its futures on that loop.
        """
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        await asyncio.wrap_future(self._started)

    async def stop(self) -> None:
        """Run everything queued so far, then stop the thread and close the connection."""
        self._stopping = True
        if self._thread.is_alive():
            self._to_thread(self._riders.take())
            self._queue.put(_STOP)
        await asyncio.wrap_future(self._stopped)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def publish(self, rows: Sequence[Prepared]) -> asyncio.Future[list[PublishResult]]:
        """Append ``rows``; the future resolves after the COMMIT.

        When the writer thread has nothing queued or unresolved, the first write of a loop iteration is
        committed right here on the event loop thread (the thread is then blocked in its queue and does
        not touch the connection): no wake-up of the writer thread and none of the loop on the way back.
        Later publishes of the same iteration go to the thread, so a burst is still group-committed (a small
        ``submit`` job has a turn of its own, and tries the next iteration's once). Not with synchronous
        full/extra (an fsync per commit). With at most ``inline_claims`` claims parked by waiting members,
        they run in that inline commit too; with more parked, the publish goes to the thread."""
        loop = self._loop
        assert loop is not None, "the writer is not started"
        fut: asyncio.Future[list[PublishResult]] = loop.create_future()
        self._riders.published(loop.time())
        self._enqueue((fut, None, rows), inline=len(self._parking) <= self._inline_claims)
        return fut

    def submit(self, fn: JobFn, *args: Any, inline: bool = False, ride: bool = False) -> asyncio.Future[Any]:
        """Run ``fn(tx, *args)`` in a write transaction; the future resolves after the COMMIT. With
        ``inline``, on the loop thread when the writer thread is idle (``publish``): small jobs only. With
        ``ride`` too (a small ACK), while a claim is parked and publishes come often, it runs in the next
        batch on the loop thread, or on its own within ``riders.RIDE_S`` (``riders.py``)."""
        loop = self._loop
        assert loop is not None, "the writer is not started"
        fut: asyncio.Future[Any] = loop.create_future()
        if ride and self._parking and self._riders.worth_waiting(loop.time()) and self._can_inline():
            self._riders.add(loop, (fut, fn, args))
        else:
            self._enqueue((fut, fn, args), inline=inline)
        return fut

    def _can_inline(self) -> bool:
        return (
            not self._outstanding
            and not self._stopping
            and self._inline_allowed
            and not self._restarts.may_restart()
            and self._tx is not None
        )

    def _enqueue(self, job: _Job, *, inline: bool, defer: bool = True) -> None:
        if inline and self._can_inline():
            assert self._loop is not None
            turn = 1 if job[1] is None else 2  # per iteration: one inline publish, one small job (ACK)
            used = self._inline_used
            if turn in used:  # a small job tries once more in the next iteration
                if defer and turn == 2:
                    self._loop.call_soon(partial(self._enqueue, job, inline=True, defer=False))
                    return
            else:
                if not used:
                    self._loop.call_soon(used.clear)  # the next iteration (a builtin: no Python frame)
                used.add(turn)
                jobs = [*self._riders.take(), job] if self._riders else [job]
                if not self._run_inline(jobs):
                    self._to_thread(jobs)
                return
        self._to_thread([*self._riders.take(), job] if self._riders else [job])

    def _to_thread(self, jobs: list[_Job]) -> None:
        self._outstanding += len(jobs)
        for job in jobs:
            self._queue.put(job)

    def _ride_alone(self, jobs: list[_Job]) -> None:
        """Riders that found no batch to ride on within ``RIDE_S``: their own commit, inline if it may."""
        if not (self._can_inline() and self._run_inline(jobs)):
            self._to_thread(jobs)

    def _run_inline(self, jobs: list[_Job]) -> bool:
        """Run ``jobs`` as a batch of their own on the loop thread; False (nothing done) when another
        process holds the write lock (the loop must not wait for it) or this commit could restart the WAL:
        the writer thread will."""
        conn, tx = self._conn, self._tx
        assert conn is not None and tx is not None
        try:
            if not self._busy_zero:
                conn.execute("PRAGMA busy_timeout = 0")
                self._busy_zero = True
            tx.cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            rollback(conn)
            return False
        # Again with the snapshot taken and the write lock held: had a checkpoint copied the whole WAL before
        # it (this commit would restart the WAL), the flag is set and the WAL index shows no frame to copy.
        if self._restarts.may_restart():
            rollback(conn)
            return False
        self._inline = True
        self.stats.inline_commits += 1
        try:
            self._guarded_batch(conn, tx, jobs, begun=True)
        finally:
            self._inline = False
        return True

    @property
    def parked(self) -> int:
        """Claims parked right now."""
        return len(self._parking)

    def park(self, fn: JobFn, args: tuple[Any, ...], matches: Callable[[str], object]) -> ParkedClaim:
        """Park ``fn(tx, *args)`` until a batch appends an event to a topic that ``matches``; it then runs in
        that batch's transaction after the publishes and its future gets ``(value, last_seq)``."""
        assert self._loop is not None, "the writer is not started"
        claim = ParkedClaim(self._parking, self._loop.create_future(), fn, args, matches)
        self._parking.add(claim)
        return claim

    # -- thread -------------------------------------------------------------------------------------------

    def _main(self) -> None:
        directory = os.path.dirname(os.path.abspath(self._path))
        if not os.path.isdir(directory):
            missing = StoreUnavailable(
                f"cannot open sqlite store {self._url}: directory {directory} does not exist"
            )
            self._started.set_exception(missing)
            self._stopped.set_result(None)
            return
        try:
            # Used by this thread and, while this thread waits with nothing queued, by the loop thread
            # (``publish``): never by both at once.
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except Exception as exc:
            self._started.set_exception(cannot_open(exc, self._url))
            self._stopped.set_result(None)
            return
        try:
            configure(conn, synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms, writer=True)
            migrate(conn)
            # Without a checkpointer nothing commits on the loop thread (``Checkpointer.attach``).
            self._inline_allowed &= self._checkpointer.attach(conn)
            tx = WriteTx(conn, self._catalog)
        except Exception as exc:
            self._checkpointer.stop()
            conn.close()
            self._started.set_exception(cannot_open(exc, self._url))
            self._stopped.set_result(None)
            return
        self._conn, self._tx = conn, tx
        self._started.set_result(None)
        try:
            self._serve(conn, tx)
        finally:
            self._checkpointer.stop()
            conn.close()
            self._stopped.set_result(None)

    def _serve(self, conn: sqlite3.Connection, tx: WriteTx) -> None:
        get_nowait = self._queue.get_nowait
        while True:
            job = self._queue.get()
            stop = job is _STOP
            maintenance: list[Any] = []
            jobs: list[_Job] = []
            while True:
                if job is _BACKSTOP or job is _RESTART:
                    maintenance.append(job)
                elif job is not _STOP:
                    jobs.append(job)
                if stop or len(jobs) >= self._max_batch:
                    break
                try:
                    job = get_nowait()
                except queue.Empty:
                    break
                stop = job is _STOP
            if jobs:
                if self._backstop_asked:  # the thread holds queued jobs: nothing commits on the loop now
                    self._upkeep(conn)
                self._guarded_batch(conn, tx, jobs)
            if maintenance:
                self._maintain(conn, maintenance)
            if stop:
                self._fail_leftovers()
                return

    def _guarded_batch(
        self, conn: sqlite3.Connection, tx: WriteTx, jobs: list[_Job], *, begun: bool = False
    ) -> None:
        try:
            self._batch(conn, tx, jobs, begun=begun, plain=self.stats.commits >= self._plain_from)
        except Exception:  # a bug: never let it kill the thread with futures unresolved
            _log.exception("sqlite writer: batch failed unexpectedly")
            rollback(conn)
            error = StoreUnavailable(f"sqlite store {self._url}: internal error in the writer")
            futures = [fut for fut, *_ in jobs] + [claim.future for claim in self._taken]
            self._post([(fut, error, None) for fut in futures], 0, jobs=len(jobs))

    def _fail_leftovers(self) -> None:
        leftovers: list[_Outcome] = [
            (claim.future, StoreUnavailable(f"sqlite store {self._url} is closed"), None)
            for claim in self._parking.take_all()
        ]
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP and job is not _BACKSTOP and job is not _RESTART:
                leftovers.append((job[0], StoreUnavailable(f"sqlite store {self._url} is closed"), None))
        if leftovers:
            self._post(leftovers, 0)

    def _batch(
        self, conn: sqlite3.Connection, tx: WriteTx, jobs: list[_Job], *, begun: bool, plain: bool
    ) -> None:
        try:
            if not begun:
                self._wait_for_locks()
                conn.execute("BEGIN IMMEDIATE")
            tx.begin()
        except Exception as exc:
            rollback(conn)
            error = translate(exc, self._url)
            self._post([(fut, error, None) for fut, *_ in jobs], 0, jobs=len(jobs))
            return
        self._batch_topics.clear()
        self._taken = []
        outcomes: list[_Outcome] = []
        broken: BaseException | None = None
        index = 0
        while index < len(jobs) and broken is None:
            fut, fn, args = jobs[index]
            if fn is None:
                end = index + 1
                while end < len(jobs) and jobs[end][1] is None:
                    end += 1
                if self._inline and len(jobs) == 1:  # a failure rolls the whole transaction back
                    broken = self._solo_publish(tx, jobs[index], outcomes)
                elif plain and index == 0 and end == len(jobs) and not self._inline:  # publishes only
                    if not self._plain_publishes(tx, jobs, outcomes):
                        return
                else:
                    broken = self._publishes(conn, tx, jobs[index:end], outcomes)
                index = end
            elif self._inline and len(jobs) == 1:  # an inline ACK or claim: as _solo_publish, no SAVEPOINT
                try:
                    outcomes.append((fut, None, fn(tx, *args)))
                except Exception as exc:
                    broken = exc
                index += 1
            else:
                broken = self._job(conn, tx, fut, fn, args, outcomes)
                index += 1
        parked: list[ParkedClaim] = []
        if broken is None and self._batch_topics and self._parking:
            parked = self._taken = self._parking.take(self._batch_topics)
            for claim in parked:
                if broken is None:
                    broken = self._job(conn, tx, claim.future, claim.fn, claim.args, outcomes)
        try:
            if broken is not None:
                raise broken
            tx.cursor.execute("COMMIT")
        except Exception as exc:
            rollback(conn)
            error = translate(exc, self._url)
            futures = [fut for fut, *_ in jobs] + [claim.future for claim in parked]
            self._post([(fut, error, None) for fut in futures], 0, jobs=len(jobs))
            return
        if parked:
            seen = tx.last_seq
            ran = {id(claim.future) for claim in parked}
            outcomes = [
                (fut, error, (value, seen) if id(fut) in ran and error is None else value)
                for fut, error, value in outcomes
            ]
        tx.committed()
        self._checkpointer.committed()
        self.stats.commits += 1
        self.stats.jobs += len(jobs)
        self._post(outcomes, tx.appended_to, frozenset(tx.appended_topics), jobs=len(jobs))

    def _wait_for_locks(self) -> None:
        """Let the thread wait for another process's lock again (``busy_timeout``): see __init__."""
        if self._busy_zero:
            assert self._conn is not None
            self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            self._busy_zero = False

    def _publishes(
        self, conn: sqlite3.Connection, tx: WriteTx, run: list[_Job], outcomes: list[_Outcome]
    ) -> BaseException | None:
        """Append a run of consecutive publish jobs with one ``WriteTx.append``. When that fails, the run is
        split in halves and each half retried, down to single jobs: only an offending job gets the error,
        and a few bad jobs among many good ones cost a few statements each, not one per job."""
        rows: list[Prepared] = []
        for _, _, job_rows in run:
            rows.extend(job_rows)
        mark = tx.mark()
        try:
            conn.execute("SAVEPOINT publish")
        except Exception as exc:
            return exc
        try:
            results = tx.append(rows)
            conn.execute("RELEASE publish")
        except Exception as exc:
            if (broken := undo(conn, "publish")) is not None:
                return broken
            tx.reset(mark)
            if len(run) > 1:
                self.stats.split_runs += 1
                half = len(run) // 2
                return self._publishes(conn, tx, run[:half], outcomes) or self._publishes(
                    conn, tx, run[half:], outcomes
                )
            error = translate(exc, self._url)
            outcomes.extend((fut, error, None) for fut, _, _ in run)
            return None
        self._appended(run, results, outcomes)
        return None

    def _plain_publishes(self, tx: WriteTx, run: list[_Job], outcomes: list[_Outcome]) -> bool:
        """A batch of publishes only, without ``_publishes``' SAVEPOINTs (docs/benchmarks.md, tenth round);
        when that fails (a stored id, a bad row), rolled back and run with them: False, the batch is done."""
        try:
            results = tx.append([row for _, _, job_rows in run for row in job_rows], plain=True)
        except Exception:
            rollback(tx.conn)
            self.stats.plain_retries += 1
            self._plain_from = self.stats.commits + 64  # a tenant re-sending ids costs 1 in 64 batches twice
            self._batch(tx.conn, tx, run, begun=False, plain=False)
            return False
        self._appended(run, results, outcomes)
        return True

    def _appended(self, run: list[_Job], results: list[PublishResult], outcomes: list[_Outcome]) -> None:
        self.stats.events += len(results)
        self._batch_topics.update(row[1] for _, _, job_rows in run for row in job_rows)
        start = 0
        for fut, _, job_rows in run:
            outcomes.append((fut, None, results[start : start + len(job_rows)]))
            start += len(job_rows)

    def _solo_publish(self, tx: WriteTx, job: _Job, outcomes: list[_Outcome]) -> BaseException | None:
        """The publish of an inline batch, its only job (parked claims, if any, run after it): without the
        SAVEPOINT of ``_publishes``, since a failure fails the whole transaction just the same (returned
        as the batch's breaking error, which rolls it back and goes to the job)."""
        try:
            results = tx.append(job[2])
        except Exception as exc:
            return exc
        self._appended([job], results, outcomes)
        return None

    def _job(
        self,
        conn: sqlite3.Connection,
        tx: WriteTx,
        fut: asyncio.Future[Any],
        fn: JobFn,
        args: Any,
        outcomes: list[_Outcome],
    ) -> BaseException | None:
        mark = tx.mark()
        try:
            conn.execute("SAVEPOINT job")
        except Exception as exc:
            return exc
        try:
            value = fn(tx, *args)
            conn.execute("RELEASE job")
        except Exception as exc:
            if (broken := undo(conn, "job")) is not None:
                return broken
            tx.reset(mark)
            outcomes.append((fut, translate(exc, self._url), None))
            return None
        outcomes.append((fut, None, value))
        return None

    def _checkpointed(self) -> None:
        self.stats.checkpoints += 1

    def _backstop_wanted(self) -> None:
        """The checkpointer saw the WAL past the backstop (checkpointer thread). A busy writer thread takes
        the flag before its next batch; the marker, queued by the loop behind the jobs already queued
        (milliseconds later, while more WAL piles up), runs it when the thread was waiting for work."""
        self._backstop_asked = True
        self._want(_BACKSTOP)

    def _restart_wanted(self) -> None:
        """The checkpointer copied the whole WAL: the next commit starts it over (checkpointer thread)."""
        self._want(_RESTART)

    def _want(self, marker: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the store is going away
                self._loop.call_soon_threadsafe(self._queue_maintenance, marker)

    def _queue_maintenance(self, marker: Any) -> None:
        # Outstanding until it has run: no inline commit meanwhile (the thread uses the connection).
        if marker in self._maintenance or self._stopping:
            return
        self._maintenance.add(marker)
        self._outstanding += 1
        self._queue.put(marker)

    def _maintained(self, markers: list[Any]) -> None:
        self._maintenance.difference_update(markers)
        self._outstanding -= len(markers)

    def _upkeep(self, conn: sqlite3.Connection) -> None:
        """The backstop if asked for and not run yet, then the WAL restart if due (writer thread, owning the
        connection)."""
        backstop = self._backstop_asked
        self._backstop_asked = False  # before it runs: a request during it is a new one
        checkpointed, restarted = hand_over(
            conn, self._restarts, backstop=backstop, before_write=self._wait_for_locks, url=self._url
        )
        self.stats.backstops += checkpointed
        self.stats.restarts += restarted

    def _maintain(self, conn: sqlite3.Connection, markers: list[Any]) -> None:
        try:
            self._upkeep(conn)  # a _BACKSTOP whose backstop ran before a batch finds nothing asked
        finally:
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._maintained, markers)

    def _post(
        self, outcomes: list[_Outcome], last_seq: int, topics: frozenset[str] = frozenset(), *, jobs: int = 0
    ) -> None:
        """Hand the batch's results (and the topics it appended to) to the event loop in one callback
        (at once when the batch ran inline on the loop thread); ``jobs``: how many queued jobs it settles."""
        if self._inline:
            self._resolve(outcomes, last_seq, topics, 0)
            return
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._resolve, outcomes, last_seq, topics, jobs)

    def _resolve(self, outcomes: list[_Outcome], last_seq: int, topics: frozenset[str], jobs: int) -> None:
        self._outstanding -= jobs
        for fut, error, value in outcomes:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)
        if last_seq:
            self._on_commit(last_seq, topics)
