"""``outboxhub bench inproc``: the bus and a store in this process, no WebSocket, against a naive baseline.

What the store and the bus can do before the gateway is involved (the other scenarios measure through a
hub subprocess). On SQLite (the default: fresh files in a temporary directory) or PostgreSQL (``--store
postgresql://…``: a throwaway schema per case, dropped afterwards):

1. naive baseline (SQLite only): plain ``sqlite3``, WAL, ``synchronous=NORMAL`` (the store's default too),
   the events-table shape, one transaction per event — where a hand-rolled outbox starts; the same with
   ``synchronous=FULL`` for context (power-loss durable commits);
2. confirmed batch-1: ``await bus.publish(e)`` one at a time (each waits for its own commit);
3. pipelined: ``--window`` producers each awaiting its own confirmed publish; the store's single writer
   commits whatever is queued as one transaction;
4. ``publish_batch`` of 100, one batch at a time;
5. consume + ack: one group (1 member, then 4) reads the pipelined run's events from the earliest and
   acks each through ``Bus.ack`` (pipelined acks, as a WebSocket client sends them);
6. PostgreSQL only — cross-node: two stores ("hub nodes") on one schema; one event at a time published
   on node A, delivered to a group member on node B woken by LISTEN/NOTIFY: latency p50/p99;
7. memory (``--big`` events, 0 to skip): this process's RSS while publishing pipelined, sampled every
   0.2 s; the notes give start, peak, end and the RSS after each tenth (flat once caches are warm).

Cases 1-6 run ``--repeat`` rounds, interleaved; each row is its median round. The notes give pipelined ÷
naive (targets: pipelined ≥ 50,000 events/s and ≥ 20× naive on SQLite, ≥ 20,000/s on PostgreSQL;
consume ≥ 30,000/s). "server" CPU and RSS are this process's over each case.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import msgspec

from outboxhub.bench.measure import start_watch, stop_watch, throughput_row
from outboxhub.bench.report import Tracker
from outboxhub.bench.results import BASELINE, HUB, BenchReport, Measurement, System, started_now
from outboxhub.bench.stats import LatencyHistogram
from outboxhub.bus.core import Bus
from outboxhub.ids import new_id, now_ms
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import mask_url

__all__ = ["InprocOptions", "run_inproc"]

SCENARIO: Final = "inproc"
TOPIC: Final = "bench.orders.created"
NOTE: Final = "x" * 64  # {"order": i, "note": NOTE} is about 100 bytes of JSON
TARGETS: Final = {
    "pipelined_per_s": 50_000,
    "pipelined_pg_per_s": 20_000,
    "vs_naive": 20.0,
    "consume": 30_000,
}


class InprocOptions(msgspec.Struct, frozen=True, kw_only=True):
    """``store``: None for SQLite files in a temporary directory, or a ``postgresql://`` URL (each case on
    a throwaway schema of it). ``serial_events`` sizes the one-commit-per-event cases; ``big`` the memory
    run (0: none); ``cross_events`` the PostgreSQL cross-node case."""

    store: str | None = None
    events: int = 100_000
    serial_events: int = 10_000
    big: int = 1_000_000
    cross_events: int = 1_000
    window: int = 1_000
    repeat: int = 3

    def __post_init__(self) -> None:
        for name in ("events", "serial_events", "cross_events", "window", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.big < 0:
            raise ValueError("--big must be >= 0")
        if self.store is not None and not self.store.startswith(("postgresql://", "postgres://")):
            raise ValueError("inproc --store takes a postgresql:// URL (SQLite is the default)")


def _event(i: int) -> NewEvent:
    return NewEvent(topic=TOPIC, payload={"order": i, "note": NOTE})


# -- the workloads ---------------------------------------------------------------------------------------


def naive(path: Path, n: int, synchronous: str) -> float:
    """Seconds to insert ``n`` events with plain sqlite3, one transaction (autocommit) each."""
    conn = sqlite3.connect(path, isolation_level=None)
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
        conn.execute(insert, (new_id(), TOPIC, now_ms(), None, encode({"order": i, "note": NOTE})))
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


async def serial(bus: Bus, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await bus.publish(_event(i))
    return time.perf_counter() - started


async def pipelined(bus: Bus, n: int, window: int, first: int = 0) -> float:
    """Publish events ``first .. first+n-1`` with ``window`` publishes in flight at all times."""
    counter = itertools.count(first)
    stop = first + n

    async def producer() -> None:
        while (i := next(counter)) < stop:
            await bus.publish(_event(i))

    started = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(min(window, n))))
    return time.perf_counter() - started


async def batches(bus: Bus, n: int, size: int) -> float:
    events = [_event(i) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, size):
        await bus.publish_batch(events[start : start + size])
    return time.perf_counter() - started


async def consume(bus: Bus, n: int, members: int) -> float:
    """``members`` members of one group read ``n`` events from the earliest and ack each; seconds until
    the last ack."""
    pattern, group = "bench.**", f"consumers-{members}"
    inbox: deque[Delivery] = deque()
    ready, done = asyncio.Event(), asyncio.Event()
    acked = 0

    def deliver(delivery: Delivery) -> bool:
        inbox.append(delivery)
        ready.set()
        return True

    async def ack(event_id: str, seq: int) -> None:
        nonlocal acked
        if await bus.ack(pattern, group, event_id, seq=seq):
            acked += 1
            if acked == n:
                done.set()

    async def consumer() -> None:
        while True:
            await ready.wait()
            ready.clear()
            batch = [inbox.popleft().event for _ in range(len(inbox))]
            await asyncio.gather(*(ack(event.id, event.seq) for event in batch))

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


async def cross_node(node_a: Bus, node_b: Bus, n: int) -> tuple[float, LatencyHistogram]:
    """One event at a time published on ``node_a``; the latency until a member on ``node_b`` has it."""
    pattern, group = "bench.**", "cross"
    arrived: dict[str, int] = {}
    waiting: dict[str, asyncio.Future[None]] = {}
    acks: set[asyncio.Task[bool]] = set()
    loop = asyncio.get_running_loop()

    def deliver(delivery: Delivery) -> bool:
        arrived[delivery.event.id] = time.perf_counter_ns()
        future = waiting.pop(delivery.event.id, None)
        if future is not None and not future.done():
            future.set_result(None)
        task = loop.create_task(node_b.ack(pattern, group, delivery.event.id, seq=delivery.event.seq))
        acks.add(task)
        task.add_done_callback(acks.discard)
        return True

    sub = await node_b.subscribe(pattern, group, deliver)
    histogram = LatencyHistogram()
    started = time.perf_counter()
    for i in range(n):
        event_id = f"cross-{os.getpid()}-{i}"
        waiting[event_id] = future = loop.create_future()
        sent = time.perf_counter_ns()
        await node_a.publish(NewEvent(topic=TOPIC, payload={"order": i}, id=event_id))
        await asyncio.wait_for(future, 10)
        histogram.record_ns(arrived[event_id] - sent)
    seconds = time.perf_counter() - started
    await sub.close()
    return seconds, histogram


# -- running them ----------------------------------------------------------------------------------------

Body = Callable[[list[Bus]], Awaitable[Any]]


class _Place:
    """Where a case's store lives: SQLite files under ``workdir``, or throwaway schemas of ``pg_url``."""

    def __init__(self, workdir: Path, pg_url: str | None) -> None:
        self.workdir = workdir
        self.pg_url = pg_url
        self._names = itertools.count()
        self._kept: set[str] = set()

    async def run(self, body: Body, *, nodes: int = 1, name: str | None = None) -> Any:
        """``body(buses)`` with ``nodes`` buses over a new database, or the one called ``name`` (kept until
        :meth:`close`, so that a later case reads what an earlier one wrote)."""
        schema = f"bench_{os.getpid()}_{name or next(self._names)}"
        if self.pg_url is None:
            url = f"sqlite:///{self.workdir / schema}.db"
        else:
            from outboxhub.testing.postgres import schema_url

            url = schema_url(self.pg_url, schema)
        if name is not None:
            self._kept.add(schema)
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
            if name is None:
                await self._drop(schema)

    async def close(self) -> None:
        """Drop the databases kept by name."""
        for schema in sorted(self._kept):
            await self._drop(schema)
        self._kept.clear()

    async def _drop(self, schema: str) -> None:
        if self.pg_url is None:
            for suffix in ("", "-wal", "-shm"):
                (self.workdir / f"{schema}.db{suffix}").unlink(missing_ok=True)
        else:
            from outboxhub.testing.postgres import drop_schema

            await drop_schema(self.pg_url, schema)


async def _case(
    tracker: Tracker, case: str, system: System, count: int, work: Callable[[], Awaitable[Any]]
) -> Measurement:
    tracker.note(f"  {case}…")
    watch = start_watch(os.getpid())
    got = await work()
    server = await stop_watch(watch)
    seconds, histogram = got if isinstance(got, tuple) else (got, None)
    latency = None if histogram is None else histogram.summary()
    return throughput_row(
        SCENARIO, case, system, count=count, elapsed_s=seconds, server=server, latency=latency
    )


def _naive(path: Path, n: int, sync: str) -> Callable[[], Awaitable[float]]:
    return lambda: asyncio.to_thread(naive, path, n, sync)


def _consume_in(place: _Place, name: str, n: int, members: int) -> Callable[[], Awaitable[float]]:
    return lambda: place.run(lambda b: consume(b[0], n, members), name=name)


async def _round(options: InprocOptions, place: _Place, tracker: Tracker, k: int) -> list[Measurement]:
    n, serial_n, window = options.events, options.serial_events, options.window
    rows: list[Measurement] = []
    if place.pg_url is None:
        for sync in ("NORMAL", "FULL"):
            work = _naive(place.workdir / f"naive-{sync}-{k}.db", serial_n, sync)
            rows.append(await _case(tracker, f"1 txn/event, synchronous={sync}", BASELINE, serial_n, work))
    rows.append(
        await _case(
            tracker,
            "confirmed publish, batch-1",
            HUB,
            serial_n,
            lambda: place.run(lambda b: serial(b[0], serial_n)),
        )
    )
    rows.append(
        await _case(
            tracker,
            f"confirmed publish, {window} in flight",
            HUB,
            n,
            lambda: place.run(lambda b: pipelined(b[0], n, window), name=f"hub{k}"),
        )
    )
    rows.append(
        await _case(
            tracker, "publish_batch of 100", HUB, n, lambda: place.run(lambda b: batches(b[0], n, 100))
        )
    )
    for members in (1, 4):  # the pipelined case's events, from the earliest
        label = "1 member" if members == 1 else f"{members} members"
        rows.append(
            await _case(
                tracker,
                f"consume + ack, 1 group, {label}",
                HUB,
                n,
                _consume_in(place, f"hub{k}", n, members),
            )
        )
    if place.pg_url is not None:
        cross = options.cross_events
        rows.append(
            await _case(
                tracker,
                "cross-node: publish on A → delivered on B",
                HUB,
                cross,
                lambda: place.run(lambda b: cross_node(b[0], b[1], cross), nodes=2),
            )
        )
    await place.close()
    return rows


async def memory_run(bus: Bus, n: int, window: int) -> tuple[float, dict[str, Any]]:
    """Publish ``n`` events pipelined in tenths; this process's RSS (MiB) at start, peak, end and after
    each tenth."""
    import psutil

    proc = psutil.Process()
    mib = 1024 * 1024
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(proc.memory_info().rss)
            await asyncio.sleep(0.2)

    start_rss = proc.memory_info().rss
    sampler = asyncio.create_task(sample())
    chunk = max(1, n // 10)
    by_tenth: list[float] = []
    seconds = 0.0
    for first in range(0, n, chunk):
        seconds += await pipelined(bus, min(chunk, n - first), window, first)
        by_tenth.append(round(proc.memory_info().rss / mib, 1))
    sampler.cancel()
    end_rss = proc.memory_info().rss
    return seconds, {
        "rss_start_mib": round(start_rss / mib, 1),
        "rss_peak_mib": round(max([*samples, end_rss]) / mib, 1),
        "rss_end_mib": round(end_rss / mib, 1),
        "rss_by_tenth_mib": by_tenth,
    }


def _medians(rounds: list[list[Measurement]]) -> list[Measurement]:
    out: list[Measurement] = []
    for i in range(len(rounds[0])):
        same = sorted((r[i] for r in rounds), key=lambda m: m.value)
        median = same[(len(same) - 1) // 2]
        out.append(
            msgspec.structs.replace(median, extra={**median.extra, "rounds_per_s": [m.value for m in same]})
        )
    return out


def _notes(rows: list[Measurement], postgres: bool) -> list[str]:
    by_case = {m.case: m for m in rows}
    notes: list[str] = []
    pipelined_row = next(m for m in rows if m.case.startswith("confirmed publish,") and "in flight" in m.case)
    target = TARGETS["pipelined_pg_per_s" if postgres else "pipelined_per_s"]
    verdict = "met" if pipelined_row.value >= target else "missed"
    notes.append(f"pipelined: {pipelined_row.value:,.0f} events/s (target ≥ {target:,}/s: {verdict})")
    for sync in ("NORMAL", "FULL"):
        naive_row = by_case.get(f"1 txn/event, synchronous={sync}")
        if naive_row is not None:
            ratio = pipelined_row.value / naive_row.value
            met = "met" if ratio >= TARGETS["vs_naive"] else "missed"
            want = f" (target ≥ {TARGETS['vs_naive']:.0f}×: {met})" if sync == "NORMAL" else " (context)"
            notes.append(f"pipelined ÷ naive sqlite3 ({sync}) = {ratio:.1f}×{want}")
    return notes


async def run_inproc(options: InprocOptions, *, console: Any = None) -> BenchReport:
    """Every case ``options.repeat`` times (rounds interleaved), then the memory run; a report whose rows
    are each case's median round."""
    started = started_now()
    rounds: list[list[Measurement]] = []
    with Tracker(console) as tracker, tempfile.TemporaryDirectory(prefix="outboxhub-bench-") as tmp:
        place = _Place(Path(tmp), options.store)
        for k in range(options.repeat):
            tracker.note(f"round {k + 1} of {options.repeat}")
            rounds.append(await _round(options, place, tracker, k))
        rows = _medians(rounds)
        notes = _notes(rows, options.store is not None)
        if options.big:
            tracker.note("memory run…")
            seconds, rss = await place.run(lambda b: memory_run(b[0], options.big, options.window))
            rows.append(
                throughput_row(
                    SCENARIO,
                    f"memory run, {options.window} in flight",
                    HUB,
                    count=options.big,
                    elapsed_s=seconds,
                    server=None,
                    extra=rss,
                )
            )
            notes.append(
                f"RSS while publishing {options.big:,} events: start {rss['rss_start_mib']} MiB, peak "
                f"{rss['rss_peak_mib']} MiB, end {rss['rss_end_mib']} MiB; after each tenth: "
                + ", ".join(f"{v:g}" for v in rss["rss_by_tenth_mib"])
            )
    store = (
        "SQLite (files in a temp dir)" if options.store is None else f"PostgreSQL ({mask_url(options.store)})"
    )
    notes.append(f"each row is the median of {options.repeat} rounds; server CPU/RSS are this process's")
    return BenchReport.of_run(
        SCENARIO, store=store, options=options, started_at=started, measurements=rows, notes=notes
    )
