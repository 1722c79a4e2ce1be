"""The PostgreSQL store: ``postgresql://user:password@host:port/db?schema=NAME``.

Several hub processes may share one database (``docs/stores.md``): every mutation is atomic in the
database, group claims lock the group row, and commits wake the other processes through NOTIFY.

Design:

* **Gap-safe reads by assigning seq in commit order.** A PostgreSQL sequence is not commit-ordered: a
  transaction holding seq 7 may commit after one holding seq 8, so a reader that saw 8 and moved its cursor
  past 7 would skip 7 forever. Instead of a sequence, ``publish_events`` (a PL/pgSQL function, see
  ``schema.py``) takes the one ``counter`` row ``FOR UPDATE``, assigns ``last_seq + 1 ...`` and keeps the row
  lock until COMMIT. The next publisher waits for that commit before it can read the counter, so seq order
  is commit order and every reader sees a gap-free prefix of the log: plain ``seq > cursor`` reads are
  safe. We chose this over filtering reads by ``pg_snapshot_xmin`` (an xid8 per row) because it keeps every
  read a plain index range, needs no visibility horizon in the API (a horizon held back by one slow writer
  would stall every consumer), and costs nothing extra once publishes are group-committed: the lock is held
  once per batch, for one short statement plus the commit.
* **Group commit.** One writer task per store (``store/groupcommit.py``) appends everything queued in one
  ``publish_events`` statement, run in autocommit mode (the statement is the transaction: one round
  trip, no BEGIN or COMMIT to send, no pipeline mode to enter), and confirms each publish only
  after that commit. Batches grow with load.
* **Parked claims** (``parked.py``): a waiting group member's next claim rides on the group commit that
  appends a matching event (``publish_claim``: the publish, then the claims, one statement), so delivering
  an event to a waiting member costs no statement of its own. The commit stays synchronous.
* **The per-event statements on libpq** (``wire.py``): the group commit's statement and the ACK by seq
  are prepared per connection and sent with binary parameters, without psycopg's cursor machinery; an
  ACK on the spare connection (below) runs without a task (``settle.py``). Operations reuse the last
  connection returned in a clean state (``_getconn``) instead of a pool check-out and check-in each.
* **Pattern scans** resolve the pattern against the ``topics`` table inside the query and read each
  matching topic's events as one range of the ``(topic_id, seq)`` index that stops at the limit
  (``topics.py``, ``events.scan_query``); no Python runs per row. The store's connections run with
  bitmap and sequential scans off (``conn.PLANNER_SETTINGS``), so stale statistics cannot turn a page
  into a read of the whole topic.
* **Groups** (``groups.py``): claims and nacks lock the group row, so two processes never hand one event to
  two members; acks are single statements. Dead-letter events have deterministic ids (``common.py``), so a
  retried dead-letter is stored once. Group transactions commit without waiting for the WAL flush unless
  they append dead-letter events (the reasoning is in ``groups.py``); publishes always wait for it.
* **Wake-up** (``listen.py``): ``publish_events`` NOTIFYs the schema's channel with the last seq; a dedicated
  LISTEN connection (reconnecting, with polling as fallback) calls the commit listeners for commits made by
  any process. Local commits call them directly, without waiting for the notification, and send none
  unless another node listens (``registry.py``: each store's LISTEN connection registers its node).
* **Connection loss**: operations raise ``StoreUnavailable`` (one line naming the URL, password masked) when
  the server cannot be reached within ``pool_timeout_s``; a connection that broke while idle in the pool
  (the server restarted) is discarded and the operation re-run on another. The pool reconnects by itself
  when the server returns, so the store recovers without a restart. A publish is confirmed only after its
  COMMIT. A batch whose connection breaks is written again on another connection: appends are idempotent
  by id, so if the lost COMMIT had taken effect its events are not stored twice (they come back with
  ``duplicate`` set, as they would to a publisher retrying after an error).

Options (URL query or keyword arguments of ``open_store``, which win): ``schema`` (default ``outboxhub``),
``pool_max`` (8), ``pool_timeout_s`` (5: how long an operation waits for a connection), ``connect_timeout_s``
(5), ``poll_interval_s`` (1: the listener's fallback poll), ``max_batch`` (2000 events per group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus
from psycopg.pq.abc import PGresult

from outboxhub.ids import now_ms
from outboxhub.model import (
    Cursor,
    Delivery,
    Event,
    GroupInfo,
    Lag,
    PublishResult,
    StartPosition,
    TopicInfo,
)
from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef
from outboxhub.store.codec import Prepared
from outboxhub.store.groupcommit import Committed, GroupCommitWriter
from outboxhub.store.lifecycle import ClaimRequest, ExtendRequest, NackRequest
from outboxhub.store.parkedclaim import ClaimParkingStore
from outboxhub.store.postgres import events, parked, settle
from outboxhub.store.postgres import groups as groups_ops
from outboxhub.store.postgres.ackride import AckJob, AckRiders, settle_from
from outboxhub.store.postgres.conn import (
    Failures,
    PgSettings,
    configure_connection,
    connection_lost,
    is_retryable,
    parse_url,
    translate,
)
from outboxhub.store.postgres.events import PgConn
from outboxhub.store.postgres.groups import ClaimContext
from outboxhub.store.postgres.listen import Listener
from outboxhub.store.postgres.registry import NODE_SETTING
from outboxhub.store.postgres.schema import channel_name, migrate, quote_ident

__all__ = ["PostgresStore", "open_store"]


_T = TypeVar("_T")
_P = ParamSpec("_P")

_RECONNECT_TIMEOUT_S = 3.0

_MAX_TRIES = 5
"""Attempts of a transaction that hit a deadlock or serialization failure."""

_SPARE_USES = 1000
"""Operations in a row on the spare connection before it goes back through the pool (``_getconn``)."""


async def open_store(url: str, **options: Any) -> PostgresStore:
    """Open the PostgreSQL store at ``url``, creating or migrating its schema as needed."""
    return await PostgresStore.open(url, **options)


class PostgresStore(ClaimParkingStore, StoreBackend):
    """The ``Store`` protocol over a PostgreSQL schema. Open with ``await PostgresStore.open(url)``."""

    label = "PostgreSQL store"

    def __init__(self, settings: PgSettings) -> None:
        super().__init__(settings.url, newer_only=True)
        self._settings = settings
        self._channel = channel_name(settings.schema)
        self._search_path = quote_ident(settings.schema)
        self._pool: psycopg_pool.AsyncConnectionPool[PgConn] = psycopg_pool.AsyncConnectionPool(
            settings.dsn,
            min_size=1,
            max_size=settings.pool_max,
            open=False,
            timeout=settings.pool_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(settings.connect_timeout_s))},
            configure=self._configure,
            name=f"outboxhub-{settings.schema}",
            # psycopg_pool retries a failed connect with a doubling delay until this timeout, then waits for
            # the next request to start again: a short timeout bounds how long the store stays down after
            # the server is back (the default, 5 minutes, lets the delay grow to minutes).
            reconnect_timeout=_RECONNECT_TIMEOUT_S,
        )
        self._writer = GroupCommitWriter(self._stage, max_batch=settings.max_batch)
        self._parking = parked.ParkingLot()
        self._reparking: list[parked.ParkedClaim] = []  # claims the last batch ran: their members park again
        self._riders = AckRiders(self._ack_alone)
        self.parked_stats = parked.ParkedStats()
        self._node = uuid.uuid4().hex
        self._listener = Listener(
            dsn=settings.dsn,
            node=self._node,
            url=self._url,
            schema=settings.schema,
            channel=self._channel,
            on_seq=self._committed,
            known=lambda: self._commits.last,
            poll_interval_s=settings.poll_interval_s,
            connect_timeout_s=settings.connect_timeout_s,
        )
        self._pool_check: asyncio.Task[None] | None = None
        self._spare: PgConn | None = None  # a connection kept out of the pool for the next operation
        self._spare_uses = 0
        self._pool_waiters = 0  # operations of this store waiting in the pool for a connection
        self._returning: set[asyncio.Task[None]] = set()  # connections on their way back to the pool

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresStore:
        """Connect, create or migrate the schema, start the pool and the listener."""
        settings = parse_url(url, options)
        try:
            conn = await psycopg.AsyncConnection.connect(
                settings.dsn, autocommit=True, connect_timeout=max(1, round(settings.connect_timeout_s))
            )
        except psycopg.Error as exc:
            raise translate(exc, settings.url) from exc
        try:
            await migrate(conn, settings.schema)
        except psycopg.Error as exc:
            raise translate(exc, settings.url) from exc
        finally:
            await conn.close()
        store = cls(settings)
        try:
            await store._pool.open(wait=True, timeout=settings.connect_timeout_s)
            store._listener.start()
            store._commits.last = await store._run(events.last_seq)
        except BaseException as exc:
            await store.close()
            if isinstance(exc, psycopg.Error):
                raise translate(exc, settings.url) from exc
            raise
        return store

    async def _configure(self, conn: PgConn) -> None:
        await configure_connection(conn)
        # The node lets publish_events skip the NOTIFY when no other node listens (registry.py).
        await conn.execute(
            f"SELECT set_config('search_path', %s, false), set_config('{NODE_SETTING}', %s, false)",
            (self._search_path, self._node),
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._settings.schema

    @property
    def node(self) -> str:
        """This store's node id: its LISTEN connection's row in ``listeners`` (``registry.py``)."""
        return self._node

    @property
    def listener(self) -> Listener:
        """The LISTEN side (its ``connected`` event and ``reconnects`` count are useful in tests)."""
        return self._listener

    async def _shutdown(self) -> None:
        try:
            await self._writer.close()
            await self._send_riders_alone()
        finally:
            await self._listener.close()
            spare, self._spare = self._spare, None
            if spare is not None:
                await self._pool.putconn(spare)
            if self._returning:
                await asyncio.gather(*self._returning, return_exceptions=True)
            if self._pool_check is not None:
                self._pool_check.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pool_check
            await self._pool.close()

    async def ping(self) -> None:
        self._check_open()
        await self._run(_ping)

    # -- plumbing -----------------------------------------------------------------------------------------

    async def _run(
        self, fn: Callable[Concatenate[PgConn, _P], Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``fn(conn, ...)`` on a pooled connection, translating psycopg errors.

        A deadlock or serialization failure re-runs it (the transaction had no effect); a connection that
        turns out to be broken (the server restarted while it sat in the pool) is discarded and ``fn`` re-run
        on another, at most once per pooled connection. Group mutations are safe to re-run: acks, extends and
        releases are idempotent, a re-run claim at worst leaves an event pending until its ack timeout, and
        appends are idempotent by event id.
        """
        failures = Failures()
        while True:
            try:
                conn = await self._getconn()
            except psycopg.Error as exc:
                raise translate(exc, self._url) from exc
            try:
                result = await fn(conn, *args, **kwargs)
            except psycopg.Error as exc:
                await self._give_back(conn)
                if not self._again(exc, failures):
                    raise translate(exc, self._url) from exc
                continue
            except BaseException:
                await self._give_back(conn)
                raise
            await self._putconn(conn)
            return result

    async def _getconn(self) -> PgConn:
        """A connection for one operation: the spare one when it is there, else one from the pool.

        Every operation used to check a connection out of the pool and back in (``pool.connection()``: a
        context manager, a lock, statistics, a commit of nothing in autocommit mode, the return checks):
        ≈ 15 % of the hub's CPU per event on PostgreSQL with two operations per event. The last connection
        returned in a clean state is kept as the spare instead, unless an operation of this store is
        waiting in the pool (so a pool of one connection is never starved by its own spare), and every
        ``_SPARE_USES``-th return goes through the pool, so its checks and lifetime still apply."""
        conn = self._spare
        if conn is not None:
            self._spare = None
            return conn
        self._pool_waiters += 1
        try:
            return await self._pool.getconn()
        finally:
            self._pool_waiters -= 1

    async def _putconn(self, conn: PgConn) -> None:
        """Return a connection after a successful operation (``_getconn``)."""
        if not self._keep(conn):
            await self._pool.putconn(conn)

    def _keep(self, conn: PgConn) -> bool:
        """Keep ``conn`` as the spare if it may be (see ``_getconn``)."""
        if (
            self._spare is None
            and not self._pool_waiters
            and not self._closed
            and conn.pgconn.transaction_status == TransactionStatus.IDLE
        ):
            self._spare_uses += 1
            if self._spare_uses < _SPARE_USES:
                self._spare = conn
                return True
            self._spare_uses = 0
        return False

    def _again(self, exc: psycopg.Error, failures: Failures) -> bool:
        """Whether to re-run after ``exc`` (see ``_run``): a deadlock or serialization failure up to
        ``_MAX_TRIES`` tries in all, a broken connection once per pooled connection (checking the pool)."""
        failures.tries += 1
        if is_retryable(exc) and failures.tries < _MAX_TRIES:
            return True
        if connection_lost(exc) and failures.stale <= self._settings.pool_max:
            failures.stale += 1
            self._check_pool()
            return True
        return False

    def _check_pool(self) -> None:
        """Test the idle pooled connections in the background, replacing the broken ones."""
        if self._pool_check is None or self._pool_check.done():
            self._pool_check = asyncio.get_running_loop().create_task(self._pool.check())

    async def _stage(self, rows: Sequence[Prepared]) -> Committed:
        """Append ``rows`` in one transaction, a single ``publish_events`` statement in autocommit mode (one
        round trip, one wait for the driver), then call the commit listeners; the writer
        answers the publishers at once (``Committed``).

        Committing with the append keeps the seq counter's lock held only for what the server itself
        needs (the insert and the WAL flush), not also for a round trip through the event loop. So the
        writer writes batches one after another (staging the next batch waits for this one's COMMIT), in
        the order they were queued.

        A deadlock, or a connection found broken (the server restarted while it sat in the pool), re-runs
        the batch, on another connection for the latter. When a connection breaks after the server
        committed but before the reply came back, the re-run finds the events stored: appends are
        idempotent by id, so they are not stored twice, and come back with their seqs and ``duplicate``
        set, as a publisher retrying after an error would see them.

        Claims parked by this process's waiting members whose pattern matches a topic of the batch run in
        the same statement (``publish_claim``, ``parked.py``), their futures resolved before the commit
        listeners are called. A re-run after a lost reply runs them again: what the lost commit claimed
        stays pending until its ack timeout, as with any re-run claim (``_run``). A batch staged right
        after one that ran claims first lets their members park again (``parked.wait_for_reparking``).
        """
        if self._reparking:
            await parked.wait_for_reparking(self._parking, self._reparking)
            self._reparking = []
        topics = frozenset(row[1] for row in rows)
        claims = self._parking.take(tuple(topics)) if self._parking else []
        acks = self._riders.take() if self._riders else []
        try:
            results, top = await self._append_claiming(rows, claims, acks)
        except BaseException:
            self.parked_stats.not_run += len(claims)
            parked.not_run(claims)
            self._riders.send_alone(acks)
            raise
        if top:
            self._committed(top, topics)
        return Committed(results)

    async def _append_claiming(
        self, rows: Sequence[Prepared], claims: list[parked.ParkedClaim], acks: list[AckJob]
    ) -> tuple[list[PublishResult], int]:
        """``_stage``'s statement with its retries; resolves the futures of ``claims`` and answers the ACKs
        riding on it (``ackride.py``) once committed."""
        failures = Failures()
        while True:
            try:
                conn = await self._getconn()
            except psycopg.Error as exc:
                raise translate(exc, self._url) from exc
            try:
                # Autocommit: the one statement is its own transaction (synchronous commit, the
                # connection's default), so the reply arrives once it is committed, after one wait.
                if claims or acks:
                    now = now_ms()
                    requests = [claim.request for claim in claims]
                    results, top, outcomes, acked = await parked.publish_claim(
                        conn, self._channel, rows, requests, now, acks
                    )
                else:
                    results, top = await events.append_now(conn, self._channel, rows)
            except psycopg.Error as exc:
                await self._give_back(conn)
                if not self._again(exc, failures):
                    raise translate(exc, self._url) from exc
                continue
            except BaseException:
                await self._give_back(conn)
                raise
            await self._putconn(conn)
            if acks:
                self._riders.answer(acks, acked)
            if claims:
                # Before the commit notification: a member whose claim covers it is not woken by it.
                self.parked_stats.count(outcomes)
                parked.resolve(claims, outcomes)
                ran = zip(claims, outcomes, strict=True)
                self._reparking = [claim for claim, outcome in ran if outcome is not parked.NOT_RUN]
            return results, top

    async def _give_back(self, conn: PgConn) -> None:
        """Return a connection to the pool after a failure, rolled back if it still works."""
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        await self._pool.putconn(conn)

    # -- events -------------------------------------------------------------------------------------------

    async def _append(self, rows: list[Prepared]) -> list[PublishResult]:
        self._riders.published()
        return await self._writer.submit(rows)

    def _append_soon(self, rows: list[Prepared]) -> asyncio.Future[list[PublishResult]]:
        self._riders.published()
        return self._writer.submit_soon(rows)

    async def get_event(self, event_id: str, topic: str | None = None) -> Event | None:
        self._check_open()
        return await self._run(events.get_event, event_id, topic)

    async def _scan(
        self, pattern: str, after_seq: int, since_ts: int | None, until_ts: int | None, limit: int
    ) -> list[Event]:
        return await self._run(
            events.scan, pattern, after_seq=after_seq, since_ts=since_ts, until_ts=until_ts, limit=limit
        )

    async def _latest_by_key(self, topic: str, keys: list[str]) -> dict[str, Event]:
        return await self._run(events.latest_by_key, topic, keys)

    async def tail(self, pattern: str) -> Event | None:
        self._check_open()
        return await self._run(events.tail, pattern)

    async def count(self, pattern: str, *, after_seq: int = 0) -> int:
        self._check_open()
        return await self._run(events.count, pattern, after_seq=after_seq)

    async def last_seq(self) -> int:
        self._check_open()
        return await self._run(events.last_seq)

    async def topics(self) -> list[TopicInfo]:
        self._check_open()
        return await self._run(events.topics)

    # -- consumer groups ----------------------------------------------------------------------------------

    async def ensure_group(self, pattern: str, group: str, start: StartPosition) -> GroupInfo:
        self._check_open()
        return await self._run(groups_ops.ensure_group, pattern, group, start, now_ms())

    async def groups(self) -> list[GroupInfo]:
        self._check_open()
        return await self._run(groups_ops.groups)

    async def _run_appending(
        self,
        fn: Callable[Concatenate[PgConn, ClaimContext, _P], Awaitable[_T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """``_run`` a group transaction that may append dead letters; wake the listeners if it did."""
        ctx = ClaimContext(self._channel)
        result = await self._run(fn, ctx, *args, **kwargs)
        if ctx.appended_to:
            self._committed(ctx.appended_to, frozenset(ctx.appended_topics))
        return result

    async def _claim(self, request: ClaimRequest) -> list[Delivery]:
        return await self._run_appending(groups_ops.claim, request)

    def _park(self, request: ClaimRequest, matches: Callable[[str], object]) -> parked.ParkedClaim:
        """The claim runs in the first group commit that appends a matching event, in that commit's
        statement (``parked.py``)."""
        self._check_open()
        future: asyncio.Future[tuple[list[Delivery], int]] = asyncio.get_running_loop().create_future()
        claim = parked.ParkedClaim(self._parking, future, request, matches)
        self._parking.add(claim)
        return claim

    @property
    def parked_claims(self) -> int:
        """Group members' claims parked right now (see ``parked.py``)."""
        return len(self._parking)

    async def _ack(self, pattern: str, group: str, refs: list[EventRef], member: str | None) -> int:
        return await self._run(groups_ops.ack, pattern, group, refs, member)

    def _ack_soon(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        """A small ACK rides on the next publish statement while publishes come often (``ackride.py``);
        otherwise it is sent at once (``_ack_now``)."""
        if self._riders.may_ride(refs):
            return self._riders.add(pattern, group, refs, member)
        return self._ack_now(pattern, group, refs, member)

    def _ack_alone(self, job: AckJob) -> None:
        """Send a riding ACK on its own, its answer from that statement's."""
        self._ack_now(job.pattern, job.group, job.refs, job.member).add_done_callback(
            partial(settle_from, job.answer)
        )

    async def _send_riders_alone(self) -> None:
        jobs = self._riders.take()
        self._riders.send_alone(jobs)
        await asyncio.gather(*(job.answer for job in jobs), return_exceptions=True)

    def _ack_now(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        """No task per ACK when the spare connection is free and every ref has its seq (the bus's ACKs):
        the statement is sent at once and its reply read from the socket's callback
        (``settle.start_ack_by_seq``). Otherwise, and to re-run one that failed (with ``_run``'s retries),
        ``_ack`` in a task."""
        conn = self._spare
        if conn is None or any(ref.seq is None for ref in refs):
            return super()._ack_soon(pattern, group, refs, member)
        try:
            started = settle.start_ack_by_seq(conn, pattern, group, refs, member)
        except psycopg.Error:  # the connection is broken: _run finds out and replaces it
            started = None
        if started is None:
            return super()._ack_soon(pattern, group, refs, member)
        self._spare = None
        answer: asyncio.Future[int] = started.get_loop().create_future()
        started.add_done_callback(partial(self._acked, conn, answer, (pattern, group, refs, member)))
        return answer

    def _acked(
        self,
        conn: PgConn,
        answer: asyncio.Future[int],
        call: tuple[str, str, list[EventRef], str | None],
        started: asyncio.Future[PGresult],
    ) -> None:
        if not started.cancelled() and started.exception() is None:
            self._put_back(conn)
            if not answer.done():
                answer.set_result(started.result().command_tuples or 0)
            return
        task = answer.get_loop().create_task(self._ack_again(conn, call))
        task.add_done_callback(partial(settle_from, answer))

    async def _ack_again(self, conn: PgConn, call: tuple[str, str, list[EventRef], str | None]) -> int:
        await self._give_back(conn)
        return await self._ack(*call)

    def _put_back(self, conn: PgConn) -> None:
        """``_putconn`` from a callback: the pool's own return (a coroutine) only when the connection cannot
        be the spare."""
        if self._keep(conn):
            return
        task = asyncio.get_running_loop().create_task(self._pool.putconn(conn))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _nack(self, request: NackRequest) -> bool:
        return await self._run_appending(groups_ops.nack, request)

    async def _extend(self, request: ExtendRequest) -> bool:
        return await self._run(groups_ops.extend, request)

    async def release(self, pattern: str, group: str, member: str) -> int:
        self._check_open()
        return await self._run(groups_ops.release, pattern, group, member)

    async def reset_group(self, pattern: str, group: str, to: StartPosition) -> GroupInfo | None:
        self._check_open()
        return await self._run(groups_ops.reset_group, pattern, group, to)

    async def next_deadline(self, pattern: str, group: str) -> int | None:
        self._check_open()
        return await self._run(groups_ops.next_deadline, pattern, group)

    async def cursor(self, pattern: str, group: str) -> Cursor | None:
        self._check_open()
        return await self._run(groups_ops.cursor, pattern, group)

    async def lag(self, pattern: str, group: str) -> Lag | None:
        self._check_open()
        return await self._run(groups_ops.lag, pattern, group)


async def _ping(conn: PgConn) -> None:
    await conn.execute("SELECT 1")
