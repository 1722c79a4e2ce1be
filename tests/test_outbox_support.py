"""Helpers shared by the outbox tests (no tests here): real outbox databases and recording sinks.

* ``sqlite_db(tmp_path)`` — an ``OutboxDB`` on a WAL-mode SQLite file with the outbox table created.
* ``postgres_db()`` — an ``OutboxDB`` on a throwaway schema of the test server (``OUTBOXHUB_TEST_PG_URL``,
  default 127.0.0.1:5432/test), dropped afterwards. Unreachable server: skip, or fail under ``CI=true``.
* ``RecordingSink`` — an in-memory hub: idempotent by event id like the real one, recording every publish
  call so tests can count re-publishes; it can be told to fail for some topics.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg

from outboxhub import outbox
from outboxhub.model import NewEvent, PublishResult
from outboxhub.store._pg_testing import require_postgres

__all__ = ["OutboxDB", "RecordingSink", "open_db", "postgres_db", "sqlite_db"]


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
    url = await require_postgres()
    schema = f"obx_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await outbox.ensure_schema_async(conn, f"{schema}.outbox")
    try:
        yield OutboxDB("postgres", url, f"{schema}.outbox")
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def open_db(kind: str, tmp_path: Path) -> AsyncIterator[OutboxDB]:
    """``sqlite_db`` or ``postgres_db`` by name (for parametrized fixtures)."""
    if kind == "sqlite":
        yield sqlite_db(tmp_path)
    else:
        async with postgres_db() as db:
            yield db


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
