"""Idle groups do not amplify other tenants' publishes on PostgreSQL and MongoDB either (issue #14 item 2):
the stores report the topics of a commit, so the bus wakes only the groups whose pattern matches one.

* PostgreSQL: the local writer knows its topics, and ``publish_events`` names them in the NOTIFY payload,
  so a commit by another hub process (another store object here) is attributed too;
* MongoDB: the local writer's topics are reported when its allocations cover the new horizon; another
  process's commits still wake every group (the counter's change stream does not carry topics).

Counts wake-ups (``Bus.stats``), never wall-clock time. Fails before the fix: every commit woke all 101
members.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.bus import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import Store, open_store
from outboxhub.store.postgres.listen import parse_payload

_IDLE_GROUPS = 100
"""Enough that one wake-up per idle group (30 × 101) is far past the bound (3 per publish); 300 took up to
112 s on the MongoDB stand-in on a loaded machine."""
_PUBLISHES = 30


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mongo", marks=pytest.mark.mongo),
    ]
)
async def store_url(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    if request.param == "postgres":
        from outboxhub.testing.postgres import throwaway_schema

        async with throwaway_schema("wake") as url:
            yield "postgres", url
    else:
        request.getfixturevalue("mongo_server")
        from outboxhub.testing.mongo import mongo_database

        async with mongo_database(prefix="wake") as url:
            yield "mongo", url


async def _idle_and_victim(bus: Bus) -> tuple[asyncio.Queue[Delivery], Any]:
    for n in range(_IDLE_GROUPS):
        await bus.subscribe("idle.**", f"idle{n}", lambda _d: True)
    got: asyncio.Queue[Delivery] = asyncio.Queue()
    victim = await bus.subscribe(
        "victim.*",
        "victim",
        lambda d: got.put_nowait(d) or True,
        options=GroupOptions(start=StartPosition(kind="latest")),
    )
    await asyncio.sleep(0.3)  # let every member run its first claim and go to sleep
    return got, victim


async def _count_wakeups(bus: Bus, got: asyncio.Queue[Delivery], publish: Any) -> int:
    before = bus.stats.commit_wakeups
    for n in range(_PUBLISHES):
        await publish(NewEvent(topic="victim.orders", payload=n))
        delivery = await asyncio.wait_for(got.get(), 10)
        assert delivery.event.payload == n
        assert await bus.ack("victim.*", "victim", delivery.event.id, seq=delivery.event.seq)
    return bus.stats.commit_wakeups - before


async def test_local_commits_wake_only_matching_groups(store_url: tuple[str, str], hub_factory: Any) -> None:
    _, url = store_url
    hub: Hub = await hub_factory(store=url)
    got, victim = await _idle_and_victim(hub.bus)
    wakeups = await _count_wakeups(hub.bus, got, hub.bus.publish)
    # each commit is heard locally and (PostgreSQL) again through NOTIFY, both naming victim.orders; a
    # poll that finds nothing new reports nothing; never one wake-up per idle group
    assert wakeups <= 3 * _PUBLISHES, wakeups
    await victim.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A throwaway schema, requested before ``hub_factory`` so that the hub closes before it is dropped."""
    from outboxhub.testing.postgres import throwaway_schema

    async with throwaway_schema("wake") as url:
        yield url


@pytest.mark.postgres
async def test_another_processs_commit_is_attributed_through_notify(pg_url: str, hub_factory: Any) -> None:
    hub: Hub = await hub_factory(store=pg_url)
    other: Store = await open_store(pg_url)
    try:
        got, victim = await _idle_and_victim(hub.bus)
        wakeups = await _count_wakeups(hub.bus, got, other.publish)
        assert wakeups <= 3 * _PUBLISHES, wakeups
        await victim.close()
    finally:
        await other.close()


@pytest.mark.postgres
async def test_a_poll_between_a_commit_and_its_announcement_names_the_topics(
    pg_url: str, hub_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind the flaky bound above: the listener's poll reads the counter after the writer's
    statement committed and before the writer announced it. Here every publish holds the writer in that
    gap until the poll has reported the new seq (no NOTIFY reaches a lone hub: only the poll can). The poll
    reported "topics unknown" and woke all 101 groups (3,030+ wake-ups); it now reads the topics of the
    unannounced events with the counter."""
    from outboxhub.store.postgres import events, parked
    from outboxhub.store.postgres.store import PostgresStore

    hub: Hub = await hub_factory(store=f"{pg_url}&poll_interval_s=0.05")
    store = hub.store
    assert isinstance(store, PostgresStore)
    reported = asyncio.Event()
    last_reported = 0

    def on_commit(seq: int, _topics: frozenset[str] | None) -> None:
        nonlocal last_reported
        last_reported = max(last_reported, seq)
        reported.set()

    async def until_polled(top: int) -> None:
        while last_reported < top:
            reported.clear()
            await asyncio.wait_for(reported.wait(), 10)

    def committed_then_polled(statement: Any) -> Any:
        async def run(*args: Any) -> Any:
            out = await statement(*args)
            await until_polled(out[1])  # committed (its top seq), not yet announced: wait for the poll
            return out

        return run

    monkeypatch.setattr(events, "append_now", committed_then_polled(events.append_now))
    monkeypatch.setattr(parked, "publish_claim", committed_then_polled(parked.publish_claim))
    store.add_topic_listener(on_commit)
    got, victim = await _idle_and_victim(hub.bus)
    wakeups = await _count_wakeups(hub.bus, got, hub.bus.publish)
    # the poll and then the writer each wake the victim's group: 2 per publish
    assert wakeups <= 3 * _PUBLISHES, wakeups
    await victim.close()


def test_a_notify_payload_names_the_topics_or_nothing() -> None:
    assert parse_payload("42") == (42, None)
    assert parse_payload("42\na.b\nc.d") == (42, frozenset({"a.b", "c.d"}))
    assert parse_payload("42\n") == (42, None)
    assert parse_payload("not a seq") is None
