"""A group member that keeps going away while it holds an event, through the bus over a real SQLite store:
closing a member releases what it held, and each release of a delivered event has used up one attempt.

What the crashing members held is exactly what is dead-lettered after ``max_deliver`` rounds: with
``max_in_flight=1`` only the first event, and the next member carries on with the second; with the default
``max_in_flight`` every member held the whole backlog, so the whole backlog is dead-lettered (each copy in
``dlq.<group>.<topic>`` with ``x-attempts`` = ``max_deliver``) and the group is caught up. The second case
is what a real hub showed while the inbox of issue #18 was built (a SIGKILLed SDK consumer, 40 events): not
a stall, nothing lost. ``tests/contract/test_crash_loop.py`` checks the same at the store level on every
backend.
"""

from __future__ import annotations

import asyncio

from bus_support import store_and_bus
from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, PublishResult, StartPosition
from outboxhub.store.base import Store

WAIT_S = 30.0  # generous upper bound for anything that should happen "soon"; never a measured threshold
TOPIC, GROUP = "crash.inbox", "applier"
EVENTS, MAX_DELIVER = 10, 5


store, bus = store_and_bus()


def _options(max_in_flight: int | None) -> GroupOptions:
    extra = {} if max_in_flight is None else {"max_in_flight": max_in_flight}
    return GroupOptions(
        start=StartPosition(kind="earliest"), max_deliver=MAX_DELIVER, ack_timeout_ms=60_000, **extra
    )


async def _member_takes(bus: Bus, n: int, max_in_flight: int | None) -> list[Delivery]:
    """Subscribe a new member, wait for its first ``n`` deliveries, close it without settling any."""
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    sub = await bus.subscribe(
        TOPIC, GROUP, lambda d: queue.put_nowait(d) or True, options=_options(max_in_flight)
    )
    got = [await asyncio.wait_for(queue.get(), WAIT_S) for _ in range(n)]
    await sub.close()
    return got


async def _publish(bus: Bus, n: int) -> list[PublishResult]:
    return [await bus.publish(NewEvent(topic=TOPIC, payload={"n": i})) for i in range(n)]


async def _dead_letters(store: Store) -> int:
    [info] = [g for g in await store.groups() if g.group == GROUP]
    return info.dead_letters


async def test_a_member_holding_one_event_at_a_time_loses_only_that_event(bus: Bus, store: Store) -> None:
    published = await _publish(bus, EVENTS)
    for attempt in range(1, MAX_DELIVER + 1):
        [d] = await _member_takes(bus, 1, max_in_flight=1)
        assert (d.event.id, d.attempt) == (published[0].id, attempt)
    # The next member's claim dead-letters the first event and hands out the second.
    [d] = await _member_takes(bus, 1, max_in_flight=1)
    assert (d.event.id, d.attempt) == (published[1].id, 1)
    [dead] = await store.scan(f"dlq.{GROUP}.{TOPIC}")
    assert dead.headers is not None and dead.headers["x-original-id"] == published[0].id
    assert dead.headers["x-attempts"] == str(MAX_DELIVER)
    assert await _dead_letters(store) == 1
    lag = await store.lag(TOPIC, GROUP)
    assert lag is not None and lag.lag_count == EVENTS - 1


async def test_a_member_holding_the_backlog_dead_letters_all_it_held(bus: Bus, store: Store) -> None:
    published = await _publish(bus, EVENTS)
    for attempt in range(1, MAX_DELIVER + 1):
        got = await _member_takes(bus, EVENTS, max_in_flight=None)  # the default max_in_flight: all of them
        assert [(d.event.id, d.attempt) for d in got] == [(r.id, attempt) for r in published]
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    await bus.subscribe(TOPIC, GROUP, lambda d: queue.put_nowait(d) or True, options=_options(None))
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while await _dead_letters(store) < EVENTS:
        assert asyncio.get_running_loop().time() < deadline, "the sixth member's claim dead-letters them"
        await asyncio.sleep(0.01)
    dead = await store.scan(f"dlq.{GROUP}.{TOPIC}")
    assert [e.headers["x-original-id"] for e in dead if e.headers] == [r.id for r in published]
    assert {e.headers["x-attempts"] for e in dead if e.headers} == {str(MAX_DELIVER)}
    lag = await store.lag(TOPIC, GROUP)
    assert lag is not None and lag.lag_count == 0 and lag.tail_seq == published[-1].seq
    # Not stalled: the next event is the sixth member's first delivery.
    later = await bus.publish(NewEvent(topic=TOPIC, payload={"n": EVENTS}))
    d = await asyncio.wait_for(queue.get(), WAIT_S)
    assert (d.event.id, d.attempt) == (later.id, 1)
