"""Contract: redelivery after ack timeout, NACK backoff, dead-letters, release, extend, next_deadline.

Time moves through the ``now=`` parameters: T0 is "now" at the first claim.
"""

from __future__ import annotations

from outboxhub.model import MAX_EVENT_ID, nack_backoff_ms
from outboxhub.store import Store

from . import EARLIEST, T0, claim, ev, ids_of, seqs_of


async def test_unacked_events_are_redelivered_after_the_ack_timeout(store: Store) -> None:
    results = await store.publish_batch([ev("r.t", i) for i in range(3)])
    await store.ensure_group("r.t", "g", EARLIEST)
    first = await claim(store, "r.t", "g", "m1", ack_timeout_ms=1_000)
    assert [d.deadline for d in first] == [T0 + 1_000] * 3
    assert await store.next_deadline("r.t", "g") == T0 + 1_000
    assert await claim(store, "r.t", "g", "m2", ack_timeout_ms=1_000, now=T0 + 999) == []
    await store.ack("r.t", "g", [first[1].event.id])
    again = await claim(store, "r.t", "g", "m2", ack_timeout_ms=1_000, now=T0 + 1_000)
    assert seqs_of(again) == [results[0].seq, results[2].seq]
    assert [(d.attempt, d.redelivered, d.deadline) for d in again] == [(2, True, T0 + 2_000)] * 2
    assert again[0].event == first[0].event
    third = await claim(store, "r.t", "g", "m1", ack_timeout_ms=500, now=T0 + 2_000)
    assert [d.attempt for d in third] == [3, 3]


async def test_redelivery_comes_before_new_events_and_counts_toward_the_limit(store: Store) -> None:
    old = await store.publish_batch([ev("o.t", i) for i in range(2)])
    await store.ensure_group("o.t", "g", EARLIEST)
    await claim(store, "o.t", "g", ack_timeout_ms=100)
    new = await store.publish_batch([ev("o.t", i) for i in range(2, 5)])
    got = await claim(store, "o.t", "g", ack_timeout_ms=100, limit=3, now=T0 + 100)
    assert seqs_of(got) == [old[0].seq, old[1].seq, new[0].seq]
    assert [d.attempt for d in got] == [2, 2, 1]


async def test_nack_with_delay(store: Store) -> None:
    result = await store.publish(ev("n.t", "x"))
    await store.ensure_group("n.t", "g", EARLIEST)
    [d] = await claim(store, "n.t", "g", ack_timeout_ms=60_000)
    assert await store.nack("n.t", "g", d.event.id, max_deliver=5, delay_ms=2_000, now=T0 + 10)
    assert await store.next_deadline("n.t", "g") == T0 + 2_010
    assert await claim(store, "n.t", "g", now=T0 + 2_009) == []
    [again] = await claim(store, "n.t", "g", now=T0 + 2_010)
    assert again.event.seq == result.seq and again.attempt == 2
    assert await store.nack("n.t", "g", "no-such-event", max_deliver=5, now=T0) is False


async def test_nack_default_backoff_doubles_per_attempt(store: Store) -> None:
    await store.publish(ev("b.t", "x"))
    await store.ensure_group("b.t", "g", EARLIEST)
    now = T0
    for attempt in range(1, 5):
        [d] = await claim(store, "b.t", "g", now=now)
        assert d.attempt == attempt
        assert await store.nack("b.t", "g", d.event.id, max_deliver=10, now=now)
        due = now + nack_backoff_ms(attempt)
        assert nack_backoff_ms(attempt) == 500 * 2 ** (attempt - 1)
        assert await store.next_deadline("b.t", "g") == due
        assert await claim(store, "b.t", "g", now=due - 1) == []
        now = due


async def test_nack_zero_delay_is_deliverable_at_once_to_any_member(store: Store) -> None:
    await store.publish(ev("z.t", "x"))
    await store.ensure_group("z.t", "g", EARLIEST)
    [d] = await claim(store, "z.t", "g", "m1")
    assert await store.nack("z.t", "g", d.event.id, max_deliver=5, delay_ms=0, now=T0)
    [again] = await claim(store, "z.t", "g", "m2", now=T0)
    assert again.event.id == d.event.id and again.attempt == 2


async def test_dead_letter_after_max_deliver_timeouts(store: Store) -> None:
    original = await store.publish(
        ev("pay.charge", {"amount": 5}, id="charge-1", key="cust-1", headers={"trace": "t1"})
    )
    ok = await store.publish(ev("pay.charge", {"amount": 6}))
    await store.ensure_group("pay.*", "billing", EARLIEST)
    d = await claim(store, "pay.*", "billing", ack_timeout_ms=100, max_deliver=2)
    await store.ack("pay.*", "billing", [ok.id])
    assert ids_of(d) == ["charge-1", ok.id]
    [second] = await claim(store, "pay.*", "billing", ack_timeout_ms=100, max_deliver=2, now=T0 + 100)
    assert second.attempt == 2
    # Attempts exhausted: dead-lettered instead of delivered, and acked for the group.
    assert await claim(store, "pay.*", "billing", ack_timeout_ms=100, max_deliver=2, now=T0 + 200) == []
    [dead] = await store.scan("dlq.**")
    assert dead.topic == "dlq.billing.pay.charge"
    assert dead.payload == {"amount": 5} and dead.key == "cust-1"
    assert dead.headers is not None
    assert dead.headers["trace"] == "t1"
    assert dead.headers["x-original-topic"] == "pay.charge"
    assert dead.headers["x-original-id"] == "charge-1"
    assert dead.headers["x-group"] == "billing"
    assert dead.headers["x-attempts"] == "2"
    assert dead.headers["x-reason"] == "ack timeout"
    assert dead.seq > ok.seq
    [info] = await store.groups()
    assert info.dead_letters == 1 and info.in_flight == 0
    cursor = await store.cursor("pay.*", "billing")
    assert cursor is not None and cursor.seq >= ok.seq and original.seq < ok.seq
    assert await store.next_deadline("pay.*", "billing") is None
    assert await claim(store, "pay.*", "billing", max_deliver=2, now=T0 + 10_000) == []


async def test_nack_at_max_deliver_dead_letters_now_with_the_reason(store: Store) -> None:
    await store.publish(ev("job.run", "work", id="job-1"))
    await store.ensure_group("job.*", "workers", EARLIEST)
    [d] = await claim(store, "job.*", "workers", max_deliver=1)
    assert await store.nack("job.*", "workers", "job-1", max_deliver=1, reason="bad input", now=T0)
    [dead] = await store.scan("dlq.workers.**")
    assert dead.topic == "dlq.workers.job.run" and dead.payload == "work"
    assert dead.headers is not None
    assert (dead.headers["x-reason"], dead.headers["x-attempts"]) == ("bad input", "1")
    assert (
        await store.claim("job.*", "workers", "m", limit=5, ack_timeout_ms=1, max_deliver=1, now=T0 + 1) == []
    )
    [info] = await store.groups()
    assert info.dead_letters == 1
    lag = await store.lag("job.*", "workers")
    assert lag is not None and lag.lag_count == 0 and lag.cursor.seq >= d.event.seq


async def test_nack_reason_is_kept_for_a_later_timeout_dead_letter(store: Store) -> None:
    await store.publish(ev("q.t", id="q-1"))
    await store.ensure_group("q.t", "g", EARLIEST)
    await claim(store, "q.t", "g", max_deliver=2)
    await store.nack("q.t", "g", "q-1", max_deliver=2, reason="downstream 503", delay_ms=0, now=T0)
    await claim(store, "q.t", "g", max_deliver=2, ack_timeout_ms=10, now=T0)
    await claim(store, "q.t", "g", max_deliver=2, ack_timeout_ms=10, now=T0 + 10)
    [dead] = await store.scan("dlq.g.q.t")
    assert dead.headers is not None and dead.headers["x-reason"] == "downstream 503"


async def test_dead_letters_are_events_other_groups_can_consume(store: Store) -> None:
    await store.ensure_group("dlq.**", "ops", EARLIEST)
    await store.publish(ev("m.t", "x", id="m-1"))
    await store.ensure_group("m.t", "g", EARLIEST)
    await claim(store, "m.t", "g", max_deliver=1, ack_timeout_ms=10)
    await claim(store, "m.t", "g", max_deliver=1, ack_timeout_ms=10, now=T0 + 10)
    [d] = await claim(store, "dlq.**", "ops")
    assert d.event.topic == "dlq.g.m.t" and d.event.caused_by == ["m-1"]


async def test_groups_sharing_a_name_on_different_patterns_dead_letter_separately(store: Store) -> None:
    await store.publish(ev("s.t", "x", id="s-1"))
    for pattern in ("s.t", "s.*"):
        await store.ensure_group(pattern, "same", EARLIEST)
        await claim(store, pattern, "same", max_deliver=1)
        assert await store.nack(pattern, "same", "s-1", max_deliver=1, reason=f"from {pattern}", now=T0)
    dead = await store.scan("dlq.same.s.t")
    assert sorted(e.headers["x-reason"] for e in dead if e.headers) == ["from s.*", "from s.t"]
    assert len({e.id for e in dead}) == 2


async def test_a_dead_letter_id_stays_within_the_event_id_limit(store: Store) -> None:
    long_id = "i" * MAX_EVENT_ID
    await store.publish(ev("l.t", id=long_id))
    await store.ensure_group("l.t", "g", EARLIEST)
    await claim(store, "l.t", "g", max_deliver=1)
    assert await store.nack("l.t", "g", long_id, max_deliver=1, now=T0)
    [dead] = await store.scan("dlq.g.l.t")
    assert 0 < len(dead.id) <= MAX_EVENT_ID and dead.id != long_id
    assert dead.headers is not None and dead.headers["x-original-id"] == long_id


async def test_release_makes_a_members_claims_deliverable_now(store: Store) -> None:
    results = await store.publish_batch([ev("rel.t", i) for i in range(4)])
    await store.ensure_group("rel.t", "g", EARLIEST)
    gone = await claim(store, "rel.t", "g", "gone", limit=2)
    stays = await claim(store, "rel.t", "g", "stays", limit=2)
    assert await store.release("rel.t", "g", "gone") == 2
    assert await store.release("rel.t", "g", "gone") == 0
    assert await store.release("rel.t", "g", "nobody") == 0
    again = await claim(store, "rel.t", "g", "other", now=T0 + 1)
    assert ids_of(again) == ids_of(gone) and [d.attempt for d in again] == [2, 2]
    assert seqs_of(again) == [results[0].seq, results[1].seq]
    assert ids_of(stays) == [results[2].id, results[3].id]
    assert await claim(store, "rel.t", "g", "other", now=T0 + 2) == []


async def test_extend_pushes_the_deadline(store: Store) -> None:
    await store.publish(ev("ext.t", id="e-1"))
    await store.ensure_group("ext.t", "g", EARLIEST)
    await claim(store, "ext.t", "g", ack_timeout_ms=1_000)
    assert await store.extend("ext.t", "g", "e-1", ack_timeout_ms=5_000, now=T0 + 900)
    assert await store.next_deadline("ext.t", "g") == T0 + 5_900
    assert await claim(store, "ext.t", "g", "m2", now=T0 + 1_000) == []
    [d] = await claim(store, "ext.t", "g", "m2", now=T0 + 5_900)
    assert d.attempt == 2
    await store.ack("ext.t", "g", ["e-1"])
    assert await store.extend("ext.t", "g", "e-1", ack_timeout_ms=5_000) is False
    assert await store.extend("ext.t", "g", "unknown", ack_timeout_ms=5_000) is False


async def test_next_deadline_is_the_earliest_pending_deadline(store: Store) -> None:
    await store.publish_batch([ev("nd.t", i) for i in range(3)])
    await store.ensure_group("nd.t", "g", EARLIEST)
    assert await store.next_deadline("nd.t", "g") is None
    await claim(store, "nd.t", "g", limit=1, ack_timeout_ms=5_000)
    await claim(store, "nd.t", "g", limit=1, ack_timeout_ms=2_000)
    d = await claim(store, "nd.t", "g", limit=1, ack_timeout_ms=9_000)
    assert await store.next_deadline("nd.t", "g") == T0 + 2_000
    await store.ack("nd.t", "g", ids_of(d))
    assert await store.next_deadline("nd.t", "g") == T0 + 2_000
