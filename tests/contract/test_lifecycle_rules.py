"""Contract: edge cases of the delivery lifecycle (``outboxhub.store.lifecycle``) that every backend must
decide the same way, because each backend executes the one claim planner.

Each of these once differed between backends: PostgreSQL did not clamp ``max_deliver`` to at least 1, so a
held-back event (never delivered) was dead-lettered by a claim with ``max_deliver=0``; MongoDB dead-letters
exhausted rows past the point where a claim reached its limit.
"""

from __future__ import annotations

from outboxhub.model import GroupInfo
from outboxhub.store import Store

from . import EARLIEST, T0, claim, ev, ids_of


async def _info(store: Store) -> GroupInfo:
    [info] = [g for g in await store.groups() if g.group == "g"]
    return info


async def test_max_deliver_below_one_still_delivers_a_held_back_event_once(store: Store) -> None:
    await store.publish_batch([ev("k.t", i, id=f"a{i}", key="a") for i in (1, 2)])
    await store.ensure_group("k.t", "g", EARLIEST)
    assert ids_of(await claim(store, "k.t", "g", ordered_by_key=True, max_deliver=1)) == ["a1"]
    await store.ack("k.t", "g", ["a1"])
    # a2 was taken into the pending set held back (never delivered): it is delivered, not dead-lettered.
    got = await claim(store, "k.t", "g", ordered_by_key=True, max_deliver=0, now=T0 + 1)
    assert [(d.event.id, d.attempt) for d in got] == [("a2", 1)]
    assert (await _info(store)).dead_letters == 0
    assert await store.release("k.t", "g", "m1") == 1
    # Once delivered, max_deliver=0 behaves as 1: the next expired claim dead-letters it.
    assert await claim(store, "k.t", "g", ordered_by_key=True, max_deliver=0, now=T0 + 2) == []
    info = await _info(store)
    assert (info.dead_letters, info.in_flight) == (1, 0)
    [dead] = await store.scan("dlq.**")
    assert dead.headers is not None and dead.headers["x-original-id"] == "a2"


async def test_nack_with_max_deliver_below_one_dead_letters_a_delivered_event(store: Store) -> None:
    await store.publish(ev("z.t", "x", id="z1"))
    await store.ensure_group("z.t", "g", EARLIEST)
    [d] = await claim(store, "z.t", "g", max_deliver=0)
    assert d.attempt == 1
    assert await store.nack("z.t", "g", "z1", max_deliver=0, now=T0)
    assert (await _info(store)).dead_letters == 1


async def test_nack_of_a_held_back_event_changes_nothing(store: Store) -> None:
    await store.publish_batch([ev("h.t", i, id=f"h{i}", key="k") for i in (1, 2)])
    await store.ensure_group("h.t", "g", EARLIEST)
    assert ids_of(await claim(store, "h.t", "g", ordered_by_key=True)) == ["h1"]
    # h2 is pending but was never delivered: there is nothing to NACK, whatever max_deliver says.
    assert await store.nack("h.t", "g", "h2", max_deliver=0, delay_ms=60_000, now=T0) is False
    assert await store.nack("h.t", "g", "h2", max_deliver=5, delay_ms=60_000, now=T0) is False
    assert (await _info(store)).dead_letters == 0
    await store.ack("h.t", "g", ["h1"])
    got = await claim(store, "h.t", "g", ordered_by_key=True, now=T0 + 1)
    assert [(d.event.id, d.attempt) for d in got] == [("h2", 1)]


async def test_a_claim_that_reaches_its_limit_leaves_later_exhausted_events_for_the_next(
    store: Store,
) -> None:
    await store.publish_batch([ev("x.t", i, id=f"x{i}") for i in (1, 2)])
    await store.ensure_group("x.t", "g", EARLIEST)
    assert ids_of(await claim(store, "x.t", "g", ack_timeout_ms=1_000)) == ["x1", "x2"]
    assert await store.nack("x.t", "g", "x1", max_deliver=5, delay_ms=10_000, now=T0)
    again = await claim(store, "x.t", "g", ack_timeout_ms=1_000, now=T0 + 1_000)
    assert [(d.event.id, d.attempt) for d in again] == [("x2", 2)]
    # Both expired now: x1 has had 1 attempt, x2 has had 2 (= max_deliver). A claim of one takes x1 and
    # stops there; x2 is dead-lettered by the next claim, not by this one.
    got = await claim(store, "x.t", "g", limit=1, max_deliver=2, now=T0 + 20_000)
    assert [(d.event.id, d.attempt) for d in got] == [("x1", 2)]
    assert (await _info(store)).dead_letters == 0
    assert await claim(store, "x.t", "g", limit=1, max_deliver=2, now=T0 + 20_000) == []
    assert (await _info(store)).dead_letters == 1
