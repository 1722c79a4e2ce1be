"""A naive one-record-at-a-time drainer (the original TypeScript design's), re-created faithfully over the
same outbox table or collection: the baseline of ``outboxhub bench drainers``.

Per round it re-queues expired leases, then claims up to :data:`NAIVE_BATCH` records one per round trip
(an ``UPDATE … WHERE seq = (SELECT … LIMIT 1) RETURNING`` on SQL, ``find_one_and_update`` sorted by ``ts``
on MongoDB), then for each record publishes it (without an event id, as that design did, so a crash
between publish and mark-sent publishes twice) and marks it sent with its own update. It stops when a
round claims nothing (that design slept 250 ms and went on).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

from outboxhub.bench.drain_db import OutboxDb, quoted
from outboxhub.ids import now_ms
from outboxhub.model import NewEvent
from outboxhub.store import Store

__all__ = ["NAIVE_BATCH", "naive_drain"]

NAIVE_BATCH: Final = 100  # that design's claimBatch default
_LEASE_MS: Final = 30_000

NaiveRecord = tuple[str, str, Any, dict[str, str] | None]  # id, topic, payload, headers


class _NaiveOutbox(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def claim_batch(self, n: int, lease_ms: int, worker: str) -> list[NaiveRecord]: ...
    async def mark_sent(self, record_id: str) -> None: ...
    async def requeue_expired(self) -> None: ...


class NaiveSqlOutbox:
    """The naive drainer's queries over the SQL outbox table (SQLite or PostgreSQL)."""

    def __init__(self, db: OutboxDb) -> None:
        self.db = db
        q = quoted(db.table)
        cols = "seq, id, topic, payload, headers"
        pick = f"SELECT seq FROM {q} WHERE status = 'pending' ORDER BY seq LIMIT 1"
        p = "?" if db.kind == "sqlite" else "%s"
        if db.kind == "sqlite":
            self.claim_sql = (
                f"UPDATE {q} SET status = 'claimed', claimed_by = ?, lease_until = ?, "
                f"attempts = attempts + 1 WHERE seq = ({pick}) RETURNING {cols}"
            )
        else:
            self.claim_sql = (
                f"UPDATE {q} SET status = 'claimed', claimed_by = %s, lease_until = %s, "
                f"attempts = attempts + 1 WHERE seq = ({pick} FOR UPDATE SKIP LOCKED) "
                f"RETURNING seq, id, topic, payload::text, headers::text"
            )
        self.sent_sql = (
            f"UPDATE {q} SET status = 'sent', claimed_by = NULL, lease_until = NULL WHERE id = {p}"
        )
        self.requeue_sql = (
            f"UPDATE {q} SET status = 'pending', claimed_by = NULL, lease_until = NULL "
            f"WHERE status = 'claimed' AND lease_until < {p}"
        )
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._sqlite: Any = None
        self._pg: Any = None

    async def open(self) -> None:
        if self.db.kind == "sqlite":
            import sqlite3

            path = self.db.path
            self._sqlite = await self._thread(
                lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            )
        else:
            import psycopg

            self._pg = await psycopg.AsyncConnection.connect(self.db.pg_url, autocommit=True)
            # The same planner settings as PostgresOutbox: a comparison of round trips, not of plans.
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
        cur = await self._pg.execute(sql, params)
        return list(await cur.fetchall()) if cur.description else []

    async def claim_batch(self, n: int, lease_ms: int, worker: str) -> list[NaiveRecord]:
        docs: list[NaiveRecord] = []
        for _ in range(n):  # one claim per round trip
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


class NaiveMysqlOutbox:
    """The naive drainer on MySQL/MariaDB (asyncmy): MySQL has no ``UPDATE … RETURNING``, so each claim is
    ``SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED``, an ``UPDATE`` of that row and ``COMMIT``; ``mark_sent``
    is an ``UPDATE`` per record (autocommit)."""

    def __init__(self, db: OutboxDb) -> None:
        self.db = db
        q = f"`{db.table}`"
        self.pick_sql = (
            f"SELECT seq, id, topic, payload, headers FROM {q} WHERE status = 'pending' "
            "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        self.claim_sql = (
            f"UPDATE {q} SET status = 'claimed', claimed_by = %s, lease_until = %s, attempts = attempts + 1 "
            "WHERE seq = %s"
        )
        self.sent_sql = f"UPDATE {q} SET status = 'sent', claimed_by = NULL, lease_until = NULL WHERE id = %s"
        self.requeue_sql = (
            f"UPDATE {q} SET status = 'pending', claimed_by = NULL, lease_until = NULL "
            "WHERE status = 'claimed' AND lease_until < %s"
        )
        self._conn: Any = None

    async def open(self) -> None:
        import asyncmy

        from outboxhub.outbox.mysql_sql import connect_kwargs

        self._conn = await asyncmy.connect(**connect_kwargs(self.db.mysql_url), autocommit=True)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def claim_batch(self, n: int, lease_ms: int, worker: str) -> list[NaiveRecord]:
        docs: list[NaiveRecord] = []
        for _ in range(n):  # one claim (one short transaction) per record
            await self._conn.begin()
            async with self._conn.cursor() as cur:
                await cur.execute(self.pick_sql)
                row = await cur.fetchone()
                if row is not None:
                    await cur.execute(self.claim_sql, (worker, now_ms() + lease_ms, row[0]))
            await self._conn.commit()
            if row is None:
                break
            _, record_id, topic, payload, headers = row
            docs.append((record_id, topic, json.loads(payload), json.loads(headers) if headers else None))
        return docs

    async def mark_sent(self, record_id: str) -> None:
        async with self._conn.cursor() as cur:
            await cur.execute(self.sent_sql, (record_id,))

    async def requeue_expired(self) -> None:
        async with self._conn.cursor() as cur:
            await cur.execute(self.requeue_sql, (now_ms(),))


class NaiveMongoOutbox:
    """The naive drainer on MongoDB, with pymongo's async client: ``claim_batch`` is a loop of
    ``find_one_and_update`` (sort ``ts``), ``mark_sent`` an ``update_one``, ``requeue_expired`` an
    ``update_many``."""

    def __init__(self, db: OutboxDb) -> None:
        self.url = db.url
        self.database = db.database
        self.table = db.table
        self._client: Any = None

    @property
    def coll(self) -> Any:
        return self._client[self.database][self.table]

    async def open(self) -> None:
        from pymongo import AsyncMongoClient

        self._client = AsyncMongoClient(self.url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def claim_batch(self, n: int, lease_ms: int, worker: str) -> list[NaiveRecord]:
        from pymongo import ReturnDocument

        now = now_ms()
        docs: list[NaiveRecord] = []
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


async def naive_drain(db: OutboxDb, hub: Store) -> None:
    """Drain ``db`` into ``hub`` the naive way until a round claims nothing."""
    box: _NaiveOutbox = (
        NaiveMongoOutbox(db)
        if db.kind == "mongo"
        else NaiveMysqlOutbox(db)
        if db.kind == "mysql"
        else NaiveSqlOutbox(db)
    )
    await box.open()
    try:
        while True:
            await box.requeue_expired()
            batch = await box.claim_batch(NAIVE_BATCH, _LEASE_MS, "drainer-naive")
            if not batch:
                return
            for record_id, topic, payload, headers in batch:
                await hub.publish(NewEvent(topic=topic, payload=payload, headers=headers))
                await box.mark_sent(record_id)
    finally:
        await box.close()
