"""Contract: a consumer that keeps crashing while it holds an event.

Each round a new member claims, then goes away without settling: its claims come back either because the
member is released (it closed) or because the ack timeout passed (it vanished). After ``max_deliver`` rounds
the events it held are dead-lettered. Every event a member was handed counts an attempt, whether or not
its handler got to it: what dies is exactly what the crashing members held.

* One event at a time (``limit=1``, a member with ``max_in_flight=1``): only the poison event is
  dead-lettered; the others stay claimable, and the lag counts them.
* A member that held the whole backlog (the default ``max_in_flight`` is 1000): every event it held had
  ``max_deliver`` attempts, so all are dead-lettered, nothing is left to deliver, and the lag is 0 with the
  cursor past the dead letters' seqs. This is the "stall" seen on a real hub while building the inbox
  (issue #18): no event was lost, each is in ``dlq.<group>.<topic>`` with ``x-attempts`` = ``max_deliver``.

Time moves through the ``now=`` parameters, never by sleeping.
"""

from __future__ import annotations

from outboxhub.model import PublishResult
from outboxhub.store import Store

from . import EARLIEST, T0, claim, ev, seqs_of

TOPIC = "crash.inbox"
GROUP = "applier"
MAX_DELIVER = 5
ACK_TIMEOUT_MS = 5_000
EVENTS = 40


async def _crash_rounds(store: Store, limit: int) -> tuple[list[PublishResult], int]:
    """Publish ``EVENTS`` events, then ``MAX_DELIVER`` members each claim ``limit`` and go away unsettled
    (even rounds: released, as a member that closes; odd rounds: the ack timeout passes, as a member that
    vanished). Return the published events and the ``now`` after the last round."""
    published = await store.publish_batch([ev(TOPIC, {"n": n}) for n in range(EVENTS)])
    await store.ensure_group(TOPIC, GROUP, EARLIEST)
    now = T0
    for attempt in range(1, MAX_DELIVER + 1):
        member = f"m{attempt}"
        got = await claim(
            store,
            TOPIC,
            GROUP,
            member,
            limit=limit,
            ack_timeout_ms=ACK_TIMEOUT_MS,
            max_deliver=MAX_DELIVER,
            now=now,
        )
        assert seqs_of(got) == [r.seq for r in published[:limit]]
        assert {d.attempt for d in got} == {attempt}
        if attempt % 2:
            now += ACK_TIMEOUT_MS
        else:
            assert await store.release(TOPIC, GROUP, member) == len(got)
            now += 1
    return published, now


async def test_a_member_holding_one_event_at_a_time_dead_letters_only_that_event(store: Store) -> None:
    published, now = await _crash_rounds(store, limit=1)
    [next_one] = await claim(store, TOPIC, GROUP, "m6", limit=1, max_deliver=MAX_DELIVER, now=now)
    assert (next_one.event.seq, next_one.attempt) == (published[1].seq, 1)
    [dead] = await store.scan(f"dlq.{GROUP}.{TOPIC}")
    assert dead.headers is not None
    assert dead.headers["x-original-id"] == published[0].id
    assert dead.headers["x-attempts"] == str(MAX_DELIVER)
    [info] = [g for g in await store.groups() if g.group == GROUP]
    assert info.dead_letters == 1 and info.in_flight == 1
    lag = await store.lag(TOPIC, GROUP)
    assert lag is not None
    assert lag.tail_seq == published[-1].seq
    assert lag.lag_count == EVENTS - 1  # all but the dead-lettered one: none acked yet
    rest = await claim(store, TOPIC, GROUP, "m6", limit=100, max_deliver=MAX_DELIVER, now=now)
    assert seqs_of(rest) == [r.seq for r in published[2:]]


async def test_every_event_a_crashing_member_held_uses_up_its_attempts(store: Store) -> None:
    published, now = await _crash_rounds(store, limit=100)
    assert await claim(store, TOPIC, GROUP, "m6", limit=100, max_deliver=MAX_DELIVER, now=now) == []
    dead = await store.scan(f"dlq.{GROUP}.{TOPIC}")
    assert [e.headers["x-original-id"] for e in dead if e.headers] == [r.id for r in published]
    assert {e.headers["x-attempts"] for e in dead if e.headers} == {str(MAX_DELIVER)}
    assert {e.headers["x-reason"] for e in dead if e.headers} == {"ack timeout"}
    assert min(e.seq for e in dead) > published[-1].seq
    [info] = [g for g in await store.groups() if g.group == GROUP]
    assert info.dead_letters == EVENTS and info.in_flight == 0
    lag = await store.lag(TOPIC, GROUP)
    assert lag is not None
    assert lag.tail_seq == published[-1].seq and lag.tail_id == published[-1].id
    assert lag.lag_count == 0
    # Every matching event at or below the cursor is settled; the cursor may stand past the dead letters.
    assert lag.cursor.seq >= published[-1].seq and lag.cursor.last_id == published[-1].id
    # A new event after the dead letters is delivered as usual.
    later = await store.publish(ev(TOPIC, {"n": EVENTS}))
    [d] = await claim(store, TOPIC, GROUP, "m6", max_deliver=MAX_DELIVER, now=now)
    assert (d.event.id, d.attempt) == (later.id, 1)
