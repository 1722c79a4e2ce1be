"""Group commit: one writer task per store turns concurrent publishes into few transactions.

Publishers queue their prepared events and wait on a future. The writer takes everything queued (up to
``max_batch`` events) and *stages* it: one transaction that appends the whole batch and holds the seq
counter's row lock. Every future is resolved only after that transaction's COMMIT, so a confirmed publish is
durable. While one batch commits, the next is staged on another connection: it queues behind the counter
lock, so batches commit (and take seqs) in the order they were queued, and the COMMIT's disk flush of one
batch overlaps the transfer and insert of the next. Batches grow with load; a lone publisher is not delayed.

A batch that fails for a reason other than the database being unavailable is split in halves and each half
retried (committed before the next), down to single jobs: one bad event fails only its own caller, and finding
it costs about ``2 * log2(jobs)`` stagings, not one per job of the batch (``split_runs`` counts the splits).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from outboxhub.errors import StoreError, StoreUnavailable
from outboxhub.model import PublishResult
from outboxhub.store.codec import Prepared

__all__ = ["Committed", "GroupCommitWriter", "Stage", "Staged"]


class Staged(Protocol):
    """A batch appended in an open transaction that holds the seq counter lock."""

    results: list[PublishResult]

    async def commit(self) -> None:
        """COMMIT (raising a ``StoreError`` when that fails) and release the connection."""
        ...


class Committed:
    """A batch the stage function has already committed (one statement that is its own transaction): the
    writer answers its publishers at once, with no commit step of its own."""

    __slots__ = ("results",)

    def __init__(self, results: list[PublishResult]) -> None:
        self.results = results

    async def commit(self) -> None:
        """Nothing to do: the COMMIT went with the append."""


Stage = Callable[[Sequence[Prepared]], Awaitable[Staged]]
"""Open a transaction and append the prepared events in order (raises a ``StoreError``)."""


class _Job:
    __slots__ = ("future", "rows")

    def __init__(self, rows: Sequence[Prepared], future: asyncio.Future[list[PublishResult]]) -> None:
        self.rows = rows
        self.future = future


class GroupCommitWriter:
    """Batches ``submit`` calls into staged transactions; at most ``depth`` are open at once."""

    def __init__(self, stage: Stage, *, max_batch: int = 2000, depth: int = 2) -> None:
        self._stage = stage
        self._max_batch = max_batch
        self._queue: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(depth)
        self._committing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Taken on the first submit: asyncio.get_running_loop() is a getpid() system call on CPython 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.split_runs = 0
        """Failed batches split in halves to find the offending job (for tests and metrics)."""

    async def submit(self, rows: Sequence[Prepared]) -> list[PublishResult]:
        """Append ``rows`` atomically (with whatever else is queued) and return once committed."""
        if self._closed:
            raise StoreError("the store is closed")
        if not rows:
            return []
        return await self.submit_soon(rows)

    def submit_soon(self, rows: Sequence[Prepared]) -> asyncio.Future[list[PublishResult]]:
        """:meth:`submit` as the future of its results (no coroutine or task per publish); ``rows`` must
        not be empty. Must run on the event loop thread."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[list[PublishResult]] = loop.create_future()
        if self._closed:
            future.set_exception(StoreError("the store is closed"))
            return future
        if self._task is None:
            self._task = loop.create_task(self._run(), name="outboxhub-pg-writer")
        self._queue.append(_Job(rows, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Commit what is queued, then stop the writer task. Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        self._wakeup.set()
        await task

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._slots.acquire()
                jobs = self._take()
                await self._start(jobs)
        finally:
            if self._committing:
                await asyncio.gather(*self._committing)

    def _take(self) -> list[_Job]:
        jobs = [self._queue.popleft()]
        size = len(jobs[0].rows)
        while self._queue and size + len(self._queue[0].rows) <= self._max_batch:
            job = self._queue.popleft()
            jobs.append(job)
            size += len(job.rows)
        return jobs

    async def _start(self, jobs: list[_Job]) -> None:
        """Stage ``jobs`` (holding one slot) and hand the commit to a task, which frees the slot."""
        rows: list[Prepared] = []
        for job in jobs:
            rows.extend(job.rows)
        try:
            staged = await self._stage(rows)
        except StoreUnavailable as exc:
            self._slots.release()
            for job in jobs:
                _fail(job, exc)
            return
        except Exception as exc:
            self._slots.release()
            if len(jobs) == 1:
                _fail(jobs[0], exc)
                return
            # Find the culprit: each half alone, committed before the next; halves that fail split again.
            self.split_runs += 1
            half = len(jobs) // 2
            for part in (jobs[:half], jobs[half:]):
                await self._slots.acquire()
                await self._start(part)
                await self._drain()
            return
        if type(staged) is Committed:
            self._slots.release()
            _answer(jobs, staged.results)
            return
        task = asyncio.get_running_loop().create_task(self._finish(staged, jobs))
        self._committing.add(task)
        task.add_done_callback(self._committing.discard)

    async def _drain(self) -> None:
        if self._committing:
            await asyncio.gather(*self._committing)

    async def _finish(self, staged: Staged, jobs: list[_Job]) -> None:
        try:
            await staged.commit()
        except Exception as exc:
            for job in jobs:
                _fail(job, exc)
            return
        finally:
            self._slots.release()
        _answer(jobs, staged.results)


def _answer(jobs: list[_Job], results: list[PublishResult]) -> None:
    start = 0
    for job in jobs:
        end = start + len(job.rows)
        if not job.future.done():
            job.future.set_result(results[start:end])
        start = end


def _fail(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
