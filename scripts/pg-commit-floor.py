"""The floor under a confirmed publish on PostgreSQL: round trips of bare psycopg statements, one at a time.

Cases (each a fresh connection in autocommit mode, ``N`` timed calls after 200 untimed, 3 rounds, the
order of the cases rotated per round; p50/p99 are the medians of the rounds' values):

* ``SELECT 1``: the network and driver round trip, nothing written;
* ``INSERT 1 row, synchronous_commit=off``: a write transaction without the WAL flush;
* ``INSERT 1 row`` (``synchronous_commit=on``): the floor of a durable one-row commit;
* ``publish_events, 1 event``: the store's publish function called directly (counter lock, topic and
  events rows), committed synchronously, on a connection set up as the store's (planner settings, the
  store's node: no NOTIFY, as in a lone hub);
* ``publish_events, 1 event, NOTIFY``: the same on a connection naming no node while the store's LISTEN
  connection is registered, so every call also NOTIFYs (what a hub pays when another node listens);
* ``store.publish`` (``PostgresStore``, in process): the function above through the store's group-commit
  writer and pool, what the hub's publish path costs without WebSocket and bus;
* ``store.publish + parked claim``: the same with a waiting member's claim parked first (``park_claim``),
  so the batch goes out as ``publish_claim``; timed until the claim's result is in (what a delivery to a
  waiting member costs the group commit). Its deliveries are never acked: the pending rows only grow by
  one per call, and an ACK would be a statement of its own inside the timed calls.

Uses a throwaway schema in OUTBOXHUB_TEST_PG_URL's database (``outboxhub.testing.postgres``); uvloop.

Usage: PYTHONPATH=src python scripts/pg-commit-floor.py [N]   (N: timed calls per case and round, 2000)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import uvloop

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.postgres.conn import configure_connection, parse_url
from outboxhub.store.postgres.registry import NODE_SETTING
from outboxhub.store.postgres.schema import channel_name
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import throwaway_schema

Call = Callable[[], Awaitable[object]]


async def _time(call: Call, n: int) -> tuple[float, float]:
    for _ in range(200):
        await call()
    samples: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await call()
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


async def main(n: int) -> None:
    async with throwaway_schema("floor") as url:
        settings = parse_url(url)
        store = await open_store(url)
        assert isinstance(store, PostgresStore)
        await store.listener.connected.wait()  # its node is registered: a call without one NOTIFYs
        conns = [await psycopg.AsyncConnection.connect(settings.dsn, autocommit=True) for _ in range(5)]
        select, async_insert, insert, publish, notifying = conns
        for conn in conns:
            await conn.execute(f'SET search_path = "{settings.schema}"')
        for conn in (publish, notifying):
            await configure_connection(conn)
        await publish.execute("SELECT set_config(%s, %s, false)", (NODE_SETTING, store.node))
        await insert.execute("CREATE TABLE floor (id bigint GENERATED ALWAYS AS IDENTITY, payload text)")
        await async_insert.execute("SET synchronous_commit = off")
        channel = channel_name(settings.schema)
        payload = '{"t": 1, "m": 1, "p": "' + "x" * 60 + '"}'
        counter = iter(range(10**9))
        await store.ensure_group("floor.c", "floor", StartPosition())

        async def publish_claimed() -> None:
            claim = store.park_claim("floor.c", "floor", "m", limit=256, ack_timeout_ms=60_000, max_deliver=5)
            await store.publish(NewEvent(topic="floor.c", payload={"t": 1, "m": 1, "p": "x" * 60}))
            await claim.future

        async def publish_events(conn: psycopg.AsyncConnection[Any] = publish) -> None:
            i = next(counter)  # zero-padded: ids arrive in index order, as uuid7 ids do
            await conn.execute(
                "SELECT * FROM publish_events(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],"
                " %s::text[], %s)",
                ([f"floor-{i:012d}"], ["floor.t"], [0], [None], [payload], [None], channel),
            )

        cases: dict[str, Call] = {
            "SELECT 1": lambda: select.execute("SELECT 1"),
            "INSERT 1 row, synchronous_commit=off": lambda: async_insert.execute(
                "INSERT INTO floor (payload) VALUES (%s)", (payload,)
            ),
            "INSERT 1 row (synchronous_commit=on)": lambda: insert.execute(
                "INSERT INTO floor (payload) VALUES (%s)", (payload,)
            ),
            "publish_events, 1 event": publish_events,
            "publish_events, 1 event, NOTIFY": lambda: publish_events(notifying),
            "store.publish (group commit writer, pool)": lambda: store.publish(
                NewEvent(topic="floor.s", payload={"t": 1, "m": 1, "p": "x" * 60})
            ),
            "store.publish + parked claim (publish_claim)": publish_claimed,
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        names = list(cases)
        for rnd in range(3):
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                results[name].append(await _time(cases[name], n))
        for conn in conns:
            await conn.close()
        await store.close()
    print(f"{'case':<45} {'p50 µs':>8} {'p99 µs':>8}   rounds (p50/p99)")
    for name, rounds in results.items():
        p50 = statistics.median(r[0] for r in rounds)
        p99 = statistics.median(r[1] for r in rounds)
        each = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in rounds)
        print(f"{name:<45} {p50:8.0f} {p99:8.0f}   {each}")


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
