"""A group member whose parked claim ran but missed a commit (the next publish committed before the member
had parked again) catches up with a small claim, which SQLite commits on the event loop thread, instead of a
full batch on the writer thread. Real SQLite file, real bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, PublishResult, StartPosition
from outboxhub.store.sqlite.store import SQLiteStore
from sqlite_support import QUIET, writer_settled
from waiting import until

NO_POLL_S = 120.0
EARLIEST = GroupOptions(start=StartPosition(kind="earliest"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    # inline_claims=0: a publish with the member's claim parked commits on the writer thread
    s = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db?inline_claims=0&{QUIET}")
    yield s
    await s.close()


@pytest.fixture
async def bus(store: SQLiteStore) -> AsyncIterator[Bus]:
    b = Bus(store, poll_interval_s=NO_POLL_S)
    await b.start()
    yield b
    await b.close()


async def test_a_member_that_missed_a_commit_catches_up_with_an_inline_claim(
    bus: Bus, store: SQLiteStore
) -> None:
    got: list[Delivery] = []
    await bus.subscribe("c.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    await writer_settled(store)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    second: list[asyncio.Future[list[PublishResult]]] = []

    def publish_next(_: object) -> None:
        # runs right after the first publish's results reach the loop, before the member has its
        # deliveries: this commit (inline, nothing parked any more) is one its parked claim did not see
        second.append(store.publish_soon([NewEvent(topic="c.x", payload=2)]))

    first = store.publish_soon([NewEvent(topic="c.x", payload=1)])  # the thread, with the parked claim
    first.add_done_callback(publish_next)
    [one] = await first
    await until(lambda: len(got) == 2, "both events are delivered")
    [two] = await second[0]
    assert [d.event.id for d in got] == [one.id, two.id]
    # the first publish with the claim on the thread, the second inline, the catch-up claim inline too
    assert (stats.inline_commits, stats.commits) == (inline + 2, commits + 3)
    await until(lambda: store.parked_claims == 1, "the member parks again")
