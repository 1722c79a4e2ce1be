"""``ensure_group`` on the JetStream store (every SUBSCRIBE runs it) without listing the stream's consumers
when the hub knows the group's current incarnation, and still right after a reset by another hub whose
announcement was lost. Real JetStream (127.0.0.1:4222 or OUTBOXHUB_TEST_NATS_URL), one throwaway stream
per test.
"""

from __future__ import annotations

import pytest

from nats_server import api_requests, claim, listings, stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store

pytestmark = pytest.mark.nats
url = stream_fixture()
EARLIEST = StartPosition(kind="earliest")


async def test_subscribing_again_lists_no_consumers(url: str) -> None:
    """The first ``ensure_group`` lists the stream's consumers (it creates the group); the claim that
    follows and every later ``ensure_group`` ask for the known consumer's info only (one listing each on
    the claim and on every SUBSCRIBE before)."""
    store = await open_store(url)
    try:
        seen = api_requests(store)
        await store.ensure_group("t.*", "g", EARLIEST)
        creating = listings(seen)  # finding none, then settling the created consumer
        await store.publish(NewEvent(topic="t.a"))
        assert len(await claim(store)) == 1
        for _ in range(20):
            await store.ensure_group("t.*", "g", EARLIEST)
        assert listings(seen) == creating
    finally:
        await store.close()


async def test_a_reset_elsewhere_whose_announcement_is_lost_is_found_by_the_next_subscribe(url: str) -> None:
    """Hub two resets the group while hub one hears nothing (its listener is gone): one's known consumer
    no longer exists, so its next ``ensure_group`` lists again and reports the new incarnation, which
    starts after the event published before the reset."""
    one, two = await open_store(url), await open_store(url)
    try:
        await one.ensure_group("t.*", "g", EARLIEST)
        await one.publish(NewEvent(topic="t.a"))
        await one._conn._notify_sub.unsubscribe()  # type: ignore[attr-defined]
        await two.reset_group("t.*", "g", StartPosition(kind="latest"))
        info = await one.ensure_group("t.*", "g", EARLIEST)
        assert (info.in_flight, info.frontier, info.ack_floor) == (0, 1, 1)
        sent = await one.publish(NewEvent(topic="t.a"))
        assert [d.event.seq for d in await claim(one)] == [sent.seq]
    finally:
        await one.close()
        await two.close()
