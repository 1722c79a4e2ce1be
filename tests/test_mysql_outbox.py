"""What only the MySQL/MariaDB outbox has, on the machine's MariaDB (``OUTBOXHUB_TEST_MYSQL_URL``): the
application side (``add`` with PyMySQL, aiomysql, asyncmy and SQLAlchemy, in and out of transactions),
rows written by plain SQL, the DDL and ``ensure_schema``, URLs and errors. The ``OutboxStore`` contract
itself runs on MySQL in tests/test_outbox_store.py and tests/test_outbox_drainer.py."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from mysql_support import MysqlOutboxDB, mysql_db
from outboxhub import outbox
from outboxhub.errors import OutboxError, StoreUnavailable, StoreURLError
from outboxhub.ids import now_ms
from outboxhub.outbox import Drainer, DrainerSettings, Failure, Verdict
from outboxhub.outbox.mysql_sql import connect_kwargs
from test_outbox_support import RecordingSink

pytestmark = pytest.mark.mysql

LEASE = 1_000
WAIT_S = 30.0


@pytest.fixture
def db() -> Any:
    with mysql_db() as database:
        yield database


def _insert_sql(db: MysqlOutboxDB, columns: str, values: str, params: tuple[Any, ...]) -> None:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO `{db.table}` ({columns}) VALUES ({values})", params)
        conn.commit()
    finally:
        conn.close()


# -- add -----------------------------------------------------------------------------------------------------


def test_add_with_pymysql_follows_the_transaction(db: MysqlOutboxDB) -> None:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, state VARCHAR(10))")
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO orders VALUES (1, 'paid')")
        kept = outbox.add(conn, "orders.paid", {"order": 1}, key="1", headers={"trace": "t1"})
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO orders VALUES (2, 'paid')")
        outbox.add(conn, "orders.paid", {"order": 2}, key="2")
        conn.rollback()
        # Idempotent: the same id again leaves the stored record as it was.
        assert outbox.add(conn, "orders.other", {"changed": True}, id=kept) == kept
        conn.commit()
    finally:
        conn.close()
    assert db.query("SELECT id, topic, payload, `key`, headers, status FROM {t}") == [
        (kept, "orders.paid", '{"order":1}', "1", '{"trace":"t1"}', "pending")
    ]


def test_ids_and_keys_compare_exactly(db: MysqlOutboxDB) -> None:
    # A case-insensitive collation would make these one id, and the idempotent add would drop the second.
    db.add_many(
        [{"topic": "a.b", "payload": 1, "id": "Order-1"}, {"topic": "a.b", "payload": 2, "id": "order-1"}]
    )
    assert db.count() == 2


def test_add_refuses_what_the_table_cannot_hold_before_writing(db: MysqlOutboxDB) -> None:
    conn = db.connect()
    try:
        with pytest.raises(OutboxError, match="keys of at most 512"):
            outbox.add(conn, "a.b", 1, key="k" * 513)
        with pytest.raises(OutboxError, match=r"outbox table 'missing' does not exist"):
            outbox.add(conn, "a.b", 1, table="missing")
        with pytest.raises(OutboxError, match="table"):
            outbox.add(conn, "a.b", 1, table="x`; DROP TABLE outbox; --")
        conn.rollback()
    finally:
        conn.close()
    assert db.count() == 0


@pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])
async def test_add_async_with_aiomysql_and_asyncmy(db: MysqlOutboxDB, driver: str) -> None:
    kw = connect_kwargs(db.dsn)
    if driver == "aiomysql":
        import aiomysql

        conn: Any = await aiomysql.connect(
            host=kw["host"], port=kw["port"], user=kw["user"], password=kw["password"], db=kw["database"]
        )
    else:
        import asyncmy

        conn = await asyncmy.connect(**kw)
    try:
        await conn.begin()
        kept = await outbox.add_async(conn, "orders.paid", {"via": driver}, key="k")
        await conn.commit()
        await conn.begin()
        await outbox.add_async(conn, "orders.paid", {"rolled": "back"})
        await conn.rollback()
        with pytest.raises(OutboxError, match="asynchronous: use `await add_async"):
            outbox.add(conn, "a.b", 1)
    finally:
        conn.close()
    assert db.query("SELECT id, payload FROM {t}") == [(kept, f'{{"via":"{driver}"}}')]


def test_add_with_sqlalchemy_session_on_mysql(db: MysqlOutboxDB) -> None:
    import sqlalchemy
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(db.dsn.replace("mysql://", "mysql+pymysql://", 1))
    try:
        with Session(engine) as session, session.begin():
            kept = outbox.add(session, "orders.paid", {"sa": True}, key="k")
        with Session(engine) as session:
            session.begin()
            outbox.add(session, "orders.paid", {"sa": "rolled back"})
            session.rollback()
        with Session(engine) as session, pytest.raises(OutboxError, match="does not exist"):
            outbox.add(session, "a.b", 1, table="nope")
    finally:
        engine.dispose()
    assert db.query("SELECT id, payload FROM {t}") == [(kept, '{"sa":true}')]


async def test_add_async_with_sqlalchemy_asyncsession_on_mysql(db: MysqlOutboxDB) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(db.dsn.replace("mysql://", "mysql+asyncmy://", 1))
    try:
        async with AsyncSession(engine) as session, session.begin():
            kept = await outbox.add_async(session, "orders.paid", {"sa": "async"})
    finally:
        await engine.dispose()
    assert db.query("SELECT id FROM {t}") == [(kept,)]


# -- rows written by other programs --------------------------------------------------------------------------


async def test_plain_sql_inserts_use_the_defaults_and_unreadable_rows_go_dead(db: MysqlOutboxDB) -> None:
    _insert_sql(db, "topic, payload", "%s, %s", ("from.sql", '{"a": 1}'))
    _insert_sql(db, "topic, payload, headers", "%s, %s, %s", ("bad.headers", "1", '["x"]'))
    _insert_sql(db, "topic, payload", "%s, %s", ("bad.payload", "{oops"))
    store = await outbox.open_outbox(db.url)
    try:
        (claimed,) = await store.claim_batch(10, LEASE, "w")
        assert (claimed.topic, claimed.payload, claimed.attempts, claimed.status) == (
            "from.sql",
            {"a": 1},
            1,
            "claimed",
        )
        assert claimed.id and abs(claimed.ts - now_ms()) < 3_600_000
        dead = await store.list_dead()
    finally:
        await store.close()
    assert [(d.topic, d.attempts) for d in dead] == [("bad.headers", 1), ("bad.payload", 1)]
    assert (dead[0].last_err or "").startswith("headers are not a JSON object of strings")
    assert dead[1].payload == "{oops" and (dead[1].last_err or "").startswith("payload is not valid JSON")


async def test_unreadable_topic_is_dead_at_once_and_blocks_its_key(db: MysqlOutboxDB) -> None:
    first = db.add_many([{"topic": "a.b", "payload": {"n": 0}, "key": "k"}])
    _insert_sql(db, "topic, payload, `key`", "%s, '1', 'k'", ("bad..topic",))
    later = db.add_many([{"topic": "a.b", "payload": 2, "key": "k"}, {"topic": "a.b", "payload": 3}])
    store = await outbox.open_outbox(db.url)
    try:
        sink = RecordingSink()
        await Drainer(store, sink, DrainerSettings(ordered_by_key=True)).run_until_idle()
        assert sink.ids == [first[0], later[1]]  # k's third record waits behind the dead second one
        (dead,) = await store.list_dead()
        assert dead.topic == "bad..topic" and "segment 2 is empty" in (dead.last_err or "")
        assert dead.attempts == 1
        record = await store.get(later[0])
        assert record is not None and (record.status, record.attempts) == ("pending", 0)
    finally:
        await store.close()


# -- wake-up -------------------------------------------------------------------------------------------------


async def test_operator_retry_wakes_the_stores_drainers(db: MysqlOutboxDB) -> None:
    store = await outbox.open_outbox(db.url)
    try:
        db.add_many([{"topic": "a.b", "payload": 1}])
        (record,) = await store.claim_batch(1, LEASE, "w")
        await store.mark_failed([Failure(record=record, error="x", verdict=Verdict(dead=True))])
        await store.wait(0.05)
        waiter = asyncio.create_task(store.wait(WAIT_S))
        await asyncio.sleep(0.1)
        assert await store.retry("all") == 1
        assert await waiter is True
    finally:
        await store.close()


# -- schema --------------------------------------------------------------------------------------------------


async def test_ensure_schema_is_idempotent_and_safe_concurrently(db: MysqlOutboxDB) -> None:
    db.add_many([{"topic": "a.b", "payload": 1}])
    stores = [await outbox.open_outbox(db.url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.ensure_schema() for s in stores))
    finally:
        for s in stores:
            await s.close()
    outbox.ensure_schema(db.url)  # URL form, sync (PyMySQL)
    await outbox.ensure_schema_async(db.url)
    assert db.count() == 1


def test_ensure_schema_on_a_connection_refuses_an_open_transaction(db: MysqlOutboxDB) -> None:
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (x INT)")
            cur.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(OutboxError, match="open transaction"):
            outbox.ensure_schema(conn, "other")  # CREATE TABLE would commit the caller's insert
        conn.rollback()
        outbox.ensure_schema(conn, "other")
        outbox.ensure_schema(conn, "other")
    finally:
        conn.close()
    assert db.query("SELECT count(*) FROM t") == [(0,)]
    assert db.query("SELECT count(*) FROM other") == [(0,)]


def test_docs_print_the_ddl_ensure_schema_runs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "outbox.md").read_text()
    for statement in outbox.mysql_ddl():
        assert statement in docs, f"docs/outbox.md lacks:\n{statement}"


def test_table_names_are_checked() -> None:
    assert outbox.mysql_ddl("app.outbox")[0].startswith("CREATE TABLE IF NOT EXISTS `app`.`outbox`")
    for bad in ("", "1abc", "a.b.c", "x`; DROP TABLE y; --", "a" * 49):
        with pytest.raises(OutboxError, match="table"):
            outbox.mysql_ddl(bad)


# -- URLs and errors -----------------------------------------------------------------------------------------


def test_mysql_urls() -> None:
    parsed = outbox.parse_outbox_url("mysql+pymysql://u:pw@db:3307/app?table=ev&poll_interval_ms=5")
    assert (parsed.kind, parsed.target, parsed.table, parsed.options) == (
        "mysql",
        "mysql://u:pw@db:3307/app",
        "ev",
        {"poll_interval_ms": "5"},
    )
    assert "pw" not in repr(parsed)
    assert outbox.parse_outbox_url("mariadb://h/app").kind == "mysql"
    with pytest.raises(StoreURLError, match=re.escape("unknown MySQL option(s) ssl")) as caught:
        outbox.parse_outbox_url("mysql://u:secret@h/app?ssl=1")
    assert "secret" not in str(caught.value)
    with pytest.raises(StoreURLError, match="must name one database"):
        connect_kwargs("mysql://h/")


async def test_unreachable_mysql_is_store_unavailable_with_the_password_masked() -> None:
    with pytest.raises(StoreUnavailable, match=r"mysql://u:\*\*\*@127\.0\.0\.1:1/db") as caught:
        await outbox.MysqlOutbox.open("mysql://u:hunter2@127.0.0.1:1/db", connect_timeout_s=1)
    assert "hunter2" not in str(caught.value)


async def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "outboxhub.outbox.mysql", raising=False)
    monkeypatch.setitem(sys.modules, "asyncmy", None)
    with pytest.raises(StoreURLError, match=re.escape("pip install 'outboxhub[mysql]'")):
        await outbox.open_outbox("mysql://u:pw@127.0.0.1:1/app")
