"""The outbox in an application's MySQL (≥ 8.0.16) or MariaDB (≥ 10.6) database, drained with asyncmy.

Writers (``add``) insert in the application's own transaction (``outboxhub.outbox.mysql_sql``).
``MysqlOutbox`` drains with a small asyncmy pool whose sessions run at ``READ COMMITTED``.

Claims: MySQL has no ``UPDATE … RETURNING``, so a claim is one short transaction: ``SELECT … ORDER BY seq
LIMIT n FOR UPDATE SKIP LOCKED`` reads and locks the oldest claimable rows (rows another drainer is
claiming are skipped, never waited for), one ``UPDATE … WHERE seq IN (…)`` claims them, ``COMMIT``.

Per-key ordering: an ordered claim first takes the named lock ``GET_LOCK`` of the table, so ordered
claims run one at a time and each sees every earlier claim committed; it picks the candidates with a plain
read (a locking read would also lock, or skip, the earlier records of a key it only looks at), then claims
them with ``UPDATE … WHERE seq IN (…) AND status = 'pending'``. Should that update miss a candidate, the
transaction is rolled back and the claim starts over, so a batch never holds a record without the
earlier claimable records of its key.

Wake-up: MySQL cannot notify another session, so ``wait`` polls ``SELECT MAX(seq)`` (the end of the
primary key: no table read) every ``poll_interval_ms`` (default 10 ms) and wakes when it grew. An operator
``retry`` through this store wakes its own drainers at once. Seen later, by the drainer's ``idle_wait_ms``
fallback poll: a retry run elsewhere, and a record whose transaction took its seq before another one's
but committed after it (its seq is below the maximum already seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncmy
import asyncmy.errors

from outboxhub.errors import OutboxClosed, StoreError, StoreUnavailable
from outboxhub.ids import new_id
from outboxhub.outbox._sql import COLUMNS, decode_row, seqs_by_token, split_table, stats_sql
from outboxhub.outbox.base import OutboxBackend, StatsRow, check_positive, readable
from outboxhub.outbox.model import Failure, OutboxRecord
from outboxhub.outbox.mysql_sql import connect_kwargs, ensure_schema_mysql_async, quote_table
from outboxhub.store.base import mask_url

__all__ = ["DEFAULT_POLL_INTERVAL_MS", "MysqlOutbox"]

DEFAULT_POLL_INTERVAL_MS = 10
ORDERED_LOCK_TIMEOUT_S = 10
"""How long an ordered claim waits for the table's claim lock before reporting the store unavailable."""

_CLEAR_CLAIM = "claimed_by = NULL, claim_token = NULL, lease_until = NULL"
_SELECT = COLUMNS.replace(" key,", " `key`,")
# Server-side codes meaning "the server is gone or unreachable" (client codes 2xxx are in OperationalError).
_UNAVAILABLE_CODES = frozenset({1040, 1053, 1077, 1152, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2006, 2013})
_RETRY_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock: the transaction was rolled back
_ATTEMPTS = 5


def _code(exc: BaseException | None) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _retryable(exc: StoreError) -> bool:
    code = _code(exc.__cause__)
    return code is not None and code in _RETRY_CODES


def _ordered_lock_name(database: str, table: str) -> str:
    # GET_LOCK names are at most 64 characters; the table's full name may be longer.
    return "outboxhub.claim:" + hashlib.sha1(f"{database}.{table}".encode()).hexdigest()[:40]


def _in(n: int) -> str:
    return ", ".join(["%s"] * n)


class MysqlOutbox(OutboxBackend):
    """``OutboxStore`` over one MySQL/MariaDB table. Create with ``await MysqlOutbox.open(url)``."""

    def __init__(self, pool: Any, url: str, *, table: str, database: str, poll_interval_ms: int) -> None:
        self._pool = pool
        self._url = url
        self._table = table
        self._q = q = quote_table(table)
        schema, name = split_table(table, allow_schema=True)
        self._lock_name = _ordered_lock_name(schema or database, name)
        self._poll_s = poll_interval_ms / 1000
        # The highest seq seen by the last wake-up, read before the claim that followed it: an insert
        # committed after that claim has a higher seq. 0 at first, so the first wait wakes at once if the
        # table holds anything (a spare claim, never a missed record).
        self._last_seq = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._pick_sql = (
            f"SELECT {_SELECT} FROM {q} WHERE status = 'pending' AND available_at <= %s "
            "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        # A keyed record is claimable when no earlier record of its key is unsent and unclaimable now;
        # earlier claimable ones precede it in seq order, so LIMIT takes them first (same batch, in order).
        self._pick_ordered_sql = (
            f"SELECT {_SELECT.replace('seq, ', 'x.seq, ', 1)} FROM {q} AS x "
            "WHERE x.status = 'pending' AND x.available_at <= %s "
            f"AND (x.`key` IS NULL OR NOT EXISTS (SELECT 1 FROM {q} AS e WHERE e.`key` = x.`key` "
            "AND e.status IN ('pending', 'claimed', 'dead') AND e.seq < x.seq "
            "AND (e.status <> 'pending' OR e.available_at > %s))) "
            "ORDER BY x.seq LIMIT %s"
        )
        self._mark_bad_sql = (
            f"UPDATE {q} SET status = 'dead', last_err = %s, attempts = attempts + 1, {_CLEAR_CLAIM} "
            "WHERE seq = %s AND status = 'pending' AND available_at <= %s"
        )
        self._failed_sql = (
            f"UPDATE {q} SET status = %s, available_at = IF(%s, available_at, %s), last_err = %s, "
            f"{_CLEAR_CLAIM} WHERE seq = %s AND claim_token = %s AND status = 'claimed'"
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        table: str = "outbox",
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
        max_connections: int = 4,
        connect_timeout_s: float = 10.0,
    ) -> MysqlOutbox:
        """Connect to ``url`` (``mysql://user:password@host:port/database``, no query parameters)."""
        quote_table(table)
        check_positive(max_connections, name="max_connections")
        check_positive(poll_interval_ms, name="poll_interval_ms")
        kwargs = connect_kwargs(url)
        try:
            pool = await asyncio.wait_for(
                asyncmy.create_pool(
                    minsize=1,
                    maxsize=max_connections,
                    autocommit=True,
                    charset="utf8mb4",
                    connect_timeout=connect_timeout_s,
                    init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    **kwargs,
                ),
                connect_timeout_s,
            )
        except (asyncmy.errors.MySQLError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to MySQL outbox {mask_url(url)}: {exc}") from exc
        return cls(pool, url, table=table, database=kwargs["database"], poll_interval_ms=poll_interval_ms)

    @property
    def url(self) -> str:
        return mask_url(self._url)

    @property
    def table(self) -> str:
        return self._table

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        await self._pool.wait_closed()

    def _translate(self, exc: BaseException) -> BaseException:
        code = _code(exc)
        error: StoreError
        if code == 1146:
            error = StoreError(f"outbox table {self._table!r} does not exist; run ensure_schema()")
        elif isinstance(exc, OSError | asyncmy.errors.InterfaceError) or code in _UNAVAILABLE_CODES:
            error = StoreUnavailable(f"MySQL at {self.url} is unavailable: {exc}")
        elif isinstance(exc, asyncmy.errors.MySQLError):
            error = StoreError(f"MySQL outbox {self.url}: {exc}")
        else:
            return exc
        error.__cause__ = exc
        return error

    @contextlib.asynccontextmanager
    async def _cursor(self, *, transaction: bool = False) -> AsyncIterator[Any]:
        """A cursor on a pooled connection; with ``transaction``, in BEGIN … COMMIT (ROLLBACK on error)."""
        if self._closed:
            raise OutboxClosed("MysqlOutbox is closed")
        try:
            async with self._pool.acquire() as conn:
                if transaction:
                    await conn.begin()
                try:
                    async with conn.cursor() as cur:
                        yield cur
                    if transaction:
                        await conn.commit()
                except BaseException:
                    if transaction:
                        with contextlib.suppress(Exception):
                            await conn.rollback()
                    raise
        except (asyncmy.errors.MySQLError, OSError) as exc:
            raise self._translate(exc) from exc

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        for attempt in range(_ATTEMPTS):
            try:
                async with self._cursor() as cur:
                    count: int = await cur.execute(sql, params)
                    return count
            except StoreError as exc:
                if not _retryable(exc) or attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._cursor() as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    async def ensure_schema(self) -> None:
        if self._closed:
            raise OutboxClosed("MysqlOutbox is closed")
        try:
            async with self._pool.acquire() as conn:
                await ensure_schema_mysql_async(conn, self._table)
        except (asyncmy.errors.MySQLError, OSError) as exc:
            raise self._translate(exc) from exc

    # -- drainer ------------------------------------------------------------------------------------------

    async def _claim_batch(
        self, limit: int, lease_ms: int, worker_id: str, ordered: bool, now: int
    ) -> list[OutboxRecord]:
        for attempt in range(_ATTEMPTS):
            try:
                if ordered:
                    claimed = await self._claim_ordered(limit, lease_ms, worker_id, now)
                    if claimed is None:  # a candidate changed under us: start over
                        continue
                    return claimed
                return await self._claim(limit, lease_ms, worker_id, now)
            except StoreError as exc:
                if not _retryable(exc) or attempt == _ATTEMPTS - 1:
                    raise
        raise StoreError(f"MySQL outbox {self.url}: ordered claim kept racing; giving up this round")

    async def _claim(self, limit: int, lease_ms: int, worker_id: str, at: int) -> list[OutboxRecord]:
        async with self._cursor(transaction=True) as cur:
            await cur.execute(self._pick_sql, (at, limit))
            rows = list(await cur.fetchall())
            if not rows:
                return []
            records, _ = await self._apply_claim(cur, rows, worker_id, at + lease_ms, at)
        return records

    async def _claim_ordered(
        self, limit: int, lease_ms: int, worker_id: str, at: int
    ) -> list[OutboxRecord] | None:
        async with self._cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, %s)", (self._lock_name, ORDERED_LOCK_TIMEOUT_S))
            (granted,) = await cur.fetchone()
            if granted != 1:
                raise StoreUnavailable(
                    f"MySQL outbox {self.url}: the ordered-claim lock of {self._table!r} was not granted "
                    f"within {ORDERED_LOCK_TIMEOUT_S} s"
                )
            conn = cur.connection
            try:
                await conn.begin()
                try:
                    await cur.execute(self._pick_ordered_sql, (at, at, limit))
                    rows = list(await cur.fetchall())
                    records: list[OutboxRecord] = []
                    if rows:
                        records, complete = await self._apply_claim(cur, rows, worker_id, at + lease_ms, at)
                        if not complete:
                            await conn.rollback()
                            return None
                    await conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    raise
            finally:
                with contextlib.suppress(Exception):
                    await cur.execute("DO RELEASE_LOCK(%s)", (self._lock_name,))
        return records

    async def _apply_claim(
        self, cur: Any, rows: list[tuple[Any, ...]], worker_id: str, lease_until: int, at: int
    ) -> tuple[list[OutboxRecord], bool]:
        """Claim the picked ``rows`` under a fresh token, marking the unreadable ones dead; return the
        claimed records and whether every row was still claimable (always, for rows locked by the pick)."""
        token = new_id()
        records: list[OutboxRecord] = []
        bad: list[tuple[str, int]] = []
        for row in rows:
            # The row as read before the claim, with what the claim changes: no read-back round trip.
            claimed = (
                *row[:6],
                "claimed",
                row[7],
                row[8] + 1,
                row[9],
                worker_id,
                token,
                lease_until,
                *row[13:],
            )
            decoded = decode_row(claimed)
            if isinstance(decoded, str):
                bad.append((decoded, row[0]))
            else:
                records.append(decoded)
        changed = 0
        if records:
            seqs = [r.seq for r in records]
            changed = await cur.execute(
                f"UPDATE {self._q} SET status = 'claimed', claimed_by = %s, claim_token = %s, "
                f"lease_until = %s, attempts = attempts + 1 WHERE seq IN ({_in(len(seqs))}) "
                "AND status = 'pending' AND available_at <= %s",
                (worker_id, token, lease_until, *seqs, at),
            )
        for error, seq in bad:
            changed += await cur.execute(self._mark_bad_sql, (error, seq, at))
        return records, changed == len(rows)

    async def _mark_sent(self, records: Sequence[OutboxRecord], now: int) -> int:
        total = 0
        for token, seqs in seqs_by_token(records).items():
            total += await self._execute(
                f"UPDATE {self._q} SET status = 'sent', sent_at = %s, {_CLEAR_CLAIM} "
                f"WHERE claim_token = %s AND seq IN ({_in(len(seqs))}) AND status = 'claimed'",
                (now, token, *seqs),
            )
        return total

    async def _mark_failed(self, failures: Sequence[Failure], now: int) -> int:
        params = [
            (
                "dead" if f.verdict.dead else "pending",
                f.verdict.dead,
                now + f.verdict.delay_ms,
                f.error,
                f.record.seq,
                f.record.claim_token,
            )
            for f in failures
        ]
        async with self._cursor(transaction=True) as cur:
            total = 0
            for row in params:
                total += await cur.execute(self._failed_sql, row)
        return total

    async def _release(self, records: Sequence[OutboxRecord], available_at: int) -> int:
        total = 0
        for token, seqs in seqs_by_token(records).items():
            total += await self._execute(
                f"UPDATE {self._q} SET status = 'pending', attempts = GREATEST(attempts - 1, 0), "
                f"available_at = %s, {_CLEAR_CLAIM} "
                f"WHERE claim_token = %s AND seq IN ({_in(len(seqs))}) AND status = 'claimed'",
                (available_at, token, *seqs),
            )
        return total

    async def _requeue_expired(self, now: int) -> int:
        return await self._execute(
            f"UPDATE {self._q} SET status = 'pending', {_CLEAR_CLAIM} "
            "WHERE status = 'claimed' AND lease_until < %s",
            (now,),
        )

    # -- operators ----------------------------------------------------------------------------------------

    async def _retry(self, ids: list[str] | None, now: int) -> int:
        sql = (
            f"UPDATE {self._q} SET status = 'pending', attempts = 0, available_at = %s WHERE status = 'dead'"
        )
        params: list[Any] = [now]
        if ids is not None:
            if not ids:  # MySQL has no empty IN list
                return 0
            sql += f" AND id IN ({_in(len(ids))})"
            params += ids
        count = await self._execute(sql, params)
        if count:
            self._wake.set()
        return count

    async def _purge(self, ids: list[str] | None, created_by: int | None) -> int:
        sql = f"DELETE FROM {self._q} WHERE status = 'dead'"
        params: list[Any] = []
        if ids is not None:
            if not ids:  # MySQL has no empty IN list
                return 0
            sql += f" AND id IN ({_in(len(ids))})"
            params += ids
        if created_by is not None:
            sql += " AND ts <= %s"
            params.append(created_by)
        return await self._execute(sql, params)

    async def _stats(self, now: int) -> StatsRow:
        rows = await self._fetchall(stats_sql(self._q, "%s"), (now,))
        pending, claimed, dead, oldest_ts, next_retry = rows[0]
        # MySQL's subquery counts may arrive as Decimal: the row holds ints.
        return StatsRow(
            pending=int(pending),
            claimed=int(claimed),
            dead=int(dead),
            oldest_ts=None if oldest_ts is None else int(oldest_ts),
            next_retry_at=None if next_retry is None else int(next_retry),
        )

    async def _list_dead(self, limit: int) -> list[OutboxRecord]:
        rows = await self._fetchall(
            f"SELECT {_SELECT} FROM {self._q} WHERE status = 'dead' ORDER BY seq LIMIT %s", (limit,)
        )
        return readable(decode_row(row, lenient=True) for row in rows)

    async def get(self, record_id: str) -> OutboxRecord | None:
        rows = await self._fetchall(f"SELECT {_SELECT} FROM {self._q} WHERE id = %s", (record_id,))
        if not rows:
            return None
        record = decode_row(rows[0], lenient=True)
        return record if isinstance(record, OutboxRecord) else None

    async def _delete_sent(self, cutoff: int, batch_size: int) -> int:
        sql = f"DELETE FROM {self._q} WHERE status = 'sent' AND sent_at < %s ORDER BY sent_at LIMIT %s"
        return await self._in_batches(lambda: self._execute(sql, (cutoff, batch_size)), batch_size)

    # -- wake-up ------------------------------------------------------------------------------------------

    async def _max_seq(self) -> int:
        rows = await self._fetchall(f"SELECT COALESCE(MAX(seq), 0) FROM {self._q}")
        return int(rows[0][0])

    async def wait(self, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            if self._wake.is_set():
                self._wake.clear()
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(self._poll_s, remaining))
            latest = await self._max_seq()
            if latest != self._last_seq:
                self._last_seq = latest
                return True
