"""The group commit writer (``store/groupcommit.py``) on its own: ``submit_soon`` hands out the job's future
(no task per publish), a batch its stage function already committed (``Committed``) is answered without a
commit step, and publishes that queue while a batch is in flight go together in the next one, in order.

The stage function here is the writer's interface, not a database stand-in: it records the batches it is
given and answers them with seqs; the stores' own suites run the writer against real databases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from outboxhub.errors import StoreError
from outboxhub.model import PublishResult
from outboxhub.store.codec import Prepared
from outboxhub.store.groupcommit import Committed, GroupCommitWriter
from task_counting import tasks_started


def _row(n: int) -> Prepared:
    return (f"id{n}", "t", 0, None, b"1", None)


class _Stage:
    """Answers each batch with consecutive seqs once ``gate`` is set (set at the start)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.staged = asyncio.Event()
        self.seq = 0

    async def __call__(self, rows: Sequence[Prepared]) -> Committed:
        self.batches.append([row[0] for row in rows])
        self.staged.set()
        await self.gate.wait()
        results = []
        for row in rows:
            self.seq += 1
            results.append(PublishResult(id=row[0], seq=self.seq, duplicate=False))
        return Committed(results)


async def test_submit_soon_hands_out_the_jobs_future_and_batches_what_queues_meanwhile() -> None:
    stage = _Stage()
    writer = GroupCommitWriter(stage)
    try:
        stage.gate.clear()
        first = writer.submit_soon([_row(1)])
        assert not isinstance(first, asyncio.Task)
        await stage.staged.wait()
        # While the first batch is in flight two more publishes queue; they go together, in order.
        second = writer.submit_soon([_row(2), _row(3)])
        third = writer.submit_soon([_row(4)])
        stage.gate.set()
        assert [r.seq for r in await first] == [1]
        assert [r.seq for r in await second] == [2, 3]
        assert [r.seq for r in await third] == [4]
        assert stage.batches == [["id1"], ["id2", "id3", "id4"]]
    finally:
        await writer.close()


async def test_a_committed_batch_needs_no_commit_task() -> None:
    writer = GroupCommitWriter(_Stage())
    try:
        with tasks_started() as started:
            for n in range(3):
                assert [r.id for r in await writer.submit([_row(n)])] == [f"id{n}"]
    finally:
        await writer.close()
    # Only the writer's own task: no task per batch to run a COMMIT that already happened.
    assert started == ["GroupCommitWriter._run"]


async def test_a_closed_writer_answers_submit_soon_with_an_error() -> None:
    writer = GroupCommitWriter(_Stage())
    await writer.close()
    future = writer.submit_soon([_row(1)])
    with pytest.raises(StoreError, match="closed"):
        await future
