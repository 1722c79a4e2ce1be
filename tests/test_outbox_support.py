"""Helpers shared by the outbox tests (no tests here): real outbox databases and recording sinks.

* ``sqlite_db(tmp_path)`` — an ``OutboxDB`` on a WAL-mode SQLite file with the outbox table created.
* ``postgres_db()`` — an ``OutboxDB`` on a throwaway schema of the test server (``OUTBOXHUB_TEST_PG_URL``,
  default 127.0.0.1:5432/test), dropped afterwards. Unreachable server: skip, or fail under ``CI=true``.
* ``mongo_db()`` — a ``MongoOutboxDB`` on a fresh database of the MongoDB test server (tests/mongo_server.py:
  the nx-27017 stand-in or ``OUTBOXHUB_TEST_MONGO_URL``) with the outbox indexes, dropped afterwards.
* ``open_any_db(kind, tmp_path)`` — one of the three by name: the outbox-store contract
  (tests/test_outbox_store.py) runs on each through the ``AnyOutboxDB`` interface.
* ``RecordingSink`` — an in-memory hub: idempotent by event id like the real one, recording every publish
  call so tests can count re-publishes; it can be told to fail for some topics.
* ``check_ordered_claims`` — the per-key ordering walk of ``claim_batch(ordered_by_key=True)`` over seven
  records keyed ``a a b - a c b`` (part of the contract).
* ``race_two_drainers`` / ``assert_published_once`` — two drainers draining one outbox at once through
  a slow sink, and the checks that each record went out exactly once (in key order when ordered).
* ``crash_drain`` — the SIGKILL crash test of a drainer child process (tests/test_outbox_crash.py for
  SQLite and PostgreSQL, tests/test_mongo_outbox_crash.py for MongoDB): kill it right after the hub
  committed a batch, again and again, then check the hub holds every record exactly once, in key order.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pymongo
import pytest

from mongo_server import mongo_database
from mysql_support import mysql_db
from outboxhub import outbox
from outboxhub.ids import now_ms
from outboxhub.model import Event, NewEvent, PublishResult
from outboxhub.outbox import Drainer, DrainerSettings, Failure, OutboxStats, OutboxStore, Verdict
from outboxhub.store import open_store
from outboxhub.testing.postgres import base_url, fresh_schema

__all__ = [
    "ORDERED_KEYS",
    "AnyOutboxDB",
    "MongoOutboxDB",
    "OutboxDB",
    "RecordingSink",
    "assert_key_order",
    "assert_published_once",
    "check_ordered_claims",
    "crash_drain",
    "mongo_db",
    "open_any_db",
    "open_db",
    "postgres_db",
    "race_two_drainers",
    "sqlite_db",
]


class OutboxDB:
    """A real outbox database, reached as an application (``connect``) or as a drainer (``url``)."""

    def __init__(self, kind: str, dsn: str, table: str) -> None:
        self.kind = kind
        self.dsn = dsn
        self.table = table
        self.url = f"sqlite:///{dsn}?table={table}" if kind == "sqlite" else f"{dsn}?table={table}"

    def connect(self) -> Any:
        """A new application connection (sqlite3 or psycopg, not autocommit)."""
        if self.kind == "sqlite":
            return sqlite3.connect(self.dsn)
        return psycopg.connect(self.dsn)

    def add_many(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """``outbox.add`` each record (keyword arguments of add) in one committed transaction."""
        conn = self.connect()
        try:
            ids = [
                outbox.add(conn, r["topic"], r.get("payload"), **_extra(r), table=self.table) for r in records
            ]
            conn.commit()
        finally:
            conn.close()
        return ids

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``{t}`` is the quoted table, ``?`` placeholders) and return the rows."""
        quoted = outbox.postgres.quote_table(self.table)
        sql = sql.replace("{t}", quoted)
        conn = self.connect()
        try:
            if self.kind == "sqlite":
                return list(conn.execute(sql, params).fetchall())
            rows = conn.execute(sql.replace("?", "%s"), params).fetchall()
            conn.rollback()
            return list(rows)
        finally:
            conn.close()

    def count(self, where: str = "TRUE", params: Sequence[Any] = ()) -> int:
        return int(self.query(f"SELECT count(*) FROM {{t}} WHERE {where}", params)[0][0])

    def status_counts(self) -> Counter[str]:
        """How many records the table holds in each status."""
        return Counter(
            {
                str(status): int(n)
                for status, n in self.query("SELECT status, count(*) FROM {t} GROUP BY status")
            }
        )


class MongoOutboxDB:
    """A MongoDB database holding the outbox collection, written to as an application does (pymongo)."""

    kind = "mongo"

    def __init__(self, url: str, table: str = "outbox") -> None:
        self.url = url
        self.table = table

    def connect(self) -> pymongo.MongoClient[Any]:
        """A new application client; its default database is the outbox's."""
        return pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000)

    def add_many(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """``outbox.add`` each record (keyword arguments of add) on a pymongo ``Database``, each written on
        its own: a transaction needs a replica set, and the stand-in is a standalone server."""
        with self.connect() as client:
            database = client.get_default_database()
            return [
                outbox.add(database, r["topic"], r.get("payload"), **_extra(r), table=self.table)
                for r in records
            ]

    def status_counts(self) -> Counter[str]:
        """How many records the collection holds in each status."""
        with self.connect() as client:
            docs = client.get_default_database()[self.table].find({}, {"status": 1})
            return Counter(str(doc.get("status")) for doc in docs)


class AnyOutboxDB(Protocol):
    """What the outbox-store contract needs of a database of any kind: where a drainer connects, a way to
    add records as an application does, and a look at the statuses behind the store's back."""

    kind: str
    url: str

    def add_many(self, records: Sequence[dict[str, Any]]) -> list[str]: ...

    def status_counts(self) -> Counter[str]: ...


def _extra(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k in ("id", "key", "headers")}


def sqlite_db(tmp_path: Path, name: str = "app") -> OutboxDB:
    """An application SQLite database in WAL mode with the outbox table."""
    path = tmp_path / f"{name}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    outbox.ensure_schema(conn)
    conn.close()
    return OutboxDB("sqlite", str(path), "outbox")


@asynccontextmanager
async def postgres_db() -> AsyncIterator[OutboxDB]:
    """An outbox table in a fresh schema of the test server; the schema is dropped afterwards."""
    async with fresh_schema("obx") as schema:
        url = base_url()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await outbox.ensure_schema_async(conn, f"{schema}.outbox")
        yield OutboxDB("postgres", url, f"{schema}.outbox")


@asynccontextmanager
async def mongo_db() -> AsyncIterator[MongoOutboxDB]:
    """An outbox collection, with its indexes, in a fresh database of the MongoDB test server (dropped
    afterwards). No server: skip, or fail under ``CI=true``."""
    async with mongo_database(prefix="obx") as url:
        db = MongoOutboxDB(url)
        with db.connect() as client:
            outbox.ensure_schema(client.get_default_database(), db.table)
        yield db


@asynccontextmanager
async def open_db(kind: str, tmp_path: Path) -> AsyncIterator[OutboxDB]:
    """``sqlite_db``, ``postgres_db`` or ``mysql_db`` by name (for parametrized fixtures); a
    ``MysqlOutboxDB`` offers the same ``url``, ``add_many``, ``query``, ``count`` and ``status_counts``."""
    if kind == "sqlite":
        yield sqlite_db(tmp_path)
    elif kind == "mysql":
        with mysql_db() as mysql:
            yield mysql  # type: ignore[misc]
    else:
        async with postgres_db() as db:
            yield db


@asynccontextmanager
async def open_any_db(kind: str, tmp_path: Path) -> AsyncIterator[AnyOutboxDB]:
    """``sqlite_db``, ``postgres_db``, ``mongo_db`` or ``mysql_db`` (tests/mysql_support.py) by name (for
    parametrized fixtures)."""
    if kind == "mongo":
        async with mongo_db() as mongo:
            yield mongo
    else:
        async with open_db(kind, tmp_path) as sql:
            yield sql


class RecordingSink:
    """An in-memory hub. ``calls`` counts every publish of every id (re-publishes included); ``log`` holds
    each id once, in publish order, like the hub's log. ``fail`` decides per event whether to raise."""

    def __init__(self, fail: Callable[[NewEvent], BaseException | None] | None = None) -> None:
        self.fail = fail
        self.calls: Counter[str] = Counter()
        self.log: list[NewEvent] = []
        self.batches: list[int] = []
        self._seq: dict[str, int] = {}

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        if self.fail is not None:
            for event in events:
                error = self.fail(event)
                if error is not None:
                    raise error
        self.batches.append(len(events))
        results = []
        for event in events:
            assert event.id is not None
            self.calls[event.id] += 1
            seq = self._seq.get(event.id)
            if seq is None:
                self.log.append(event)
                seq = self._seq[event.id] = len(self.log)
                results.append(PublishResult(id=event.id, seq=seq))
            else:
                results.append(PublishResult(id=event.id, seq=seq, duplicate=True))
        return results

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.log if e.id is not None]


class _Interleaving(RecordingSink):
    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        await asyncio.sleep(0.002)  # a publish takes time: the other drainer claims meanwhile
        return await super().publish_batch(events)


async def race_two_drainers(url: str, ordered: bool) -> tuple[RecordingSink, list[Drainer], OutboxStats]:
    """Two drainers, each on its own store of the outbox at ``url``, drain it at once into one slow sink
    (batches of 20, two lanes each). Return the sink, the drainers and the outbox's stats afterwards."""
    sink = _Interleaving()
    settings = DrainerSettings(batch_size=20, concurrency=2, ordered_by_key=ordered, idle_wait_ms=20)
    stores = [await outbox.open_outbox(url) for _ in range(2)]
    try:
        drainers = [Drainer(s, sink, settings) for s in stores]
        await asyncio.gather(*(d.run_until_idle() for d in drainers))
        stats = await stores[0].stats()
    finally:
        for s in stores:
            await s.close()
    return sink, drainers, stats


def assert_key_order(events: list[NewEvent]) -> None:
    """Each key's events (payload ``{"n": i}``) were published in the order they were added."""
    by_key: dict[str | None, list[int]] = defaultdict(list)
    for event in events:
        by_key[event.key].append(event.payload["n"])
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), f"key {key} published out of order: {numbers}"


def assert_published_once(
    sink: RecordingSink, ids: list[str], drainers: list[Drainer], ordered: bool
) -> None:
    """Every record of ``ids`` reached ``sink`` once, every drainer took part, key order held if asked."""
    assert sorted(sink.ids) == sorted(ids)  # none skipped
    assert [i for i, n in sink.calls.items() if n != 1] == []  # none published twice
    assert all(d.published > 0 for d in drainers), [d.published for d in drainers]
    if ordered:
        assert_key_order(sink.log)


# -- per-key ordering ----------------------------------------------------------------------------------------

ORDERED_KEYS: list[str | None] = ["a", "a", "b", None, "a", "c", "b"]
"""The keys of the records ``check_ordered_claims`` expects (payload = position, topic ``k.v``)."""


async def check_ordered_claims(store: OutboxStore, ids: list[str], lease_ms: int) -> None:
    """Walk ordered claims over the records ``ids`` (keys ``ORDERED_KEYS``, payload i for the i-th) in
    ``store``: earlier records of a key come along in order, a claimed, backing-off or dead record blocks
    the later ones of its key, and claims without ordering ignore keys."""
    t = now_ms()
    # Earlier records of a key that are claimable now come along in the same batch, in order.
    everything = await store.claim_batch(10, lease_ms, "w", ordered_by_key=True, now=t)
    assert [r.id for r in everything] == ids
    assert await store.release(everything, now=t) == 7

    first = await store.claim_batch(1, lease_ms, "w", ordered_by_key=True, now=t)  # a0 only
    rest = await store.claim_batch(10, lease_ms, "w", ordered_by_key=True, now=t)
    assert [r.payload for r in rest] == [2, 3, 5, 6]  # a1 and a4 wait behind the claimed a0
    await store.release(rest, now=t)

    # a0 fails and backs off: a1/a4 stay blocked until a0 is sent.
    await store.mark_failed(
        [Failure(record=first[0], error="e", verdict=Verdict(dead=False, delay_ms=100))], now=t
    )
    assert [r.payload for r in await store.claim_batch(10, lease_ms, "w", ordered_by_key=True, now=t)] == [
        2,
        3,
        5,
        6,
    ]
    retried = await store.claim_batch(10, lease_ms, "w", ordered_by_key=True, now=t + 100)
    assert [r.payload for r in retried] == [0, 1, 4]

    # A dead record blocks its key until an operator retries or purges it.
    await store.mark_failed([Failure(record=retried[0], error="e", verdict=Verdict(dead=True))], now=t)
    await store.release(retried[1:], now=t)
    assert await store.claim_batch(10, lease_ms, "w", ordered_by_key=True, now=t + 200) == []
    # Without ordering, keys are ignored.
    assert [r.payload for r in await store.claim_batch(10, lease_ms, "w", now=t + 200)] == [1, 4]


# -- crash test: a SIGKILLed drainer child -------------------------------------------------------------------

_CRASH_KILLS = 4
_CRASH_STUCK_S = 60.0
"""Safety net: a child that makes no progress for this long is killed and the test fails."""

_CRASH_WORKER = r"""
import asyncio, sys
from outboxhub import outbox
from outboxhub.store import open_store

class Announcing:
    def __init__(self, hub):
        self.hub = hub

    async def publish_batch(self, events):
        results = await self.hub.publish_batch(events)
        print("PUBLISHED", len(events), flush=True)  # committed in the hub, not yet marked sent
        await asyncio.sleep(0.05)
        return results

async def main():
    store = await outbox.open_outbox(sys.argv[1])
    hub = await open_store(sys.argv[2])
    settings = outbox.DrainerSettings(
        batch_size=int(sys.argv[3]), lease_ms=int(sys.argv[4]), requeue_interval_ms=50, idle_wait_ms=20,
        ordered_by_key=True, max_attempts=1_000,
    )
    drainer = outbox.Drainer(store, Announcing(hub), settings)
    await drainer.run_until_idle()
    print("DONE", drainer.published, drainer.duplicates, flush=True)
    await store.close()
    await hub.close()

asyncio.run(main())
"""


class _CrashChild:
    """How to start the drainer child: its outbox and hub URLs, its batch size and lease, its stderr."""

    def __init__(self, outbox_url: str, hub_url: str, stderr: Path, batch_size: int, lease_ms: int) -> None:
        self.argv = [sys.executable, "-c", _CRASH_WORKER, outbox_url, hub_url, str(batch_size), str(lease_ms)]
        self.stderr = stderr

    def start(self) -> subprocess.Popen[str]:
        with self.stderr.open("a") as err:
            return subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=err, text=True)

    def kill_after_publishes(self, publishes: int) -> None:
        child = self.start()
        assert child.stdout is not None
        watchdog = threading.Timer(_CRASH_STUCK_S, child.kill)  # a stuck child must not hang the suite
        watchdog.start()
        seen = 0
        try:
            for line in child.stdout:
                if line.startswith("PUBLISHED"):
                    seen += 1
                    if seen == publishes:
                        break
        finally:
            watchdog.cancel()
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        if seen < publishes:
            pytest.fail(
                f"drainer child ended before publishing {publishes} batches:\n{self.stderr.read_text()}"
            )
        assert child.returncode == -signal.SIGKILL

    def final_run(self, timeout_s: float) -> tuple[int, int]:
        """Run the child to the end; return its (published, duplicates)."""
        child = self.start()
        try:
            out, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            pytest.fail(f"final drainer run did not finish in {timeout_s} s:\n{self.stderr.read_text()}")
        done = [line.split() for line in out.splitlines() if line.startswith("DONE")]
        if child.returncode != 0 or not done:
            pytest.fail(f"final drainer run failed ({child.returncode}):\n{self.stderr.read_text()}")
        return int(done[0][1]), int(done[0][2])


async def _hub_log(hub_url: str) -> list[Event]:
    hub = await open_store(hub_url)
    try:
        events: list[Event] = []
        while True:
            page = await hub.scan("**", after_seq=events[-1].seq if events else 0, limit=1_000)
            if not page:
                return events
            events.extend(page)
    finally:
        await hub.close()


async def crash_drain(
    *,
    outbox_url: str,
    hub_url: str,
    tmp_path: Path,
    ids: list[str],
    count_sent: Callable[[], int],
    batch_size: int,
    lease_ms: int,
    final_timeout_s: float = _CRASH_STUCK_S,
) -> None:
    """Drain the outbox at ``outbox_url`` (holding the records ``ids``, keyed ``k1``..``k9`` but ``k5``,
    ``{"n": i}`` payloads) into the hub store at ``hub_url`` with a child drainer SIGKILLed after its
    first or second committed batch, four times; then a final run. Checks that the kills left work behind,
    that the last one caused a re-publish, and that the hub's log holds every record exactly once with each
    key's records in order; ``count_sent()`` counts the outbox's sent records."""
    child = _CrashChild(outbox_url, hub_url, tmp_path / "drainer.stderr", batch_size, lease_ms)
    for kill in range(_CRASH_KILLS):
        await asyncio.to_thread(child.kill_after_publishes, 1 + kill % 2)
    assert count_sent() < len(ids)  # the kills left work behind
    _, duplicates = await asyncio.to_thread(child.final_run, final_timeout_s)
    # The last kill struck between the hub's commit and mark-sent: that batch went out twice.
    assert duplicates > 0

    log = await _hub_log(hub_url)
    assert len(log) == len({e.id for e in log}), "an outbox record is in the hub's log more than once"
    assert sorted(e.id for e in log) == sorted(ids), "an outbox record is missing from the hub's log"
    by_key: dict[str, list[int]] = defaultdict(list)
    for event in log:  # scan returns seq order
        if event.key is not None:
            by_key[event.key].append(event.payload["n"])
    assert len(by_key) == 8  # k1..k4, k6..k9 (multiples of five have no key)
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), f"key {key} out of order in the hub: {numbers}"
    assert count_sent() == len(ids)
