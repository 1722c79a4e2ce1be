"""``outboxhub.inbox``: claim/cleanup/ensure_schema on real databases (SQLite files, the PostgreSQL test
server through psycopg and SQLAlchemy, MongoDB), and the errors for bad input."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub import inbox
from outboxhub.errors import InboxError
from outboxhub.inbox.sql import check_table

# -- pure parts ----------------------------------------------------------------------------------------


@given(st.text(max_size=60))
def test_a_table_name_is_accepted_only_as_plain_identifiers(name: str) -> None:
    plain = (
        0 < len(name) <= 48
        and (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    )
    try:
        check_table(name, allow_schema=False)
    except InboxError as exc:
        assert (not plain and repr(name)[:20] in str(exc)) or not plain
    else:
        assert plain


def test_ddl_names_the_table_and_refuses_sql_in_it() -> None:
    assert "CREATE TABLE IF NOT EXISTS consumer_inbox" in inbox.sqlite_ddl("consumer_inbox")[0]
    assert "app.inbox" in inbox.postgres_ddl("app.inbox")[0]
    with pytest.raises(InboxError, match="letters, digits and underscores"):
        inbox.sqlite_ddl("inbox; DROP TABLE x")
    with pytest.raises(InboxError, match="name of letters"):
        inbox.sqlite_ddl("app.inbox")  # SQLite has no schemas


# -- SQLite --------------------------------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "app.db")
    inbox.ensure_schema(c)
    c.execute("CREATE TABLE work (n INTEGER)")
    c.commit()
    yield c
    c.close()


def test_claim_is_true_once_then_false_for_the_same_group_topic_and_id(conn: sqlite3.Connection) -> None:
    with conn:
        assert inbox.claim(conn, "g", "orders.created", "e1")
    with conn:
        assert not inbox.claim(conn, "g", "orders.created", "e1")
    with conn:  # the key is (group, topic, id): the same id on another topic or group is new
        assert inbox.claim(conn, "g", "orders.updated", "e1")
        assert inbox.claim(conn, "other", "orders.created", "e1")


def test_a_rolled_back_transaction_takes_its_claim_with_it(conn: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError), conn:
        assert inbox.claim(conn, "g", "t.x", "e1")
        conn.execute("INSERT INTO work VALUES (1)")
        raise RuntimeError("handler failed")
    assert conn.execute("SELECT count(*) FROM work").fetchone() == (0,)
    with conn:
        assert inbox.claim(conn, "g", "t.x", "e1"), "the failed attempt left no record"


def test_bad_input_is_refused_naming_the_problem(conn: sqlite3.Connection) -> None:
    with pytest.raises(InboxError, match="group 'bad group'"):
        inbox.claim(conn, "bad group", "t.x", "e1")
    with pytest.raises(InboxError, match=r"orders\.\*"):
        inbox.claim(conn, "g", "orders.*", "e1")
    with pytest.raises(InboxError, match="event id must be a non-empty string"):
        inbox.claim(conn, "g", "t.x", "")
    with pytest.raises(InboxError, match="event id"):
        inbox.claim(conn, "g", "t.x", "x" * 257)
    with pytest.raises(InboxError, match="inbox target dict is not supported"):
        inbox.claim({}, "g", "t.x", "e1")
    with pytest.raises(InboxError, match="session= is only for pymongo"):
        inbox.claim(conn, "g", "t.x", "e1", session=object())
    with pytest.raises(InboxError, match="does not exist; create it with"):
        inbox.claim(conn, "g", "t.x", "e1", table="nope")
    with pytest.raises(InboxError, match="older_than_ms must be a positive int"):
        inbox.cleanup(conn, 0)
    assert conn.execute("SELECT count(*) FROM inbox").fetchone() == (0,)


def test_a_mysql_connection_is_refused_as_unsupported() -> None:
    """The outbox and the inbox classify handles with one rule (``outboxhub._targets``), which knows
    MySQL connections; the inbox has no MySQL table, so it refuses one before anything is written."""
    import pymysql

    mysql = pymysql.connect(host="127.0.0.1", defer_connect=True)  # never opens a socket
    with pytest.raises(InboxError, match="inbox target Connection is not supported; pass a sqlite3"):
        inbox.claim(mysql, "g", "t.x", "e1")
    with pytest.raises(InboxError, match="inbox target Connection is not supported"):
        inbox.ensure_schema(mysql)


def test_ensure_schema_refuses_an_open_transaction(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO work VALUES (1)")
    with pytest.raises(InboxError, match="open transaction"):
        inbox.ensure_schema(conn, "another")
    conn.rollback()


def test_cleanup_deletes_only_records_older_than_the_retention(conn: sqlite3.Connection) -> None:
    with conn:
        inbox.claim(conn, "g", "t.x", "old")
        inbox.claim(conn, "g", "t.x", "new")
        conn.execute("UPDATE inbox SET processed_at = processed_at - 3600000 WHERE event_id = 'old'")
    with conn:
        assert inbox.cleanup(conn, older_than_ms=60_000) == 1
    assert [r[0] for r in conn.execute("SELECT event_id FROM inbox")] == ["new"]


async def test_claim_async_takes_a_sqlite_connection_inline(conn: sqlite3.Connection) -> None:
    with conn:
        assert await inbox.claim_async(conn, "g", "t.x", "a1")
        assert not await inbox.claim_async(conn, "g", "t.x", "a1")


def test_sqlalchemy_session_on_sqlite(tmp_path: Path) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    with engine.begin() as c:
        inbox.ensure_schema(c)
    with Session(engine) as session, session.begin():
        assert inbox.claim(session, "g", "t.x", "e1")
    with Session(engine) as session, session.begin():
        assert not inbox.claim(session, "g", "t.x", "e1")
    engine.dispose()


# -- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    from outboxhub.testing.postgres import base_url, fresh_schema, search_path_url

    async with fresh_schema("inbox") as schema:
        yield search_path_url(base_url(), schema)


@pytest.mark.postgres
def test_psycopg_claim_cleanup_and_missing_table(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as c:
        with pytest.raises(InboxError, match="does not exist"):
            inbox.claim(c, "g", "t.x", "e1")
        c.rollback()
        inbox.ensure_schema(c)
        inbox.ensure_schema(c)  # idempotent
        with c.transaction():
            assert inbox.claim(c, "g", "t.x", "e1")
        with c.transaction():
            assert not inbox.claim(c, "g", "t.x", "e1")
            assert inbox.cleanup(c, 60_000) == 0
        with pytest.raises(InboxError, match="use `await claim_async"):
            inbox.claim(psycopg.AsyncConnection.__new__(psycopg.AsyncConnection), "g", "t.x", "e")


@pytest.mark.postgres
async def test_psycopg_async_and_sqlalchemy_async_share_the_table(pg_url: str) -> None:
    import psycopg
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        await inbox.ensure_schema_async(c)
        async with c.transaction():
            assert await inbox.claim_async(c, "g", "t.x", "e1")
    engine = create_async_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        maker = async_sessionmaker(engine)
        async with maker() as session, session.begin():
            assert not await inbox.claim_async(session, "g", "t.x", "e1")
            assert await inbox.claim_async(session, "g", "t.x", "e2")
            assert await inbox.cleanup_async(session, 60_000) == 0
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_concurrent_duplicate_waits_for_the_first_transaction_and_is_then_refused(
    pg_url: str,
) -> None:
    import asyncio

    import psycopg

    async with await psycopg.AsyncConnection.connect(pg_url) as c:
        await inbox.ensure_schema_async(c)
    async with (
        await psycopg.AsyncConnection.connect(pg_url) as first,
        await psycopg.AsyncConnection.connect(pg_url) as second,
    ):
        async with first.transaction():
            assert await inbox.claim_async(first, "g", "t.x", "race")
            waiting = asyncio.create_task(_claim_in_tx(second))
            await asyncio.sleep(0.2)
            assert not waiting.done(), "the second claim waits on the first, uncommitted one"
        assert await waiting is False


async def _claim_in_tx(conn: Any) -> bool:
    async with conn.transaction():
        return await inbox.claim_async(conn, "g", "t.x", "race")


# -- MongoDB ---------------------------------------------------------------------------------------------


@pytest.mark.mongo
def test_mongo_claim_needs_a_session_in_a_transaction(mongo_server: Any) -> None:
    import pymongo

    from outboxhub.testing.mongo import database_url, supports_transactions

    url = database_url(mongo_server.base_url, "inbox_t")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url)
    try:
        db = client.get_database("inbox_t")
        inbox.ensure_schema(db)
        with pytest.raises(InboxError, match="needs session="):
            inbox.claim(db, "g", "t.x", "e1")
        with client.start_session() as s, pytest.raises(InboxError, match="no transaction"):
            inbox.claim(db, "g", "t.x", "e1", session=s)
        if not supports_transactions(url):
            pytest.skip("this MongoDB server is standalone: it has no transactions to claim in")
        with client.start_session() as s, s.start_transaction():
            assert inbox.claim(db, "g", "t.x", "e1", session=s)
        with client.start_session() as s, s.start_transaction():
            assert not inbox.claim(db, "g", "t.x", "e1", session=s)
    finally:
        client.drop_database("inbox_t")
        client.close()


def test_the_sqlite_inbox_needs_no_optional_driver(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    body = textwrap.dedent(
        """
        import sys
        for _name in ("psycopg", "psycopg_pool", "pymongo", "sqlalchemy", "opentelemetry"):
            sys.modules[_name] = None
        import sqlite3
        from outboxhub import inbox
        from outboxhub.errors import InboxError
        conn = sqlite3.connect("app.db")
        inbox.ensure_schema(conn)
        with conn:
            print(inbox.claim(conn, "g", "t.x", "e1"), inbox.claim(conn, "g", "t.x", "e1"))
        try:
            inbox.AsyncPsycopgInbox("postgresql://x")
        except InboxError as exc:
            print("pip install 'outboxhub[postgres]'" in str(exc))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, "-c", body], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "True"]


# -- the SDK's inboxes, driven directly ---------------------------------------------------------------------


async def _run_twice_and_fail_once(box: Any, write: Any) -> list[bool]:
    """run() a new delivery, the same again, and a failing one; the results of the first two."""
    first = await box.run("g", "t.x", "e1", write)
    again = await box.run("g", "t.x", "e1", write)

    def fail(db: Any) -> None:
        write(db)
        raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        await box.run("g", "t.x", "e2", fail)
    return [first, again]


async def test_sqlalchemy_inbox_on_sqlite_runs_once_and_rolls_back_failures(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import sessionmaker

    engine = create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    with engine.begin() as c:
        inbox.ensure_schema(c)
        c.execute(text("CREATE TABLE work (n INTEGER)"))
    box = inbox.SqlAlchemyInbox(sessionmaker(engine))
    results = await _run_twice_and_fail_once(box, lambda s: s.execute(text("INSERT INTO work VALUES (1)")))
    assert results == [True, False]
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM work")).scalar() == 1
        assert c.execute(text("SELECT count(*) FROM inbox")).scalar() == 1, "e2's record rolled back"
    engine.dispose()


@pytest.mark.postgres
async def test_sync_psycopg_inbox_runs_once_and_rolls_back_failures(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        inbox.ensure_schema(c)
        c.execute("CREATE TABLE work (n INTEGER)")
    box = inbox.PsycopgInbox(pg_url)
    try:
        results = await _run_twice_and_fail_once(box, lambda c: c.execute("INSERT INTO work VALUES (1)"))
    finally:
        await box.close()
    assert results == [True, False]
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT (SELECT count(*) FROM work), (SELECT count(*) FROM inbox)").fetchone() == (
            1,
            1,
        )
