"""Publish/consume throughput and cross-node wake-up latency of outboxhub on PostgreSQL, in-process.

    .venv/bin/python bench/publish_pg.py [--url postgresql://...] [--events N] [--window W] [--json FILE]

Every scenario runs on a fresh schema of ``--url`` (default ``OUTBOXHUB_TEST_PG_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``), dropped afterwards:

1. confirmed batch-1: ``await bus.publish(e)`` one at a time (latency-bound: one commit per event);
2. pipelined: ``--window`` producers each awaiting its own confirmed publish; the store's writer
   group-commits whatever is queued (the target: at least 20,000 confirmed publishes/s);
3. ``publish_batch`` of 100, one batch at a time;
4. consume + ack: one group (1 member, then 4) reads the pipelined run's events and acks each;
5. cross-node: two stores (two "hub nodes") on one schema, a group member subscribed through a bus on
   node B, events published one at a time through a bus on node A; latency from the publish call on A to
   the delivery on B (p50/p99): commit + NOTIFY + claim.

``--repeat`` rounds (interleaved); the median round is reported. Prints a table and writes JSON (default
``bench/results/publish_pg.json``) with the load average before and after: numbers from a busy machine
(or a busy shared PostgreSQL) are not comparable. Not a test; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publish import (
    TOPIC,
    bench_batches,
    bench_serial,
    choose_runner,
    consume_and_ack,
    machine,
    median_rounds,
    pipelined,
    result,
    write_document,
)
from rich.console import Console
from rich.table import Table

from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, NewEvent
from outboxhub.store import open_store
from outboxhub.testing.postgres import DEFAULT_TEST_URL, drop_schema, schema_url

__all__ = ["PgBench", "main", "report_postgres", "run_postgres"]

# The events, the publish scenarios and the consumer are those of bench/publish.py (SQLite).
TARGETS = {"pipelined_per_s": 20_000}

console = Console(width=120)
_schemas = itertools.count()


async def with_buses(
    base: str, nodes: int, body: Callable[[list[Bus]], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run ``body`` with ``nodes`` buses, each over its own store on one fresh schema."""
    schema = f"bench_{os.getpid()}_{next(_schemas)}"
    url = schema_url(base, schema)
    stores = [await open_store(url) for _ in range(nodes)]
    buses = [Bus(store) for store in stores]
    try:
        for bus in buses:
            await bus.start()
        return await body(buses)
    finally:
        for bus in buses:
            await bus.close()
        for store in stores:
            await store.close()
        await drop_schema(base, schema)


async def bench_pipelined(bus: Bus, n: int, window: int) -> dict[str, Any]:
    started = time.perf_counter()
    await pipelined(bus, n, window)
    return result(f"confirmed publish, pipelined ({window} in flight)", n, time.perf_counter() - started)


async def bench_consume(bus: Bus, n: int, members: int) -> dict[str, Any]:
    seconds = await consume_and_ack(bus, "bench.**", f"consumers-{members}", n, members)
    label = "member" if members == 1 else "members"
    return result(f"consume + ack, 1 group, {members} {label}", n, seconds)


async def bench_cross_node(buses: list[Bus], n: int) -> dict[str, Any]:
    node_a, node_b = buses
    pattern, group = "bench.**", "cross"
    arrived: dict[str, float] = {}
    waiting: dict[str, asyncio.Future[None]] = {}
    acks: set[asyncio.Task[bool]] = set()

    def deliver(delivery: Delivery) -> bool:
        arrived[delivery.event.id] = time.perf_counter()
        future = waiting.pop(delivery.event.id, None)
        if future is not None and not future.done():
            future.set_result(None)
        task = asyncio.get_running_loop().create_task(node_b.ack(pattern, group, delivery.event.id))
        acks.add(task)
        task.add_done_callback(acks.discard)
        return True

    sub = await node_b.subscribe(pattern, group, deliver)
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for i in range(n):
        event = NewEvent(topic=TOPIC, payload={"order": i}, id=f"cross-{os.getpid()}-{i}")
        assert event.id is not None
        future: asyncio.Future[None] = loop.create_future()
        waiting[event.id] = future
        sent = time.perf_counter()
        await node_a.publish(event)
        await asyncio.wait_for(future, 10)
        latencies.append((arrived[event.id] - sent) * 1000)
    seconds = time.perf_counter() - started
    await sub.close()
    cuts = statistics.quantiles(latencies, n=100)
    return result(
        "cross-node: publish on A → delivered on B",
        n,
        seconds,
        p50_ms=round(statistics.median(latencies), 3),
        p99_ms=round(cuts[98], 3),
    )


async def one_round(settings: PgBench, k: int) -> dict[str, dict[str, Any]]:
    n, url = settings.events, settings.url
    shared: dict[str, dict[str, Any]] = {}

    async def pipelined_then_consume(buses: list[Bus]) -> dict[str, Any]:
        # The consumers read the pipelined run's events, on the same schema.
        pipelined = await bench_pipelined(buses[0], n, settings.window)
        shared["consume"] = await bench_consume(buses[0], n, 1)
        shared["consume4"] = await bench_consume(buses[0], n, 4)
        return pipelined

    steps: list[tuple[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]]] = [
        ("batch1", lambda: with_buses(url, 1, lambda b: bench_serial(b[0], settings.serial_events))),
        ("pipelined", lambda: with_buses(url, 1, pipelined_then_consume)),
        ("batch100", lambda: with_buses(url, 1, lambda b: bench_batches(b[0], n, 100))),
        ("cross_node", lambda: with_buses(url, 2, lambda b: bench_cross_node(b, settings.cross_events))),
    ]
    results: dict[str, dict[str, Any]] = {}
    for key, step in steps:
        console.print(f"[dim]postgres round {k + 1}/{settings.repeat}: {key}…[/dim]")
        results[key] = await step()
        if key == "pipelined":
            results["consume"] = shared["consume"]
            results["consume4"] = shared["consume4"]
    return results


@dataclass(frozen=True, kw_only=True)
class PgBench:
    """Parameters of the PostgreSQL scenarios (``bench/publish.py --postgres URL`` runs them too)."""

    url: str
    events: int = 50_000
    serial_events: int = 2_000
    cross_events: int = 1_000
    window: int = 1_000
    repeat: int = 3


async def run_postgres(settings: PgBench) -> dict[str, dict[str, Any]]:
    """Every scenario ``repeat`` times (rounds interleaved); the median round per scenario."""
    return median_rounds([await one_round(settings, k) for k in range(settings.repeat)])


def report_postgres(results: dict[str, dict[str, Any]], loop_name: str) -> None:
    table = Table(title=f"outboxhub publish/consume on PostgreSQL ({loop_name}, {platform.python_version()})")
    for column in (
        "scenario",
        "events",
        "seconds",
        "events/s",
        "p50 / p99 ms",
        "rounds (events/s)",
        "target",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for key, row in results.items():
        target = ""
        if key == "pipelined":
            want = TARGETS["pipelined_per_s"]
            target = f"≥ {want:,}/s {'[green]met' if row['per_s'] >= want else '[red]missed'}"
        latency = f"{row['p50_ms']} / {row['p99_ms']}" if "p50_ms" in row else ""
        table.add_row(
            row["name"],
            f"{row['events']:,}",
            f"{row['seconds']:.2f}",
            f"{row['per_s']:,}",
            latency,
            " / ".join(f"{rate:,}" for rate in row.get("runs_per_s", [])),
            target,
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("OUTBOXHUB_TEST_PG_URL") or DEFAULT_TEST_URL)
    parser.add_argument("--events", type=int, default=50_000, help="events for pipelined, batch and consume")
    parser.add_argument("--serial-events", type=int, default=2_000, help="events for the batch-1 run")
    parser.add_argument("--cross-events", type=int, default=1_000, help="events for the cross-node run")
    parser.add_argument("--window", type=int, default=1_000, help="publishes in flight when pipelining")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per scenario; the median is reported")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "publish_pg.json")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    args = parser.parse_args()
    for name in ("events", "serial_events", "cross_events", "window", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.cross_events < 2:
        parser.error("--cross-events must be >= 2 (percentiles)")

    runner, loop_name = choose_runner(args.no_uvloop)
    load_before = os.getloadavg()
    settings = PgBench(
        url=args.url,
        events=args.events,
        serial_events=args.serial_events,
        cross_events=args.cross_events,
        window=args.window,
        repeat=args.repeat,
    )
    results = runner(run_postgres(settings))
    load_after = os.getloadavg()
    report_postgres(results, loop_name)
    console.print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    document = {
        "benchmark": "publish_pg",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(loop_name, load_before, load_after),
        "params": {
            "events": args.events,
            "serial_events": args.serial_events,
            "cross_events": args.cross_events,
            "window": args.window,
        },
        "targets": TARGETS,
        "results": results,
    }
    write_document(args.json, document)


if __name__ == "__main__":
    main()
