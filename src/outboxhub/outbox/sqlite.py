"""The outbox in an application's SQLite database.

Writers (``add``) insert in the application's own transaction. The drainer's ``SqliteOutbox`` keeps one
connection, used from one worker thread so its calls never interleave. Claims are one statement
(``UPDATE … WHERE seq IN (SELECT … LIMIT n) RETURNING …``); SQLite has one writer at a time, so two
drainers never claim the same record.

Wake-up: SQLite cannot notify another process, so ``wait`` polls ``PRAGMA data_version`` every
``poll_interval_ms`` (default 10 ms). The pragma is a counter in shared memory that changes when another
connection commits: the poll costs no table read, and a commit is seen within one interval.

Durability: when the database is in WAL mode (recommended for any concurrent use), the drainer's own
connection runs with ``synchronous=NORMAL``. A power cut may then lose the drainer's last few commits
(a claim or a mark-sent), never the application's records: a lost claim expires, a lost mark-sent makes
the record publish again, which the hub deduplicates by event id.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

import msgspec

from outboxhub.errors import OutboxClosed, OutboxError, StoreError, StoreUnavailable
from outboxhub.ids import new_id
from outboxhub.outbox._sql import (
    COLUMNS,
    claim_params,
    decode_claimed,
    decode_row,
    delete_sent_sql,
    insert_values,
    missing_table_error,
    seqs_by_token,
    split_table,
    stats_sql,
)
from outboxhub.outbox.base import OutboxBackend, StatsRow, check_positive, readable
from outboxhub.outbox.model import Failure, OutboxRecord, PreparedRecord

__all__ = [
    "DEFAULT_POLL_INTERVAL_MS",
    "SqliteOutbox",
    "ensure_schema_sqlite",
    "insert_sqlite",
    "insert_statement",
    "sqlite_ddl",
]

DEFAULT_POLL_INTERVAL_MS = 10

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NOW_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_CLEAR_CLAIM = "claimed_by = NULL, claim_token = NULL, lease_until = NULL"


def sqlite_ddl(table: str = "outbox") -> list[str]:
    """The statements ``ensure_schema`` runs, for teams that manage migrations themselves.

    Defaults let other programs insert with plain SQL: only ``topic`` and ``payload`` (JSON text) are
    required; ``id`` defaults to a random hex string, ``ts`` and ``available_at`` to now.
    """
    _, name = split_table(table, allow_schema=False)
    return [
        f"""CREATE TABLE IF NOT EXISTS "{name}" (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),
    topic        TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT 'null',
    key          TEXT,
    headers      TEXT,
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'claimed', 'sent', 'dead')),
    ts           INTEGER NOT NULL DEFAULT ({_NOW_MS_SQL}),
    available_at INTEGER NOT NULL DEFAULT ({_NOW_MS_SQL}),
    attempts     INTEGER NOT NULL DEFAULT 0,
    claimed_by   TEXT,
    claim_token  TEXT,
    lease_until  INTEGER,
    last_err     TEXT,
    sent_at      INTEGER
)""",
        f'CREATE INDEX IF NOT EXISTS "{name}_pending" ON "{name}" (seq) WHERE status = \'pending\'',
        f'CREATE INDEX IF NOT EXISTS "{name}_claimed" ON "{name}" (lease_until) WHERE status = \'claimed\'',
        f'CREATE INDEX IF NOT EXISTS "{name}_dead" ON "{name}" (seq) WHERE status = \'dead\'',
        f'CREATE INDEX IF NOT EXISTS "{name}_sent_at" ON "{name}" (sent_at) WHERE status = \'sent\'',
        f'CREATE INDEX IF NOT EXISTS "{name}_key_unsent" ON "{name}" (key, seq) '
        "WHERE key IS NOT NULL AND status <> 'sent'",
    ]


def ensure_schema_sqlite(conn: sqlite3.Connection, table: str = "outbox") -> None:
    """Create the outbox table and indexes on ``conn`` and commit. Refuses to run inside an open
    transaction (it would commit the caller's work)."""
    statements = sqlite_ddl(table)
    if conn.in_transaction:
        raise OutboxError("ensure_schema: the connection has an open transaction; commit or roll back first")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert_statement(table: str, *, paramstyle: Literal["qmark", "named"]) -> str:
    """The idempotent insert ``add`` runs (``?`` for sqlite3, ``:name`` for SQLAlchemy ``text()``)."""
    _, name = split_table(table, allow_schema=False)
    values = (
        "?, ?, ?, ?, ?, ?, ?" if paramstyle == "qmark" else ":id, :topic, :payload, :key, :headers, :ts, :ts"
    )
    return (
        f'INSERT INTO "{name}" (id, topic, payload, key, headers, ts, available_at) '
        f"VALUES ({values}) ON CONFLICT (id) DO NOTHING"
    )


def insert_sqlite(conn: sqlite3.Connection, record: PreparedRecord, table: str) -> None:
    """Insert ``record`` on the caller's connection, inside the caller's transaction (no commit).
    An id that already exists is left as it is (idempotent add)."""
    try:
        conn.execute(insert_statement(table, paramstyle="qmark"), insert_values(record))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise missing_table_error(table) from exc
        raise


class SqliteOutbox(OutboxBackend):
    """``OutboxStore`` over one SQLite file. Create with ``await SqliteOutbox.open(path)``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        *,
        path: str,
        table: str,
        poll_interval_ms: int,
    ) -> None:
        _, name = split_table(table, allow_schema=False)
        self._conn = conn
        self._executor = executor
        self._path = path
        self._name = name
        self._poll_s = poll_interval_ms / 1000
        self._data_version: int | None = None
        self._closed = False
        t = f'"{name}"'
        self._claim_sql = (
            f"UPDATE {t} SET status = 'claimed', claimed_by = :worker, claim_token = :token, "
            "lease_until = :lease_until, attempts = attempts + 1 "
            f"WHERE seq IN (SELECT seq FROM {t} WHERE status = 'pending' AND available_at <= :now "
            f"ORDER BY seq LIMIT :limit) RETURNING {COLUMNS}"
        )
        # A keyed record is claimable when no earlier record of its key is unsent and unclaimable now;
        # earlier claimable ones precede it in seq order, so LIMIT takes them first (same batch, in order).
        self._claim_ordered_sql = (
            f"UPDATE {t} SET status = 'claimed', claimed_by = :worker, claim_token = :token, "
            "lease_until = :lease_until, attempts = attempts + 1 "
            f"WHERE seq IN (SELECT o.seq FROM {t} AS o WHERE o.status = 'pending' AND o.available_at <= :now "
            f"AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} AS e WHERE e.key = o.key "
            "AND e.status <> 'sent' AND e.seq < o.seq "
            "AND (e.status <> 'pending' OR e.available_at > :now))) "
            f"ORDER BY o.seq LIMIT :limit) RETURNING {COLUMNS}"
        )
        self._mark_bad_sql = (
            f"UPDATE {t} SET status = 'dead', last_err = ?, {_CLEAR_CLAIM} "
            "WHERE seq = ? AND claim_token = ? AND status = 'claimed'"
        )
        self._sent_sql = (
            f"UPDATE {t} SET status = 'sent', sent_at = ?, {_CLEAR_CLAIM} "
            "WHERE seq IN (SELECT value FROM json_each(?)) AND claim_token = ? AND status = 'claimed'"
        )
        self._failed_sql = (
            f"UPDATE {t} SET status = CASE WHEN :dead THEN 'dead' ELSE 'pending' END, "
            "available_at = CASE WHEN :dead THEN available_at ELSE :available_at END, "
            f"last_err = :err, {_CLEAR_CLAIM} "
            "WHERE seq = :seq AND claim_token = :token AND status = 'claimed'"
        )
        self._release_sql = (
            f"UPDATE {t} SET status = 'pending', attempts = max(attempts - 1, 0), available_at = ?, "
            f"{_CLEAR_CLAIM} "
            "WHERE seq IN (SELECT value FROM json_each(?)) AND claim_token = ? AND status = 'claimed'"
        )
        self._requeue_sql = (
            f"UPDATE {t} SET status = 'pending', {_CLEAR_CLAIM} WHERE status = 'claimed' AND lease_until < ?"
        )
        self._table_sql = t

    # -- lifecycle ----------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        table: str = "outbox",
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
        busy_timeout_ms: int = 5_000,
    ) -> SqliteOutbox:
        """Open the SQLite file at ``path`` (created if missing; the table is not: see ``ensure_schema``)."""
        split_table(table, allow_schema=False)
        check_positive(poll_interval_ms, name="poll_interval_ms")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-sqlite")

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise StoreUnavailable(f"cannot open SQLite outbox {path!r}: {exc}") from exc
        return cls(conn, executor, path=path, table=table, poll_interval_ms=poll_interval_ms)

    @property
    def url(self) -> str:
        return f"sqlite:///{self._path}"

    @property
    def table(self) -> str:
        return self._name

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise OutboxClosed("SqliteOutbox is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "no such table" in text:
                raise StoreError(
                    f"outbox table {self._name!r} does not exist in {self._path!r}; run ensure_schema()"
                ) from exc
            if "locked" in text or "busy" in text:
                raise StoreUnavailable(f"SQLite outbox {self._path!r} is busy: {text}") from exc
            raise StoreError(f"SQLite outbox {self._path!r}: {text}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite outbox {self._path!r}: {exc}") from exc

    def _in_transaction(self, fn: Callable[[], _T]) -> _T:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return result

    async def ensure_schema(self) -> None:
        await self._call(ensure_schema_sqlite, self._conn, self._name)

    # -- drainer ------------------------------------------------------------------------------------------

    async def _claim_batch(
        self, limit: int, lease_ms: int, worker_id: str, ordered: bool, now: int
    ) -> list[OutboxRecord]:
        return await self._call(self._claim, limit, lease_ms, worker_id, ordered, now)

    def _claim(
        self, limit: int, lease_ms: int, worker_id: str, ordered: bool, now: int
    ) -> list[OutboxRecord]:
        # Read the commit counter before claiming: a commit landing after this read wakes the next wait().
        self._data_version = self._read_data_version()
        token = new_id()
        params = claim_params(worker_id=worker_id, token=token, lease_ms=lease_ms, now=now, limit=limit)
        sql = self._claim_ordered_sql if ordered else self._claim_sql
        records, bad = decode_claimed(self._conn.execute(sql, params).fetchall(), token)
        if bad:
            self._in_transaction(lambda: self._conn.executemany(self._mark_bad_sql, bad))
        return records

    async def _mark_sent(self, records: Sequence[OutboxRecord], now: int) -> int:
        return await self._call(self._by_token, self._sent_sql, records, now)

    def _by_token(self, sql: str, records: Sequence[OutboxRecord], value: int) -> int:
        # One statement per claim token (a drainer's batch has one); several run in one transaction.
        groups = seqs_by_token(records)
        if len(groups) == 1:
            ((token, seqs),) = groups.items()
            return self._conn.execute(sql, (value, msgspec.json.encode(seqs).decode(), token)).rowcount

        def run() -> int:
            return sum(
                self._conn.execute(sql, (value, msgspec.json.encode(seqs).decode(), token)).rowcount
                for token, seqs in groups.items()
            )

        return self._in_transaction(run)

    async def _mark_failed(self, failures: Sequence[Failure], now: int) -> int:
        params = [
            {
                "dead": f.verdict.dead,
                "available_at": now + f.verdict.delay_ms,
                "err": f.error,
                "seq": f.record.seq,
                "token": f.record.claim_token,
            }
            for f in failures
        ]
        return await self._call(
            self._in_transaction, lambda: self._conn.executemany(self._failed_sql, params).rowcount
        )

    async def _release(self, records: Sequence[OutboxRecord], available_at: int) -> int:
        return await self._call(self._by_token, self._release_sql, records, available_at)

    async def _requeue_expired(self, now: int) -> int:
        return await self._call(lambda: self._conn.execute(self._requeue_sql, (now,)).rowcount)

    # -- operators ----------------------------------------------------------------------------------------

    async def _retry(self, ids: list[str] | None, now: int) -> int:
        base = f"UPDATE {self._table_sql} SET status = 'pending', attempts = 0, available_at = ? "
        params: tuple[object, ...]
        if ids is None:
            sql, params = base + "WHERE status = 'dead'", (now,)
        else:
            sql = base + "WHERE status = 'dead' AND id IN (SELECT value FROM json_each(?))"
            params = (now, msgspec.json.encode(ids).decode())
        return await self._call(lambda: self._conn.execute(sql, params).rowcount)

    async def _purge(self, ids: list[str] | None, created_by: int | None) -> int:
        sql = f"DELETE FROM {self._table_sql} WHERE status = 'dead'"
        params: list[object] = []
        if ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(msgspec.json.encode(ids).decode())
        if created_by is not None:
            sql += " AND ts <= ?"
            params.append(created_by)
        return await self._call(lambda: self._conn.execute(sql, params).rowcount)

    async def _stats(self, now: int) -> StatsRow:
        sql = stats_sql(self._table_sql, "?")
        return StatsRow(*await self._call(lambda: self._conn.execute(sql, (now,)).fetchone()))

    async def _list_dead(self, limit: int) -> list[OutboxRecord]:
        sql = f"SELECT {COLUMNS} FROM {self._table_sql} WHERE status = 'dead' ORDER BY seq LIMIT ?"
        rows = await self._call(lambda: self._conn.execute(sql, (limit,)).fetchall())
        return readable(decode_row(row, lenient=True) for row in rows)

    async def get(self, record_id: str) -> OutboxRecord | None:
        sql = f"SELECT {COLUMNS} FROM {self._table_sql} WHERE id = ?"
        row = await self._call(lambda: self._conn.execute(sql, (record_id,)).fetchone())
        if row is None:
            return None
        record = decode_row(row, lenient=True)
        return record if isinstance(record, OutboxRecord) else None

    async def _delete_sent(self, cutoff: int, batch_size: int) -> int:
        sql = delete_sent_sql(self._table_sql, "?")
        # One batch per thread hop: claims and marks can run between batches.
        return await self._in_batches(
            lambda: self._call(lambda: self._conn.execute(sql, (cutoff, batch_size)).rowcount), batch_size
        )

    # -- wake-up ------------------------------------------------------------------------------------------

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    async def wait(self, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        if self._data_version is None:
            self._data_version = await self._call(self._read_data_version)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self._poll_s, remaining))
            version = await self._call(self._read_data_version)
            if version != self._data_version:
                self._data_version = version
                return True
