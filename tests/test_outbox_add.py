"""``outbox.add`` / ``add_async``: the record follows the caller's transaction, on every supported target,
and bad input is refused before anything is written."""

from __future__ import annotations

import sqlite3
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pymongo
import pytest
from pymongo import AsyncMongoClient
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from outboxhub import outbox
from outboxhub.errors import OutboxError
from outboxhub.outbox import PreparedRecord
from test_outbox_support import OutboxDB, postgres_db, sqlite_db

pg = pytest.mark.postgres


@pytest.fixture
def sdb(tmp_path: Path) -> OutboxDB:
    return sqlite_db(tmp_path)


@pytest.fixture
async def pdb() -> AsyncIterator[OutboxDB]:
    async with postgres_db() as db:
        yield db


def _sa_url(db: OutboxDB, driver: str = "psycopg") -> str:
    return db.dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


def _stored(db: OutboxDB) -> list[tuple[Any, ...]]:
    return db.query("SELECT id, topic, payload, key, headers, status, attempts FROM {t} ORDER BY seq")


def _check_one(db: OutboxDB, record_id: str) -> None:
    ((rid, topic, payload, key, headers, status, attempts),) = _stored(db)
    assert (rid, topic, key, status, attempts) == (record_id, "orders.paid", "o-1", "pending", 0)
    if db.kind == "sqlite":  # JSON text; psycopg decodes json columns itself
        payload, headers = msgspec.json.decode(payload), msgspec.json.decode(headers)
    assert payload == {"order": 1, "total": 9.5}
    assert headers == {"trace": "abc"}


def _check_outcome(db: OutboxDB, record_id: str, commit: bool) -> None:
    """After a commit the record is stored as added; after a rollback there is none."""
    if commit:
        _check_one(db, record_id)
    else:
        assert _stored(db) == []


ARGS: dict[str, Any] = {"key": "o-1", "headers": {"trace": "abc"}}
PAYLOAD = {"order": 1, "total": 9.5}


# -- commit / rollback per target ----------------------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_sqlite3_connection(sdb: OutboxDB, commit: bool) -> None:
    conn = sqlite3.connect(sdb.dsn)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, state TEXT)")
    conn.commit()
    conn.execute("INSERT INTO orders (state) VALUES ('paid')")
    record_id = outbox.add(conn, "orders.paid", PAYLOAD, **ARGS)
    assert conn.in_transaction
    conn.commit() if commit else conn.rollback()
    conn.close()
    if commit:
        _check_one(sdb, record_id)
        assert sdb.query("SELECT count(*) FROM orders") == [(1,)]
    else:
        assert _stored(sdb) == []
        assert sdb.query("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_add_async_accepts_sqlite3(sdb: OutboxDB, commit: bool) -> None:
    conn = sqlite3.connect(sdb.dsn)
    record_id = await outbox.add_async(conn, "orders.paid", PAYLOAD, **ARGS)
    conn.commit() if commit else conn.rollback()
    conn.close()
    _check_outcome(sdb, record_id, commit)


@pg
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_psycopg_connection(pdb: OutboxDB, commit: bool) -> None:
    with psycopg.connect(pdb.dsn) as conn:
        record_id = outbox.add(conn, "orders.paid", PAYLOAD, **ARGS, table=pdb.table)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.commit() if commit else conn.rollback()
    _check_outcome(pdb, record_id, commit)


@pg
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_psycopg_async_connection(pdb: OutboxDB, commit: bool) -> None:
    async with await psycopg.AsyncConnection.connect(pdb.dsn) as conn:
        record_id = await outbox.add_async(conn, "orders.paid", PAYLOAD, **ARGS, table=pdb.table)
        await (conn.commit() if commit else conn.rollback())
    _check_outcome(pdb, record_id, commit)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_sqlalchemy_session_sqlite(sdb: OutboxDB, commit: bool) -> None:
    engine = create_engine(f"sqlite:///{sdb.dsn}")
    try:
        with Session(engine) as session:
            session.execute(text("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, state TEXT)"))
            session.commit()
            session.execute(text("INSERT INTO orders (state) VALUES ('paid')"))
            record_id = outbox.add(session, "orders.paid", PAYLOAD, **ARGS)
            session.commit() if commit else session.rollback()
    finally:
        engine.dispose()
    _check_outcome(sdb, record_id, commit)
    assert sdb.query("SELECT count(*) FROM orders") == [(1 if commit else 0,)]


def test_sqlalchemy_core_connection_sqlite(sdb: OutboxDB) -> None:
    engine = create_engine(f"sqlite:///{sdb.dsn}")
    try:
        with engine.connect() as conn:
            outbox.add(conn, "orders.paid", PAYLOAD, **ARGS)
            conn.rollback()
            record_id = outbox.add(conn, "orders.paid", PAYLOAD, **ARGS)
            conn.commit()
    finally:
        engine.dispose()
    _check_one(sdb, record_id)


@pg
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_sqlalchemy_session_postgres(pdb: OutboxDB, commit: bool) -> None:
    engine = create_engine(_sa_url(pdb))
    try:
        with Session(engine) as session:
            record_id = outbox.add(session, "orders.paid", PAYLOAD, **ARGS, table=pdb.table)
            session.commit() if commit else session.rollback()
    finally:
        engine.dispose()
    _check_outcome(pdb, record_id, commit)


@pg
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_sqlalchemy_async_session_postgres(pdb: OutboxDB, commit: bool) -> None:
    engine = create_async_engine(_sa_url(pdb))
    try:
        async with AsyncSession(engine) as session:
            record_id = await outbox.add_async(session, "orders.paid", PAYLOAD, **ARGS, table=pdb.table)
            await (session.commit() if commit else session.rollback())
    finally:
        await engine.dispose()
    _check_outcome(pdb, record_id, commit)


# -- ids ----------------------------------------------------------------------------------------------


def test_default_id_is_uuid7_and_a_repeated_id_is_a_no_op(sdb: OutboxDB) -> None:
    conn = sqlite3.connect(sdb.dsn)
    generated = outbox.add(conn, "a.b", 1)
    assert generated[14] == "7" and len(generated) == 36  # UUIDv7 text form
    assert outbox.add(conn, "a.b", {"first": True}, id="order-1:paid") == "order-1:paid"
    assert outbox.add(conn, "a.b", {"second": True}, id="order-1:paid") == "order-1:paid"
    conn.commit()
    conn.close()
    rows = sdb.query("SELECT id, payload FROM {t} ORDER BY seq")
    assert rows == [(generated, "1"), ("order-1:paid", '{"first":true}')]


# -- refused before anything is written -----------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    ({"topic": "orders..paid"}, "segment 2 is empty"),
    ({"topic": "orders.*"}, "topic"),
    ({"topic": ""}, "topic"),
    ({"topic": 42}, "topic must be a string"),
    ({"payload": object()}, "payload is not JSON-serialisable"),
    ({"payload": {"when": 1j}}, "payload is not JSON-serialisable"),
    ({"payload": {"nested": [print]}}, "payload is not JSON-serialisable"),
    ({"headers": {"a": 1}}, "header 'a' must map a str to a str"),
    ({"headers": {1: "a"}}, "header 1 must map a str to a str"),
    ({"headers": [("a", "b")]}, "headers must be a mapping"),
    ({"id": ""}, "id must be a non-empty string"),
    ({"id": "x" * 257}, "at most 256"),
    ({"id": 7}, "id must be a non-empty string"),
    ({"key": ""}, "key must be a non-empty string"),
    ({"key": 5}, "key must be a non-empty string"),
    ({"table": "bad-name"}, "table 'bad-name'"),
    ({"table": "main.outbox"}, "table 'main.outbox'"),
    ({"session": object()}, "session= is only for pymongo"),
]


def _call(target: Any, **overrides: Any) -> None:
    args: dict[str, Any] = {"topic": "orders.paid", "payload": {"ok": True}, **overrides}
    outbox.add(target, args.pop("topic"), args.pop("payload"), **args)


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_refused_before_writing_sqlite(
    sdb: OutboxDB, overrides: dict[str, Any], message: str
) -> None:
    conn = sqlite3.connect(sdb.dsn)
    with pytest.raises(OutboxError) as caught:
        _call(conn, **overrides)
    assert message in str(caught.value)
    assert not conn.in_transaction  # not even a statement was run
    conn.close()
    assert _stored(sdb) == []


@pg
@pytest.mark.parametrize(("overrides", "message"), BAD[:6], ids=[m for _, m in BAD[:6]])
def test_bad_input_is_refused_before_writing_postgres(
    pdb: OutboxDB, overrides: dict[str, Any], message: str
) -> None:
    with psycopg.connect(pdb.dsn) as conn:
        with pytest.raises(OutboxError) as caught:
            _call(conn, table=pdb.table, **overrides)
        assert message in str(caught.value)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert _stored(pdb) == []


@pytest.fixture
def cursor(sdb: OutboxDB) -> Iterator[sqlite3.Cursor]:
    conn = sqlite3.connect(sdb.dsn)
    yield conn.cursor()
    conn.close()


def test_unsupported_targets(cursor: sqlite3.Cursor) -> None:
    for target in (cursor, [], "sqlite:///app.db", None):
        with pytest.raises(OutboxError, match=r"is not supported; pass a sqlite3\.Connection"):
            outbox.add(target, "a.b", 1)


@pg
async def test_sync_and_async_targets_are_not_mixed(pdb: OutboxDB) -> None:
    async with await psycopg.AsyncConnection.connect(pdb.dsn) as aconn:
        with pytest.raises(OutboxError, match="asynchronous: use `await add_async"):
            outbox.add(aconn, "a.b", 1, table=pdb.table)
    with psycopg.connect(pdb.dsn) as conn, pytest.raises(OutboxError, match="synchronous: use add"):
        await outbox.add_async(conn, "a.b", 1, table=pdb.table)
    assert _stored(pdb) == []


def test_missing_table_names_ensure_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "empty.db")
    with pytest.raises(OutboxError, match="does not exist; create it with ensure_schema"):
        outbox.add(conn, "a.b", 1)
    conn.close()


def test_unsupported_sqlalchemy_dialect_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with Session(engine) as session:
        session.get_bind().dialect.name = "oracle"
        with pytest.raises(OutboxError, match="dialect 'oracle' is not supported"):
            outbox.add(session, "a.b", 1)
    engine.dispose()


# -- the MongoDB dispatch point -------------------------------------------------------------------------


def test_mongo_targets_dispatch_to_the_mongo_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    fake = types.ModuleType("outboxhub.outbox.mongo")
    fake.insert_mongo = lambda db, record, table, *, session: calls.append((db, record, table, session))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "outboxhub.outbox.mongo", fake)
    client: pymongo.MongoClient[Any] = pymongo.MongoClient("mongodb://127.0.0.1:1", connect=False)
    try:
        session = object()
        record_id = outbox.add(client["app"], "a.b", {"x": 1}, key="k", session=session)
    finally:
        client.close()
    ((_, record, table, passed_session),) = calls
    assert isinstance(record, PreparedRecord) and record.id == record_id and record.payload == {"x": 1}
    assert (table, passed_session) == ("outbox", session)


async def test_mongo_without_the_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "outboxhub.outbox.mongo", None)
    client: pymongo.MongoClient[Any] = pymongo.MongoClient("mongodb://127.0.0.1:1", connect=False)
    aclient: AsyncMongoClient[Any] = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
    try:
        with pytest.raises(OutboxError, match="MongoDB outbox support is not installed yet"):
            outbox.add(client["app"], "a.b", 1)
        with pytest.raises(OutboxError, match="MongoDB outbox support is not installed yet"):
            await outbox.add_async(aclient["app"], "a.b", 1)
        with pytest.raises(OutboxError, match=r"refused: topic"):  # validation still comes first
            outbox.add(client["app"], "a..b", 1)
    finally:
        client.close()
        await aclient.close()
