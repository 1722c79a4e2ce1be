"""A group member whose parked claim was handed out in a commit's callback parks its next claim in that
same callback when that is all its task would do, so an event costs the member no task step; a delivery
deadline earlier than the sleeping wait's timeout brings that timer forward, as the task would set it. It
wakes its task instead when the task has something to decide, such as no room left (``max_in_flight``).
Real SQLite file, real bus; counts, never wall-clock time."""

from __future__ import annotations

from bus_support import bus_fixture
from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store.sqlite.store import SQLiteStore
from sqlite_support import QUIET, writer_settled
from waiting import until

EARLIEST = StartPosition(kind="earliest")

inline = bus_fixture(f"inline_claims=4&{QUIET}")


async def parked_member(bus: Bus, store: SQLiteStore, options: GroupOptions) -> list[Delivery]:
    """Subscribe one member of ``r.*::g`` that records its deliveries; return once its claim is parked."""
    got: list[Delivery] = []
    await bus.subscribe("r.*", "g", lambda d: got.append(d) or True, options=options)
    await writer_settled(store)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    return got


async def test_the_next_claim_is_parked_in_the_commit_that_handed_the_last_one_out(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = inline
    got = await parked_member(bus, store, GroupOptions(start=EARLIEST))
    claims = bus.stats.claims
    for n in range(5):
        await writer_settled(store)
        done = bus.publish_batch_soon([NewEvent(topic="r.x", payload=n)])
        assert done.done()  # committed inline, the member's claim with it
        # no await since the publish: the member has the event and its next claim is parked already
        assert [d.event.payload for d in got] == list(range(n + 1))
        assert store.parked_claims == 1
        assert await bus.ack("r.*", "g", got[-1].event.id, seq=got[-1].event.seq)
    assert bus.stats.claims == claims  # every event came through a parked claim, none through a claim
    assert bus.stats.reparks == 5


async def test_a_member_without_room_waits_for_its_ack_before_it_parks_again(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = inline
    got = await parked_member(bus, store, GroupOptions(start=EARLIEST, max_in_flight=1))
    done = bus.publish_batch_soon([NewEvent(topic="r.x", payload=1)])
    assert done.done() and len(got) == 1
    assert store.parked_claims == 0  # full: nothing parked in the callback
    await bus.publish(NewEvent(topic="r.x", payload=2))
    await writer_settled(store)
    assert store.parked_claims == 0 and len(got) == 1  # max_in_flight holds
    assert await bus.ack("r.*", "g", got[0].event.id, seq=got[0].event.seq)
    await until(lambda: len(got) == 2, "the second event once the first is acked")
    assert got[1].event.payload == 2


async def test_a_deadline_earlier_than_the_wait_wakes_the_task_and_the_event_is_redelivered(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    # The member sleeps on the bus's long safety poll; the delivery's ack timeout is far shorter: renewing
    # the claim in the callback must bring the wait's timer forward to the redelivery deadline.
    bus, store = inline
    got = await parked_member(bus, store, GroupOptions(start=EARLIEST, ack_timeout_ms=200))
    done = bus.publish_batch_soon([NewEvent(topic="r.x", payload=1)])
    assert done.done() and [d.attempt for d in got] == [1]
    # no publish after this one: only the member's own timer can bring the redelivery
    await until(lambda: len(got) == 2, "the redelivery after the ack timeout")
    assert got[1].event.id == got[0].event.id and got[1].attempt == 2
