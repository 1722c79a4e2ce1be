"""The writer's pipeline: a group commit sent while the previous one is still committing, on the same
connection in libpq pipeline mode, so the backend runs it the moment the previous commit's flush is done.

Without it the writer awaited each batch's result before it sent the next: a publish that arrived during a
batch's WAL flush waited for that flush, then for the result to reach the hub, the hub's loop turn, the
send of its batch and the backend's wake-up, and only then for its own statement and flush. Sent behind it
on the same connection it waits for the flush alone. Each batch is still its own transaction (its own
``PQpipelineSync``), committed synchronously; the backend runs one connection's statements in the order
sent, so batches take their seqs in the order they were queued, as before.

**A failed batch must not be overtaken.** The writer splits and re-runs a batch that failed, and those
re-runs must commit before any later batch (per-connection publish order). So each batch's statement
carries a guard (``guarded``: a condition on its rows, no statement of its own) that sets the session's
``outboxhub.batch`` to the batch's id and fails (``unrecognized configuration parameter
"outboxhub.previous_batch_failed"``) unless the value was the id of the batch sent just before it on the
pipeline. The setting is made inside each batch's transaction, so it is rolled back with a batch that
fails: every batch behind a failed one fails too (its transaction rolled back), and ``result`` raises
``Interrupted`` for it; the writer re-runs it after the failed one's retries (``groupcommit.py``). A lost
connection, a deadlock and a statement found deallocated are ``Interrupted`` as well: the writer re-runs
those batches one at a time through the store's ordinary path (its retries and connection checks), in
order.

The connection comes from the store (``_getconn``) when a batch is sent with nothing in flight and goes
back (``_put_back``), out of pipeline mode and idle, as soon as the last result is read; one that broke is
closed and given back to the pool, which discards it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import psycopg
from psycopg import pq

from outboxhub.errors import StoreError
from outboxhub.ids import now_ms
from outboxhub.model import Delivery, PublishResult
from outboxhub.store.codec import Prepared
from outboxhub.store.groupcommit import InFlight, Interrupted
from outboxhub.store.postgres import parked, wire
from outboxhub.store.postgres.conn import is_retryable, translate
from outboxhub.store.postgres.events import AppendCall, PgConn


class Host(Protocol):
    """What the pipeline needs of ``Host`` (which it cannot import: the store imports it)."""

    _url: str
    _channel: str
    _parking: parked.ParkingLot
    parked_stats: parked.ParkedStats

    async def _before_batch(self) -> None: ...
    async def _getconn(self) -> PgConn: ...
    async def _give_back(self, conn: PgConn) -> None: ...
    def _put_back(self, conn: PgConn) -> None: ...
    def _claims_ran(
        self, claims: list[parked.ParkedClaim], outcomes: list[tuple[list[Delivery], int]]
    ) -> None: ...
    def _committed(self, seq: int, topics: frozenset[str]) -> None: ...


__all__ = ["GUARD_FAILED", "Host", "Pipe", "PipeSender", "guarded"]

GUARD_FAILED = "outboxhub.previous_batch_failed"
"""The setting named in the error of a batch whose predecessor in the pipeline failed."""

_GUARD = (
    " WHERE set_config('outboxhub.batch', CASE WHEN ${0}::text IS NULL"
    " OR coalesce(current_setting('outboxhub.batch', true), '') IN (${0}, ${1}) THEN ${1}::text"
    f" ELSE current_setting('{GUARD_FAILED}') END, false) IS NOT NULL"
)
"""Evaluated for each row of the statement's result (each sets the same value): the first fails unless the
setting is the previous batch's id (or this one's: a later row)."""
_guarded: dict[bytes, wire.Statement] = {}


def guarded(statement: wire.Statement) -> wire.Statement:
    """``statement`` (a ``SELECT ... FROM f(...)`` returning at least one row) with the guard and two more
    parameters: the previous batch's id (NULL: none in flight) and this batch's."""
    piped = _guarded.get(statement.name)
    if piped is None:
        n = len(statement.types)
        name = statement.name.decode().removeprefix("outboxhub_") + "_piped"
        sql = statement.sql.decode() + _GUARD.format(n + 1, n + 2)
        piped = _guarded[statement.name] = wire.Statement(name, sql, [*statement.types, wire.TEXT, wire.TEXT])
    return piped


_MISSING = "26000"
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_ids = itertools.count(1)


class Pipe:
    """One connection in pipeline mode with the batches sent on it whose results are not read yet."""

    __slots__ = ("conn", "dead", "fd", "last_id", "loop", "on_empty", "pending", "reading", "writing")

    def __init__(
        self, conn: PgConn, loop: asyncio.AbstractEventLoop, on_empty: Callable[[Pipe], None]
    ) -> None:
        self.conn = conn
        self.loop = loop
        self.on_empty = on_empty
        self.fd = conn.pgconn.socket
        self.pending: deque[_Segment] = deque()
        self.last_id: bytes | None = None
        self.reading = self.writing = self.dead = False
        conn.pgconn.enter_pipeline_mode()

    def send(
        self, statement: wire.Statement, params: Sequence[bytes | None]
    ) -> asyncio.Future[wire.PGresult]:
        """Send ``statement`` as one transaction behind what is in flight (guarded by the batch before it);
        the future gets its result once the transaction is committed, or the error."""
        future: asyncio.Future[wire.PGresult] = self.loop.create_future()
        pgconn = self.conn.pgconn
        names = wire.prepared_names(self.conn)
        batch_id = str(next(_ids)).encode()
        try:
            statement = guarded(statement)
            if statement.name not in names:
                pgconn.send_prepare(statement.name, statement.sql, param_types=statement.types)
                names.add(statement.name)
            pgconn.send_query_prepared(
                statement.name,
                [*params, self.last_id, batch_id],
                param_formats=statement.formats,
                result_format=pq.Format.BINARY,
            )
            pgconn.pipeline_sync()
        except psycopg.Error as exc:
            future.set_exception(exc)
            self._die(exc)
            return future
        self.pending.append(_Segment(future))
        self.last_id = batch_id
        self._step(sent=True)
        return future

    def _step(self, sent: bool = False) -> None:
        pgconn = self.conn.pgconn
        try:
            if pgconn.flush():
                if not self.writing:
                    self.writing = True
                    self.loop.add_writer(self.fd, self._step)
            elif self.writing:
                self.writing = False
                self.loop.remove_writer(self.fd)
            if not self.reading:
                self.reading = True
                self.loop.add_reader(self.fd, self._step)
            if sent:  # just sent: no reply can be there yet
                return
            pgconn.consume_input()
            pending = self.pending
            while pending and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # the end of one statement's results
                    continue
                if result.status == _SYNC:
                    pending.popleft().finish(self.conn)
                else:
                    pending[0].results.append(result)
        except psycopg.Error as exc:
            self._die(exc)
            return
        if not self.pending:
            self._empty()

    def _stop(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def _die(self, exc: BaseException) -> None:
        """The connection broke (or the protocol went astray): every batch in flight fails with ``exc``."""
        self._stop()
        self.dead = True
        for segment in self.pending:
            if not segment.future.done():
                segment.future.set_exception(exc)
        self.pending.clear()
        self.conn.pgconn.finish()  # closed: the pool discards it
        self.on_empty(self)

    def _empty(self) -> None:
        self._stop()
        try:
            self.conn.pgconn.exit_pipeline_mode()
        except psycopg.Error as exc:  # pragma: no cover - every result has been read
            self._die(exc)
            return
        self.on_empty(self)


class _Segment:
    """One batch's transaction in the pipeline: the results read so far."""

    __slots__ = ("future", "results")

    def __init__(self, future: asyncio.Future[wire.PGresult]) -> None:
        self.future = future
        self.results: list[wire.PGresult] = []

    def finish(self, conn: PgConn) -> None:
        """The batch's sync point was read: its transaction committed, or rolled back at its first error."""
        if self.future.done():  # pragma: no cover - nobody else resolves it
            return
        for result in self.results:
            if result.status not in _OK:
                self.future.set_exception(
                    psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
                )
                return
        if not self.results:  # pragma: no cover - libpq answers every statement sent
            self.future.set_exception(psycopg.OperationalError("no result from the server"))
            return
        self.future.set_result(self.results[-1])


class PipeSender:
    """The store's side of the pipeline: ``send`` is the ``GroupCommitWriter``'s ``send`` function."""

    def __init__(self, store: Host) -> None:
        self._store = store
        self._pipe: Pipe | None = None

    @property
    def busy(self) -> bool:
        """Batches are in flight on the pipeline."""
        return self._pipe is not None

    async def send(self, rows: Sequence[Prepared], follow: bool) -> InFlight | None:
        """Send ``rows`` as one group commit. With ``follow`` (batches are in flight) it goes behind them on
        their connection, or not at all (None) when that pipeline has drained meanwhile; otherwise on a
        new pipeline."""
        store = self._store
        if self._pipe is None:
            if follow:
                return None
            await store._before_batch()
        topics = frozenset(row[1] for row in rows)
        claims = store._parking.take(tuple(topics)) if store._parking else []
        call: AppendCall | parked.PublishClaimCall
        try:  # encoded before a connection is taken: a value that cannot be sent fails here
            if claims:
                call = parked.PublishClaimCall(store._channel, rows, [c.request for c in claims], now_ms())
            else:
                call = AppendCall(store._channel, rows)
            pipe = self._pipe or await self._open()
        except BaseException:
            parked.not_run(claims)
            raise
        if pipe is None:
            parked.not_run(claims)
            return _NotRun()
        return _Batch(store, pipe.conn, pipe.send(call.statement, call.params), call, claims, topics)

    async def _open(self) -> Pipe | None:
        """A new pipeline on a connection of the store's; None when the connection turns out broken."""
        store = self._store
        try:
            conn = await store._getconn()
        except psycopg.Error as exc:
            raise translate(exc, store._url) from exc
        try:
            pipe = Pipe(conn, asyncio.get_running_loop(), self._drained)
        except psycopg.Error:
            await store._give_back(conn)
            return None
        self._pipe = pipe
        return pipe

    def _drained(self, pipe: Pipe) -> None:
        if self._pipe is pipe:
            self._pipe = None
        self._store._put_back(pipe.conn)


class _NotRun:
    """A batch that could not be sent (the connection broke before): the writer runs it again."""

    async def result(self) -> list[PublishResult]:
        raise Interrupted("the batch was not sent")


class _Batch:
    """A batch in the pipeline; ``result`` (called by the writer in the order sent) reads its outcome."""

    __slots__ = ("_call", "_claims", "_conn", "_future", "_store", "_topics")

    def __init__(
        self,
        store: Host,
        conn: PgConn,
        future: asyncio.Future[wire.PGresult],
        call: AppendCall | parked.PublishClaimCall,
        claims: list[parked.ParkedClaim],
        topics: frozenset[str],
    ) -> None:
        self._store = store
        self._conn = conn
        self._future = future
        self._call = call
        self._claims = claims
        self._topics = topics

    async def result(self) -> list[PublishResult]:
        store, claims = self._store, self._claims
        try:
            res = await self._future
        except psycopg.Error as exc:
            store.parked_stats.not_run += len(claims)
            parked.not_run(claims)
            raise _error(exc, self._conn, store._url) from exc
        except BaseException:
            parked.not_run(claims)
            raise
        if isinstance(self._call, parked.PublishClaimCall):
            results, top, outcomes = self._call.read(res)
            store._claims_ran(claims, outcomes)
        else:
            results, top = self._call.read(res)
        if top:
            store._committed(top, self._topics)
        return results


def _error(exc: psycopg.Error, conn: PgConn, url: str) -> StoreError:
    """``Interrupted`` for a batch to run again (a failed predecessor, a lost connection, a deadlock, a
    deallocated statement), else the store's translation of ``exc``."""
    if exc.sqlstate == _MISSING:
        wire.prepared_names(conn).clear()
    if (
        exc.sqlstate == _MISSING
        or is_retryable(exc)
        or GUARD_FAILED in str(exc)
        or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    ):
        return Interrupted(f"the batch did not run: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    error = translate(exc, url)
    return error if isinstance(error, StoreError) else StoreError(str(exc))
