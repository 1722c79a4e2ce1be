"""Publish and consume throughput of outboxhub on embedded SQLite, in-process, against a naive baseline.

    .venv/bin/python bench/publish.py [--events N] [--serial-events N] [--big N] [--repeat R] [--json FILE]
                                      [--postgres URL]

Scenarios (each on a fresh database in a temporary directory, or under ``--dir``):

1. naive: plain ``sqlite3``, WAL, ``synchronous=NORMAL`` (the store's default too), the same events-table
   shape, one transaction per event: the baseline a hand-rolled outbox starts from. The same with
   ``synchronous=FULL`` is shown for context (power-loss durable commits);
2. confirmed batch-1: ``await bus.publish(e)`` one at a time (each waits for its own commit);
3. pipelined: ``--window`` producers each awaiting its own confirmed publish, so that many publishes are
   in flight at all times; the store's single writer commits whatever is queued as one transaction;
4. ``publish_batch`` of 100, one batch at a time;
5. consume: one group (one member, then four), start=earliest over the pipelined run's events, every event
   acked through ``Bus.ack`` as soon as it arrives (one ack task per event, as the gateway does);
6. memory: RSS (psutil, sampled every 0.2 s) at start, peak and end while publishing ``--big`` events
   pipelined.

Scenarios 1-5 run ``--repeat`` rounds (interleaved) and report the median round. Prints a table (rich)
and writes JSON (default ``bench/results/publish.json``), including the load average before and after:
numbers from a busy machine are not comparable. Not a test; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import psutil
from rich.console import Console
from rich.table import Table

from outboxhub.bus.core import Bus
from outboxhub.ids import new_id, now_ms
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import open_store

__all__ = [
    "Runner",
    "bench_batches",
    "bench_serial",
    "choose_runner",
    "consume_and_ack",
    "machine",
    "main",
    "median_rounds",
    "new_event",
    "pipelined",
    "result",
    "write_document",
]

TOPIC = "bench.orders.created"
PAYLOAD = {"order": 0, "note": "x" * 64}  # ~100 bytes of JSON
TARGETS = {"pipelined_per_s": 50_000, "pipelined_vs_naive": 20.0, "consume_per_s": 30_000}

console = Console(width=130)


def new_event(i: int) -> NewEvent:
    return NewEvent(topic=TOPIC, payload={"order": i, "note": PAYLOAD["note"]})


def result(name: str, events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "events": events,
        "seconds": round(seconds, 4),
        "per_s": round(events / seconds),
        **extra,
    }


# -- 1. naive baseline -----------------------------------------------------------------------------------


def bench_naive(path: Path, n: int, synchronous: str = "NORMAL") -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: each INSERT is its own transaction
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,"
        " ts INTEGER NOT NULL, key TEXT, payload BLOB NOT NULL, meta BLOB)"
    )
    conn.execute("CREATE INDEX events_topic_seq ON events (topic, seq)")
    encode = msgspec.json.encode
    insert = "INSERT INTO events (id, topic, ts, key, payload) VALUES (?, ?, ?, ?, ?)"
    started = time.perf_counter()
    for i in range(n):
        conn.execute(insert, (new_id(), TOPIC, now_ms(), None, encode({"order": i, "note": PAYLOAD["note"]})))
    seconds = time.perf_counter() - started
    conn.close()
    return result(f"naive sqlite3, 1 txn/event ({synchronous})", n, seconds)


# -- 2-4. publishing through the bus ---------------------------------------------------------------------


async def bench_serial(bus: Bus, n: int) -> dict[str, Any]:
    started = time.perf_counter()
    for i in range(n):
        await bus.publish(new_event(i))
    return result("confirmed publish, batch-1", n, time.perf_counter() - started)


async def pipelined(bus: Bus, n: int, window: int, first: int = 0) -> None:
    """Publish events ``first .. first+n-1`` with ``window`` publishes in flight at all times (``window``
    producers, each awaiting its own confirmation before sending its next event)."""
    counter = itertools.count(first)
    stop = first + n

    async def producer() -> None:
        while (i := next(counter)) < stop:
            await bus.publish(new_event(i))

    await asyncio.gather(*(producer() for _ in range(min(window, n))))


async def bench_pipelined(bus: Bus, n: int, window: int) -> dict[str, Any]:
    started = time.perf_counter()
    await pipelined(bus, n, window)
    return result(f"confirmed publish, {window} in flight", n, time.perf_counter() - started)


async def bench_batches(bus: Bus, n: int, size: int) -> dict[str, Any]:
    events = [new_event(i) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, size):
        await bus.publish_batch(events[start : start + size])
    return result(f"publish_batch of {size}", n, time.perf_counter() - started)


# -- 5. consume ------------------------------------------------------------------------------------------


async def consume_and_ack(bus: Bus, pattern: str, group: str, n: int, members: int) -> float:
    """``members`` members of ``group`` read ``n`` events of ``pattern`` from the earliest and ack each
    one; return the seconds until the last ack (the members are closed afterwards)."""
    inbox: deque[Delivery] = deque()
    ready = asyncio.Event()
    done = asyncio.Event()
    acked = 0

    def deliver(delivery: Delivery) -> bool:
        inbox.append(delivery)
        ready.set()
        return True

    async def ack(event_id: str) -> None:
        nonlocal acked
        if await bus.ack(pattern, group, event_id):
            acked += 1
            if acked == n:
                done.set()

    async def consumer() -> None:
        while True:
            await ready.wait()
            ready.clear()
            batch = [inbox.popleft().event.id for _ in range(len(inbox))]
            # Pipelined acks, as a WebSocket client sends them: they share store round trips in the bus.
            await asyncio.gather(*(ack(event_id) for event_id in batch))

    options = GroupOptions(start=StartPosition(kind="earliest"))
    started = time.perf_counter()
    worker = asyncio.create_task(consumer())
    subs = [await bus.subscribe(pattern, group, deliver, options=options) for _ in range(members)]
    await done.wait()
    seconds = time.perf_counter() - started
    worker.cancel()
    for sub in subs:
        await sub.close()
    return seconds


async def bench_consume(bus: Bus, n: int, members: int) -> dict[str, Any]:
    pattern, group = "bench.**", f"consumers-{members}"
    seconds = await consume_and_ack(bus, pattern, group, n, members)
    lag = await bus.store.lag(pattern, group)
    assert lag is not None and lag.lag_count == 0, lag
    label = "member" if members == 1 else "members"
    return result(f"consume + ack, {members} {label}", n, seconds)


# -- 6. memory -------------------------------------------------------------------------------------------


async def bench_rss(bus: Bus, n: int, window: int) -> dict[str, Any]:
    proc = psutil.Process()
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(proc.memory_info().rss)
            await asyncio.sleep(0.2)

    start_rss = proc.memory_info().rss
    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    chunk = max(1, n // 10)
    mib = 1024 * 1024
    after_chunks: list[float] = []  # RSS after each tenth of the run: flat once the caches are warm
    for first in range(0, n, chunk):
        await pipelined(bus, min(chunk, n - first), window, first)
        after_chunks.append(round(proc.memory_info().rss / mib, 1))
    seconds = time.perf_counter() - started
    sampler.cancel()
    end_rss = proc.memory_info().rss
    return result(
        f"memory run ({window} in flight)",
        n,
        seconds,
        rss_start_mib=round(start_rss / mib, 1),
        rss_peak_mib=round(max([*samples, end_rss]) / mib, 1),
        rss_end_mib=round(end_rss / mib, 1),
        rss_by_tenth_mib=after_chunks,
    )


# -- driver ----------------------------------------------------------------------------------------------


async def with_bus(path: Path, body: Callable[[Bus], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    store = await open_store(f"sqlite:///{path}")
    try:
        async with Bus(store) as bus:
            return await body(bus)
    finally:
        await store.close()


async def one_round(args: argparse.Namespace, workdir: Path, k: int) -> dict[str, dict[str, Any]]:
    n, serial, window = args.events, args.serial_events, args.window
    hub = workdir / f"hub-{k}.db"
    steps: list[tuple[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]]] = [
        ("naive", lambda: asyncio.to_thread(bench_naive, workdir / f"naive-{k}.db", serial)),
        ("naive_full", lambda: asyncio.to_thread(bench_naive, workdir / f"full-{k}.db", serial, "FULL")),
        ("batch1", lambda: with_bus(workdir / f"serial-{k}.db", lambda bus: bench_serial(bus, serial))),
        ("pipelined", lambda: with_bus(hub, lambda bus: bench_pipelined(bus, n, window))),
        ("batch100", lambda: with_bus(workdir / f"batch-{k}.db", lambda bus: bench_batches(bus, n, 100))),
        ("consume", lambda: with_bus(hub, lambda bus: bench_consume(bus, n, 1))),
        ("consume4", lambda: with_bus(hub, lambda bus: bench_consume(bus, n, 4))),
    ]
    results: dict[str, dict[str, Any]] = {}
    for key, step in steps:
        console.print(f"[dim]round {k + 1}/{args.repeat}: {key}…[/dim]")
        results[key] = await step()
    await asyncio.to_thread(_empty, workdir)
    return results


def _empty(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


def median_rounds(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per scenario, the median round by events/s, with every round's events/s in ``runs_per_s``."""
    results: dict[str, dict[str, Any]] = {}
    for key in rounds[0]:
        runs = sorted((r[key] for r in rounds), key=lambda row: row["per_s"])
        results[key] = {**runs[len(runs) // 2], "runs_per_s": [row["per_s"] for row in runs]}
    return results


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    """Every scenario ``--repeat`` times, rounds interleaved (so a noisy moment hits all alike); the
    median round per scenario is reported, every round is kept in ``runs``."""
    results = median_rounds([await one_round(args, workdir, k) for k in range(args.repeat)])
    console.print("[dim]memory run…[/dim]")
    results["memory"] = await with_bus(workdir / "big.db", lambda bus: bench_rss(bus, args.big, args.window))
    return results


def report(results: dict[str, dict[str, Any]], loop_name: str) -> dict[str, Any]:
    naive = results["naive"]["per_s"]
    ratio = results["pipelined"]["per_s"] / naive
    checks = {
        "pipelined": (results["pipelined"]["per_s"], TARGETS["pipelined_per_s"]),
        "consume": (results["consume"]["per_s"], TARGETS["consume_per_s"]),
    }
    table = Table(title=f"outboxhub publish/consume on SQLite ({loop_name}, {platform.python_version()})")
    table.add_column("scenario")
    table.add_column("events", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("events/s", justify="right")
    table.add_column("vs naive", justify="right")
    table.add_column("rounds (events/s)", justify="right")
    table.add_column("target", justify="right")
    for key, row in results.items():
        target = ""
        if key in checks:
            got, want = checks[key]
            target = f"≥ {want:,}/s {'[green]met' if got >= want else '[red]missed'}"
        table.add_row(
            row["name"],
            f"{row['events']:,}",
            f"{row['seconds']:.2f}",
            f"{row['per_s']:,}",
            f"{row['per_s'] / naive:.1f}×",
            " / ".join(f"{rate:,}" for rate in row.get("runs_per_s", [])),
            target,
        )
    console.print(table)
    ok = ratio >= TARGETS["pipelined_vs_naive"]
    ratio_full = results["pipelined"]["per_s"] / results["naive_full"]["per_s"]
    console.print(
        f"pipelined / naive (NORMAL) = [bold]{ratio:.1f}×[/bold] "
        f"(target ≥ {TARGETS['pipelined_vs_naive']:.0f}×: {'[green]met' if ok else '[red]missed'}[/]); "
        f"pipelined / naive (FULL) = {ratio_full:.1f}× (context)"
    )
    mem = results["memory"]
    console.print(
        f"RSS while publishing {mem['events']:,} events: start {mem['rss_start_mib']} MiB, "
        f"peak {mem['rss_peak_mib']} MiB, end {mem['rss_end_mib']} MiB; after each tenth: "
        + ", ".join(f"{v:g}" for v in mem["rss_by_tenth_mib"])
    )
    return {"pipelined_vs_naive": round(ratio, 2), "pipelined_vs_naive_full": round(ratio_full, 2)}


Runner = Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]]


def choose_runner(no_uvloop: bool) -> tuple[Runner, str]:
    """``uvloop.run`` when it is installed and not turned off, else ``asyncio.run``; and the loop's name."""
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run, "uvloop"
    return asyncio.run, "asyncio"


def machine(
    loop_name: str, load_before: tuple[float, ...], load_after: tuple[float, ...], **more: str
) -> dict[str, Any]:
    """The ``machine`` section of a results document; ``more`` (e.g. the SQLite version) goes before
    the loop."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **more,
        "loop": loop_name,
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Write a results document as indented JSON (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"[dim]wrote {path}[/dim]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events for pipelined, batch and consume")
    parser.add_argument(
        "--serial-events",
        type=int,
        default=10_000,
        help="events for the naive and batch-1 runs (one commit each)",
    )
    parser.add_argument("--big", type=int, default=1_000_000, help="events for the memory run")
    parser.add_argument("--window", type=int, default=1_000, help="publishes in flight when pipelining")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per scenario; the median is reported")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "publish.json")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the databases (default: a temp dir)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=None,
        help="also run the PostgreSQL scenarios of bench/publish_pg.py on this server (throwaway schemas)",
    )
    args = parser.parse_args()
    for name in ("events", "serial_events", "big", "window", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    runner, loop_name = choose_runner(args.no_uvloop)
    workdir = Path(tempfile.mkdtemp(prefix="outboxhub-bench-", dir=args.dir))
    load_before = os.getloadavg()
    try:
        results = runner(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    summary = report(results, loop_name)
    postgres: dict[str, Any] | None = None
    if args.postgres:
        from publish_pg import PgBench, report_postgres, run_postgres

        pg = PgBench(url=args.postgres, events=args.events, window=args.window, repeat=args.repeat)
        postgres = runner(run_postgres(pg))
        report_postgres(postgres, loop_name)
        load_after = os.getloadavg()
    console.print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    document = {
        "benchmark": "publish",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(loop_name, load_before, load_after, sqlite=sqlite3.sqlite_version),
        "params": {
            "events": args.events,
            "serial_events": args.serial_events,
            "big": args.big,
            "window": args.window,
        },
        "targets": TARGETS,
        "summary": summary,
        "results": results,
    }
    if postgres is not None:
        document["postgres"] = postgres
    write_document(args.json, document)


if __name__ == "__main__":
    main()
