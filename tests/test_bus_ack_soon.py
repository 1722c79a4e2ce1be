"""``Bus.ack_soon`` (the gateway's ACK without a task per frame) on a real SQLite store: the future is the ack
batcher's own, it resolves only after the store commit that settles the delivery, and the answers and
errors are those of ``Bus.ack``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus_support import sqlite_bus, store_and_bus
from outboxhub.bus.core import AmbiguousSettle, Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store.base import EventRef
from outboxhub.store.sqlite.store import SQLiteStore
from task_counting import tasks_started

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold
EARLIEST = GroupOptions(start=StartPosition(kind="earliest"))


store, bus = store_and_bus()


async def _held(bus: Bus, pattern: str, count: int) -> list[Delivery]:
    inbox: asyncio.Queue[Delivery] = asyncio.Queue()

    def deliver(delivery: Delivery) -> bool:
        inbox.put_nowait(delivery)
        return True

    await bus.subscribe(pattern, "g", deliver, options=EARLIEST, member="m1")
    return [await asyncio.wait_for(inbox.get(), WAIT_S) for _ in range(count)]


async def test_ack_soon_is_the_batchers_future_resolved_after_the_commit(
    bus: Bus, store: SQLiteStore
) -> None:
    await bus.publish(NewEvent(topic="soon.a", payload=1, id="e-1"))
    [held] = await _held(bus, "soon.*", 1)
    commits = store.writer_stats.commits
    done = bus.ack_soon("soon.*", "g", "e-1", member="m1")
    assert not isinstance(done, asyncio.Task), "an ACK got a task of its own"
    assert not done.done(), "answered before the store was asked"
    assert await asyncio.wait_for(done, WAIT_S) is True
    assert store.writer_stats.commits > commits, "answered without a commit"
    assert held.event.id == "e-1"
    [info] = [g for g in await store.groups() if g.group == "g"]
    assert info.in_flight == 0
    again = bus.ack_soon("soon.*", "g", "e-1", member="m1")
    assert await asyncio.wait_for(again, WAIT_S) is False, "a settled delivery was settled twice"


async def test_ack_soon_of_another_members_delivery_is_false(bus: Bus) -> None:
    await bus.publish(NewEvent(topic="other.a", payload=1, id="e-1"))
    await _held(bus, "other.*", 1)
    done = bus.ack_soon("other.*", "g", "e-1", member="m2")
    assert await asyncio.wait_for(done, WAIT_S) is False


async def test_ack_soon_of_an_ambiguous_id_fails_the_future(bus: Bus) -> None:
    await bus.publish(NewEvent(topic="dup.a", payload=1, id="same"))
    await bus.publish(NewEvent(topic="dup.b", payload=2, id="same"))
    await _held(bus, "dup.*", 2)
    done = bus.ack_soon("dup.*", "g", "same", member="m1")
    with pytest.raises(AmbiguousSettle):
        await asyncio.wait_for(done, WAIT_S)


async def test_ack_soon_without_members_here_settles_in_the_store(bus: Bus, store: SQLiteStore) -> None:
    await store.publish(NewEvent(topic="cold.a", payload=1, id="e-1"))
    await store.ensure_group("cold.*", "g", EARLIEST.start)
    [claimed] = await store.claim("cold.*", "g", "elsewhere", limit=1, ack_timeout_ms=60_000, max_deliver=5)
    assert claimed.event.id == "e-1"
    done = bus.ack_soon("cold.*", "g", "e-1")
    assert await asyncio.wait_for(done, WAIT_S) is True


class _RecordingStore(SQLiteStore):
    """A real SQLite store that records the refs of each ACK call it is asked for."""

    calls: list[list[str]]

    def _ack_soon(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        self.calls.append([ref.id for ref in refs])
        return super()._ack_soon(pattern, group, refs, member)


async def test_a_lone_ack_creates_no_task(bus: Bus) -> None:
    await bus.publish(NewEvent(topic="lone.a", payload=1, id="e-1"))
    await bus.publish(NewEvent(topic="lone.a", payload=2, id="e-2"))
    await _held(bus, "lone.*", 2)
    with tasks_started() as started:
        # (inline on the loop thread or by the writer thread, as the checkpointer allows: no task either way)
        assert await asyncio.wait_for(bus.ack_soon("lone.*", "g", "e-1", member="m1"), WAIT_S) is True
        assert await bus.ack("lone.*", "g", "e-2", member="m1") is True
    assert started == [], "a lone ACK created a task"


@pytest.fixture
async def recording(tmp_path: Path) -> AsyncIterator[tuple[Bus, _RecordingStore]]:
    async with sqlite_bus(tmp_path / "rec.db", kind=_RecordingStore) as (bus, store):
        store.calls = []
        yield bus, store


async def test_acks_of_one_loop_iteration_share_one_store_call(
    recording: tuple[Bus, _RecordingStore],
) -> None:
    bus, store = recording
    for i in range(3):
        await bus.publish(NewEvent(topic="iter.a", payload=i, id=f"e-{i}"))
    await _held(bus, "iter.*", 3)
    done = [bus.ack_soon("iter.*", "g", f"e-{i}", member="m1") for i in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*done), WAIT_S) == [True, True, True]
    assert store.calls == [["e-0", "e-1", "e-2"]]


async def test_acks_arriving_while_a_call_is_in_flight_go_together_in_the_next(
    recording: tuple[Bus, _RecordingStore],
) -> None:
    bus, store = recording
    await bus.publish_batch([NewEvent(topic="fly.a", payload=i, id=f"e-{i}") for i in range(20)])
    await _held(bus, "fly.*", 20)
    # More than INLINE_ACK_MAX refs: the first call goes to the writer thread and is still in flight
    # when the test resumes after one loop iteration (its answer comes back in a later one).
    first = [bus.ack_soon("fly.*", "g", f"e-{i}", member="m1") for i in range(18)]
    await asyncio.sleep(0)
    assert len(store.calls) == 1 and not first[0].done()
    later = [bus.ack_soon("fly.*", "g", f"e-{i}", member="m1") for i in (18, 19)]
    assert await asyncio.wait_for(asyncio.gather(*first, *later), WAIT_S) == [True] * 20
    assert store.calls == [[f"e-{i}" for i in range(18)], ["e-18", "e-19"]]
