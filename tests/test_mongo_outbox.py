"""What only the MongoDB outbox has, on the nx-27017 stand-in (or ``OUTBOXHUB_TEST_MONGO_URL``): ``add`` and
its session rules, ``ensure_schema`` and the indexes, the seed's record shape, two drainers, the change-stream
wake-up. The store contract (claims, leases and fencing, failures, operators, stats, retention, per-key
order) runs on MongoDB in tests/test_outbox_store.py, with SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from mongo_server import mongo_database, supports_transactions
from outboxhub import outbox
from outboxhub.errors import OutboxError, StoreURLError
from outboxhub.ids import now_ms
from outboxhub.outbox import Drainer, DrainerSettings, OutboxStore
from outboxhub.outbox.mongo import MongoOutbox, deployment_supports_transactions, outbox_indexes
from test_outbox_support import RecordingSink, assert_published_once, race_two_drainers

pytestmark = pytest.mark.mongo

LEASE = 1_000
WAIT_S = 30.0
"""Safety net for "should happen soon" (a wake-up); never the thing measured."""


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with mongo_database(prefix="obx") as database_url:
        yield database_url


@pytest.fixture
def db(url: str) -> Iterator[pymongo.database.Database[Any]]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    yield client.get_default_database()
    client.close()


@pytest.fixture
async def store(url: str) -> AsyncIterator[OutboxStore]:
    opened = await outbox.open_outbox(url)
    await opened.ensure_schema()
    yield opened
    await opened.close()


def _seed_record(record_id: Any, topic: Any, payload: Any, **more: Any) -> dict[str, Any]:
    """A record exactly as the seed's MongoOutbox.add writes it (ts is a JS number: a BSON double)."""
    return {
        "_id": record_id,
        "topic": topic,
        "payload": payload,
        "headers": more.pop("headers", None),
        "status": "pending",
        "ts": float(time.time() * 1000),
        "attempts": 0,
        **more,
    }


# -- add -----------------------------------------------------------------------------------------------------


def test_add_writes_the_seed_fields_and_is_idempotent(db: pymongo.database.Database[Any]) -> None:
    record_id = outbox.add(db, "orders.paid", {"order": 7}, key="o7", headers={"trace": "t"})
    again = outbox.add(db, "orders.paid", {"order": "changed"}, id=record_id)
    assert again == record_id
    doc = db["outbox"].find_one({"_id": record_id})
    assert doc is not None
    assert {k: doc[k] for k in ("topic", "payload", "headers", "key", "status", "attempts")} == {
        "topic": "orders.paid",
        "payload": {"order": 7},
        "headers": {"trace": "t"},
        "key": "o7",
        "status": "pending",
        "attempts": 0,
    }
    assert doc["ts"] == doc["available_at"] and doc["ord"] > 0
    assert db["outbox"].count_documents({}) == 1


async def test_add_async_with_an_async_database(url: str, store: OutboxStore) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    try:
        big = {"n": 2**70, "$weird": 1}  # not storable as BSON: kept as JSON text, read back exactly
        record_id = await outbox.add_async(client.get_default_database(), "a.b", big)
    finally:
        await client.close()
    (claimed,) = await store.claim_batch(10, LEASE, "w")
    assert (claimed.id, claimed.payload) == (record_id, big)


def test_add_in_a_session_needs_a_transaction_on_a_replica_set(
    url: str, db: pymongo.database.Database[Any]
) -> None:
    client = db.client
    if not supports_transactions(url):
        # A standalone server (the stand-in presents itself as one: its hello has no setName) refuses
        # transactions: add() says so before writing anything.
        with client.start_session() as session:
            session.start_transaction()
            with pytest.raises(OutboxError, match="transactions need a replica set") as caught:
                outbox.add(db, "a.b", 1, session=session)
            session.abort_transaction()
        assert "mongod --replSet" in str(caught.value)
        assert db["outbox"].count_documents({}) == 0
        return
    for commit in (True, False):
        with client.start_session() as session:
            session.start_transaction()
            db["orders"].insert_one({"state": "paid"}, session=session)
            record_id = outbox.add(db, "orders.paid", {"commit": commit}, session=session)
            if commit:
                session.commit_transaction()
            else:
                session.abort_transaction()
        assert (db["outbox"].find_one({"_id": record_id}) is not None) is commit


def test_a_session_without_a_transaction_is_refused(url: str, db: pymongo.database.Database[Any]) -> None:
    expected = "start_transaction" if supports_transactions(url) else "replica set"
    with db.client.start_session() as session, pytest.raises(OutboxError, match=expected):
        outbox.add(db, "a.b", 1, session=session)
    with pytest.raises(OutboxError, match="ClientSession"):
        outbox.add(db, "a.b", 1, session=object())
    assert db["outbox"].count_documents({}) == 0


def test_the_transaction_support_detection() -> None:
    # pymongo's topology type and server types, as a real deployment reports them.
    assert deployment_supports_transactions("Single", ["Standalone"]) is False
    assert deployment_supports_transactions("Single", ["RSPrimary"]) is True  # directConnection to a member
    assert deployment_supports_transactions("ReplicaSetWithPrimary", ["RSPrimary", "RSSecondary"]) is True
    assert deployment_supports_transactions("Sharded", ["Mongos"]) is True
    assert deployment_supports_transactions("Unknown", ["Unknown"]) is None  # not connected yet: ask hello
    from outboxhub.store.mongo.conn import supports_transactions as from_hello

    assert from_hello({"isWritablePrimary": True}) is False
    assert from_hello({"setName": "rs0", "isWritablePrimary": True}) is True
    assert from_hello({"msg": "isdbgrid"}) is True


def test_bad_collection_names_are_refused(db: pymongo.database.Database[Any]) -> None:
    for bad in ("", "a$b", "system.x"):
        with pytest.raises(OutboxError, match="collection name"):
            outbox.add(db, "a.b", 1, table=bad)


# -- ensure_schema -------------------------------------------------------------------------------------------

INDEX_KEYS = {tuple(model.document["key"]) for model in outbox_indexes()}


def _index_keys(collection: pymongo.collection.Collection[Any]) -> set[tuple[str, ...]]:
    return {tuple(index["key"]) for index in collection.list_indexes() if index["name"] != "_id_"}


def test_ensure_schema_takes_a_pymongo_database(db: pymongo.database.Database[Any]) -> None:
    assert len(INDEX_KEYS) == 7
    outbox.ensure_schema(db)
    outbox.ensure_schema(db)  # idempotent
    outbox.ensure_schema(db, "jobs_outbox")
    assert _index_keys(db["outbox"]) == INDEX_KEYS
    assert _index_keys(db["jobs_outbox"]) == INDEX_KEYS
    with pytest.raises(OutboxError, match="collection name"):
        outbox.ensure_schema(db, "a$b")
    record_id = outbox.add(db, "a.b", 1, table="jobs_outbox")  # the collection is usable as created
    assert db["jobs_outbox"].count_documents({"_id": record_id}) == 1


async def test_ensure_schema_async_takes_an_async_database(
    url: str, db: pymongo.database.Database[Any]
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    try:
        adb = client.get_default_database()
        await outbox.ensure_schema_async(adb, "jobs_outbox")
        await outbox.ensure_schema_async(adb, "jobs_outbox")
        with pytest.raises(OutboxError, match="ensure_schema_async"):
            outbox.ensure_schema(adb)
    finally:
        await client.close()
    assert _index_keys(db["jobs_outbox"]) == INDEX_KEYS
    assert "outbox" not in db.list_collection_names()  # the collection given, not the default one
    with pytest.raises(OutboxError, match="ensure_schema_async"):
        outbox.ensure_schema(url)
    drained = await outbox.open_outbox(url, table="drained")  # the drainer creates the same ones
    try:
        await drained.ensure_schema()
    finally:
        await drained.close()
    assert _index_keys(db["drained"]) == INDEX_KEYS


# -- the seed's records --------------------------------------------------------------------------------------


async def test_records_written_the_seed_way_are_drained(
    db: pymongo.database.Database[Any], store: OutboxStore
) -> None:
    oid = ObjectId()
    db["outbox"].insert_many(
        [
            _seed_record("seed-1", "process.state", {"pid": 1}, headers={"h": "v"}),
            _seed_record(oid, "process.state", {"pid": 2}),
            _seed_record("seed-3", "heartbeat.received", [1, 2]),
        ]
    )
    db["outbox"].insert_one(_seed_record("seed-sent", "x.y", 0) | {"status": "sent"})
    ours = outbox.add(db, "orders.paid", {"n": 1})
    sink = RecordingSink()
    await Drainer(store, sink, DrainerSettings(batch_size=2, idle_wait_ms=20)).run_until_idle()
    assert sink.ids == ["seed-1", str(oid), "seed-3", ours]  # seed records first: they have no ord
    assert [(e.topic, e.payload, e.headers) for e in sink.log[:3]] == [
        ("process.state", {"pid": 1}, {"h": "v"}),
        ("process.state", {"pid": 2}, None),
        ("heartbeat.received", [1, 2], None),
    ]
    assert set(sink.calls.values()) == {1}
    assert db["outbox"].count_documents({"status": "sent"}) == 5
    # The seed's terminal status "error" is dead here: listed, retried and purged like dead records.
    db["outbox"].insert_one(_seed_record("seed-err", "a.b", 1) | {"status": "error", "last_err": "boom"})
    (dead,) = await store.list_dead()
    assert (dead.id, dead.status, dead.last_err) == ("seed-err", "dead", "boom")
    assert (await store.stats()).dead == 1
    assert await store.retry(["seed-err"]) == 1
    # Sent seed records have no sent_at: retention goes by their ts.
    assert await store.delete_sent_older_than(0, now=now_ms() + 1) == 5


async def test_unreadable_seed_records_go_dead(
    db: pymongo.database.Database[Any], store: OutboxStore
) -> None:
    db["outbox"].insert_many(
        [
            _seed_record("bad-topic", 42, {}),
            _seed_record("bad-headers", "a.b", {}, headers={"h": 1}),
            _seed_record(7, "a.b", {}),
            _seed_record("good", "a.b", {"ok": True}),
        ]
    )
    claimed = await store.claim_batch(10, LEASE, "w")
    assert [r.id for r in claimed] == ["good"]
    errors = {doc["_id"]: doc["last_err"] for doc in db["outbox"].find({"status": "dead"})}
    assert errors.keys() == {"bad-topic", "bad-headers", 7}
    assert "topic" in errors["bad-topic"] and "headers" in errors["bad-headers"] and "_id" in errors[7]


# -- drainers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_two_drainers_at_once_publish_each_record_once(url: str, ordered: bool) -> None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url)
    db = client.get_default_database()
    ids = [outbox.add(db, "orders.state", {"n": i}, key=f"k{i % 97}") for i in range(400)]
    client.close()

    sink, drainers, stats = await race_two_drainers(url, ordered)
    assert stats.pending == 0
    assert_published_once(sink, ids, drainers, ordered)


async def test_wait_watches_with_a_change_stream_or_a_poll(
    db: pymongo.database.Database[Any], store: OutboxStore
) -> None:
    await store.wait(0.2)  # the first call starts watching
    assert isinstance(store, MongoOutbox)
    assert store.watch_mode in ("starting", "change stream", "polling")
    assert await store.wait(0.05) is False  # nothing happened
    waiter = asyncio.create_task(store.wait(WAIT_S))
    await asyncio.sleep(0.1)
    outbox.add(db, "orders.paid", {"i": 0})
    assert await waiter is True
    assert store.watch_mode in ("change stream", "polling")


async def test_open_errors() -> None:
    with pytest.raises(StoreURLError, match="must name the application's database"):
        await outbox.open_outbox("mongodb://127.0.0.1:1/")
    from outboxhub.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match=r"mongodb://u:\*\*\*@127\.0\.0\.1:1/app") as caught:
        await MongoOutbox.open("mongodb://u:hunter2@127.0.0.1:1/app", connect_timeout_s=0.3)
    assert "hunter2" not in str(caught.value)
