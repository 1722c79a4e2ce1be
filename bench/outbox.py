"""Outbox drain throughput and commit → publish latency, SQLite, PostgreSQL and MongoDB, against the seed's
drainer.

    .venv/bin/python bench/outbox.py [--records N] [--seed-records N] [--repeat R] [--mongo-url URL]
                                     [--json FILE]

For each outbox database (SQLite file in WAL mode; a throwaway schema on ``OUTBOXHUB_TEST_PG_URL``,
default 127.0.0.1:5432/test, skipped with a note when unreachable; a throwaway database on ``--mongo-url``,
default the ``nx-27017`` stand-in started in memory for the run, whose numbers are not a real MongoDB's):

1. seed drainer, re-created faithfully over the same table: claim one record per round trip (the seed's
   ``findOneAndUpdate`` loop, ``claimBatch(100)``; on MongoDB the seed's own ``findOneAndUpdate``), then
   per record one publish and one mark-sent update; published into a hub store (SQLite file, as
   ``outboxhub serve`` uses by default);
2. outboxhub ``Drainer`` (default settings) into the same kind of hub store;
3. outboxhub ``Drainer`` into a null sink: the drainer's own ceiling, without the hub's commit;
4. latency: ``Drainer.run()`` idle and waiting on its wake-up path (PostgreSQL NOTIFY, SQLite
   ``data_version`` poll, MongoDB change stream or its poll) while a writer commits one record at a time;
   time from the writer's commit to the hub's confirmed publish of that record, p50/p99.

Each outbox is filled before the clock starts; records/s = records / time to drain all of them. Runs are
repeated ``--repeat`` times (fresh databases) and the median is reported. Prints a table (rich) and writes
JSON (default ``bench/results/outbox.json``) with the load average: numbers from a busy machine are not
comparable. Targets: ≥ 10× the seed drainer and ≥ 20,000 records/s into the hub, on each database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymongo
from mongo_stand_in import stand_in
from pymongo import AsyncMongoClient, ReturnDocument
from rich.console import Console
from rich.table import Table

from outboxhub import outbox
from outboxhub.ids import new_id, now_ms
from outboxhub.model import NewEvent, PublishResult
from outboxhub.outbox.mongo import DEFAULT_POLL_INTERVAL_MS, MongoOutbox, record_doc
from outboxhub.store import Store, open_store
from outboxhub.store.base import mask_url

__all__ = ["main"]

PG_URL = os.environ.get("OUTBOXHUB_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test"
PAYLOAD = {"order": 0, "note": "x" * 64}  # ~100 bytes of JSON
TARGET_PER_S = 20_000
TARGET_VS_SEED = 10.0
SEED_BATCH = 100  # the seed's claimBatch default
CLEAR = "claimed_by = NULL, lease_until = NULL"
STAND_IN = "nx-27017 stand-in, not a real MongoDB"
WAKE_UP = {"sqlite": "PRAGMA data_version poll, 10 ms", "postgres": "LISTEN/NOTIFY (insert trigger)"}

console = Console(width=130)


class NullSink:
    """Accepts everything: the drainer's own ceiling."""

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        return [PublishResult(id=e.id or "", seq=0) for e in events]


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- outbox databases -----------------------------------------------------------------------------------


class Db:
    """An outbox database for one run: fill it, open it, drop it. Create with :func:`new_db`."""

    def __init__(self, kind: str, workdir: Path, mongo_url: str | None = None) -> None:
        self.kind = kind
        if kind == "mongo":
            assert mongo_url is not None
            self.database = f"bench_{uuid.uuid4().hex[:12]}"
            self.table = "outbox"
            self.mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
            self.url = urlunsplit(urlsplit(mongo_url)._replace(path=f"/{self.database}"))
        elif kind == "sqlite":
            self.path = workdir / f"outbox-{uuid.uuid4().hex[:8]}.db"
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            outbox.ensure_schema(conn)
            conn.close()
            self.table = "outbox"
            self.url = f"sqlite:///{self.path}"
        else:
            self.schema = f"bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_URL, autocommit=True) as pg:
                pg.execute(f'CREATE SCHEMA "{self.schema}"')
                outbox.ensure_schema(pg, f"{self.schema}.outbox")
            self.table = f"{self.schema}.outbox"
            self.url = f"{PG_URL}?table={self.table}"

    def fill(self, n: int) -> None:
        rows = [
            outbox.prepare_record("bench.orders.created", {**PAYLOAD, "order": i}, key=f"o{i % 1000}")
            for i in range(n)
        ]
        if self.kind == "mongo":
            collection = self.mongo[self.database][self.table]
            for start in range(0, n, 1000):
                collection.insert_many([{"_id": r.id, **record_doc(r)} for r in rows[start : start + 1000]])
            return
        params = [(r.id, r.topic, r.payload_json, r.key, r.headers_json, r.ts, r.ts) for r in rows]
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            with conn:
                conn.executemany(outbox.sqlite.insert_statement(self.table, paramstyle="qmark"), params)
            conn.close()
        else:
            with psycopg.connect(PG_URL) as pg, pg.cursor() as cur:
                cur.executemany(outbox.postgres.insert_statement(self.table, paramstyle="format"), params)

    def drop(self) -> None:
        if self.kind == "mongo":
            self.mongo.drop_database(self.database)
            self.mongo.close()
        elif self.kind == "sqlite":
            remove_sqlite(self.path)
        else:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def count_unsent(self) -> int:
        if self.kind == "mongo":
            return self.mongo[self.database][self.table].count_documents({"status": {"$ne": "sent"}})
        sql = f"SELECT count(*) FROM {outbox.postgres.quote_table(self.table)} WHERE status <> 'sent'"
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            (n,) = conn.execute(sql).fetchone()
            conn.close()
            return int(n)
        with psycopg.connect(PG_URL) as pg:
            row = pg.execute(sql).fetchone()
            assert row is not None
            return int(row[0])


async def new_db(kind: str, workdir: Path, mongo_url: str | None) -> Db:
    """A fresh, empty outbox; on MongoDB with ``ensure_schema``'s indexes (the seed's among them)."""
    db = Db(kind, workdir, mongo_url)
    if kind == "mongo":
        await outbox.ensure_schema_async(db.url)
    return db


# -- the seed's drainer, re-created -----------------------------------------------------------------------


SeedRecord = tuple[str, str, Any, dict[str, str] | None]  # id, topic, payload, headers


class SeedOutbox:
    """The seed's ``MongoOutbox`` over the same SQL table: one claim per round trip, per-record updates."""

    def __init__(self, db: Db) -> None:
        self.db = db
        q = outbox.postgres.quote_table(db.table)
        cols = "seq, id, topic, payload, headers"
        pick = f"SELECT seq FROM {q} WHERE status = 'pending' ORDER BY seq LIMIT 1"
        if db.kind == "sqlite":
            self.claim_sql = (
                f"UPDATE {q} SET status = 'claimed', claimed_by = ?, lease_until = ?, "
                f"attempts = attempts + 1 WHERE seq = ({pick}) RETURNING {cols}"
            )
            self.sent_sql = (
                f"UPDATE {q} SET status = 'sent', claimed_by = NULL, lease_until = NULL WHERE id = ?"
            )
            self.requeue_sql = (
                f"UPDATE {q} SET status = 'pending', claimed_by = NULL, lease_until = NULL "
                "WHERE status = 'claimed' AND lease_until < ?"
            )
        else:
            self.claim_sql = (
                f"UPDATE {q} SET status = 'claimed', claimed_by = %s, lease_until = %s, "
                f"attempts = attempts + 1 WHERE seq = ({pick} FOR UPDATE SKIP LOCKED) "
                f"RETURNING seq, id, topic, payload::text, headers::text"
            )
            self.sent_sql = (
                f"UPDATE {q} SET status = 'sent', claimed_by = NULL, lease_until = NULL WHERE id = %s"
            )
            self.requeue_sql = (
                f"UPDATE {q} SET status = 'pending', claimed_by = NULL, lease_until = NULL "
                "WHERE status = 'claimed' AND lease_until < %s"
            )
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> None:
        if self.db.kind == "sqlite":
            self._sqlite = await self._thread(
                lambda: sqlite3.connect(self.db.path, isolation_level=None, check_same_thread=False)
            )
        else:
            self._pg = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True)
            # The same planner settings as PostgresOutbox: a fair comparison of round trips, not plans.
            await self._pg.execute("SET enable_sort = off")
            await self._pg.execute("SET enable_bitmapscan = off")

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._thread(self._sqlite.close)
        if self._pg is not None:
            await self._pg.close()
        self._executor.shutdown()

    async def _thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            conn = self._sqlite
            return list(await self._thread(lambda: conn.execute(sql, params).fetchall()))
        assert self._pg is not None
        cur = await self._pg.execute(sql, params)
        return await cur.fetchall() if cur.description else []

    async def claim_batch(self, n: int, lease_ms: int, worker: str) -> list[SeedRecord]:
        docs = []
        for _ in range(n):  # the seed's loop of findOneAndUpdate
            rows = await self._one(self.claim_sql, (worker, now_ms() + lease_ms))
            if not rows:
                break
            _, record_id, topic, payload, headers = rows[0]
            docs.append((record_id, topic, json.loads(payload), json.loads(headers) if headers else None))
        return docs

    async def mark_sent(self, record_id: str) -> None:
        await self._one(self.sent_sql, (record_id,))

    async def requeue_expired(self) -> None:
        await self._one(self.requeue_sql, (now_ms(),))


class SeedMongoOutbox:
    """The seed's ``MongoOutbox`` itself (docs: /work/shared/seed/mongo-outbox-seed.md), with pymongo's
    async client: ``claimBatch`` is a loop of ``findOneAndUpdate`` (sort ``ts``), ``markSent`` an
    ``updateOne``, ``requeueExpired`` an ``updateMany``."""

    def __init__(self, db: Db) -> None:
        self.url = db.url
        self.database = db.database
        self.table = db.table
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

    @property
    def coll(self) -> Any:
        assert self._client is not None
        return self._client[self.database][self.table]

    async def open(self) -> None:
        self._client = AsyncMongoClient(self.url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def claim_batch(self, n: int, lease_ms: int, worker: str) -> list[SeedRecord]:
        now = now_ms()
        docs: list[SeedRecord] = []
        for _ in range(n):
            doc = await self.coll.find_one_and_update(
                {"status": "pending"},
                {
                    "$set": {"status": "claimed", "claimed_by": worker, "lease_until": now + lease_ms},
                    "$inc": {"attempts": 1},
                },
                sort=[("ts", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            docs.append((doc["_id"], doc["topic"], doc["payload"], doc.get("headers")))
        return docs

    async def mark_sent(self, record_id: str) -> None:
        await self.coll.update_one(
            {"_id": record_id}, {"$set": {"status": "sent"}, "$unset": {"claimed_by": "", "lease_until": ""}}
        )

    async def requeue_expired(self) -> None:
        await self.coll.update_many(
            {"status": "claimed", "lease_until": {"$lt": now_ms()}},
            {"$set": {"status": "pending"}, "$unset": {"claimed_by": "", "lease_until": ""}},
        )


async def seed_drain(db: Db, hub: Store) -> None:
    """``runOutboxDrainer`` until the outbox is empty (the seed sleeps 250 ms when idle; we stop)."""
    box = SeedMongoOutbox(db) if db.kind == "mongo" else SeedOutbox(db)
    await box.open()
    try:
        while True:
            await box.requeue_expired()
            batch = await box.claim_batch(SEED_BATCH, 30_000, "drainer-seed")
            if not batch:
                return
            for record_id, topic, payload, headers in batch:
                # bus.publish(topic, payload, {headers}): no event id, so a crash here publishes twice.
                await hub.publish(NewEvent(topic=topic, payload=payload, headers=headers))
                await box.mark_sent(record_id)
    finally:
        await box.close()


# -- runs -------------------------------------------------------------------------------------------------


async def timed_drain(
    kind: str,
    workdir: Path,
    records: int,
    drain: Callable[[Db, Store], Awaitable[None]],
    mongo_url: str | None,
) -> dict[str, Any]:
    db = await new_db(kind, workdir, mongo_url)
    hub_path = workdir / f"hub-{uuid.uuid4().hex[:8]}.db"
    try:
        db.fill(records)
        hub = await open_store(f"sqlite:///{hub_path}")
        try:
            start = time.perf_counter()
            await drain(db, hub)
            seconds = time.perf_counter() - start
            stored = await hub.last_seq()
        finally:
            await hub.close()
        left = db.count_unsent()
        if left:
            raise RuntimeError(f"{left} records left unsent")
        return {"records": records, "seconds": seconds, "per_s": records / seconds, "hub_events": stored}
    finally:
        db.drop()
        remove_sqlite(hub_path)


async def drainer_into_hub(db: Db, hub: Store) -> None:
    store = await outbox.open_outbox(db.url)
    try:
        await outbox.Drainer(store, hub).run_until_idle()
    finally:
        await store.close()


async def drainer_into_null(db: Db, hub: Store) -> None:
    store = await outbox.open_outbox(db.url)
    try:
        await outbox.Drainer(store, NullSink()).run_until_idle()
    finally:
        await store.close()


class TimingSink:
    """Publishes into the hub and notes when each record's publish was confirmed."""

    def __init__(self, hub: Store) -> None:
        self.hub = hub
        self.confirmed: dict[str, float] = {}

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        results = await self.hub.publish_batch(events)
        at = time.perf_counter()
        for event in events:
            self.confirmed.setdefault(event.id or "", at)
        return results


async def latency(
    kind: str, workdir: Path, samples: int, rate: float, mongo_url: str | None
) -> dict[str, Any]:
    """Commit one record at a time (``rate`` per second) while the drainer idles on its wake-up path."""
    db = await new_db(kind, workdir, mongo_url)
    hub_path = workdir / f"hub-{uuid.uuid4().hex[:8]}.db"
    hub = await open_store(f"sqlite:///{hub_path}")
    store = await outbox.open_outbox(db.url)
    sink = TimingSink(hub)
    drainer = outbox.Drainer(store, sink)
    task = asyncio.create_task(drainer.run())
    committed: dict[str, float] = {}
    wake = WAKE_UP.get(kind, "")
    try:
        await asyncio.sleep(0.5)  # let the drainer reach its idle wait (and PostgreSQL start listening)
        if isinstance(store, MongoOutbox):
            # Without a session: the stand-in is a standalone server (no transactions); the insert commits.
            mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db.url)
            try:
                for _ in range(samples):
                    rid = await outbox.add_async(mongo[db.database], "bench.latency", PAYLOAD)
                    committed[rid] = time.perf_counter()
                    await asyncio.sleep(1 / rate)
            finally:
                await mongo.close()
        elif kind == "sqlite":
            conn = sqlite3.connect(db.path)
            for _ in range(samples):
                rid = outbox.add(conn, "bench.latency", PAYLOAD)
                conn.commit()
                committed[rid] = time.perf_counter()
                await asyncio.sleep(1 / rate)
            conn.close()
        else:
            async with await psycopg.AsyncConnection.connect(PG_URL) as pg:
                for _ in range(samples):
                    rid = await outbox.add_async(pg, "bench.latency", PAYLOAD, table=db.table)
                    await pg.commit()
                    committed[rid] = time.perf_counter()
                    await asyncio.sleep(1 / rate)
        deadline = time.perf_counter() + 30
        while len(sink.confirmed) < samples and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if isinstance(store, MongoOutbox):  # what the drainer found the deployment supports
            mode = store.watch_mode
            wake = f"{mode}, {DEFAULT_POLL_INTERVAL_MS} ms" if mode == "polling" else mode
    finally:
        drainer.stop()
        await task
        await store.close()
        await hub.close()
        db.drop()
        remove_sqlite(hub_path)
    delays = sorted((sink.confirmed[i] - t) * 1000 for i, t in committed.items() if i in sink.confirmed)
    if len(delays) < samples:
        raise RuntimeError(f"only {len(delays)} of {samples} records were published within 30 s")
    return {
        "wake": wake,
        "samples": samples,
        "rate_per_s": rate,
        "p50_ms": round(statistics.median(delays), 2),
        "p99_ms": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 2),
        "max_ms": round(delays[-1], 2),
    }


def pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} unreachable: {str(exc).strip().splitlines()[0]}"


async def run(args: argparse.Namespace, workdir: Path, mongo_url: str) -> dict[str, Any]:
    kinds = [k for k in ("sqlite", "postgres", "mongo") if k in args.databases]
    skipped = pg_reachable() if "postgres" in kinds else None
    if skipped:
        console.print(f"[yellow]{skipped}; PostgreSQL skipped[/yellow]")
        kinds.remove("postgres")
    scenarios: list[tuple[str, int, Callable[[Db, Store], Awaitable[None]]]] = [
        ("seed drainer → hub", args.seed_records, seed_drain),
        ("outboxhub Drainer → hub", args.records, drainer_into_hub),
        ("outboxhub Drainer → null sink", args.records, drainer_into_null),
    ]
    results: dict[str, Any] = {}
    for kind in kinds:
        rows: dict[str, Any] = {}
        for name, records, drain in scenarios:
            runs = []
            for k in range(args.repeat):
                console.print(f"[dim]{kind}: {name}, round {k + 1}/{args.repeat}…[/dim]")
                runs.append(await timed_drain(kind, workdir, records, drain, mongo_url))
            best = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]
            rows[name] = {**best, "runs_per_s": [round(r["per_s"]) for r in runs]}
        console.print(f"[dim]{kind}: latency…[/dim]")
        rows["latency"] = await latency(kind, workdir, args.latency_samples, args.latency_rate, mongo_url)
        results[kind] = rows
    return results


def report(results: dict[str, Any], *, mongo_stand_in: bool) -> dict[str, Any]:
    """Print the tables; return the verdicts on the targets. MongoDB's target is the ratio only (the
    records/s target is set for SQLite and PostgreSQL), and its rows say when they come from the stand-in."""
    labels = {"sqlite": "sqlite", "postgres": "postgres", "mongo": "mongo"}
    if mongo_stand_in:
        labels["mongo"] = "mongo (stand-in)"
    table = Table(title="outbox drain: records/s (median of rounds)")
    for column in (
        "database",
        "drainer → sink",
        "records",
        "seconds",
        "records/s",
        "× seed",
        "rounds",
        "target",
    ):
        table.add_column(column, justify="left" if column in ("database", "drainer → sink") else "right")
    verdicts: dict[str, Any] = {}
    for kind, rows in results.items():
        seed = rows["seed drainer → hub"]["per_s"]
        for name, row in rows.items():
            if name == "latency":
                continue
            target = ""
            if name == "outboxhub Drainer → hub":
                ratio = row["per_s"] / seed
                floor = 0 if kind == "mongo" else TARGET_PER_S
                met = row["per_s"] >= floor and ratio >= TARGET_VS_SEED
                verdicts[kind] = {"per_s": round(row["per_s"]), "vs_seed": round(ratio, 1), "met": met}
                wanted = f"≥ {TARGET_VS_SEED:.0f}×" if kind == "mongo" else f"≥ {TARGET_PER_S:,}/s and ≥ 10×"
                target = f"{wanted}: " + ("[green]met" if met else "[red]missed")
            table.add_row(
                labels[kind],
                name,
                f"{row['records']:,}",
                f"{row['seconds']:.2f}",
                f"{row['per_s']:,.0f}",
                f"{row['per_s'] / seed:.1f}×",
                " / ".join(f"{r:,}" for r in row["runs_per_s"]),
                target,
            )
    console.print(table)
    lat = Table(title="commit → confirmed publish, drainer idle on its wake-up path")
    for column in ("database", "wake-up", "samples", "p50 ms", "p99 ms", "max ms"):
        lat.add_column(column, justify="left" if column in ("database", "wake-up") else "right")
    for kind, rows in results.items():
        row = rows["latency"]
        lat.add_row(
            labels[kind],
            row["wake"],
            str(row["samples"]),
            f"{row['p50_ms']}",
            f"{row['p99_ms']}",
            f"{row['max_ms']}",
        )
    console.print(lat)
    if "mongo" in results and mongo_stand_in:
        console.print(
            f"[yellow]MongoDB numbers come from the {STAND_IN} (wire protocol over SQLite, in memory): they "
            "show the drainers' round trips, not MongoDB's speed. Give --mongo-url for a real one.[/yellow]"
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="records per outboxhub drain run")
    parser.add_argument("--seed-records", type=int, default=2_000, help="records per seed drainer run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per scenario; the median is reported")
    parser.add_argument("--latency-samples", type=int, default=300, help="records committed one at a time")
    parser.add_argument("--latency-rate", type=float, default=100.0, help="commits per second")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "outbox.json")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put SQLite files (default: temp dir)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    parser.add_argument(
        "--mongo-url",
        default=None,
        help="MongoDB server (mongodb://host:27017/?replicaSet=rs0); default: the nx-27017 stand-in, "
        "started in memory on a free port for the run (not a real MongoDB)",
    )
    parser.add_argument(
        "--databases",
        nargs="+",
        choices=("sqlite", "postgres", "mongo"),
        default=["sqlite", "postgres", "mongo"],
        help="outbox databases to bench (default: all three)",
    )
    args = parser.parse_args()
    for name in ("records", "seed_records", "repeat", "latency_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        mongo_url = args.mongo_url
        if mongo_url is None and "mongo" in args.databases:
            mongo_url = stack.enter_context(stand_in())
        if args.no_uvloop:
            loop_name, results = "asyncio", asyncio.run(run(args, workdir, mongo_url))
        else:
            import uvloop

            loop_name, results = "uvloop", uvloop.run(run(args, workdir, mongo_url))
    verdicts = report(results, mongo_stand_in=args.mongo_url is None)
    load_after = os.getloadavg()
    console.print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "bench": "outbox",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loop": loop_name,
                "load_avg_before": load_before,
                "load_avg_after": load_after,
                "args": {k: str(v) for k, v in vars(args).items()},
                "results": results,
                "verdicts": verdicts,
                "mongo_server": None
                if "mongo" not in results
                else STAND_IN
                if args.mongo_url is None
                else f"MongoDB at {mask_url(args.mongo_url)}",
                "run_id": new_id(),
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
