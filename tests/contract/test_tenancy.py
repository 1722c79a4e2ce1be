"""Contract: event ids and settlement cannot cross a tenant boundary (issue #14 items 10 and 11).

* an event id is unique within its topic only: the same id on another topic is another event, so
  publishing an id neither reveals (``duplicate``, ``seq``) nor blocks (squats) another topic's event; the
  same ``(topic, id)`` is still stored once (the outbox's exactly-once);
* ACK/NACK name a delivery by ``EventRef(id, seq)``; without a seq an id that two pending rows of the group
  carry settles nothing (ambiguous);
* with ``member`` given, only the member holding a delivery (or nobody: a late ACK) may settle it.
"""

from __future__ import annotations

from outboxhub.store import Store
from outboxhub.store.base import EventRef

from . import EARLIEST, T0, claim, ev


async def test_an_id_on_another_topic_is_another_event(store: Store) -> None:
    victim = await store.publish(ev("victim.orders", {"v": 1}, id="order-1"))
    squat = await store.publish(ev("attacker.x", {"a": 1}, id="order-1"))
    assert not squat.duplicate, "the victim's id was reported as a duplicate to another topic"
    assert squat.seq != victim.seq
    again = await store.publish(ev("victim.orders", {"v": 2}, id="order-1"))
    assert again.duplicate and again.seq == victim.seq, "the same (topic, id) must be stored once"
    assert [e.payload for e in await store.scan("victim.*")] == [{"v": 1}]
    assert [e.payload for e in await store.scan("attacker.*")] == [{"a": 1}]
    got = await store.get_event("order-1", "attacker.x")
    assert got is not None and got.payload == {"a": 1}
    got = await store.get_event("order-1", "victim.orders")
    assert got is not None and got.payload == {"v": 1}
    assert await store.get_event("order-1", "nobody.here") is None


async def test_a_squatted_id_does_not_block_the_victim(store: Store) -> None:
    await store.publish(ev("attacker.x", id="pay-7"))
    result = await store.publish(ev("victim.pay", {"amount": 7}, id="pay-7"))
    assert not result.duplicate, "an id squatted on another topic blocked the victim's publish"
    [stored] = await store.scan("victim.*")
    assert stored.payload == {"amount": 7}


async def test_a_batch_dedupes_by_topic_and_id(store: Store) -> None:
    results = await store.publish_batch(
        [ev("a.x", {"n": 1}, id="same"), ev("b.x", {"n": 2}, id="same"), ev("a.x", {"n": 3}, id="same")]
    )
    assert [r.duplicate for r in results] == [False, False, True]
    assert results[2].seq == results[0].seq
    assert [e.payload for e in await store.scan("*.x")] == [{"n": 1}, {"n": 2}]


async def _two_topics_same_id(store: Store) -> tuple[int, int]:
    await store.ensure_group("t.*", "g", EARLIEST)
    first = await store.publish(ev("t.a", id="dup"))
    second = await store.publish(ev("t.b", id="dup"))
    deliveries = await claim(store, "t.*", "g", "m1")
    assert [(d.event.topic, d.event.seq) for d in deliveries] == [("t.a", first.seq), ("t.b", second.seq)]
    return first.seq, second.seq


async def test_an_ack_with_a_seq_settles_that_delivery_only(store: Store) -> None:
    first, second = await _two_topics_same_id(store)
    assert await store.ack("t.*", "g", [EventRef("dup", second)], member="m1") == 1
    cursor = await store.cursor("t.*", "g")
    assert cursor is not None and cursor.seq == first - 1, "the t.a delivery must still be pending"
    assert await store.ack("t.*", "g", [EventRef("dup", first)], member="m1") == 1
    cursor = await store.cursor("t.*", "g")
    assert cursor is not None and cursor.seq == second


async def test_an_ack_whose_seq_names_another_event_settles_nothing(store: Store) -> None:
    first, _ = await _two_topics_same_id(store)
    assert await store.ack("t.*", "g", [EventRef("other-id", first)], member="m1") == 0


async def test_an_ambiguous_ack_without_seq_settles_nothing(store: Store) -> None:
    first, second = await _two_topics_same_id(store)
    assert await store.ack("t.*", "g", ["dup"], member="m1") == 0
    assert not await store.nack("t.*", "g", "dup", max_deliver=5, member="m1")
    assert await store.ack("t.*", "g", [EventRef("dup", first)]) == 1
    # now the id is held once: a seq-less ack finds it
    assert await store.ack("t.*", "g", ["dup"], member="m1") == 1
    cursor = await store.cursor("t.*", "g")
    assert cursor is not None and cursor.seq == second


async def test_a_member_cannot_settle_another_members_delivery(store: Store) -> None:
    await store.ensure_group("p.*", "g", EARLIEST)
    published = await store.publish(ev("p.x", id="e1"))
    [delivery] = await claim(store, "p.*", "g", "victim", ack_timeout_ms=60_000)
    ref = EventRef("e1", published.seq)
    assert await store.ack("p.*", "g", [ref], member="attacker") == 0
    assert await store.ack("p.*", "g", ["e1"], member="attacker") == 0
    assert not await store.nack("p.*", "g", ref, max_deliver=5, member="attacker", now=T0)
    assert not await store.nack("p.*", "g", "e1", max_deliver=1, member="attacker", now=T0)
    info = next(g for g in await store.groups() if g.group == "g")
    assert info.in_flight == 1 and info.dead_letters == 0
    assert await store.ack("p.*", "g", [ref], member="victim") == 1
    assert delivery.event.id == "e1"


async def test_a_member_may_not_settle_a_delivery_redelivered_to_another(store: Store) -> None:
    await store.ensure_group("p.*", "g", EARLIEST)
    published = await store.publish(ev("p.x", id="e1"))
    await claim(store, "p.*", "g", "first", ack_timeout_ms=1_000, now=T0)
    [again] = await claim(store, "p.*", "g", "second", ack_timeout_ms=60_000, now=T0 + 2_000)
    assert again.attempt == 2
    ref = EventRef("e1", published.seq)
    assert await store.ack("p.*", "g", [ref], member="first") == 0, "a late ACK settled another's delivery"
    assert await store.ack("p.*", "g", [ref], member="second") == 1


async def test_a_late_ack_settles_a_delivery_nobody_else_holds(store: Store) -> None:
    await store.ensure_group("p.*", "g", EARLIEST)
    published = await store.publish(ev("p.x", id="e1"))
    await claim(store, "p.*", "g", "first", ack_timeout_ms=1_000, now=T0)
    # the deadline passed, nobody claimed it again: the late ACK of its holder still counts
    assert await store.ack("p.*", "g", [EventRef("e1", published.seq)], member="first") == 1
    assert await claim(store, "p.*", "g", "second", now=T0 + 5_000) == []


async def test_a_held_back_event_cannot_be_settled_by_a_member(store: Store) -> None:
    await store.ensure_group("k.*", "g", EARLIEST)
    await store.publish(ev("k.x", key="K", id="first"))
    held = await store.publish(ev("k.x", key="K", id="second"))
    [delivery] = await claim(store, "k.*", "g", "m1", ordered_by_key=True)
    assert delivery.event.id == "first"
    assert await store.ack("k.*", "g", [EventRef("second", held.seq)], member="m1") == 0
    assert not await store.nack("k.*", "g", EventRef("second", held.seq), max_deliver=5, member="m1")
