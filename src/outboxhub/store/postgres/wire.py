"""The hot statements of the PostgreSQL store straight on libpq: prepared once per connection, binary
parameters encoded here, binary results read by the caller.

The publish (``publish_events`` / ``publish_claim``, from the store's writer) and the ACK run once per
event. Through ``AsyncConnection.execute`` each paid ≈ 100 µs of the hub's CPU on the client side alone:
a cursor and a transformer per call, the query's placeholders converted, a list dumper chosen for every
array parameter by walking the list (``BaseListDumper._find_list_element``) and then dumping it element by
element in Python, psycopg's prepare bookkeeping, and a wait that registers the socket, arms a timer and
removes both for every round trip. Here a statement is a name, its SQL with ``$n`` placeholders and its
parameter types: it is prepared on a connection the first time that connection runs it, and each call
sends the ready-made parameters (arrays packed with ``struct`` in one pass, ``text_array`` and friends)
with ``PQsendQueryPrepared`` and waits for the socket once.

Only for statements run on a connection of the store's pool in autocommit mode, outside any transaction
or pipeline (the statement is its own transaction). Errors are psycopg's: a failed statement raises the
``psycopg.Error`` subclass of its SQLSTATE (``psycopg.errors.error_from_result``), a broken connection
``psycopg.OperationalError`` (libpq marks it bad, so the pool discards it), so the store's retries work as
with ``execute``. psycopg may deallocate every prepared statement of a connection (after a ``ROLLBACK``
it runs ``DEALLOCATE ALL``); a statement found missing is prepared again and re-sent, once.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq

__all__ = [
    "INT4",
    "INT4_ARRAY",
    "INT8",
    "INT8_ARRAY",
    "TEXT",
    "TEXT_ARRAY",
    "Statement",
    "execute",
    "int4_array",
    "int8",
    "int8_array",
    "read_bool",
    "read_int",
    "start",
    "text_array",
]

TEXT, INT8, INT4, BOOL = 25, 20, 23, 16
TEXT_ARRAY, INT8_ARRAY, INT4_ARRAY = 1009, 1016, 1007

_I32 = struct.Struct(">i").pack
_I64 = struct.Struct(">q").pack
_HEAD = struct.Struct(">iiiii").pack  # ndim 1, has nulls, element type, length, lower bound 1
_NULL = _I32(-1)
_BINARY = pq.Format.BINARY
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_MISSING = "26000"  # invalid_sql_statement_name: the statement is not prepared on this connection


def text_array(values: Sequence[str | bytes | None]) -> bytes:
    """A ``text[]`` in PostgreSQL's binary array format (``bytes`` values are sent as they are: UTF-8)."""
    if not values:
        return _HEAD(0, 0, TEXT, 0, 0)[:12]
    parts = [b""]
    nulls = 0
    for value in values:
        if value is None:
            parts.append(_NULL)
            nulls = 1
            continue
        data = value.encode() if isinstance(value, str) else value
        parts.append(_I32(len(data)))
        parts.append(data)
    parts[0] = _HEAD(1, nulls, TEXT, len(values), 1)
    return b"".join(parts)


_int_structs: dict[tuple[str, int], struct.Struct] = {}


def _int_array(values: Sequence[int], code: str, oid: int, size: int) -> bytes:
    count = len(values)
    if not count:
        return _HEAD(0, 0, oid, 0, 0)[:12]
    packer = _int_structs.get((code, count))
    if packer is None:
        if len(_int_structs) > 256:
            _int_structs.clear()
        packer = _int_structs[(code, count)] = struct.Struct(">iiiii" + ("i" + code) * count)
    flat: list[int] = [1, 0, oid, count, 1]
    for value in values:
        flat.append(size)
        flat.append(value)
    return packer.pack(*flat)


def int8_array(values: Sequence[int]) -> bytes:
    """A ``bigint[]`` (no NULLs) in the binary array format."""
    return _int_array(values, "q", INT8, 8)


def int4_array(values: Sequence[int]) -> bytes:
    """An ``integer[]`` (no NULLs) in the binary array format."""
    return _int_array(values, "i", INT4, 4)


def int8(value: int) -> bytes:
    """A ``bigint`` parameter."""
    return _I64(value)


def read_int(data: bytes | None) -> int:
    """A binary ``bigint`` or ``integer`` result value."""
    return int.from_bytes(data or b"", "big", signed=True)


def read_bool(data: bytes | None) -> bool:
    """A binary ``boolean`` result value (NULL reads as false)."""
    return data == b"\x01"


class Statement:
    """A statement run through ``execute``: its prepared name (unique in the process), SQL with ``$n``
    placeholders, and the type of each parameter (every parameter is sent in binary)."""

    __slots__ = ("formats", "name", "sql", "types")

    def __init__(self, name: str, sql: str, types: Sequence[int]) -> None:
        self.name = f"outboxhub_{name}".encode()
        self.sql = sql.encode()
        self.types = list(types)
        self.formats = [_BINARY] * len(types)


class _Prepared:
    __slots__ = ("loop", "names")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.names: set[bytes] = set()


_prepared: weakref.WeakKeyDictionary[Any, _Prepared] = weakref.WeakKeyDictionary()


async def execute(
    conn: psycopg.AsyncConnection[Any], statement: Statement, params: Sequence[bytes | None]
) -> pq.abc.PGresult:
    """Run ``statement`` with ``params`` (each already in its binary form, None for NULL) on ``conn`` (in
    autocommit mode, no transaction or pipeline open); return its result, rows in binary format."""
    state = _prepared.get(conn)
    if state is None:
        state = _prepared[conn] = _Prepared(asyncio.get_running_loop())
    pgconn = conn.pgconn
    for attempt in (1, 2):
        if statement.name not in state.names:
            pgconn.send_prepare(statement.name, statement.sql, param_types=statement.types)
            await _result(conn, state.loop)
            state.names.add(statement.name)
        pgconn.send_query_prepared(
            statement.name, params, param_formats=statement.formats, result_format=_BINARY
        )
        try:
            return await _result(conn, state.loop)
        except psycopg.Error as exc:
            if attempt == 2 or exc.sqlstate != _MISSING:
                raise
            state.names.clear()  # deallocated behind our back (see the module docstring)
    raise AssertionError("unreachable")  # pragma: no cover


async def _result(conn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop) -> pq.abc.PGresult:
    """Flush what was sent, then read every result of it; return the last, raising a failed one's error."""
    pgconn = conn.pgconn
    fd = pgconn.socket
    while pgconn.flush():
        await _ready(loop, fd, writer=True)
        pgconn.consume_input()
    results: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            await _ready(loop, fd, writer=False)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        results.append(result)
    return _outcome(conn, results)


def _outcome(conn: psycopg.AsyncConnection[Any], results: list[pq.abc.PGresult]) -> pq.abc.PGresult:
    """The last of a statement's ``results``; the error of the first failed one raised instead."""
    for result in results:
        if result.status not in _OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    if not results:  # pragma: no cover - libpq always answers a sent statement
        raise psycopg.OperationalError("no result from the server")
    return results[-1]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, writer: bool) -> None:
    future = loop.create_future()
    if writer:
        loop.add_writer(fd, _wake, future)
    else:
        loop.add_reader(fd, _wake, future)
    try:
        await future
    finally:
        if writer:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def start(
    conn: psycopg.AsyncConnection[Any], statement: Statement, params: Sequence[bytes | None]
) -> asyncio.Future[pq.abc.PGresult] | None:
    """``execute`` without a coroutine: send ``statement`` and return the future of its result, driven by
    the socket's callbacks; None (nothing sent) when it is not prepared on ``conn`` yet. The caller owns
    ``conn`` until the future is done; an error is set on the future (a missing prepared statement too:
    run the statement again through ``execute``, which prepares it)."""
    state = _prepared.get(conn)
    if state is None or statement.name not in state.names:
        return None
    pgconn = conn.pgconn
    future: asyncio.Future[pq.abc.PGresult] = state.loop.create_future()
    pgconn.send_query_prepared(statement.name, params, param_formats=statement.formats, result_format=_BINARY)
    _Call(conn, future, state.loop).step()
    return future


class _Call:
    """One statement in flight for ``start``: flushes it, then reads its results as the socket allows."""

    __slots__ = ("conn", "fd", "future", "loop", "reading", "results", "writing")

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        future: asyncio.Future[pq.abc.PGresult],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.conn = conn
        self.future = future
        self.loop = loop
        self.fd = conn.pgconn.socket
        self.results: list[pq.abc.PGresult] = []
        self.reading = self.writing = False

    def step(self) -> None:
        pgconn = self.conn.pgconn
        try:
            if pgconn.flush():
                if not self.writing:
                    self.writing = True
                    self.loop.add_writer(self.fd, self.step)
                return
            if self.writing:
                self.writing = False
                self.loop.remove_writer(self.fd)
            if not self.reading:  # just sent: the reply cannot be there yet, don't read for it
                self.reading = True
                self.loop.add_reader(self.fd, self.step)
                return
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    self._stop()
                    self._finish()
                    return
                self.results.append(result)
        except psycopg.Error as exc:
            self._stop()
            if not self.future.done():
                self.future.set_exception(exc)

    def _stop(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def _finish(self) -> None:
        if self.future.done():  # pragma: no cover - nobody else resolves it
            return
        try:
            self.future.set_result(_outcome(self.conn, self.results))
        except psycopg.Error as exc:
            self.future.set_exception(exc)
