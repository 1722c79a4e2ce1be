"""``outboxhub bench drainers``: outbox drain throughput and commit → publish latency on SQLite,
PostgreSQL and MongoDB, outboxhub's ``Drainer`` against a naive one-record-at-a-time drainer.

For each outbox database (:mod:`~outboxhub.bench.drain_db`: an SQLite file in WAL mode; a throwaway schema
of ``--pg-url``, default ``OUTBOXHUB_TEST_PG_URL`` or 127.0.0.1:5432/test, left out with a note when
unreachable; a throwaway database of ``--mongo-url``, default the ``nx-27017`` stand-in started in memory
for the run, whose numbers are not a real MongoDB's):

1. the naive drainer (:mod:`~outboxhub.bench.naive_drainer`) into a hub store (an SQLite file, as
   ``outboxhub serve`` uses by default);
2. outboxhub's ``Drainer`` (default settings) into the same kind of hub store;
3. outboxhub's ``Drainer`` into a null sink: the drainer's own ceiling, without the hub's commit;
4. latency: ``Drainer.run()`` idle on its wake-up path (PostgreSQL NOTIFY, SQLite ``data_version`` poll,
   MongoDB change stream or its poll) while a writer commits one record at a time; from the writer's
   commit to the hub's confirmed publish of that record.

Each outbox is filled before the clock starts; records/s = records / time to drain all of them. Rows are
the median of ``--repeat`` rounds (fresh databases). Targets: ≥ 10× the naive drainer on each database and
≥ 20,000 records/s into the hub on SQLite and PostgreSQL. Everything runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from outboxhub import outbox
from outboxhub.bench.drain_db import PAYLOAD, Kind, OutboxDb, new_db, remove_sqlite
from outboxhub.bench.measure import throughput_row
from outboxhub.bench.naive_drainer import naive_drain
from outboxhub.bench.report import Tracker
from outboxhub.bench.results import BASELINE, HUB, BenchReport, Measurement, started_now
from outboxhub.bench.stats import LatencyHistogram
from outboxhub.model import NewEvent, PublishResult
from outboxhub.store import Store, open_store
from outboxhub.store.base import mask_url

__all__ = ["KINDS", "DrainersOptions", "run_drainers_bench"]

SCENARIO: Final = "drainers"
KINDS: Final[tuple[Kind, ...]] = ("sqlite", "postgres", "mongo", "mysql")
TARGET_PER_S: Final = 20_000
TARGET_VS_NAIVE: Final = 10.0
STAND_IN: Final = "nx-27017 stand-in, not a real MongoDB"
_WAKE_UP: Final = {
    "sqlite": "PRAGMA data_version poll",
    "postgres": "LISTEN/NOTIFY (insert trigger)",
    "mysql": "MAX(seq) poll",
}


class DrainersOptions(msgspec.Struct, frozen=True, kw_only=True):
    """``databases`` to bench; ``records`` per Drainer run and ``naive_records`` per naive run;
    ``latency_samples`` records committed one at a time at ``latency_rate`` per second."""

    databases: tuple[Kind, ...] = KINDS
    records: int = 50_000
    naive_records: int = 2_000
    repeat: int = 3
    latency_samples: int = 300
    latency_rate: float = 100.0
    pg_url: str | None = None
    mongo_url: str | None = None
    mysql_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("records", "naive_records", "repeat", "latency_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if not self.latency_rate > 0:
            raise ValueError("--latency-rate must be > 0")
        unknown = set(self.databases) - set(KINDS)
        if unknown or not self.databases:
            raise ValueError(f"--database takes {', '.join(KINDS)}")


class NullSink:
    """Accepts everything: the drainer's own ceiling."""

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        return [PublishResult(id=e.id or "", seq=0) for e in events]


class TimingSink:
    """Publishes into the hub store and notes when each record's publish was confirmed."""

    def __init__(self, hub: Store) -> None:
        self.hub = hub
        self.confirmed: dict[str, int] = {}

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        results = await self.hub.publish_batch(events)
        at = time.perf_counter_ns()
        for event in events:
            self.confirmed.setdefault(event.id or "", at)
        return results


async def drainer_into_hub(db: OutboxDb, hub: Store) -> None:
    store = await outbox.open_outbox(db.url)
    try:
        await outbox.Drainer(store, hub).run_until_idle()
    finally:
        await store.close()


async def drainer_into_null(db: OutboxDb, hub: Store) -> None:
    store = await outbox.open_outbox(db.url)
    try:
        await outbox.Drainer(store, NullSink()).run_until_idle()
    finally:
        await store.close()


Drain = Callable[[OutboxDb, Store], Awaitable[None]]
_DRAINS: Final[tuple[tuple[str, bool, Drain], ...]] = (
    ("naive drainer → hub", True, naive_drain),
    ("Drainer → hub", False, drainer_into_hub),
    ("Drainer → null sink", False, drainer_into_null),
)


class _Run:
    def __init__(self, options: DrainersOptions, workdir: Path, tracker: Tracker, mongo_url: str | None):
        self.options = options
        self.workdir = workdir
        self.tracker = tracker
        self.mongo_url = mongo_url

    async def db(self, kind: Kind) -> OutboxDb:
        return await new_db(
            kind,
            self.workdir,
            pg_url=self.options.pg_url,
            mongo_url=self.mongo_url,
            mysql_url=self.options.mysql_url,
        )

    async def timed_drain(self, kind: Kind, records: int, drain: Drain) -> float:
        """Seconds to drain ``records`` from a fresh outbox into a fresh hub store."""
        db = await self.db(kind)
        hub_path = self.workdir / f"hub-{uuid.uuid4().hex[:8]}.db"
        try:
            await asyncio.to_thread(db.fill, records)
            hub = await open_store(f"sqlite:///{hub_path}")
            try:
                start = time.perf_counter()
                await drain(db, hub)
                seconds = time.perf_counter() - start
            finally:
                await hub.close()
            left = await asyncio.to_thread(db.count_unsent)
            if left:
                raise RuntimeError(f"{kind}: {left} records left unsent")
            return seconds
        finally:
            await asyncio.to_thread(db.drop)
            remove_sqlite(hub_path)

    async def latency(self, kind: Kind) -> tuple[LatencyHistogram, str]:
        """Commit one record at a time while the drainer idles on its wake-up path."""
        samples, rate = self.options.latency_samples, self.options.latency_rate
        db = await self.db(kind)
        hub_path = self.workdir / f"hub-{uuid.uuid4().hex[:8]}.db"
        hub = await open_store(f"sqlite:///{hub_path}")
        store = await outbox.open_outbox(db.url)
        sink = TimingSink(hub)
        drainer = outbox.Drainer(store, sink)
        task = asyncio.create_task(drainer.run())
        committed: dict[str, int] = {}
        wake = _WAKE_UP.get(kind, "")
        try:
            await asyncio.sleep(0.5)  # let the drainer reach its idle wait (and PostgreSQL start listening)
            if kind == "mongo":
                from pymongo import AsyncMongoClient

                # Without a session: the stand-in is a standalone server (no transactions).
                mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db.url)
                try:
                    for _ in range(samples):
                        rid = await outbox.add_async(mongo[db.database], "bench.latency", PAYLOAD)
                        committed[rid] = time.perf_counter_ns()
                        await asyncio.sleep(1 / rate)
                finally:
                    await mongo.close()
            elif kind == "mysql":
                import asyncmy

                from outboxhub.outbox.mysql_sql import connect_kwargs

                my = await asyncmy.connect(**connect_kwargs(db.mysql_url))
                try:
                    for _ in range(samples):
                        await my.begin()
                        rid = await outbox.add_async(my, "bench.latency", PAYLOAD, table=db.table)
                        await my.commit()
                        committed[rid] = time.perf_counter_ns()
                        await asyncio.sleep(1 / rate)
                finally:
                    my.close()
            elif kind == "sqlite":
                conn = sqlite3.connect(db.path)
                for _ in range(samples):
                    rid = outbox.add(conn, "bench.latency", PAYLOAD)
                    conn.commit()
                    committed[rid] = time.perf_counter_ns()
                    await asyncio.sleep(1 / rate)
                conn.close()
            else:
                import psycopg

                async with await psycopg.AsyncConnection.connect(db.pg_url) as pg:
                    for _ in range(samples):
                        rid = await outbox.add_async(pg, "bench.latency", PAYLOAD, table=db.table)
                        await pg.commit()
                        committed[rid] = time.perf_counter_ns()
                        await asyncio.sleep(1 / rate)
            deadline = time.perf_counter() + 30
            while len(sink.confirmed) < samples and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            wake = getattr(store, "watch_mode", None) or wake  # MongoDB: what the drainer found
        finally:
            drainer.stop()
            await task
            await store.close()
            await hub.close()
            await asyncio.to_thread(db.drop)
            remove_sqlite(hub_path)
        histogram = LatencyHistogram()
        for rid, at in committed.items():
            if rid in sink.confirmed:
                histogram.record_ns(sink.confirmed[rid] - at)
        if histogram.count < samples:
            raise RuntimeError(f"{kind}: only {histogram.count} of {samples} records published within 30 s")
        return histogram, wake

    async def database(self, kind: Kind, label: str) -> tuple[list[Measurement], list[str]]:
        rows: list[Measurement] = []
        for name, naive, drain in _DRAINS:
            records = self.options.naive_records if naive else self.options.records
            rounds: list[float] = []
            for k in range(self.options.repeat):
                self.tracker.note(f"{label}: {name}, round {k + 1} of {self.options.repeat}")
                rounds.append(await self.timed_drain(kind, records, drain))
            per_s = sorted(records / s for s in rounds)
            seconds = records / per_s[(len(per_s) - 1) // 2]
            rows.append(
                throughput_row(
                    SCENARIO,
                    f"{label}: {name}",
                    BASELINE if naive else HUB,
                    count=records,
                    elapsed_s=seconds,
                    server=None,
                    extra={"rounds_per_s": per_s},
                )
            )
        self.tracker.note(f"{label}: latency")
        histogram, wake = await self.latency(kind)
        latency = histogram.summary()
        assert latency is not None
        rows.append(
            Measurement(
                scenario=SCENARIO,
                case=f"{label}: commit → published ({wake})",
                system=HUB,
                value=latency.p99_ms,
                unit="ms p99",
                higher_is_better=False,
                count=histogram.count,
                elapsed_s=histogram.count / self.options.latency_rate,
                latency=latency,
                extra={"rate_per_s": self.options.latency_rate, "wake_up": wake},
            )
        )
        ratio = rows[1].value / rows[0].value
        floor = 0 if kind == "mongo" else TARGET_PER_S
        met = "met" if rows[1].value >= floor and ratio >= TARGET_VS_NAIVE else "missed"
        wanted = f"≥ {TARGET_VS_NAIVE:.0f}×" + ("" if kind == "mongo" else f" and ≥ {TARGET_PER_S:,}/s")
        return rows, [f"{label}: Drainer → hub = {ratio:.1f}× the naive drainer (target {wanted}: {met})"]


def _pg_problem(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {mask_url(url)} unreachable: {str(exc).strip().splitlines()[0]}; left out"


def _mysql_problem(url: str) -> str | None:
    import pymysql

    from outboxhub.testing.mysql import connect

    try:
        connect(url, connect_timeout=3).close()
        return None
    except pymysql.Error as exc:
        return f"MySQL at {mask_url(url)} unreachable: {exc}; left out"


async def run_drainers_bench(options: DrainersOptions, *, console: Any = None) -> BenchReport:
    """Every database of ``options.databases``; a report with a row per (database, drainer) and one
    latency row per database."""
    started = started_now()
    notes: list[str] = []
    rows: list[Measurement] = []
    kinds = list(options.databases)
    if "postgres" in kinds:
        from outboxhub.testing.postgres import base_url

        options = msgspec.structs.replace(options, pg_url=options.pg_url or base_url())
        assert options.pg_url is not None
        problem = await asyncio.to_thread(_pg_problem, options.pg_url)
        if problem is not None:
            notes.append(problem)
            kinds.remove("postgres")
    if "mysql" in kinds:
        from outboxhub.testing.mysql import base_url as mysql_base_url

        options = msgspec.structs.replace(options, mysql_url=options.mysql_url or mysql_base_url())
        assert options.mysql_url is not None
        problem = await asyncio.to_thread(_mysql_problem, options.mysql_url)
        if problem is not None:
            notes.append(problem)
            kinds.remove("mysql")
    with contextlib.ExitStack() as stack, Tracker(console) as tracker:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outboxhub-bench-")))
        mongo_url = options.mongo_url
        if mongo_url is None and "mongo" in kinds:
            from outboxhub.testing.mongo import stand_in

            mongo_url = stack.enter_context(stand_in())
        run = _Run(options, workdir, tracker, mongo_url)
        for kind in kinds:
            label = "mongo (stand-in)" if kind == "mongo" and options.mongo_url is None else kind
            measured, verdicts = await run.database(kind, label)
            rows += measured
            notes += verdicts
    if "mongo" in kinds and options.mongo_url is None:
        notes.append(
            f"MongoDB rows come from the {STAND_IN} (wire protocol over SQLite, in memory): they show the "
            "drainers' round trips, not MongoDB's speed; give --mongo-url for a real one"
        )
    notes.append(f"each drain row is the median of {options.repeat} rounds; everything ran in this process")
    stores = ", ".join(kinds) + " outboxes → SQLite hub stores"
    return BenchReport.of_run(
        SCENARIO, store=stores, options=options, started_at=started, measurements=rows, notes=notes
    )
