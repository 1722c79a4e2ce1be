"""``outboxhub bench inbox``: what the consumer inbox costs per event, on SQLite and PostgreSQL.

A hub subprocess (SQLite store) is prefilled with ``--events`` events; then, for each database, Python
SDK consumers (one connection, ``concurrency=1``, a fresh group each) read all of them in three cases:

1. ``sdk handler, no database``: the handler does nothing (the SDK's own cost per event);
2. ``<db> write, commit per event``: the handler inserts one row and commits (at-least-once), in the
   same machinery the inbox uses (``SqliteInbox``'s worker thread and connection pool, or
   ``AsyncPsycopgInbox``'s pool), only without the inbox record;
3. ``<db> write + inbox``: the same write plus the inbox record, in one transaction (exactly-once).

Case 3 minus case 2 is the inbox's cost per event (one more ``INSERT … ON CONFLICT DO NOTHING`` into an
indexed table, in a transaction that commits anyway); it is printed as a note. Rows are the median of
``--repeat`` rounds; cases 2 and 3 swap their order every round. PostgreSQL is ``--pg-url`` (default
``OUTBOXHUB_TEST_PG_URL`` or 127.0.0.1:5432/test), a throwaway schema; left out with a note when
unreachable.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from outboxhub import __version__
from outboxhub.bench.hubproc import start_hub_process
from outboxhub.bench.measure import throughput_row
from outboxhub.bench.report import Tracker
from outboxhub.bench.results import SDK, BenchReport, Measurement, machine_info
from outboxhub.client import HubClient, SubscribeContext
from outboxhub.inbox import AsyncPsycopgInbox, SqliteInbox, ensure_schema, ensure_schema_async
from outboxhub.model import NewEvent

__all__ = ["InboxBenchOptions", "run_inbox_bench"]

SCENARIO: Final = "inbox"
TOPIC: Final = "bench.inbox"
DEFAULT_PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
Database = Literal["sqlite", "postgres"]
DATABASES: Final[tuple[Database, ...]] = ("sqlite", "postgres")


class InboxBenchOptions(msgspec.Struct, frozen=True, kw_only=True):
    """``events`` consumed per case, ``repeat`` rounds, the ``databases`` to bench."""

    databases: tuple[Database, ...] = DATABASES
    events: int = 2_000
    repeat: int = 3
    pg_url: str | None = None

    def __post_init__(self) -> None:
        if self.events < 1 or self.repeat < 1:
            raise ValueError("--events and --repeat must be >= 1")
        if not self.databases or set(self.databases) - set(DATABASES):
            raise ValueError(f"--database takes {', '.join(DATABASES)}")


class _NoClaimSqlite(SqliteInbox):
    """``SqliteInbox`` without the inbox record: the same thread, pool and transaction (case 2)."""

    def _run(self, group: str, topic: str, event_id: str, work: Any) -> bool:
        with self._transaction() as db:
            work(db)
        return True


class _NoClaimPostgres(AsyncPsycopgInbox):
    """``AsyncPsycopgInbox`` without the inbox record (case 2)."""

    async def run(self, group: str, topic: str, event_id: str, work: Any) -> bool:
        async with self._transaction() as db:
            await work(db)
        return True


async def _consume(target: Any, n: int, handler: Callable[..., Any], inbox: Any | None) -> float:
    """Seconds for one fresh group to handle ``n`` events (from subscribe to the last handler return)."""
    handled = 0
    done = asyncio.Event()

    def count() -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    group = f"b{uuid.uuid4().hex[:10]}"
    async with HubClient(target.ws_url, target.token) as client:
        start = time.perf_counter()
        if inbox is None:

            def plain(event: Any, ctx: SubscribeContext) -> None:
                count()

            await client.subscribe(TOPIC, group, plain, start="earliest")
        else:
            loop = asyncio.get_running_loop()

            def counted(result: Any) -> None:
                loop.call_soon_threadsafe(count)

            await client.subscribe(
                TOPIC, group, handler(counted), inbox=inbox, start="earliest", max_in_flight=256
            )
        await done.wait()
        elapsed = time.perf_counter() - start
        await client.drain()
    return elapsed


def _sqlite_handler(done: Callable[[Any], None]) -> Callable[..., None]:
    def handle(event: Any, ctx: SubscribeContext, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO applied (event_id, n) VALUES (?, ?)", (ctx.id, ctx.seq))
        done(None)

    return handle


def _pg_handler(table: str) -> Callable[[Callable[[Any], None]], Callable[..., Any]]:
    def make(done: Callable[[Any], None]) -> Callable[..., Any]:
        async def handle(event: Any, ctx: SubscribeContext, conn: Any) -> None:
            await conn.execute(f"INSERT INTO {table} (event_id, n) VALUES (%s, %s)", (ctx.id, ctx.seq))
            done(None)

        return handle

    return make


async def _both(
    target: Any, n: int, handler: Callable[..., Any], plain: Any, boxed: Any, inbox_first: bool
) -> dict[str, float]:
    """Both cases, in the order given (alternated between rounds so neither always runs first)."""
    order = [("inbox", boxed), ("write", plain)] if inbox_first else [("write", plain), ("inbox", boxed)]
    return {case: await _consume(target, n, handler, box) for case, box in order}


async def _sqlite_cases(target: Any, n: int, workdir: Path, inbox_first: bool) -> dict[str, float]:
    path = workdir / f"consumer-{uuid.uuid4().hex[:8]}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE applied (event_id TEXT NOT NULL, n INTEGER NOT NULL)")
    ensure_schema(conn)
    conn.close()
    plain, boxed = _NoClaimSqlite(path), SqliteInbox(path)
    try:
        return await _both(target, n, _sqlite_handler, plain, boxed, inbox_first)
    finally:
        await plain.close()
        await boxed.close()


async def _pg_cases(target: Any, n: int, pg_url: str, inbox_first: bool) -> dict[str, float]:
    import psycopg

    schema = f"bench_inbox_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f"CREATE TABLE {schema}.applied (event_id TEXT NOT NULL, n BIGINT NOT NULL)")
        await ensure_schema_async(conn, f"{schema}.inbox")
    plain = _NoClaimPostgres(pg_url, table=f"{schema}.inbox")
    boxed = AsyncPsycopgInbox(pg_url, table=f"{schema}.inbox")
    handler = _pg_handler(f"{schema}.applied")
    try:
        return await _both(target, n, handler, plain, boxed, inbox_first)
    finally:
        await plain.close()
        await boxed.close()
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def _pg_reachable(pg_url: str) -> str | None:
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(pg_url, connect_timeout=3):
            return None
    except Exception as exc:  # any failure: left out with a note
        return f"PostgreSQL at {pg_url.split('@')[-1]} left out: {exc}"


async def run_inbox_bench(options: InboxBenchOptions, *, console: Any = None) -> BenchReport:
    """Run the bench (see the module) and return its report."""
    n = options.events
    notes: list[str] = []
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    pg_url = options.pg_url or os.environ.get("OUTBOXHUB_TEST_PG_URL") or DEFAULT_PG_URL
    databases = list(options.databases)
    if "postgres" in databases and (problem := await _pg_reachable(pg_url)) is not None:
        notes.append(problem)
        databases.remove("postgres")
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="outboxhub-bench-inbox-") as tmp, Tracker(console) as tracker:
        workdir = Path(tmp)
        async with start_hub_process(f"sqlite:///{workdir / 'hub.db'}", workdir=workdir) as target:
            async with HubClient(target.ws_url, target.token) as client:
                batch = [NewEvent(topic=TOPIC, payload={"n": i}) for i in range(n)]
                await client.publish_batch(batch, keep_key_order=False)
            for round_ in range(options.repeat):
                tracker.note(f"round {round_ + 1}/{options.repeat}")
                samples.setdefault("none", []).append(await _consume(target, n, lambda d: None, None))
                for db in databases:
                    cases = (
                        await _sqlite_cases(target, n, workdir, round_ % 2 == 1)
                        if db == "sqlite"
                        else await _pg_cases(target, n, pg_url, round_ % 2 == 1)
                    )
                    for case, seconds in cases.items():
                        samples.setdefault(f"{db}:{case}", []).append(seconds)
    rows: list[Measurement] = []
    medians = {key: statistics.median(values) for key, values in samples.items()}

    def row(key: str, case: str, system: Any) -> None:
        seconds = medians[key]
        rows.append(
            throughput_row(
                SCENARIO,
                case,
                system,
                count=n,
                elapsed_s=seconds,
                server=None,
                extra={"us_per_event": seconds / n * 1e6},
            )
        )

    row("none", "sdk handler, no database", SDK)
    for db in databases:
        row(f"{db}:write", f"{db} write, commit per event", SDK)
        row(f"{db}:inbox", f"{db} write + inbox, commit per event", SDK)
        cost = (medians[f"{db}:inbox"] - medians[f"{db}:write"]) / n * 1e6
        notes.append(f"inbox cost on {db}: {cost:+.0f} µs per event (write + inbox minus write alone)")
    return BenchReport(
        scenario=SCENARIO,
        version=__version__,
        store="sqlite (hub); consumer databases: " + ", ".join(databases),
        machine=machine_info(),
        options=msgspec.to_builtins(options),
        started_at=started,
        measurements=rows,
        notes=notes,
    )
