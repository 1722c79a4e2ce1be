"""The NATS JetStream store where it departs from the store contract (tests/contract/conftest.py lists the
contract tests that do not apply): redelivery, NAK delays and dead letters run on JetStream's clock, a
group is shared by stores on the same stream, ids are deduplicated per topic, and the URL is checked.
Real JetStream (127.0.0.1:4222 or OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from nats_server import claim as _claim
from nats_server import claim_until as _claim_until
from nats_server import stream_fixture
from outboxhub.errors import StoreUnsupported, StoreURLError
from outboxhub.model import NewEvent, PublishResult, StartPosition
from outboxhub.store import Store, open_store
from outboxhub.store.base import EventRef
from outboxhub.store.nats.url import parse_url
from task_counting import tasks_started

pytestmark = pytest.mark.nats
url = stream_fixture()
EARLIEST = StartPosition(kind="earliest")


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = await open_store(url)
    yield opened
    await opened.close()


async def test_an_unacked_delivery_comes_back_after_ack_wait(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a", payload=1))
    first = await _claim(store, ack_timeout_ms=300)
    assert [(d.event.seq, d.attempt) for d in first] == [(sent.seq, 1)]
    assert await _claim(store, ack_timeout_ms=300) == []  # held: not handed out twice
    again = await _claim_until(store, 1, ack_timeout_ms=300)
    assert [(d.event.seq, d.attempt) for d in again] == [(sent.seq, 2)]
    assert await store.ack("t.*", "g", [sent.id]) == 1
    await asyncio.sleep(0.5)
    assert await _claim(store, ack_timeout_ms=300) == []


async def test_a_nack_delay_holds_the_event_back_on_the_server(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a"))
    assert len(await _claim(store)) == 1
    started = time.monotonic()
    assert await store.nack("t.*", "g", sent.id, max_deliver=5, delay_ms=400)
    assert await _claim(store) == []
    again = await _claim_until(store, 1)
    assert time.monotonic() - started >= 0.35
    assert [(d.event.id, d.attempt) for d in again] == [(sent.id, 2)]


async def test_a_nack_without_delay_is_claimable_by_the_next_claim(store: Store) -> None:
    """A NACK returns once JetStream has applied the NAK: the claim right behind it gets the event, every
    time (a NAK sent and flushed was applied after that claim's pull had been answered empty in 2-13 % of
    rounds on this machine's nats-server 2.9.10, by load; 300 rounds)."""
    await store.ensure_group("t.*", "g", EARLIEST)
    for n in range(300):
        sent = await store.publish(NewEvent(topic="t.a", payload=n))
        first = await _claim(store, "m1", limit=1)
        while not first:  # a pull right behind a publish's ack is, rarely, answered before the event is in
            first = await _claim(store, "m1", limit=1)
        [held] = first
        assert await store.nack("t.*", "g", EventRef(sent.id, sent.seq), max_deliver=1000, delay_ms=0)
        again = await _claim(store, "m2", limit=1, max_deliver=1000)
        assert [(d.event.seq, d.attempt) for d in again] == [(sent.seq, held.attempt + 1)], f"round {n}"
        assert await store.ack("t.*", "g", [EventRef(sent.id, sent.seq)], member="m2") == 1


async def test_delivery_count_past_max_deliver_dead_letters(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a", payload="p"))
    assert len(await _claim(store, ack_timeout_ms=200, max_deliver=1)) == 1
    await asyncio.sleep(0.4)
    assert await _claim(store, ack_timeout_ms=200, max_deliver=1) == []  # the 2nd delivery is dead-lettered
    dead = await store.scan("dlq.g.**")
    assert len(dead) == 1 and dead[0].topic == "dlq.g.t.a" and dead[0].payload == "p"
    assert dead[0].headers is not None
    assert dead[0].headers["x-original-id"] == sent.id and dead[0].headers["x-attempts"] == "1"
    assert dead[0].headers["x-reason"] == "ack timeout"
    assert (await store.groups())[0].dead_letters == 1


async def test_nack_at_max_deliver_dead_letters_with_the_reason(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a"))
    await _claim(store, max_deliver=1)
    assert await store.nack("t.*", "g", sent.id, max_deliver=1, reason="bad input")
    dead = await store.scan("dlq.**")
    assert [d.headers["x-reason"] for d in dead if d.headers] == ["bad input"]


async def test_a_nack_reason_is_kept_for_a_later_timeout_dead_letter(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a"))
    await _claim(store, max_deliver=2)
    assert await store.nack("t.*", "g", sent.id, max_deliver=2, reason="downstream 503", delay_ms=0)
    assert len(await _claim_until(store, 1, ack_timeout_ms=200, max_deliver=2)) == 1  # attempt 2, not acked
    await asyncio.sleep(0.4)
    assert await _claim(store, ack_timeout_ms=200, max_deliver=2) == []  # the 3rd delivery: dead-lettered
    [dead] = await store.scan("dlq.g.t.a")
    assert dead.headers is not None and dead.headers["x-reason"] == "downstream 503"


async def test_an_ack_of_many_deliveries_starts_no_task_per_message(store: Store) -> None:
    """The confirmed ACKs of one call wait in that call's coroutine; ``Msg.ack_sync`` per message under
    ``asyncio.gather`` started a task for each."""
    await store.ensure_group("t.*", "g", EARLIEST)
    await store.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(10)])
    held = await _claim(store)
    assert len(held) == 10
    assert await store.ack("t.*", "g", [held[0].event.id]) == 1  # the first ACK subscribes for the replies
    with tasks_started() as started:
        assert await store.ack("t.*", "g", [EventRef(d.event.id, d.event.seq) for d in held[1:]]) == 9
    assert started == [], "the ACKs started tasks"
    [info] = await store.groups()
    assert info.in_flight == 0  # confirmed: JetStream had applied every ACK when the call returned


async def test_two_stores_share_one_group_exactly_once(url: str) -> None:
    one, two = await open_store(url), await open_store(url)
    try:
        await one.ensure_group("t.*", "g", EARLIEST)
        await two.ensure_group("t.*", "g", EARLIEST)
        sent = await one.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(40)])
        got_one = await _claim(one, limit=15)
        got_two = await _claim(two, limit=100)
        ids = [d.event.id for d in got_one + got_two]
        assert sorted(ids) == sorted(r.id for r in sent) and len(got_one) == 15
        # Only the holder settles: an ACK through the other store changes nothing.
        assert await two.ack("t.*", "g", [got_one[0].event.id]) == 0
        assert await one.ack("t.*", "g", [d.event.id for d in got_one]) == 15
        assert await two.ack("t.*", "g", [d.event.id for d in got_two]) == 25
        info = (await one.groups())[0]
        assert (info.ack_floor, info.in_flight) == (sent[-1].seq, 0)
    finally:
        await one.close()
        await two.close()


async def test_release_hands_a_members_events_to_the_other_store(url: str) -> None:
    one, two = await open_store(url), await open_store(url)
    try:
        await one.ensure_group("t.*", "g", EARLIEST)
        await one.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(3)])
        assert len(await _claim(one)) == 3
        assert await one.release("t.*", "g", "m1") == 3
        again = await _claim_until(two, 3)
        assert sorted(d.event.payload for d in again) == [0, 1, 2] and {d.attempt for d in again} == {2}
    finally:
        await one.close()
        await two.close()


async def test_ids_are_deduplicated_per_topic(store: Store) -> None:
    a = await store.publish(NewEvent(topic="t.a", id="same"))
    b = await store.publish(NewEvent(topic="t.b", id="same"))
    again = await store.publish(NewEvent(topic="t.a", id="same"))
    assert not a.duplicate and not b.duplicate and a.seq != b.seq
    assert again.duplicate and again.seq == a.seq
    assert await store.count("**") == 2


async def test_a_pattern_without_a_subject_filter_is_matched_in_the_hub(store: Store) -> None:
    await store.publish_batch([NewEvent(topic=t) for t in ("a.b", "a.x.b", "a.x.c", "a", "b")])
    assert [e.topic for e in await store.scan("a.**.b")] == ["a.b", "a.x.b"]
    assert await store.count("a.**.b") == 2
    tail = await store.tail("a.**.b")
    assert tail is not None and tail.topic == "a.x.b"
    assert [e.topic for e in await store.scan("a.**")] == ["a.b", "a.x.b", "a.x.c", "a"]


async def test_ordered_by_key_is_refused_with_a_reason(store: Store) -> None:
    with pytest.raises(StoreUnsupported, match="ordered_by_key is not supported on JetStream"):
        store.check_group_options("g", ordered_by_key=True)
    store.check_group_options("g", ordered_by_key=False)
    await store.ensure_group("t.*", "g", EARLIEST)
    with pytest.raises(StoreUnsupported, match="ordered_by_key is not supported on JetStream"):
        await store.claim("t.*", "g", "m", limit=1, ack_timeout_ms=1000, max_deliver=1, ordered_by_key=True)


async def test_a_subscribe_with_ordered_by_key_is_one_clear_err(
    url: str, hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(store=url)
    client = await ws_connect(hub.ws_url, token=token())
    opts = {"ordered_by_key": True}
    err = await client.request("SUBSCRIBE", topic="t.*", group="g", opts=opts)
    assert (err["op"], err["code"]) == ("ERR", "bad_request"), err
    assert "ordered_by_key is not supported on JetStream" in err["msg"]
    assert await hub.store.groups() == [], "the refused SUBSCRIBE created the group"
    # Refused once, not retried: the connection is fine and a SUBSCRIBE without the option works.
    ok = await client.request("SUBSCRIBE", topic="t.*", group="g")
    assert ok["op"] == "OK", ok
    await client.request("PUBLISH", topic="t.a", payload=1)
    assert (await client.next_event())["event"]["payload"] == 1


async def test_only_the_holder_settles_a_redelivered_delivery(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a", payload=1, id="e1"))
    await _claim(store, "first", ack_timeout_ms=300)
    again = await _claim_until(store, 1, ack_timeout_ms=300)  # member "m1", after AckWait passed
    assert [(d.event.seq, d.attempt) for d in again] == [(sent.seq, 2)]
    ref = EventRef("e1", sent.seq)
    assert await store.ack("t.*", "g", [ref], member="first") == 0, "a late ACK settled another's delivery"
    assert not await store.nack("t.*", "g", ref, max_deliver=5, member="first", terminal=True)
    assert not await store.extend("t.*", "g", ref, ack_timeout_ms=1_000, member="first")
    assert await store.scan("dlq.**") == []
    assert await store.ack("t.*", "g", [ref], member="m1") == 1


async def test_extend_only_by_the_holder_before_its_deadline(store: Store) -> None:
    await store.ensure_group("t.*", "g", EARLIEST)
    sent = await store.publish(NewEvent(topic="t.a", payload=1, id="x"))
    await _claim(store, "m1", ack_timeout_ms=400)
    ref = EventRef("x", sent.seq)
    assert not await store.extend("t.*", "g", ref, ack_timeout_ms=400, member="m2")
    assert not await store.extend("t.*", "g", EventRef("other", sent.seq), ack_timeout_ms=400, member="m1")
    assert await store.extend("t.*", "g", ref, ack_timeout_ms=400, member="m1")
    await asyncio.sleep(0.6)  # past the deadline: the delivery is due, no extend
    assert not await store.extend("t.*", "g", ref, ack_timeout_ms=400, member="m1")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nats://", "no server"),
        ("nats://h:1?stream=a.b", "stream='a.b'"),
        ("nats://h:1?replicas=9", "replicas='9' must be an integer from 1 to 5"),
        ("nats://h:1?dedup_window_s=0", "dedup_window_s='0'"),
        ("nats://h:1?colour=red", "unknown option 'colour'"),
        ("nats://h:1?creds=/nope", "creds='/nope' is not a readable file"),
        ("nats://u:secret@h:1?stream=x&stream=y", "given twice"),
        ("nats://h:1?tls_cert=/etc/hostname", "tls_cert and tls_key go together"),
    ],
)
def test_bad_urls_are_named(url: str, problem: str) -> None:
    with pytest.raises(StoreURLError, match=problem.replace("?", r"\?")) as info:
        parse_url(url)
    assert "secret" not in str(info.value)


def test_url_servers_and_defaults() -> None:
    parsed = parse_url("nats://u:p%40ss@a:4223,b?stream=S1&replicas=3")
    assert parsed.servers == ("nats://a:4223", "nats://b:4222")
    assert (parsed.user, parsed.password, parsed.stream, parsed.prefix, parsed.replicas) == (
        "u",
        "p@ss",
        "S1",
        "S1",
        3,
    )
    assert parsed.dedup_window_s == 3600


async def test_an_unreachable_server_is_one_clear_error() -> None:
    from outboxhub.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match=r"NATS store nats://127\.0\.0\.1:1") as info:
        await open_store("nats://127.0.0.1:1?timeout_s=1&token=s3cret")
    assert "s3cret" not in str(info.value)


class _CrashAfterPublish:
    """A sink that stores a batch in the NATS store and then fails, as a drainer crash between the
    publish and marking the records sent would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.crashed = asyncio.Event()

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        await self.store.publish_batch(events)
        self.crashed.set()
        raise ConnectionError("crashed after publishing")


async def test_an_outbox_republished_after_a_crash_is_stored_once(store: Store, tmp_path: Path) -> None:
    import sqlite3

    from outboxhub import outbox
    from outboxhub.outbox.drainer import Drainer, DrainerSettings

    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    box = await outbox.open_outbox(db_url)
    try:
        await box.ensure_schema()
        with sqlite3.connect(tmp_path / "app.db") as conn:
            ids = [outbox.add(conn, "orders.paid", {"n": i}, key=f"o{i % 3}") for i in range(30)]
        settings = DrainerSettings(batch_size=30, concurrency=1, backoff_base_ms=1, idle_wait_ms=10)
        sink = _CrashAfterPublish(store)
        crashing = Drainer(box, sink, settings)
        task = asyncio.create_task(crashing.run())
        await asyncio.wait_for(sink.crashed.wait(), 30)
        crashing.stop()
        await task
        assert await store.count("orders.paid") == 30  # stored, but the outbox still has them unsent
        drainer = Drainer(box, store, settings)
        await asyncio.wait_for(drainer.run_until_idle(), 60)
        assert drainer.duplicates == 30  # every republished record was recognised as already stored
        events = await store.scan("orders.paid")
        assert sorted(e.id for e in events) == sorted(ids) and len(events) == 30
    finally:
        await box.close()


async def test_a_hub_restart_keeps_the_log_the_acks_and_the_unacked(url: str) -> None:
    first = await open_store(url)
    await first.ensure_group("t.*", "g", EARLIEST)
    sent = await first.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(4)])
    got = await _claim(first, limit=3)
    await first.ack("t.*", "g", [d.event.id for d in got[:2]])
    await first.close()  # a clean stop hands the unacked delivery back at once
    second = await open_store(url)
    try:
        assert [e.id for e in await second.scan("t.*")] == [r.id for r in sent]
        info = (await second.groups())[0]
        assert info.ack_floor == sent[1].seq
        again = await _claim_until(second, 2)
        assert [(d.event.payload, d.attempt) for d in again] == [(2, 2), (3, 1)]
    finally:
        await second.close()
