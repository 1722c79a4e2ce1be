"""``reset_group`` on JetStream with several hubs on one stream: each reset makes a new incarnation of the
group's consumer (a new name), so an ACK sent to the old one by a hub that pulled before the reset settles
nothing of the new one; a hub whose consumer was reset elsewhere moves to the new one; resets at once end
with one consumer; a consumer named by earlier versions (no generation) keeps working.
Real JetStream (127.0.0.1:4222 or OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from nats_server import claim as _claim
from nats_server import claim_until as _claim_until
from nats_server import stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import Store, open_store
from outboxhub.store.base import EventRef
from outboxhub.store.nats.subjects import consumer_name
from outboxhub.store.nats.url import parse_url

pytestmark = pytest.mark.nats
url = stream_fixture()
EARLIEST = StartPosition(kind="earliest")
LATEST = StartPosition(kind="latest")
BASE = consumer_name("t.*", "g")


@pytest.fixture
async def hubs(url: str) -> AsyncIterator[tuple[Store, Store]]:
    one, two = await open_store(url), await open_store(url)
    yield one, two
    await one.close()
    await two.close()


async def _consumers(url: str) -> list[str]:
    """The names of the stream's consumers of the group ``("t.*", "g")``, sorted."""
    nc = await nats.connect(url.split("?")[0])
    try:
        infos = await nc.jetstream().consumers_info(parse_url(url).stream)
    finally:
        await nc.close()
    return sorted(i.name for i in infos if i.name.startswith(BASE))


@pytest.mark.parametrize("settle", ["ack", "terminal nack"])
async def test_a_late_ack_from_another_hub_does_not_settle_the_new_consumers_delivery(
    url: str, hubs: tuple[Store, Store], settle: str
) -> None:
    """A terminal NACK acks the message after its dead letter: the same late ACK, and its dead letter is
    kept (as if the NACK had come just before the reset)."""
    one, two = hubs
    await one.ensure_group("t.*", "g", EARLIEST)
    sent = await one.publish(NewEvent(topic="t.a", payload=1))
    assert [d.event.seq for d in await _claim(two)] == [sent.seq]  # hub two holds the old delivery
    await one.reset_group("t.*", "g", EARLIEST)
    fresh = await _claim(one, ack_timeout_ms=500)
    assert [(d.event.seq, d.attempt) for d in fresh] == [(sent.seq, 1)]  # the new consumer's delivery
    ref = EventRef(sent.id, sent.seq)
    if settle == "ack":
        late = await two.ack("t.*", "g", [ref])  # hub two's member ACKs late
    else:
        assert await two.nack("t.*", "g", ref, max_deliver=5, terminal=True)
        [dead] = await two.scan("dlq.g.**")
        assert dead.headers is not None and dead.headers["x-original-id"] == sent.id
        late = 0
    # Hub one's member never ACKs: the delivery comes back (a late ACK that settled it lost the event).
    again = await _claim_until(one, 1, ack_timeout_ms=500)
    assert [(d.event.seq, d.attempt) for d in again] == [(sent.seq, 2)]
    assert late == 0
    assert await one.ack("t.*", "g", [EventRef(sent.id, sent.seq)]) == 1
    assert await _consumers(url) == [f"{BASE}-1"]


@pytest.mark.parametrize(
    ("announced", "ack_timeout_ms"),
    [(True, 30_000), (False, 30_000), (False, 20_000)],
    ids=["announced", "pull", "update"],
)
async def test_a_hub_whose_consumer_was_reset_elsewhere_delivers_from_the_new_one(
    url: str, announced: bool, ack_timeout_ms: int
) -> None:
    """Hub two hears hub one's reset announcement and checks the consumer before its next pull; without
    the announcement (a lost hint) it finds out when the old consumer does not answer its pull, or, when
    the claim asks for another ``ack_timeout_ms``, at the consumer's update (which must not re-create the
    old consumer)."""
    one, two = await open_store(url), await open_store(f"{url}&timeout_s=1")
    try:
        if not announced:
            one._groups._conn.announce_reset = lambda base: None  # type: ignore[attr-defined]
        await _reset_elsewhere(url, one, two, ack_timeout_ms)
    finally:
        await one.close()
        await two.close()


async def _reset_elsewhere(url: str, one: Store, two: Store, ack_timeout_ms: int) -> None:
    await one.ensure_group("t.*", "g", EARLIEST)
    await two.ensure_group("t.*", "g", EARLIEST)
    old = await one.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(3)])
    assert len(await _claim(two)) == 3
    await one.reset_group("t.*", "g", LATEST)
    new = await one.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(3, 5)])
    got = await _claim_until(two, 2, ack_timeout_ms=ack_timeout_ms)
    assert [(d.event.payload, d.attempt) for d in got] == [(3, 1), (4, 1)]
    assert await two.ack("t.*", "g", [EventRef(e.id, e.seq) for e in old]) == 0  # released by the reset
    assert not await two.nack("t.*", "g", EventRef(old[0].id, old[0].seq), max_deliver=5, terminal=True)
    assert await two.ack("t.*", "g", [EventRef(e.id, e.seq) for e in new]) == 2
    [info] = await one.groups()
    assert (info.ack_floor, info.in_flight) == (new[-1].seq, 0)
    assert await _consumers(url) == [f"{BASE}-1"]


async def test_resets_at_once_on_two_hubs_end_with_one_consumer(url: str, hubs: tuple[Store, Store]) -> None:
    """Hubs one and two reset the group at once (other starts), four times; hub three holds a delivery of
    the consumer before each round and ACKs it after."""
    one, two = hubs
    three = await open_store(url)
    try:
        await one.ensure_group("t.*", "g", EARLIEST)
        sent = await one.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(6)])
        for _ in range(4):
            [held] = await _claim(three, limit=1)
            await asyncio.gather(
                one.reset_group("t.*", "g", EARLIEST),
                two.reset_group("t.*", "g", StartPosition(kind="seq", value=sent[2].seq)),
            )
            names = await _consumers(url)
            assert len(names) == 1, names
            assert [(g.pattern, g.group) for g in await one.groups()] == [("t.*", "g")]
            assert await one.groups() == await two.groups()
            assert await three.ack("t.*", "g", [EventRef(held.event.id, held.event.seq)]) == 0
        [info] = await one.groups()
        wanted = [e.seq for e in sent if e.seq > info.frontier]  # earliest: all six; seq: the last three
        got = await _claim(one, limit=1) + await _claim(three, limit=1)
        got += await _claim_until(two, len(wanted) - 2)
        assert sorted(d.event.seq for d in got) == wanted
    finally:
        await three.close()


async def test_the_loser_of_a_reset_race_adopts_the_winners_consumer(
    url: str, hubs: tuple[Store, Store]
) -> None:
    """The two ways to lose: the same next generation with another start (the create fails), and a
    generation older than one made meanwhile (it deletes its own)."""
    one, two = hubs
    await one.ensure_group("t.*", "g", EARLIEST)
    sent = await one.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(4)])
    await one.reset_group("t.*", "g", EARLIEST)  # generation 1, from the start
    groups = two._groups  # type: ignore[attr-defined]  # what two's reset does after a stale listing
    info = await groups._create("t.*", "g", 1, StartPosition(kind="seq", value=sent[1].seq), None)
    assert info.name == f"{BASE}-1" and info.config.deliver_policy == DeliverPolicy.ALL
    await one.reset_group("t.*", "g", LATEST)  # generation 2
    info = await groups._create("t.*", "g", 1, EARLIEST, None)  # generation 1 again, after 2
    assert info.name == f"{BASE}-2" and info.config.deliver_policy == DeliverPolicy.NEW
    assert await _consumers(url) == [f"{BASE}-2"]


async def test_a_consumer_named_before_incarnations_still_opens_and_delivers(url: str) -> None:
    """A stream whose group consumer was made by earlier versions (no generation in its name or
    description) is generation 0: it delivers, lists, and its reset makes generation 1."""
    stream = parse_url(url).stream
    store = await open_store(url)
    try:
        sent = await store.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(3)])
        nc = await nats.connect(url.split("?")[0])
        try:
            await nc.jetstream().add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=BASE,
                    description=json.dumps({"pattern": "t.*", "group": "g"}),
                    filter_subject=f"{stream}.t.*.*",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    max_deliver=-1,
                ),
            )
        finally:
            await nc.close()
        info = await store.ensure_group("t.*", "g", LATEST)  # exists: kept as it is
        assert info.frontier == 0
        got = await _claim(store)
        assert [d.event.payload for d in got] == [0, 1, 2]
        assert await store.ack("t.*", "g", [EventRef(d.event.id, d.event.seq) for d in got[:2]]) == 2
        [listed] = await store.groups()
        assert (listed.pattern, listed.group, listed.ack_floor, listed.in_flight) == ("t.*", "g", 2, 1)
        await store.reset_group("t.*", "g", StartPosition(kind="seq", value=sent[0].seq))
        assert await _consumers(url) == [f"{BASE}-1"]
        assert [d.event.payload for d in await _claim(store)] == [1, 2]
    finally:
        await store.close()


async def test_groups_lists_every_group_once_past_the_servers_page(url: str) -> None:
    """300 groups (the server answers 256 consumers per list request), one of them reset: one entry
    each."""
    store = await open_store(url)
    try:
        names = [f"g{i:03}" for i in range(300)]
        await asyncio.gather(*(store.ensure_group("t.*", name, LATEST) for name in names))
        await store.reset_group("t.*", "g299", EARLIEST)
        assert [g.group for g in await store.groups()] == names
    finally:
        await store.close()
