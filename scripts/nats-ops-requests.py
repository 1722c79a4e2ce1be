"""JetStream API requests of the ops endpoints on the JetStream store, for N groups (docs/benchmarks.md,
"Eleventh round: NATS ops overview requests").

Usage: PYTHONPATH=TREE/src python scripts/nats-ops-requests.py [NATS_URL] [N ...]

For each N, a throwaway stream where another hub made N groups and consumed half of their events (two of
four: each group has a lag and an event at its ack floor), in three layouts: every group on one pattern
(``t.*``), each group on its own pattern (``t<i>.*``), and the same with every group caught up. A fresh
store then answers, and the requests its connection sends are counted by kind (and the call timed, ``ms``:
wall clock, as loud as the machine):

* ``overview``: ``/groups``, ``/metrics`` and the dashboard's series sample (``ops.api._groups_with_lag``,
  the endpoints' own code);
* ``cursors``: ``/cursors?topic=t.*`` (``groups()`` and the cursor of each group on that pattern);
* ``overview again``: the same overview a second time (what each dashboard refresh costs).

Prints one JSON line per (layout, N, endpoint).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from types import SimpleNamespace
from typing import Any

import nats

from outboxhub.model import NewEvent, StartPosition
from outboxhub.ops import api
from outboxhub.store import open_store
from outboxhub.store.base import EventRef, Store

EARLIEST = StartPosition(kind="earliest")


def counted(store: Store) -> Counter[str]:
    nc = store._conn.nc  # type: ignore[attr-defined]
    request = nc.request
    seen: Counter[str] = Counter()

    async def count(subject: str, *args: Any, **kw: Any) -> Any:
        if subject.startswith("$JS.API."):
            seen[".".join(subject.split(".")[2:4])] += 1
        return await request(subject, *args, **kw)

    nc.request = count
    return seen


async def prepare(url: str, patterns: list[str], take: int) -> None:
    other = await open_store(url)
    try:
        for i, pattern in enumerate(patterns):
            await other.ensure_group(pattern, f"g{i}", EARLIEST)
        topics = sorted({p.replace("*", "a") for p in patterns})
        await other.publish_batch([NewEvent(topic=t, payload=n) for t in topics for n in range(4)])
        for i, pattern in enumerate(patterns):
            held = await other.claim(pattern, f"g{i}", "m1", limit=take, ack_timeout_ms=30_000, max_deliver=5)
            refs = [EventRef(d.event.id, d.event.seq) for d in held]
            assert await other.ack(pattern, f"g{i}", refs) == take
    finally:
        await other.close()


async def cursors(store: Store, topic: str) -> object:
    if hasattr(api, "_cursors_of"):
        return await api._cursors_of(store, topic)
    names = [g.group for g in await store.groups() if g.pattern == topic]
    return await asyncio.gather(*(store.cursor(topic, name) for name in names))


async def measure(server: str, layout: str, n: int) -> None:
    stream = "OPS" + uuid.uuid4().hex[:12]
    url = f"{server}?stream={stream}"
    patterns = ["t.*"] * n if layout == "one pattern" else [f"t{i}.*" for i in range(n)]
    take = 4 if layout.endswith("caught up") else 2
    nc = await nats.connect(server)
    try:
        await prepare(url, patterns, take)
        store = await open_store(url)
        try:
            ctx = SimpleNamespace(hub=SimpleNamespace(store=store, bus=SimpleNamespace(members=dict)))
            for name, run in (
                ("overview", lambda: api._groups_with_lag(ctx)),  # type: ignore[arg-type]
                ("overview again", lambda: api._groups_with_lag(ctx)),  # type: ignore[arg-type]
                ("cursors t.*", lambda: cursors(store, "t.*")),
            ):
                seen = counted(store)
                began = time.perf_counter()
                await run()
                ms = round((time.perf_counter() - began) * 1000, 1)
                store._conn.nc.request = type(store._conn.nc).request.__get__(store._conn.nc)  # type: ignore[attr-defined]
                print(
                    json.dumps(
                        {"layout": layout, "groups": n, "endpoint": name, "ms": ms, "total": seen.total()}
                        | seen
                    )
                )
        finally:
            await store.close()
    finally:
        await nc.jetstream().delete_stream(stream)
        await nc.close()


async def main(argv: list[str]) -> None:
    server = argv[0] if argv and argv[0].startswith("nats://") else "nats://127.0.0.1:4222"
    sizes = [int(a) for a in argv if a.isdigit()] or [1, 10, 100]
    for layout in ("one pattern", "own pattern", "own pattern, caught up"):
        for n in sizes:
            await measure(server, layout, n)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
