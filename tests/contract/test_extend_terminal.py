"""Contract: the ``extend`` transition (only the holder, only while delivered) and the terminal NACK
(dead-lettered on the first attempt with its reason), on every backend; both name a delivery as ACK does
(``EventRef(id, seq)``, ambiguous without a seq when two topics under the pattern carry the id)."""

from __future__ import annotations

from outboxhub.store import Store
from outboxhub.store.base import EventRef

from . import EARLIEST, T0, claim, ev


async def test_terminal_nack_dead_letters_on_the_first_attempt(store: Store) -> None:
    await store.publish(ev("term.t", {"n": 1}, id="t-1"))
    await store.ensure_group("term.t", "g", EARLIEST)
    [d] = await claim(store, "term.t", "g", max_deliver=5)
    assert d.attempt == 1
    assert await store.nack(
        "term.t", "g", "t-1", max_deliver=5, reason="bad payload", terminal=True, now=T0 + 1
    )
    [dead] = await store.scan("dlq.**")
    assert dead.topic == "dlq.g.term.t" and dead.payload == {"n": 1}
    assert dead.headers is not None
    assert dead.headers["x-reason"] == "bad payload"
    assert dead.headers["x-attempts"] == "1"
    assert dead.headers["x-original-id"] == "t-1"
    info = next(g for g in await store.groups() if g.pattern == "term.t")
    assert info.dead_letters == 1 and info.in_flight == 0
    # No more attempts: nothing comes back, however late.
    assert await claim(store, "term.t", "g", "m2", now=T0 + 10_000_000) == []
    assert await store.nack("term.t", "g", "t-1", max_deliver=5, terminal=True) is False


async def test_plain_nack_still_retries(store: Store) -> None:
    await store.publish(ev("term2.t", id="p-1"))
    await store.ensure_group("term2.t", "g", EARLIEST)
    await claim(store, "term2.t", "g", max_deliver=5)
    assert await store.nack("term2.t", "g", "p-1", max_deliver=5, delay_ms=0, now=T0 + 1)
    assert await store.scan("dlq.**") == []
    [again] = await claim(store, "term2.t", "g", now=T0 + 2)
    assert again.attempt == 2


async def test_extend_only_by_the_holder_and_only_while_delivered(store: Store) -> None:
    await store.publish(ev("ext2.t", id="x-1"))
    await store.ensure_group("ext2.t", "g", EARLIEST)
    await claim(store, "ext2.t", "g", "m1", ack_timeout_ms=1_000)
    # Another member cannot extend it.
    assert await store.extend("ext2.t", "g", "x-1", ack_timeout_ms=5_000, now=T0 + 500, member="m2") is False
    assert await store.next_deadline("ext2.t", "g") == T0 + 1_000
    # The holder can.
    assert await store.extend("ext2.t", "g", "x-1", ack_timeout_ms=5_000, now=T0 + 500, member="m1")
    assert await store.next_deadline("ext2.t", "g") == T0 + 5_500
    # Past its deadline the delivery is due (it may go to another member): no extend.
    assert (
        await store.extend("ext2.t", "g", "x-1", ack_timeout_ms=5_000, now=T0 + 5_500, member="m1") is False
    )
    assert await store.next_deadline("ext2.t", "g") == T0 + 5_500
    # A NACKed (waiting) delivery is held by nobody: no extend.
    [d] = await claim(store, "ext2.t", "g", "m2", now=T0 + 5_500, ack_timeout_ms=1_000)
    assert d.attempt == 2
    assert await store.nack("ext2.t", "g", "x-1", max_deliver=5, delay_ms=60_000, now=T0 + 5_600)
    assert await store.extend("ext2.t", "g", "x-1", ack_timeout_ms=5_000, now=T0 + 5_700) is False


async def _two_topics_same_id(store: Store) -> tuple[int, int]:
    await store.ensure_group("dup.*", "g", EARLIEST)
    first = await store.publish(ev("dup.a", id="same"))
    second = await store.publish(ev("dup.b", id="same"))
    held = await claim(store, "dup.*", "g", "m1", ack_timeout_ms=1_000)
    assert [d.event.seq for d in held] == [first.seq, second.seq]
    return first.seq, second.seq


async def test_extend_names_the_delivery_by_seq_and_refuses_an_ambiguous_id(store: Store) -> None:
    first, second = await _two_topics_same_id(store)
    at = T0 + 500
    assert not await store.extend("dup.*", "g", "same", ack_timeout_ms=5_000, now=at, member="m1")
    assert not await store.extend(
        "dup.*", "g", EventRef("other", second), ack_timeout_ms=5_000, now=at, member="m1"
    ), "a seq naming another event's id extended it"
    assert not await store.extend(
        "dup.*", "g", EventRef("same", second), ack_timeout_ms=5_000, now=at, member="m2"
    ), "another member extended the delivery"
    assert await store.extend(
        "dup.*", "g", EventRef("same", second), ack_timeout_ms=5_000, now=at, member="m1"
    )
    # Past the first deadline only the unextended delivery (dup.a) is due again.
    [again] = await claim(store, "dup.*", "g", "m2", now=T0 + 2_000)
    assert again.event.seq == first and again.attempt == 2
    # Now m1 holds one delivery with that id: the id alone names it.
    assert await store.extend("dup.*", "g", "same", ack_timeout_ms=5_000, now=T0 + 2_100, member="m1")


async def test_terminal_nack_by_seq_only_by_the_holder(store: Store) -> None:
    first, second = await _two_topics_same_id(store)
    assert not await store.nack("dup.*", "g", "same", max_deliver=5, terminal=True, member="m1", now=T0)
    ref = EventRef("same", second)
    assert not await store.nack("dup.*", "g", ref, max_deliver=5, terminal=True, member="m2", now=T0)
    assert await store.scan("dlq.**") == []
    assert await store.nack("dup.*", "g", ref, max_deliver=5, reason="no", terminal=True, member="m1", now=T0)
    [dead] = await store.scan("dlq.**")
    assert dead.topic == "dlq.g.dup.b" and dead.headers is not None and dead.headers["x-reason"] == "no"
    info = next(g for g in await store.groups() if g.pattern == "dup.*")
    assert info.dead_letters == 1 and info.in_flight == 1
    assert first != second
