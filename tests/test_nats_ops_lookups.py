"""The ops API's questions to the JetStream store about groups the hub has not opened (its overview asks
``groups()``, then every group's ``lag``): counted JetStream API requests. ``groups()`` remembers each
group's current consumer, so a ``lag`` after it asks for that consumer's info by name, and a group met
once (by ``lag`` or ``cursor``) is not listed for again. Real JetStream (127.0.0.1:4222 or
OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

from collections import Counter

import pytest

from nats_server import api_requests, listings, stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import EventRef

pytestmark = pytest.mark.nats
url = stream_fixture()
EARLIEST = StartPosition(kind="earliest")


async def _groups_elsewhere(url: str, names: list[str]) -> None:
    """Groups made and half consumed by another hub: each has a lag and a cursor with an event at it."""
    other = await open_store(url)
    try:
        for name in names:
            await other.ensure_group("t.*", name, EARLIEST)
        await other.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(4)])
        for name in names:
            held = await other.claim("t.*", name, "m1", limit=2, ack_timeout_ms=30_000, max_deliver=5)
            refs = [EventRef(d.event.id, d.event.seq) for d in held]
            assert await other.ack("t.*", name, refs, member="m1") == 2
    finally:
        await other.close()


async def test_the_lag_of_each_listed_group_asks_for_one_consumer_info(url: str) -> None:
    """The ops overview on a hub that opened none of the groups: one listing (``groups()``'s), then one
    consumer info per ``lag`` (before: two listings and two infos per ``lag``, its cursor's own)."""
    names = ["g1", "g2", "g3"]
    await _groups_elsewhere(url, names)
    store = await open_store(url)
    try:
        seen = api_requests(store)
        groups = await store.groups()
        assert [g.group for g in groups] == names
        listed = Counter(seen)
        lags = [await store.lag(g.pattern, g.group) for g in groups]
        assert listings(seen) == listings(listed) == 1
        assert seen["CONSUMER.INFO"] - listed["CONSUMER.INFO"] == len(names)
        for lag in lags:
            assert lag is not None
            assert (lag.cursor.seq, lag.lag_count, lag.tail_seq) == (2, 2, 4)
            assert lag.cursor.last_id is not None and lag.lag_ms is not None
    finally:
        await store.close()


async def test_a_group_met_once_is_not_listed_for_again(url: str) -> None:
    """``lag`` and ``cursor`` of a group this hub never opened: the first lists the stream's consumers once
    to find it, every later one asks for its consumer's info by name."""
    await _groups_elsewhere(url, ["g"])
    store = await open_store(url)
    try:
        seen = api_requests(store)
        first = await store.lag("t.*", "g")
        assert listings(seen) == 1 and seen["CONSUMER.INFO"] == 1
        for _ in range(5):
            assert await store.lag("t.*", "g") == first
            cursor = await store.cursor("t.*", "g")
            assert first is not None and cursor == first.cursor
        assert listings(seen) == 1 and seen["CONSUMER.INFO"] == 11
        assert await store.lag("t.*", "nobody") is None  # no such group: found so by a listing
    finally:
        await store.close()
