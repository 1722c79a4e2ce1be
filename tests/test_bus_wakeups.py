"""Idle groups do not amplify other tenants' publishes (issue #14 item 2): a commit wakes only the members
of groups whose pattern matches a committed topic. Counts store calls, never wall-clock time."""

from __future__ import annotations

import asyncio

from outboxhub.app import Hub
from outboxhub.bus.interest import BusStats, TopicInterest
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition

_IDLE_GROUPS = 300
_PUBLISHES = 40


async def test_idle_groups_on_other_topics_cost_a_victims_publish_nothing(hub: Hub) -> None:
    bus = hub.bus
    for n in range(_IDLE_GROUPS):
        await bus.subscribe("idle.**", f"idle{n}", lambda _d: True)
    got: asyncio.Queue[Delivery] = asyncio.Queue()
    victim = await bus.subscribe(
        "victim.*",
        "victim",
        lambda d: got.put_nowait(d) or True,
        options=GroupOptions(start=StartPosition(kind="latest")),
    )
    await asyncio.sleep(0.2)  # let every member run its first claim and go to sleep
    before = (bus.stats.claims, bus.stats.deadline_checks, bus.stats.commit_wakeups)
    for n in range(_PUBLISHES):
        await bus.publish(NewEvent(topic="victim.orders", payload=n))
        delivery = await asyncio.wait_for(got.get(), 10)
        assert delivery.event.payload == n
        assert await bus.ack("victim.*", "victim", delivery.event.id)
    claims = bus.stats.claims - before[0]
    checks = bus.stats.deadline_checks - before[1]
    wakeups = bus.stats.commit_wakeups - before[2]
    # Only the victim's member is woken by its commits; a poll-interval wake-up of an idle member may
    # land meanwhile (at most one per member per second), far below one per idle group per publish.
    assert wakeups == _PUBLISHES
    assert claims < 4 * _PUBLISHES + _IDLE_GROUPS, claims
    assert checks < 4 * _PUBLISHES + _IDLE_GROUPS, checks
    await victim.close()


async def test_an_idle_group_is_still_woken_by_a_commit_on_its_own_topics(hub: Hub) -> None:
    got: asyncio.Queue[Delivery] = asyncio.Queue()
    await hub.bus.subscribe("idle.**", "watcher", lambda d: got.put_nowait(d) or True)
    await hub.bus.subscribe("victim.*", "victim", lambda _d: True)
    await asyncio.sleep(0.05)
    await hub.bus.publish(NewEvent(topic="idle.a.b", payload=1))
    assert (await asyncio.wait_for(got.get(), 5)).event.topic == "idle.a.b"


def test_topic_interest_caches_per_topic_and_forgets_when_groups_change() -> None:
    stats = BusStats()
    groups = {("a.*", "g1"): 1, ("b.**", "g2"): 2, ("**", "g3"): 3}
    interest = TopicInterest(groups.keys, lambda key: key[0], stats=stats, max_topics=2)
    assert set(interest.groups_for("a.x")) == {("a.*", "g1"), ("**", "g3")}
    assert stats.pattern_matches == 3
    interest.groups_for("a.x")
    assert stats.pattern_matches == 3  # cached
    interest.groups_for("b.x.y")
    interest.groups_for("c")  # evicts a.x (max_topics=2)
    assert len(interest) == 2
    groups[("c", "g4")] = 4
    interest.invalidate()
    assert ("c", "g4") in interest.groups_for("c")
