"""Many publishers, groups and members at once over a real SQLite store: every event is acked exactly once
per group, per-key order holds, and nothing is left behind."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from outboxhub.bus.core import Bus, Subscription
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import Store
from waiting import until as wait_until

WAIT_S = 60.0  # generous upper bound; never a measured threshold
PATTERN = "shop.**"
KEYS = 8


class Member:
    """A subscribed member with a worker that acks (or, at random, nacks) what it receives."""

    def __init__(
        self, bus: Bus, group: str, rng: random.Random, ledger: Ledger, capacity: int | None = None
    ) -> None:
        self.capacity = capacity  # refuse deliveries beyond this many queued (the bus then pauses us)
        self.bus = bus
        self.group = group
        self.rng = rng
        self.ledger = ledger
        self.queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self.sub: Subscription | None = None
        self.worker: asyncio.Task[None] | None = None

    def deliver(self, delivery: Delivery) -> bool:
        if self.capacity is not None and self.queue.qsize() >= self.capacity:
            return False
        self.ledger.delivered[self.group] += 1
        self.queue.put_nowait(delivery)
        return True

    async def start(self, options: GroupOptions) -> None:
        self.sub = await self.bus.subscribe(PATTERN, self.group, self.deliver, options=options)
        self.worker = asyncio.create_task(self._work())

    async def _work(self) -> None:
        while (delivery := await self.queue.get()) is not None:
            await self._settle(delivery)
            if self.queue.empty() and self.sub is not None and self.sub.paused:
                self.sub.resume()  # drained: take deliveries again

    async def _settle(self, delivery: Delivery) -> None:
        event = delivery.event
        if self.rng.random() < 0.1 and delivery.attempt < 3:
            await self.bus.nack(
                PATTERN, self.group, event.id, reason="random", delay_ms=self.rng.choice([0, 5, 20])
            )
            self.ledger.nacks[self.group] += 1
            return
        if self.rng.random() < 0.3:
            await asyncio.sleep(0)  # let other members interleave
        if await self.bus.ack(PATTERN, self.group, event.id):
            self.ledger.record(self.group, event.id, event.key, event.seq)

    async def stop(self) -> None:
        """Disconnect: finish the delivery in hand, drop what is queued (as a client that went away would),
        then close the subscription."""
        assert self.worker is not None and self.sub is not None
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        await self.worker
        await self.sub.close()

    async def halt(self) -> None:
        if self.worker is not None and not self.worker.done():
            self.queue.put_nowait(None)
            await self.worker


class Ledger:
    def __init__(self) -> None:
        self.acks: dict[str, Counter[str]] = defaultdict(Counter)
        self.key_order: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        self.delivered: Counter[str] = Counter()
        self.nacks: Counter[str] = Counter()

    def record(self, group: str, event_id: str, key: str | None, seq: int) -> None:
        self.acks[group][event_id] += 1
        self.key_order[(group, key)].append(seq)


async def publisher(bus: Bus, index: int, count: int, *, batch: int) -> list[str]:
    ids: list[str] = []
    events = [
        NewEvent(topic=f"shop.{('cart', 'order', 'refund')[n % 3]}", key=f"k{(index + n) % KEYS}", payload=n)
        for n in range(count)
    ]
    for start in range(0, count, batch):
        chunk = events[start : start + batch]
        if batch == 1:
            ids.append((await bus.publish(chunk[0])).id)
        else:
            ids.extend(r.id for r in await bus.publish_batch(chunk))
        await asyncio.sleep(0)
    return ids


async def until(predicate: Callable[[], bool], what: str) -> None:
    await wait_until(predicate, what, timeout_s=WAIT_S, interval_s=0.02)


async def check_settled(store: Store, ledger: Ledger, groups: list[str], published: list[str]) -> None:
    for group in groups:
        assert set(ledger.acks[group]) == set(published), group
        assert all(n == 1 for n in ledger.acks[group].values()), f"{group}: an event was acked twice"
        lag = await store.lag(PATTERN, group)
        assert lag is not None and lag.lag_count == 0, (group, lag)
    assert await store.count("dlq.**") == 0


async def test_publishers_and_competing_members_settle_every_event_once_per_group(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/hub.db")
    rng = random.Random(20240611)
    ledger = Ledger()
    earliest = StartPosition(kind="earliest")
    group_options = {
        "plain": GroupOptions(start=earliest),
        "ordered": GroupOptions(start=earliest, ordered_by_key=True),
        "narrow": GroupOptions(start=earliest, max_in_flight=2),
    }
    try:
        async with Bus(store, claim_batch=64, poll_interval_s=2 * WAIT_S) as bus:  # no polling
            # Some members have a small send queue: they refuse, get paused, and resume once drained.
            members = {
                group: [Member(bus, group, rng, ledger, capacity) for capacity in (None, 4, 2)]
                for group in group_options
            }
            for group, options in group_options.items():
                for member in members[group]:
                    await member.start(options)

            per_publisher = 150
            results = await asyncio.gather(
                *(publisher(bus, i, per_publisher, batch=(1, 10, 1, 25)[i]) for i in range(4))
            )
            published = [event_id for ids in results for event_id in ids]
            assert len(set(published)) == 4 * per_publisher

            # Churn: one member of "plain" disconnects midway and a new one joins.
            await until(lambda: len(ledger.acks["plain"]) >= len(published) // 2, "half of plain is acked")
            await members["plain"][0].stop()
            newcomer = Member(bus, "plain", rng, ledger)
            await newcomer.start(group_options["plain"])
            members["plain"][0] = newcomer

            await until(
                lambda: all(len(ledger.acks[g]) == len(published) for g in group_options),
                "every group has acked every event",
            )
            await check_settled(store, ledger, list(group_options), published)
            for (group, key), seqs in ledger.key_order.items():
                if group == "ordered":
                    assert seqs == sorted(seqs), f"key {key} acked out of order in group 'ordered'"
            assert sum(ledger.nacks.values()) > 0  # the random NACKs did happen
            assert bus.members() == {(PATTERN, g): 3 for g in group_options}
            for group_members in members.values():
                for member in group_members:
                    await member.halt()
    finally:
        await store.close()


async def test_two_hubs_on_one_database_share_groups(tmp_path: Path) -> None:
    """Two stores on one SQLite file stand for two hub processes: claims stay atomic across them and the
    poll interval carries what commit notifications cannot."""
    url = f"sqlite:///{tmp_path}/hub.db"
    stores = [await open_store(url), await open_store(url)]
    rng = random.Random(7)
    ledger = Ledger()
    options = GroupOptions(start=StartPosition(kind="earliest"), max_in_flight=16)
    buses = [Bus(s, claim_batch=32, poll_interval_s=0.1) for s in stores]
    members: list[Member] = []
    try:
        for bus in buses:
            await bus.start()
            for group in ("a", "b"):
                for _ in range(2):
                    member = Member(bus, group, rng, ledger)
                    await member.start(options)
                    members.append(member)
        results = await asyncio.gather(
            publisher(buses[0], 0, 100, batch=1), publisher(buses[1], 1, 100, batch=20)
        )
        published = [event_id for ids in results for event_id in ids]
        await until(lambda: all(len(ledger.acks[g]) == len(published) for g in "ab"), "both groups settle")
        await check_settled(stores[0], ledger, ["a", "b"], published)
    finally:
        for member in members:
            await member.halt()
        for bus in buses:
            await bus.close()
        for s in stores:
            await s.close()


class LiveReader:
    """A live subscriber that records seqs; a slow one refuses beyond ``capacity`` queued events and
    resumes its subscription once it has drained them."""

    def __init__(self, capacity: int | None, rng: random.Random) -> None:
        self.capacity = capacity
        self.rng = rng
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.seqs: list[int] = []
        self.sub: Subscription | None = None

    def deliver(self, delivery: Delivery) -> bool:
        if self.capacity is not None and self.queue.qsize() >= self.capacity:
            return False
        self.queue.put_nowait(delivery)
        return True

    async def drain(self) -> None:
        while True:
            delivery = await self.queue.get()
            self.seqs.append(delivery.event.seq)
            if self.capacity is not None and self.rng.random() < 0.2:
                await asyncio.sleep(0.001)
            if self.queue.empty() and self.sub is not None and self.sub.paused:
                self.sub.resume()


def reached(reader: LiveReader, last_seq: int) -> bool:
    return bool(reader.seqs) and reader.seqs[-1] == last_seq


async def test_live_subscribers_fast_and_slow_see_a_gapless_ordered_suffix(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/hub.db")
    rng = random.Random(99)
    published: list[tuple[int, str, int]] = []  # (seq, topic, readers subscribed when its publish began)
    readers: list[tuple[str, LiveReader, int]] = []  # (pattern, reader, index into published at subscribe)
    drains: list[asyncio.Task[None]] = []
    subscribed_count = 0

    patterns = [("live.**", None), ("live.a", 3), ("**", 5), ("live.*.c", None), ("**", 2)]

    async def publish_some(bus: Bus, index: int) -> None:
        """At least 200 events, and on until every reader has subscribed (so each one sees a stream)."""
        topics = ("live.a", "live.b.c", "other")
        n = 0
        while n < 200 or subscribed_count < len(patterns):
            began = subscribed_count
            result = await bus.publish(NewEvent(topic=topics[(index + n) % 3], payload=n))
            published.append((result.seq, topics[(index + n) % 3], began))
            n += 1
            await asyncio.sleep(0)

    async def subscribe_over_time(bus: Bus) -> None:
        nonlocal subscribed_count
        for pattern, capacity in patterns:
            await asyncio.sleep(0.02)
            reader = LiveReader(capacity, rng)
            before = len(published)
            reader.sub = await bus.subscribe(pattern, None, reader.deliver)
            subscribed_count += 1
            readers.append((pattern, reader, before))
            drains.append(asyncio.create_task(reader.drain()))

    try:
        async with Bus(store, claim_batch=16, poll_interval_s=2 * WAIT_S) as bus:  # no polling
            await asyncio.gather(subscribe_over_time(bus), *(publish_some(bus, i) for i in range(3)))
            # A last event on each topic, published after every reader subscribed: all must see some.
            for topic in ("live.a", "live.b.c", "other"):
                result = await bus.publish(NewEvent(topic=topic))
                published.append((result.seq, topic, len(patterns)))
            for position, (pattern, reader, before) in enumerate(readers):
                matching = [e.seq for e in await store.scan(pattern, limit=10_000)]
                await until(functools.partial(reached, reader, matching[-1]), f"{pattern} ends")
                seqs = reader.seqs
                assert seqs == sorted(set(seqs)), f"{pattern}: out of order or repeated"
                start = matching.index(seqs[0])
                assert seqs == matching[start:], f"{pattern}: gap"
                # Events whose publish returned before subscribe() was called are not delivered ...
                done_before = {seq for seq, _, _ in published[:before]}
                assert not done_before & set(seqs), pattern
                # ... and those whose publish began after it returned all are.
                must = {seq for seq, _, began in published if began > position} & set(matching)
                assert must <= set(seqs), pattern
    finally:
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        await store.close()
