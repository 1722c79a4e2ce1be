"""The ops API's questions to the JetStream store about groups the hub has not opened (its overview asks
``groups()``, then every group's ``lag``): counted JetStream API requests. ``groups()`` remembers each
group's current consumer, so a ``lag`` after it asks for that consumer's info by name, and a group met
once (by ``lag`` or ``cursor``) is not listed for again. Real JetStream (127.0.0.1:4222 or
OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from nats_server import api_requests, listings, stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.ops import api
from outboxhub.store import Store, open_store
from outboxhub.store.base import EventRef, groups_with_lag
from outboxhub.store.nats.overview import IN_FLIGHT

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


def _ops(store: Store) -> Any:
    """What the ops API's overview reads of a hub: its store, and no members."""
    return SimpleNamespace(hub=SimpleNamespace(store=store, bus=SimpleNamespace(members=dict)))


async def test_the_overview_asks_per_pattern_and_floor_not_per_group(url: str) -> None:
    """``/groups`` (and ``/metrics``, the series) of ten groups on one pattern, each with a lag: one
    listing, one stream info for every dead-letter count, one tail read, one read of the event at their
    common ack floor (base: a stream info, a consumer info and two direct gets per group, 41 in all).
    ``groups()`` alone: the listing and the one stream info (base: one stream info per group)."""
    names = [f"g{i}" for i in range(10)]
    await _groups_elsewhere(url, names)
    store = await open_store(url)
    try:
        seen = api_requests(store)
        rows = await api._groups_with_lag(_ops(store))
        assert [g.group for g, _, _ in rows] == names
        assert all(lag is not None and lag.lag_count == 2 for _, lag, _ in rows)
        assert dict(seen) == {"CONSUMER.LIST": 1, "STREAM.INFO": 1, "DIRECT.GET": 2}
        seen.clear()
        assert len(await store.groups()) == 10
        assert dict(seen) == {"CONSUMER.LIST": 1, "STREAM.INFO": 1}
    finally:
        await store.close()


async def test_the_cursors_of_a_pattern_cost_one_tail_and_one_read_per_floor(url: str) -> None:
    """``/cursors?topic=t.*`` of ten groups standing at one floor (base: 41 requests)."""
    await _groups_elsewhere(url, [f"g{i}" for i in range(10)])
    store = await open_store(url)
    try:
        seen = api_requests(store)
        cursors = await api._cursors_of(store, "t.*")
        assert [(c.group, c.seq) for c in cursors] == [(f"g{i}", 2) for i in range(10)]
        assert all(c.last_id is not None for c in cursors)
        assert dict(seen) == {"CONSUMER.LIST": 1, "STREAM.INFO": 1, "DIRECT.GET": 2}
    finally:
        await store.close()


async def test_the_overviews_answers_equal_each_groups_own(url: str) -> None:
    """``groups_with_lag`` against ``groups()`` and one ``lag`` and ``cursor`` per group (the answers of
    before), over groups in every state: caught up, behind, never consumed, started at the end, on a
    pattern JetStream filters exactly and on one it cannot (``**`` inside), sharing a floor and a tail or
    not, with dead letters (two groups whose names share a prefix), and one reset twice."""
    store = await open_store(url)
    try:
        shapes = [("t.*", "a"), ("t.*", "ab"), ("t.*", "behind"), ("t.*", "idle"), ("t.**", "wide")]
        shapes += [("**.b", "inner"), ("u.*", "other"), ("t.*", "reset")]
        for pattern, group in shapes:
            await store.ensure_group(pattern, group, EARLIEST)
        events = [NewEvent(topic=t, payload=i) for i in range(3) for t in ("t.a", "u.b", "t.b")]
        await store.publish_batch(events)
        await store.ensure_group("t.*", "late", StartPosition(kind="latest"))
        for pattern, group, take, dead in [
            ("t.*", "a", 6, 2),
            ("t.*", "ab", 6, 1),
            ("t.*", "behind", 3, 0),
            ("t.**", "wide", 6, 0),
            ("**.b", "inner", 2, 1),
            ("u.*", "other", 3, 0),
        ]:
            held = await store.claim(pattern, group, "m", limit=take, ack_timeout_ms=30_000, max_deliver=5)
            for delivery in held[:dead]:
                assert await store.nack(pattern, group, delivery.event.id, max_deliver=5, terminal=True)
            refs = [EventRef(d.event.id, d.event.seq) for d in held[dead:]]
            assert await store.ack(pattern, group, refs) == len(refs)
        for to in (StartPosition(kind="seq", value=4), StartPosition(kind="seq", value=7)):
            assert await store.reset_group("t.*", "reset", to) is not None
        fresh = await open_store(url)  # knows none of the groups: what the ops API of another hub sees
        try:
            one_by_one = [(g, await fresh.lag(g.pattern, g.group)) for g in await fresh.groups()]
            assert {g.group: g.dead_letters for g, _ in one_by_one if g.dead_letters} == {
                "a": 2,
                "ab": 1,
                "inner": 1,
            }
            for g, _ in one_by_one:
                assert g.dead_letters == (await fresh.ensure_group(g.pattern, g.group, EARLIEST)).dead_letters
            together = await groups_with_lag(fresh)
            assert together == one_by_one
            assert [lag.cursor for _, lag in together if lag] == [
                await fresh.cursor(g.pattern, g.group) for g, _ in together
            ]
            assert len({(lag.lag_count, lag.cursor.last_id) for _, lag in together if lag}) > 4
            assert await groups_with_lag(fresh, lambda g: g.pattern == "u.*") == [
                row for row in together if row[0].pattern == "u.*"
            ]
        finally:
            await fresh.close()
    finally:
        await store.close()


async def test_an_overview_of_many_groups_keeps_at_most_in_flight_reads_at_jetstream(url: str) -> None:
    """Forty groups each on its own pattern and behind: eighty direct gets, never more than ``IN_FLIGHT``
    requests in flight at once (base: every group's ``lag`` at once, forty and more)."""
    n = 40
    other = await open_store(url)
    try:
        for i in range(n):
            await other.ensure_group(f"t{i}.*", "g", EARLIEST)
        await other.publish_batch([NewEvent(topic=f"t{i}.a", payload=k) for i in range(n) for k in range(2)])
        for i in range(n):
            (held,) = await other.claim(f"t{i}.*", "g", "m1", limit=1, ack_timeout_ms=30_000, max_deliver=5)
            assert await other.ack(f"t{i}.*", "g", [EventRef(held.event.id, held.event.seq)]) == 1
    finally:
        await other.close()
    store = await open_store(url)
    try:
        nc = store._conn.nc  # type: ignore[attr-defined]
        request = nc.request
        now, most = 0, 0

        async def counted(*args: Any, **kw: Any) -> Any:
            nonlocal now, most
            now += 1
            most = max(most, now)
            try:
                return await request(*args, **kw)
            finally:
                now -= 1

        nc.request = counted
        rows = await api._groups_with_lag(_ops(store))
        assert len(rows) == n and all(lag is not None and lag.lag_count == 1 for _, lag, _ in rows)
        assert 1 < most <= IN_FLIGHT
    finally:
        await store.close()
