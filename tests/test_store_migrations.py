"""Schema migrations of issue #14 item 10 (ids unique per topic) keep existing data working.

Each backend's store is first created at the previous version (its migration list cut to that version, or
on MongoDB the old document layout written as version 1 wrote it), filled, closed, and reopened by the
current code: old events read back unchanged, an old id is still a duplicate on its own topic, and the same
id may now be used on another topic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bson.int64 import Int64

from outboxhub.model import NewEvent
from outboxhub.store import Store, open_store
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.sqlite import schema as sqlite_schema


async def _check_upgraded(store: Store, old_seq: int) -> None:
    old = await store.get_event("kept-1")
    assert old is not None and old.topic == "orders.paid" and old.payload == {"n": 1} and old.seq == old_seq
    again = await store.publish(NewEvent(topic="orders.paid", id="kept-1", payload={"n": 2}))
    assert again.duplicate and again.seq == old_seq, "an old id must still be a duplicate on its topic"
    other = await store.publish(NewEvent(topic="other.topic", id="kept-1", payload={"n": 3}))
    assert not other.duplicate and other.seq > old_seq
    assert [e.payload for e in await store.scan("**")] == [{"n": 1}, {"n": 3}]


async def test_sqlite_v1_database_is_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:1])
    monkeypatch.setattr(sqlite_schema, "SCHEMA_VERSION", 1)
    await (await open_store(url)).close()
    monkeypatch.undo()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1
        # the event as version 1's writer stored it (today's writer needs version 3's tables)
        conn.execute(
            "INSERT INTO topics (topic, count, last_seq, last_ts) VALUES ('orders.paid', 1, 1, 1000)"
        )
        conn.execute(
            "INSERT INTO events (seq, id, topic_id, ts, key, payload, meta)"
            """ VALUES (1, 'kept-1', 1, 1000, NULL, CAST('{"n":1}' AS BLOB), NULL)"""
        )
    store = await open_store(url)
    try:
        await _check_upgraded(store, 1)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert (
            conn.execute("SELECT version FROM schema_version").fetchone()[0] == sqlite_schema.SCHEMA_VERSION
        )


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    from outboxhub.testing.postgres import throwaway_schema

    async with throwaway_schema("migr") as url:
        yield url


@pytest.mark.postgres
async def test_postgres_v1_schema_is_upgraded(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:1])
    monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", 1)
    store = await open_store(pg_url)
    first = await store.publish(NewEvent(topic="orders.paid", id="kept-1", payload={"n": 1}))
    await store.close()
    monkeypatch.undo()
    store = await open_store(pg_url)
    try:
        await _check_upgraded(store, first.seq)
    finally:
        await store.close()


@pytest.fixture
async def mongo_url(mongo_server: object) -> AsyncIterator[str]:
    from outboxhub.testing.mongo import mongo_database

    async with mongo_database(prefix="migr") as url:
        yield url


@pytest.mark.mongo
async def test_mongo_v1_layout_is_upgraded(mongo_url: str) -> None:
    from outboxhub.store.mongo.store import MongoStore

    store = await open_store(mongo_url)
    assert isinstance(store, MongoStore)
    first = await store.publish(NewEvent(topic="orders.paid", id="seed", payload={"n": 0}))
    # Rewrite the stored event as layout version 1 wrote it: the event id as _id, no "id" field, no
    # schema document.
    events = store.db["outboxhub_events"]
    doc = await events.find_one({"seq": Int64(first.seq)})
    assert doc is not None
    await events.delete_one({"_id": doc["_id"]})
    await events.drop_indexes()
    doc.pop("id")
    doc.update(_id="kept-1", payload={"n": 1})
    await events.insert_one(doc)
    await store.db["outboxhub_counters"].delete_one({"_id": "schema"})
    await store.close()
    store = await open_store(mongo_url)
    try:
        await _check_upgraded(store, first.seq)
    finally:
        await store.close()
