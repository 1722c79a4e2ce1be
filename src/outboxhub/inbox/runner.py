"""Inboxes for the SDK: ``hub.subscribe(topic, group, handler, inbox=SqliteInbox("app.db"))``.

An inbox runs one delivery as one database transaction: it opens the transaction, records
``(group, topic, event id)`` with :func:`~outboxhub.inbox.claim`, calls ``handler(payload, ctx, db)`` with
the transaction's connection or session, and commits; the SDK ACKs after the commit. A delivery recorded
before (the consumer died between its commit and its ACK) is not run again: ``run`` returns False and the
SDK just ACKs it. A handler that raises rolls the transaction back (the record too), and the SDK NACKs.

Synchronous inboxes (``SqliteInbox``, ``PsycopgInbox``, ``SqlAlchemyInbox``) run the transaction and a
synchronous handler in a worker thread (``asyncio.to_thread``), so the event loop keeps going; each keeps
its own small pool of connections. Asynchronous ones (``AsyncPsycopgInbox``, ``AsyncSqlAlchemyInbox``) run
on the loop and await an async handler.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import inspect
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from typing import Any, Generic, TypeVar

from outboxhub._extras import missing_extra, needs_extra
from outboxhub.errors import InboxError
from outboxhub.inbox import sql
from outboxhub.inbox.claim import claim, claim_async

__all__ = [
    "AsyncPsycopgInbox",
    "AsyncSqlAlchemyInbox",
    "Inbox",
    "PsycopgInbox",
    "SqlAlchemyInbox",
    "SqliteInbox",
]

C = TypeVar("C")
Work = Callable[[C], Awaitable[None] | None]
"""The SDK's call of the handler, given the transaction's connection or session."""


class Inbox(abc.ABC, Generic[C]):
    """Runs each delivery's handler in a transaction that also records the delivery (see the module)."""

    asynchronous: bool
    """True when the handler must be ``async`` (it gets an async connection or session); False when it
    must be synchronous (it runs in a worker thread)."""

    def __init__(self, table: str) -> None:
        self.table = table

    @abc.abstractmethod
    async def run(self, group: str, topic: str, event_id: str, work: Work[C]) -> bool:
        """Run ``work`` in a transaction that records the delivery; False (nothing run) if recorded before."""

    async def close(self) -> None:
        """Close the connections this inbox opened (idempotent)."""


def _postgres_driver(name: str) -> Any:
    """``psycopg`` or ``psycopg_pool``, or ``InboxError`` naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if missing_extra(exc) != "postgres":
            raise
        raise InboxError(needs_extra("the PostgreSQL inbox", "postgres")) from exc


class _SyncInbox(Inbox[C]):
    asynchronous = False

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[C]:
        """A connection or session in an open transaction: committed on exit, rolled back on error."""

    async def run(self, group: str, topic: str, event_id: str, work: Work[C]) -> bool:
        sql.check_key(group, topic, event_id)
        return await asyncio.to_thread(self._run, group, topic, event_id, work)

    def _run(self, group: str, topic: str, event_id: str, work: Work[C]) -> bool:
        with self._transaction() as db:
            if not claim(db, group, topic, event_id, table=self.table):
                return False
            if inspect.isawaitable(work(db)):  # refused at subscribe; this is a second net
                raise InboxError(f"{type(self).__name__} runs synchronous handlers; this one is async")
        return True


class _Pool(Generic[C]):
    """Idle connections, shared by worker threads (each connection used by one thread at a time)."""

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]) -> None:
        self._connect = connect
        self._close = close
        self._idle: queue.SimpleQueue[C] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> C:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    def give(self, conn: C, *, broken: bool = False) -> None:
        with self._lock:
            if broken or self._closed:
                self._close(conn)
            else:
                self._idle.put(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while True:
                try:
                    self._close(self._idle.get_nowait())
                except queue.Empty:
                    return


class SqliteInbox(_SyncInbox[sqlite3.Connection]):
    """An inbox in an SQLite file: ``handler(payload, ctx, conn)`` gets a ``sqlite3.Connection`` inside
    ``BEGIN IMMEDIATE`` (the write lock is taken first, so concurrent handlers queue, up to
    ``timeout_s``, instead of failing on a lock upgrade). The table is created if missing."""

    def __init__(self, path: str | Path, *, table: str = sql.DEFAULT_TABLE, timeout_s: float = 30.0) -> None:
        super().__init__(sql.check_table(table, allow_schema=False))
        self.path = str(path)
        self._timeout_s = timeout_s
        self._pool: _Pool[sqlite3.Connection] = _Pool(self._connect, sqlite3.Connection.close)
        self._schema_ready = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        if not self._schema_ready:
            for statement in sql.sqlite_ddl(self.table):
                conn.execute(statement)
            self._schema_ready = True
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._pool.take()
        broken = True
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                broken = False
                raise
            conn.execute("COMMIT")
            broken = False
        finally:
            self._pool.give(conn, broken=broken)

    async def close(self) -> None:
        self._pool.close()


class PsycopgInbox(_SyncInbox[Any]):
    """An inbox in PostgreSQL over synchronous psycopg: ``handler(payload, ctx, conn)`` gets a
    ``psycopg.Connection`` inside ``conn.transaction()``. Create the table first (``ensure_schema``)."""

    def __init__(self, conninfo: str, *, table: str = sql.DEFAULT_TABLE) -> None:
        super().__init__(sql.check_table(table, allow_schema=True))
        psycopg = _postgres_driver("psycopg")
        self._pool: _Pool[Any] = _Pool(lambda: psycopg.connect(conninfo, autocommit=True), _close)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._pool.take()
        try:
            with conn.transaction():
                yield conn
        finally:
            self._pool.give(conn, broken=bool(conn.closed))

    async def close(self) -> None:
        self._pool.close()


def _close(conn: Any) -> None:
    conn.close()


class SqlAlchemyInbox(_SyncInbox[Any]):
    """An inbox on a SQLAlchemy ``sessionmaker`` (sqlite or postgresql): ``handler(payload, ctx,
    session)`` gets a ``Session`` inside ``session.begin()``. Create the table first (``ensure_schema``)."""

    def __init__(self, sessionmaker: Callable[[], Any], *, table: str = sql.DEFAULT_TABLE) -> None:
        super().__init__(sql.check_table(table, allow_schema=True))
        self._sessionmaker = sessionmaker

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._sessionmaker() as session, session.begin():
            yield session


class _AsyncInbox(Inbox[C]):
    asynchronous = True

    @abc.abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[C]:
        """A connection or session in an open transaction: committed on exit, rolled back on error."""

    async def run(self, group: str, topic: str, event_id: str, work: Work[C]) -> bool:
        sql.check_key(group, topic, event_id)
        async with self._transaction() as db:
            if not await claim_async(db, group, topic, event_id, table=self.table):
                return False
            result = work(db)
            if inspect.isawaitable(result):
                await result
        return True


class AsyncPsycopgInbox(_AsyncInbox[Any]):
    """An inbox in PostgreSQL over psycopg's ``AsyncConnection``: ``await handler(payload, ctx, conn)``
    runs inside ``conn.transaction()``, on a connection of a ``psycopg_pool.AsyncConnectionPool`` of up
    to ``max_size`` connections (opened on first use). Create the table first (``ensure_schema``)."""

    def __init__(self, conninfo: str, *, table: str = sql.DEFAULT_TABLE, max_size: int = 4) -> None:
        super().__init__(sql.check_table(table, allow_schema=True))
        if max_size < 1:
            raise InboxError(f"max_size must be >= 1, got {max_size}")
        pool_module = _postgres_driver("psycopg_pool")
        self._pool = pool_module.AsyncConnectionPool(
            conninfo, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        self._opened = False
        self._open_lock = asyncio.Lock()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._open_lock:
            if not self._opened:
                await self._pool.open(wait=True)
                self._opened = True
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._pool.close()


class AsyncSqlAlchemyInbox(_AsyncInbox[Any]):
    """An inbox on a SQLAlchemy ``async_sessionmaker``: ``await handler(payload, ctx, session)`` runs
    inside ``session.begin()``. Create the table first (``ensure_schema_async``)."""

    def __init__(self, sessionmaker: Callable[[], Any], *, table: str = sql.DEFAULT_TABLE) -> None:
        super().__init__(sql.check_table(table, allow_schema=True))
        self._sessionmaker = sessionmaker

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._sessionmaker() as session, session.begin():
            yield session
