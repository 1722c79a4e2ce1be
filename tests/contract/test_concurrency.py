"""Contract: many concurrent publishers and claimers — every event is claimed exactly once per group."""

from __future__ import annotations

import asyncio
from collections import Counter

from outboxhub.model import Delivery
from outboxhub.store import Store

from . import EARLIEST, claim, ev

PUBLISHERS = 8
PER_PUBLISHER = 60
GROUPS = ("g1", "g2")
MEMBERS = 4


async def test_concurrent_publishers_and_claimers(store: Store) -> None:
    for group in GROUPS:
        await store.ensure_group("cc.**", group, EARLIEST)
    total = PUBLISHERS * PER_PUBLISHER
    published: list[str] = []
    claimed: dict[str, Counter[str]] = {group: Counter() for group in GROUPS}
    done = asyncio.Event()

    async def publisher(p: int) -> None:
        for i in range(0, PER_PUBLISHER, 3):
            if i % 2:
                batch = [ev(f"cc.p{p}.t{j % 3}", [p, j]) for j in range(i, i + 3)]
                results = await store.publish_batch(batch)
            else:
                results = list(
                    await asyncio.gather(*(store.publish(ev(f"cc.p{p}", [p, j])) for j in range(i, i + 3)))
                )
            published.extend(r.id for r in results)

    async def member(group: str, name: str) -> None:
        while not done.is_set():
            got: list[Delivery] = await claim(store, "cc.**", group, name, limit=7, now=None)
            claimed[group].update(d.event.id for d in got)
            if got:
                await store.ack("cc.**", group, [d.event.id for d in got])
            else:
                await asyncio.sleep(0.001)
            if all(sum(c.values()) >= total for c in claimed.values()):
                done.set()

    members = [asyncio.create_task(member(g, f"m{i}")) for g in GROUPS for i in range(MEMBERS)]
    await asyncio.gather(*(publisher(p) for p in range(PUBLISHERS)))
    async with asyncio.timeout(30):
        await done.wait()
    await asyncio.gather(*members)
    assert len(published) == len(set(published)) == total
    for group in GROUPS:
        assert set(claimed[group]) == set(published)
        assert max(claimed[group].values()) == 1, f"{group}: an event was claimed twice"
        lag = await store.lag("cc.**", group)
        assert lag is not None and lag.lag_count == 0
    assert await store.count("cc.**") == total
