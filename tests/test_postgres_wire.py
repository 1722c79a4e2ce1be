"""The store's hot statements on libpq (``store/postgres/wire.py``) and its spare connection, against the
real server.

Arrays packed by ``text_array`` / ``int8_array`` / ``int4_array`` read back as sent (NULLs, empty
strings, non-ASCII text, raw UTF-8 bytes, empty arrays, the integer extremes); a statement whose prepared
form was deallocated behind the module's back (psycopg runs ``DEALLOCATE ALL`` after a ROLLBACK) is
prepared again; a failed statement raises psycopg's class for its SQLSTATE and leaves the connection
usable; a connection cut by the server raises ``OperationalError`` and reads as broken (the pool then
discards it); and a store whose pooled connections lost their prepared statements still publishes, claims
through the publish and acks. The spare connection (``PostgresStore._getconn``): a pool of one connection
serves concurrent operations (the spare goes back through the pool to an operation waiting there), and a
spare cut by the server is replaced. The ACK without a task (``PostgresStore._ack_soon``): a bus ACK on
the spare connection creates none, and one whose statement fails there (deallocated, connection cut) is
run again through ``_ack`` and its retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import EventRef
from outboxhub.store.postgres import wire
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, throwaway_schema
from task_counting import tasks_started

pytestmark = pytest.mark.postgres

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold
EARLIEST = GroupOptions(start=StartPosition(kind="earliest"))

UNNEST_TEXT = wire.Statement(
    "test_unnest_text",
    "SELECT x FROM unnest($1::text[]) WITH ORDINALITY AS u (x, o) ORDER BY o",
    [wire.TEXT_ARRAY],
)
UNNEST_INT8 = wire.Statement(
    "test_unnest_int8",
    "SELECT x FROM unnest($1::bigint[]) WITH ORDINALITY AS u (x, o) ORDER BY o",
    [wire.INT8_ARRAY],
)
UNNEST_INT4 = wire.Statement(
    "test_unnest_int4",
    "SELECT x::bigint FROM unnest($1::integer[]) WITH ORDINALITY AS u (x, o) ORDER BY o",
    [wire.INT4_ARRAY],
)
CARDINALITY = wire.Statement(
    "test_cardinality",
    "SELECT cardinality($1::text[])::bigint, cardinality($2::bigint[])::bigint,"
    " cardinality($3::integer[])::bigint",
    [wire.TEXT_ARRAY, wire.INT8_ARRAY, wire.INT4_ARRAY],
)


@pytest.fixture
async def conn() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    connection = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()


def _column(result: Any) -> list[bytes | None]:
    return [result.get_value(i, 0) for i in range(result.ntuples)]


async def test_arrays_read_back_as_sent(conn: psycopg.AsyncConnection[Any]) -> None:
    texts: list[str | bytes | None] = ["a", None, "", "ünïcødé ✓", "x" * 10_000, "é".encode(), None]
    got = _column(await wire.execute(conn, UNNEST_TEXT, [wire.text_array(texts)]))
    assert got == [None if t is None else t if isinstance(t, bytes) else t.encode() for t in texts]

    big = [0, 1, -1, 2**63 - 1, -(2**63), 1_796_640_843_380]
    got = _column(await wire.execute(conn, UNNEST_INT8, [wire.int8_array(big)]))
    assert [wire.read_int(v) for v in got] == big

    small = [0, 7, -5, 2**31 - 1, -(2**31)]
    got = _column(await wire.execute(conn, UNNEST_INT4, [wire.int4_array(small)]))
    assert [wire.read_int(v) for v in got] == small

    empty = await wire.execute(
        conn, CARDINALITY, [wire.text_array([]), wire.int8_array([]), wire.int4_array([])]
    )
    assert [wire.read_int(empty.get_value(0, i)) for i in range(3)] == [0, 0, 0]


async def test_a_deallocated_statement_is_prepared_again(conn: psycopg.AsyncConnection[Any]) -> None:
    assert _column(await wire.execute(conn, UNNEST_TEXT, [wire.text_array(["one"])])) == [b"one"]
    await conn.execute("DEALLOCATE ALL")
    assert _column(await wire.execute(conn, UNNEST_TEXT, [wire.text_array(["two"])])) == [b"two"]
    cur = await conn.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE name = %s", (UNNEST_TEXT.name.decode(),)
    )
    assert await cur.fetchone() == (1,)


async def test_a_failed_statement_raises_its_class_and_the_connection_goes_on(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    await conn.execute("CREATE TEMPORARY TABLE wire_t (k text PRIMARY KEY)")
    insert = wire.Statement("test_insert", "INSERT INTO wire_t SELECT unnest($1::text[])", [wire.TEXT_ARRAY])
    result = await wire.execute(conn, insert, [wire.text_array(["a", "b"])])
    assert result.command_tuples == 2
    with pytest.raises(psycopg.errors.UniqueViolation):
        await wire.execute(conn, insert, [wire.text_array(["c", "a"])])
    assert not conn.broken
    assert (await wire.execute(conn, insert, [wire.text_array(["c"])])).command_tuples == 1
    cur = await conn.execute("SELECT k FROM wire_t ORDER BY k")
    assert await cur.fetchall() == [("a",), ("b",), ("c",)]  # the failed statement was its own transaction


async def test_a_connection_cut_by_the_server_raises_operational_error(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    assert _column(await wire.execute(conn, UNNEST_TEXT, [wire.text_array(["x"])])) == [b"x"]
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as killer:
        await killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        await wire.execute(conn, UNNEST_TEXT, [wire.text_array(["y"])])
    assert conn.broken


async def test_a_store_whose_statements_were_deallocated_publishes_claims_and_acks() -> None:
    async with throwaway_schema("wire") as url:
        store = await open_store(url)
        assert isinstance(store, PostgresStore)
        try:
            await store.ensure_group("w.*", "g", StartPosition(kind="earliest"))
            first = await store.publish(NewEvent(topic="w.a", payload={"n": 1}, key="k1"))
            # Every pooled connection loses its prepared statements, as after psycopg's DEALLOCATE ALL.
            async with store._pool.connection() as pooled:
                await pooled.execute("DEALLOCATE ALL")
            claim = store.park_claim("w.*", "g", "m1", limit=10, ack_timeout_ms=30_000, max_deliver=5)
            await store.publish_batch(
                [
                    NewEvent(topic="w.a", payload={"n": 2}, headers={"h": "ü"}),
                    NewEvent(topic="w.b", payload=[3]),
                ]
            )
            deliveries, _ = await asyncio.wait_for(claim.future, WAIT_S)
            assert [d.event.payload for d in deliveries] == [{"n": 1}, {"n": 2}, [3]]
            assert deliveries[0].event.id == first.id and deliveries[0].event.key == "k1"
            assert deliveries[1].event.headers == {"h": "ü"}
            async with store._pool.connection() as pooled:
                await pooled.execute("DEALLOCATE ALL")
            refs = [EventRef(id=d.event.id, seq=d.event.seq) for d in deliveries]
            assert await store.ack("w.*", "g", refs, member="m1") == 3
            info = (await store.groups())[0]
            assert (info.in_flight, info.ack_floor) == (0, deliveries[-1].event.seq)
        finally:
            await store.close()


async def test_a_pool_of_one_connection_is_not_starved_by_the_spare() -> None:
    # Without handing the connection back through the pool to an operation waiting there, the second of
    # two concurrent operations waited for a pooled connection that never came (PoolTimeout).
    async with throwaway_schema("wire") as url:
        store = await open_store(url, pool_max=1, pool_timeout_s=10)
        try:
            await store.ensure_group("w.*", "g", StartPosition(kind="earliest"))
            publishes = [store.publish(NewEvent(topic="w.a", payload={"n": n})) for n in range(20)]
            reads = [store.last_seq() for _ in range(20)]
            results = await asyncio.gather(asyncio.gather(*publishes), asyncio.gather(*reads))
            assert len({result.seq for result in results[0]}) == 20
            assert await store.count("w.*") == 20
        finally:
            await store.close()


async def test_a_spare_connection_cut_by_the_server_is_replaced() -> None:
    async with throwaway_schema("wire") as url:
        store = await open_store(url)
        assert isinstance(store, PostgresStore)
        try:
            await store.publish(NewEvent(topic="w.a", payload=1))
            spare = store._spare
            assert spare is not None
            async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as killer:
                await killer.execute("SELECT pg_terminate_backend(%s)", (spare.info.backend_pid,))
            second = await store.publish(NewEvent(topic="w.a", payload=2))
            assert await store.last_seq() == second.seq == 2
            assert store._spare is not spare
        finally:
            await store.close()


async def _bus_holding(store: PostgresStore, count: int) -> Bus:
    bus = Bus(store, poll_interval_s=120.0)
    await bus.start()
    inbox: asyncio.Queue[Delivery] = asyncio.Queue()

    def deliver(delivery: Delivery) -> bool:
        inbox.put_nowait(delivery)
        return True

    for n in range(count):
        await bus.publish(NewEvent(topic="w.a", payload=n, id=f"e-{n}"))
    await bus.subscribe("w.*", "g", deliver, options=EARLIEST, member="m1")
    for _ in range(count):
        await asyncio.wait_for(inbox.get(), WAIT_S)
    return bus


async def _in_flight(store: PostgresStore) -> int:
    return sum(info.in_flight for info in await store.groups())


async def test_an_ack_on_the_spare_connection_creates_no_task() -> None:
    async with throwaway_schema("wire") as url:
        store = await open_store(url)
        assert isinstance(store, PostgresStore)
        bus = await _bus_holding(store, 2)
        try:
            # The first ACK prepares the statement on the spare connection (a task: ``_ack``, ``_run``).
            assert await asyncio.wait_for(bus.ack_soon("w.*", "g", "e-0", member="m1"), WAIT_S) is True
            with tasks_started() as started:
                done = bus.ack_soon("w.*", "g", "e-1", member="m1")
                assert not done.done(), "answered before the server was asked"
                assert await asyncio.wait_for(done, WAIT_S) is True
            assert started == [], "a lone ACK created a task"
            assert await _in_flight(store) == 0
            assert await asyncio.wait_for(bus.ack_soon("w.*", "g", "e-1", member="m1"), WAIT_S) is False
        finally:
            await bus.close()
            await store.close()


@pytest.mark.parametrize("mishap", ["deallocated", "terminated"])
async def test_an_ack_that_fails_on_the_spare_connection_is_run_again(mishap: str) -> None:
    # Without the re-run the ACK's future carried the statement's error (26000, or the lost connection).
    async with throwaway_schema("wire") as url:
        store = await open_store(url)
        assert isinstance(store, PostgresStore)
        bus = await _bus_holding(store, 2)
        try:
            assert await asyncio.wait_for(bus.ack_soon("w.*", "g", "e-0", member="m1"), WAIT_S) is True
            spare = store._spare
            assert spare is not None
            if mishap == "deallocated":
                await spare.execute("DEALLOCATE ALL")
            else:
                async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as killer:
                    await killer.execute("SELECT pg_terminate_backend(%s)", (spare.info.backend_pid,))
            assert await asyncio.wait_for(bus.ack_soon("w.*", "g", "e-1", member="m1"), WAIT_S) is True
            assert await _in_flight(store) == 0
        finally:
            await bus.close()
            await store.close()
