"""The JetStream store's confirmed acknowledgements (``store/nats/acks.py``): a bus ACK flush
(``StoreBackend.ack_soon``) runs without a task, also when the driver's publish has to wait, and a closing
store's NAKs of the deliveries it still holds are confirmed before it closes.
Real JetStream (127.0.0.1:4222 or OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

import pytest

from nats_server import claim, stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef
from task_counting import tasks_started

pytestmark = pytest.mark.nats
url = stream_fixture()
EARLIEST = StartPosition(kind="earliest")


async def _held(store: StoreBackend, count: int) -> list[EventRef]:
    """``count`` events published and claimed by member ``m1``, after one more published, claimed and
    acked (the store's first ACK makes its reply subscription)."""
    await store.ensure_group("t.*", "g", EARLIEST)
    await store.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(count + 1)])
    held = [EventRef(d.event.id, d.event.seq) for d in await claim(store)]
    assert len(held) == count + 1
    assert await store.ack("t.*", "g", held[:1], member="m1") == 1
    return held[1:]


@pytest.mark.parametrize("per_flush", [1, 9])
async def test_a_bus_ack_flush_starts_no_task(url: str, per_flush: int) -> None:
    """``ack_soon`` answers from the confirmations' callbacks: no task per flush (the store's ``_ack`` ran
    in one, one per flush, on the PostgreSQL and SQLite stores' side none)."""
    store = await open_store(url)
    assert isinstance(store, StoreBackend)
    try:
        refs = await _held(store, 3 * per_flush)
        with tasks_started() as started:
            for at in range(0, len(refs), per_flush):
                done = store.ack_soon("t.*", "g", refs[at : at + per_flush], member="m1")
                assert await done == per_flush
        assert started == [], "the ACK flushes started tasks"
        [info] = await store.groups()
        assert info.in_flight == 0  # confirmed: JetStream had applied every ACK when the future was answered
        assert await store.ack("t.*", "g", refs, member="m1") == 0  # settled once
    finally:
        await store.close()


async def test_an_ack_flush_whose_publishes_wait_still_confirms_each_in_order(url: str) -> None:
    """When the driver's publish suspends (its outbound buffer over the limit: it waits for the flusher),
    the flush steps it on from the future it waits on, still without a task, and every ACK is confirmed."""
    store = await open_store(url)
    assert isinstance(store, StoreBackend)
    try:
        refs = await _held(store, 9)
        store._conn.nc._max_pending_size = 1  # type: ignore[attr-defined]  # every publish force-flushes
        with tasks_started() as started:
            assert await store.ack_soon("t.*", "g", refs, member="m1") == 9
        assert started == []
        [info] = await store.groups()
        assert info.in_flight == 0
    finally:
        await store.close()
