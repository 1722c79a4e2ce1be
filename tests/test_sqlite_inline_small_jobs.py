"""Small jobs (an ACK, a small claim) on the event loop thread (SQLite): a loop iteration has one inline turn
for a publish and one for a small job, so an ACK next to a publish commits inline too and neither displaces
the other; a small job that finds its turn taken tries the next iteration's once, then goes to the writer
thread; a claim of at most ``INLINE_ACK_MAX`` events without key ordering commits inline like a small ACK.
Real SQLite files; what was answered is read back through other connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store.base import EventRef
from outboxhub.store.sqlite.store import INLINE_ACK_MAX, SQLiteStore
from sqlite_support import QUIET, pending_rows, writer_settled

EARLIEST = StartPosition(kind="earliest")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db?{QUIET}")
    yield s
    await s.close()


async def held(store: SQLiteStore, group: str, count: int) -> list[EventRef]:
    """Publish ``count`` events to ``<group>.t`` and claim them for member m1 of group ``<group>.*``."""
    await store.ensure_group(f"{group}.*", group, EARLIEST)
    refs = []
    for i in range(count):
        result = await store.publish(NewEvent(topic=f"{group}.t", payload=i))
        refs.append(EventRef(result.id, result.seq))
    pattern = f"{group}.*"
    deliveries = await store.claim(pattern, group, "m1", limit=count, ack_timeout_ms=60_000, max_deliver=5)
    assert [EventRef(d.event.id, d.event.seq) for d in deliveries] == refs
    return refs


async def test_an_ack_in_the_iteration_of_an_inline_publish_commits_inline_too(store: SQLiteStore) -> None:
    [ref] = await held(store, "g", 1)
    await writer_settled(store)
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    published = store.publish_soon([NewEvent(topic="other.t", payload="x")])
    acked = store.ack_soon("g.*", "g", [ref], member="m1")
    assert published.done() and acked.done()  # both committed right here, on the loop thread
    assert acked.result() == 1
    assert (stats.inline_commits, stats.commits) == (inline + 2, commits + 2)
    assert pending_rows(store.path) == 0  # committed before it was answered


async def test_a_publish_after_an_inline_ack_still_commits_inline(store: SQLiteStore) -> None:
    [ref] = await held(store, "g", 1)
    await writer_settled(store)
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    acked = store.ack_soon("g.*", "g", [ref], member="m1")
    published = store.publish_soon([NewEvent(topic="other.t", payload="x")])
    assert acked.done() and published.done()
    assert (stats.inline_commits, stats.commits) == (inline + 2, commits + 2)


async def test_a_small_job_retries_inline_once_then_goes_to_the_writer_thread(store: SQLiteStore) -> None:
    refs = [(await held(store, group, 1))[0] for group in ("a", "b", "c")]
    await writer_settled(store)
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    published = store.publish_soon([NewEvent(topic="other.t", payload="x")])
    acks = [store.ack_soon(f"{g}.*", g, [ref], member="m1") for g, ref in zip("abc", refs, strict=True)]
    assert [ack.done() for ack in acks] == [True, False, False]  # one small job's turn per iteration
    assert await asyncio.gather(*acks) == [1, 1, 1]
    # b took the next iteration's turn; c missed its retry too and went to the thread
    assert (stats.inline_commits, stats.commits) == (inline + 3, commits + 4)
    assert pending_rows(store.path) == 0
    await published


async def test_a_publish_after_a_deferred_ack_keeps_its_place_on_the_writer_thread(
    store: SQLiteStore,
) -> None:
    [ref] = await held(store, "g", 1)
    await writer_settled(store)
    first = store.publish_soon([NewEvent(topic="order.t", payload=1)])
    acked = store.ack_soon("g.*", "g", [ref], member="m1")
    second = store.publish_soon([NewEvent(topic="order.t", payload=2)])
    [one], [two], count = await asyncio.gather(first, second, acked)
    assert one.seq is not None and two.seq is not None and one.seq < two.seq
    assert count == 1 and pending_rows(store.path) == 0


async def test_a_small_claim_commits_on_the_loop_thread_and_a_larger_one_on_the_writer_thread(
    store: SQLiteStore,
) -> None:
    await store.ensure_group("small.*", "g", EARLIEST)
    for i in range(INLINE_ACK_MAX + 2):
        await store.publish(NewEvent(topic="small.t", payload=i))
    await writer_settled(store)
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    small = await store.claim("small.*", "g", "m1", limit=INLINE_ACK_MAX, ack_timeout_ms=6000, max_deliver=5)
    assert len(small) == INLINE_ACK_MAX
    assert (stats.inline_commits, stats.commits) == (inline + 1, commits + 1)
    assert pending_rows(store.path) == INLINE_ACK_MAX  # committed before it was answered
    await writer_settled(store)
    large = await store.claim(
        "small.*", "g", "m2", limit=INLINE_ACK_MAX + 1, ack_timeout_ms=60_000, max_deliver=5
    )
    assert len(large) == 2
    assert (stats.inline_commits, stats.commits) == (inline + 1, commits + 2)


async def test_a_small_claim_with_key_ordering_goes_to_the_writer_thread(store: SQLiteStore) -> None:
    await store.ensure_group("small.*", "g", EARLIEST)
    await store.publish(NewEvent(topic="small.t", payload=1, key="k"))
    await writer_settled(store)
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    claimed = await store.claim(
        "small.*", "g", "m1", limit=1, ack_timeout_ms=60_000, max_deliver=5, ordered_by_key=True
    )
    assert len(claimed) == 1
    assert (stats.inline_commits, stats.commits) == (inline, commits + 1)
