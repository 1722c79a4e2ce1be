"""The ``OutboxStore`` contract, run against a real SQLite file, a real PostgreSQL schema and a real MongoDB
database (the nx-27017 stand-in, or ``OUTBOXHUB_TEST_MONGO_URL``): claims, leases and their fencing,
failures and verdicts, operator retry/purge, stats, retention, per-key ordering, wake-up. Then what only
the SQL stores have (rows inserted by plain SQL, DDL, URLs). MongoDB's own matters (the seed's record shape,
sessions, change streams, indexes) are in tests/test_mongo_outbox.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from outboxhub import outbox
from outboxhub.errors import OutboxError, StoreURLError
from outboxhub.ids import now_ms
from outboxhub.outbox import Failure, OutboxRecord, OutboxStore, Verdict
from test_outbox_support import (
    ORDERED_KEYS,
    AnyOutboxDB,
    OutboxDB,
    check_ordered_claims,
    open_any_db,
    open_db,
    postgres_db,
)

LEASE = 1_000
WAIT_S = 30.0
"""Safety net for "should happen soon" (a wake-up); never the thing measured."""


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mongo", marks=pytest.mark.mongo),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyOutboxDB]:
    async with open_any_db(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def store(db: AnyOutboxDB) -> AsyncIterator[OutboxStore]:
    opened = await outbox.open_outbox(db.url)
    yield opened
    await opened.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OutboxDB]:
    async with open_db(request.param, tmp_path) as database:
        yield database


def _records(n: int, **extra: object) -> list[dict[str, object]]:
    return [{"topic": "orders.paid", "payload": {"i": i}, **extra} for i in range(n)]


# -- claims and leases ---------------------------------------------------------------------------------------


async def test_claim_takes_oldest_first_bumps_attempts_and_sets_a_fresh_token(
    db: AnyOutboxDB, store: OutboxStore
) -> None:
    ids = db.add_many(_records(5))
    t = now_ms()
    first = await store.claim_batch(3, LEASE, "w1", now=t)
    assert [r.id for r in first] == ids[:3]
    assert [r.payload for r in first] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert {(r.status, r.attempts, r.claimed_by, r.lease_until) for r in first} == {
        ("claimed", 1, "w1", t + LEASE)
    }
    assert len({r.claim_token for r in first}) == 1 and first[0].claim_token
    second = await store.claim_batch(10, LEASE, "w2", now=t)
    assert [r.id for r in second] == ids[3:]
    assert second[0].claim_token != first[0].claim_token
    assert await store.claim_batch(10, LEASE, "w3", now=t) == []
    stored = await store.get(ids[0])
    assert stored is not None and (stored.status, stored.attempts) == ("claimed", 1)


PAYLOADS: list[object] = [
    {"order": 7, "at_ms": 1_700_000_000_123, "lines": [{"sku": "a", "qty": 2}], "note": None, "ok": True},
    [2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**70],  # 64-bit integers, and one larger
    1.5,
    "text with é and \u0000",
    None,
]


async def test_claims_return_the_payloads_as_added_ready_to_publish(
    db: AnyOutboxDB, store: OutboxStore
) -> None:
    ids = db.add_many([{"topic": "orders.paid", "payload": p} for p in PAYLOADS])
    claimed = await store.claim_batch(10, LEASE, "w")
    assert [r.id for r in claimed] == ids
    # The drainer hands payloads to the hub, which encodes them as JSON: each must encode, to the same value.
    assert [msgspec.json.decode(msgspec.json.encode(r.payload)) for r in claimed] == PAYLOADS


async def test_lease_fencing(db: AnyOutboxDB, store: OutboxStore) -> None:
    db.add_many(_records(4))
    t = now_ms()
    mine = await store.claim_batch(10, 100, "slow", now=t)
    assert await store.requeue_expired(now=t + 50) == 0  # lease still running
    assert await store.requeue_expired(now=t + 200) == 4
    theirs = await store.claim_batch(10, LEASE, "fast", now=t + 200)
    assert [r.id for r in theirs] == [r.id for r in mine]
    assert [r.attempts for r in theirs] == [2, 2, 2, 2]  # the expired attempt stays counted
    # The slow drainer's lease expired and its records were claimed again: it can change nothing.
    assert await store.mark_sent(mine, now=t + 300) == 0
    failure = Failure(record=mine[0], error="late", verdict=Verdict(dead=True))
    assert await store.mark_failed([failure], now=t + 300) == 0
    assert await store.release(mine, now=t + 300) == 0
    assert {r.status for r in [await store.get(r.id) for r in mine] if r} == {"claimed"}
    assert await store.mark_sent(theirs, now=t + 300) == 4
    after = [await store.get(r.id) for r in mine]
    assert {(r.status, r.sent_at, r.claim_token, r.claimed_by) for r in after if r} == {
        ("sent", t + 300, None, None)
    }
    assert await store.mark_sent(theirs, now=t + 400) == 0  # already sent


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
async def test_concurrent_claims_never_return_the_same_record(
    db: AnyOutboxDB, store: OutboxStore, ordered: bool
) -> None:
    ids = db.add_many([{"topic": "k.v", "payload": i, "key": f"k{i % 5}"} for i in range(30)])
    stores = [store, *[await outbox.open_outbox(db.url) for _ in range(2)]]
    claimed: list[str] = []
    try:
        while True:  # rounds of three claims at once; each round's records are sent before the next
            batches = await asyncio.gather(
                *(s.claim_batch(4, LEASE, f"w{i}", ordered_by_key=ordered) for i, s in enumerate(stores))
            )
            if not any(batches):
                break
            if ordered:  # a key's records never go to two drainers at once
                owners = [{r.key for r in batch} for batch in batches]
                assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :]), owners
            for s, batch in zip(stores, batches, strict=True):
                claimed += [r.id for r in batch]
                assert await s.mark_sent(batch) == len(batch)
    finally:
        for s in stores[1:]:
            await s.close()
    assert sorted(claimed) == sorted(ids) and len(claimed) == len(ids)


async def test_an_expired_but_unclaimed_lease_can_still_be_completed(
    db: AnyOutboxDB, store: OutboxStore
) -> None:
    db.add_many(_records(2))
    t = now_ms()
    mine = await store.claim_batch(10, 100, "w", now=t)
    # Nobody requeued the records: publishing them was not wasted, marking them sent is still right.
    assert await store.mark_sent(mine, now=t + 10_000) == 2


async def test_failures_follow_their_verdict(db: AnyOutboxDB, store: OutboxStore) -> None:
    ids = db.add_many(_records(3))
    t = now_ms()
    a, b, _ = await store.claim_batch(10, LEASE, "w", now=t)
    failures = [
        Failure(record=a, error="RuntimeError: boom", verdict=Verdict(dead=False, delay_ms=500)),
        Failure(record=b, error="ValueError: bad", verdict=Verdict(dead=True)),
    ]
    assert await store.mark_failed(failures, now=t) == 2
    ra, rb, rc = [await store.get(i) for i in ids]
    assert ra is not None and (ra.status, ra.available_at, ra.last_err, ra.claim_token) == (
        "pending",
        t + 500,
        "RuntimeError: boom",
        None,
    )
    assert rb is not None and (rb.status, rb.last_err, rb.attempts) == ("dead", "ValueError: bad", 1)
    assert rc is not None and rc.status == "claimed"
    assert await store.claim_batch(10, LEASE, "w", now=t + 499) == []  # still backing off
    again = await store.claim_batch(10, LEASE, "w", now=t + 500)
    assert [(r.id, r.attempts) for r in again] == [(ids[0], 2)]
    assert [r.id for r in await store.list_dead()] == [ids[1]]


async def test_release_refunds_the_attempt(db: AnyOutboxDB, store: OutboxStore) -> None:
    (record_id,) = db.add_many(_records(1))
    t = now_ms()
    claimed = await store.claim_batch(10, LEASE, "w", now=t)
    assert await store.release(claimed, delay_ms=250, now=t) == 1
    record = await store.get(record_id)
    assert record is not None and (record.status, record.attempts, record.available_at) == (
        "pending",
        0,
        t + 250,
    )
    assert await store.claim_batch(10, LEASE, "w", now=t + 249) == []
    assert len(await store.claim_batch(10, LEASE, "w", now=t + 250)) == 1


# -- operators -----------------------------------------------------------------------------------------------


async def _make_dead(store: OutboxStore, n: int, t: int) -> list[OutboxRecord]:
    claimed = await store.claim_batch(n, LEASE, "w", now=t)
    await store.mark_failed(
        [Failure(record=r, error="x", verdict=Verdict(dead=True)) for r in claimed], now=t
    )
    return claimed


async def test_retry_and_purge(db: AnyOutboxDB, store: OutboxStore) -> None:
    ids = db.add_many(_records(5))
    t = now_ms()
    await _make_dead(store, 4, t)
    assert await store.retry([ids[0], ids[4]], now=t) == 1  # ids[4] is pending, not dead
    record = await store.get(ids[0])
    assert record is not None and (record.status, record.attempts, record.available_at) == ("pending", 0, t)
    with pytest.raises(ValueError, match="purge: give ids or older_than_ms"):
        await store.purge()
    with pytest.raises(ValueError, match="ids must be a sequence"):
        await store.retry("some-id")  # type: ignore[arg-type]
    assert await store.purge([ids[0], ids[1]]) == 1  # ids[0] is pending again: untouched
    assert await store.get(ids[1]) is None
    assert await store.purge(older_than_ms=60_000, now=t) == 0  # created just now
    assert await store.retry("all", now=t) == 2
    await _make_dead(store, 5, t)
    assert await store.purge(older_than_ms=0, now=t + 1) == 4
    assert (await store.stats(now=t)).dead == 0


async def test_stats(db: AnyOutboxDB, store: OutboxStore) -> None:
    empty = await store.stats()
    assert (empty.pending, empty.claimed, empty.dead, empty.oldest_pending_age_ms, empty.next_retry_at) == (
        0,
        0,
        0,
        None,
        None,
    )
    db.add_many(_records(6))
    t = now_ms() + 5_000
    await _make_dead(store, 1, t)
    claimed = await store.claim_batch(2, LEASE, "w", now=t)
    await store.mark_failed(
        [Failure(record=claimed[0], error="e", verdict=Verdict(dead=False, delay_ms=70))], now=t
    )
    stats = await store.stats(now=t)
    assert (stats.pending, stats.claimed, stats.dead, stats.next_retry_at) == (4, 1, 1, t + 70)
    assert stats.oldest_pending_age_ms is not None and 5_000 <= stats.oldest_pending_age_ms < 60_000


async def test_sent_records_are_deleted_after_retention_in_batches(
    db: AnyOutboxDB, store: OutboxStore
) -> None:
    db.add_many(_records(30))
    t = now_ms()
    for step in range(3):  # 10 records sent at t, t + 1000, t + 2000
        await store.mark_sent(await store.claim_batch(10, LEASE, "w", now=t), now=t + step * 1000)
    db.add_many(_records(2))
    assert await store.delete_sent_older_than(5_000, batch_size=3, now=t + 5_500) == 10
    assert db.status_counts() == {"sent": 20, "pending": 2}
    assert await store.delete_sent_older_than(0, batch_size=3, now=t + 10_000) == 20
    assert db.status_counts() == {"pending": 2}


# -- per-key ordering ----------------------------------------------------------------------------------------


async def test_ordered_claims_never_pass_an_unsent_record_of_the_same_key(
    db: AnyOutboxDB, store: OutboxStore
) -> None:
    ids = db.add_many([{"topic": "k.v", "payload": i, "key": k} for i, k in enumerate(ORDERED_KEYS)])
    await check_ordered_claims(store, ids, LEASE)


async def test_a_key_blocked_by_a_dead_record_does_not_starve_other_keys(
    db: AnyOutboxDB, store: OutboxStore
) -> None:
    db.add_many([{"topic": "k.v", "payload": "poison", "key": "hot"}])
    t = now_ms()  # after the add: the record is available from its own write time on
    (poison,) = await store.claim_batch(1, LEASE, "w", now=t)
    await store.mark_failed([Failure(record=poison, error="e", verdict=Verdict(dead=True))], now=t)
    # More records of the blocked key than one look at the candidates takes (MongoDB reads them in pages).
    db.add_many([{"topic": "k.v", "payload": i, "key": "hot"} for i in range(250)])
    (cold,) = db.add_many([{"topic": "k.v", "payload": "cold", "key": "cold"}])
    assert [r.id for r in await store.claim_batch(5, LEASE, "w", ordered_by_key=True, now=now_ms())] == [cold]


# -- rows written by other programs (SQL; MongoDB's: tests/test_mongo_outbox.py) -----------------------------


async def test_plain_sql_inserts_use_the_defaults_and_unreadable_rows_go_dead(sql_db: OutboxDB) -> None:
    db = sql_db
    conn = db.connect()
    placeholder = "?" if db.kind == "sqlite" else "%s"
    insert = f"INSERT INTO {outbox.postgres.quote_table(db.table)} (topic, payload, headers) VALUES "
    conn.execute(insert + f"({placeholder}, {placeholder}, {placeholder})", ("from.sql", '{"a": 1}', None))
    conn.execute(insert + f"({placeholder}, {placeholder}, {placeholder})", ("bad.headers", "1", '["x"]'))
    conn.commit()
    conn.close()
    store = await outbox.open_outbox(db.url)
    try:
        claimed = await store.claim_batch(10, LEASE, "w")
        assert [(r.topic, r.payload, r.attempts, r.status) for r in claimed] == [
            ("from.sql", {"a": 1}, 1, "claimed")
        ]
        assert claimed[0].id and claimed[0].ts > 0
        (dead,) = await store.list_dead()
    finally:
        await store.close()
    assert dead.topic == "bad.headers"
    assert dead.last_err is not None and dead.last_err.startswith("headers are not a JSON object of strings")


@pytest.mark.parametrize("kind", ["sqlite"])
async def test_invalid_json_payload_goes_dead(kind: str, tmp_path: Path) -> None:
    async with open_db(kind, tmp_path) as db:
        conn = db.connect()
        conn.execute("INSERT INTO outbox (topic, payload) VALUES ('a.b', '{oops')")
        conn.commit()
        conn.close()
        store = await outbox.open_outbox(db.url)
        try:
            assert await store.claim_batch(10, LEASE, "w") == []
            (dead,) = await store.list_dead()
            assert dead.payload == "{oops" and (dead.last_err or "").startswith("payload is not valid JSON")
        finally:
            await store.close()


# -- wake-up -------------------------------------------------------------------------------------------------


async def test_wait_wakes_on_a_committed_insert(db: AnyOutboxDB, store: OutboxStore) -> None:
    await store.wait(0.2)  # the first call starts listening (PostgreSQL) or reads the commit counter
    assert await store.wait(0.05) is False  # nothing happened
    waiter = asyncio.create_task(store.wait(WAIT_S))
    await asyncio.sleep(0.1)  # let the waiter start before the insert (a missed wake-up would fail below)
    db.add_many(_records(1))
    assert await waiter is True


@pytest.mark.postgres
async def test_operator_retry_wakes_postgres_drainers() -> None:
    async with postgres_db() as db:
        store = await outbox.open_outbox(db.url)
        try:
            db.add_many(_records(1))
            await _make_dead(store, 1, now_ms())
            await store.wait(0.2)
            waiter = asyncio.create_task(store.wait(WAIT_S))
            await asyncio.sleep(0.1)
            assert await store.retry("all") == 1
            assert await waiter is True
        finally:
            await store.close()


# -- schema --------------------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_ensure_schema_is_idempotent_and_safe_concurrently() -> None:
    async with postgres_db() as db:
        db.add_many(_records(1))
        stores = [await outbox.open_outbox(db.url) for _ in range(3)]
        try:
            await asyncio.gather(*(s.ensure_schema() for s in stores))
        finally:
            for s in stores:
                await s.close()
        outbox.ensure_schema(db.url)  # URL form, sync
        assert db.count() == 1


def test_ensure_schema_refuses_an_open_transaction(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(OutboxError, match="open transaction"):
        outbox.ensure_schema(conn)
    conn.rollback()
    outbox.ensure_schema(conn)
    outbox.ensure_schema(conn)
    conn.close()


def test_docs_print_the_ddl_ensure_schema_runs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "outbox.md").read_text()
    for statement in [*outbox.sqlite_ddl(), *outbox.postgres_ddl()]:
        assert statement in docs, f"docs/outbox.md lacks:\n{statement}"


def test_table_names_are_checked() -> None:
    assert outbox.postgres.quote_table("app.outbox") == '"app"."outbox"'
    for bad in ("", "1abc", "a.b.c", 'x"; DROP TABLE y; --', "a" * 49):
        with pytest.raises(OutboxError, match="table"):
            outbox.postgres_ddl(bad)
    with pytest.raises(OutboxError, match="must be a name"):
        outbox.sqlite_ddl("main.outbox")


# -- URLs ----------------------------------------------------------------------------------------------------


def test_outbox_urls() -> None:
    parsed = outbox.parse_outbox_url("sqlite:///data/app.db?table=events_outbox&poll_interval_ms=5")
    assert (parsed.kind, parsed.target, parsed.table, parsed.options) == (
        "sqlite",
        "data/app.db",
        "events_outbox",
        {"poll_interval_ms": "5"},
    )
    assert outbox.parse_outbox_url("sqlite:////abs/app.db").target == "/abs/app.db"
    pg_url = outbox.parse_outbox_url("postgres://u:pw@db:5433/app?table=s.outbox&sslmode=disable")
    assert (pg_url.kind, pg_url.target, pg_url.table) == (
        "postgresql",
        "postgresql://u:pw@db:5433/app?sslmode=disable",
        "s.outbox",
    )
    assert "pw" not in repr(pg_url)
    assert outbox.parse_outbox_url("mongodb://h/app").kind == "mongodb"
    errors = {
        "redis://h": "unknown scheme 'redis'",
        "app.db": "must look like",
        "sqlite:///:memory:": "in-memory database",
        "sqlite://host/app.db": "has no host",
        "sqlite:///a.db?pool=3": "unknown SQLite option(s) pool",
        "postgresql://u:secret@h/db?table=a": "names table 'a' but table='b'",
    }
    for url, message in errors.items():
        with pytest.raises(StoreURLError, match=re.escape(message)) as caught:
            outbox.parse_outbox_url(url, table="b" if "table=a" in url else None)
        assert "secret" not in str(caught.value)


async def test_open_outbox_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "outboxhub.outbox.mongo", None)
    with pytest.raises(StoreURLError, match="MongoDB outbox support is not installed yet"):
        await outbox.open_outbox("mongodb://u:pw@127.0.0.1:1/app")
    with pytest.raises(StoreURLError, match="poll_interval_ms must be a positive integer"):
        await outbox.open_outbox("sqlite:///x.db?poll_interval_ms=0")


async def test_unreachable_postgres_is_store_unavailable_with_the_password_masked() -> None:
    from outboxhub.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/db") as caught:
        await outbox.PostgresOutbox.open("postgresql://u:hunter2@127.0.0.1:1/db", connect_timeout_s=1)
    assert "hunter2" not in str(caught.value)
