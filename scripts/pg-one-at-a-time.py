"""One event at a time through a waiting consumer-group member on PostgreSQL, in process (no WebSocket):
publish, wait for the delivery, ack, 0.5 ms pause; N events per round, 4 rounds, the first a warm-up.

Prints the process's CPU and wall time per event (median of the 3 measured rounds), the bus's own claims
per event (``BusStats.claims``) and, when the store has them, its parked-claim counts. Uses a throwaway
schema in OUTBOXHUB_TEST_PG_URL's database (``outboxhub.testing.postgres``).

Usage: PYTHONPATH=src python scripts/pg-one-at-a-time.py [N]   (N: events per round, default 300)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import uvloop

from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.testing.postgres import throwaway_schema


async def main(n: int) -> None:
    async with throwaway_schema("onebyone") as url:
        store = await open_store(url)
        bus = Bus(store, poll_interval_s=120)
        await bus.start()
        got: asyncio.Queue[Delivery] = asyncio.Queue()
        await bus.subscribe(
            "e2e.*",
            "g",
            lambda d: got.put_nowait(d) or True,
            options=GroupOptions(start=StartPosition(kind="earliest")),
        )
        await asyncio.sleep(0.2)
        cpu: list[float] = []
        wall: list[float] = []
        claims = 0
        for rnd in range(4):
            if rnd == 1:
                claims = bus.stats.claims
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(n):
                await bus.publish(NewEvent(topic="e2e.x", payload={"i": i}))
                delivery = await got.get()
                await bus.ack("e2e.*", "g", delivery.event.id)
                await asyncio.sleep(0.0005)
            if rnd:
                cpu.append((time.process_time() - c0) / n * 1e6)
                wall.append((time.perf_counter() - w0) / n * 1e6)
        claims = bus.stats.claims - claims
        parked = getattr(store, "parked_stats", None)
        await bus.close()
        await store.close()
    print(
        f"cpu/event {statistics.median(cpu):.0f} us {[round(x) for x in cpu]}"
        f"  wall/event {statistics.median(wall):.0f} us  claims/event {claims / (3 * n):.2f}  parked={parked}"
    )


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
