"""The drainer over real SQLite files and PostgreSQL: publishing, two drainers at once, poison records,
an unreachable sink, graceful stop and cancellation, retention, ``run_drainers``. The poison-record test
also runs on MongoDB (the nx-27017 stand-in, or ``OUTBOXHUB_TEST_MONGO_URL``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from outboxhub import outbox
from outboxhub.errors import ConfigError
from outboxhub.ids import now_ms
from outboxhub.model import NewEvent, PublishResult
from outboxhub.outbox import Drainer, DrainerSettings, OutboxStore
from test_outbox_support import (
    AnyOutboxDB,
    OutboxDB,
    RecordingSink,
    assert_key_order,
    assert_published_once,
    open_any_db,
    open_db,
    race_two_drainers,
    sqlite_db,
)

WAIT_S = 30.0
"""Safety net for things that should happen soon; never the thing measured."""

FAST = DrainerSettings(batch_size=25, idle_wait_ms=20, requeue_interval_ms=50, backoff_base_ms=10)
# One lane: with two, a later batch may reach the sink first (only ordered_by_key orders across lanes).
FAST_ONE_LANE = msgspec.structs.replace(FAST, concurrency=1)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OutboxDB]:
    async with open_db(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def store(db: OutboxDB) -> AsyncIterator[OutboxStore]:
    opened = await outbox.open_outbox(db.url)
    yield opened
    await opened.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mongo", marks=pytest.mark.mongo),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
async def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyOutboxDB]:
    async with open_any_db(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def any_store(any_db: AnyOutboxDB) -> AsyncIterator[OutboxStore]:
    opened = await outbox.open_outbox(any_db.url)
    await opened.ensure_schema()
    yield opened
    await opened.close()


def _keyed(n: int, keys: int, topic: str = "orders.state") -> list[dict[str, object]]:
    return [{"topic": topic, "payload": {"n": i}, "key": f"k{i % keys}"} for i in range(n)]


async def test_publishes_every_record_once_with_the_record_id_as_event_id(
    db: OutboxDB, store: OutboxStore
) -> None:
    records = [
        {"topic": "orders.paid", "payload": {"n": i}, "key": f"o{i % 3}", "headers": {"trace": str(i)}}
        for i in range(60)
    ]
    ids = db.add_many(records)
    sink = RecordingSink()
    drainer = Drainer(store, sink, FAST_ONE_LANE)
    await drainer.run_until_idle()
    assert sink.ids == ids
    assert set(sink.calls.values()) == {1}
    assert [(e.topic, e.payload, e.key, e.headers) for e in sink.log] == [
        (r["topic"], r["payload"], r["key"], r["headers"]) for r in records
    ]
    assert (drainer.published, drainer.dead, drainer.retried) == (60, 0, 0)
    assert db.count("status = 'sent' AND claim_token IS NULL") == 60
    stats = await drainer.stats()
    assert (stats.pending, stats.claimed, stats.dead) == (0, 0, 0)


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_two_drainers_at_once_publish_each_record_once(db: OutboxDB, ordered: bool) -> None:
    ids = db.add_many(_keyed(800, keys=97))  # a batch of 20 never blocks every key
    sink, drainers, _ = await race_two_drainers(db.url, ordered)
    assert_published_once(sink, ids, drainers, ordered)
    assert sum(d.published for d in drainers) == 800
    assert db.count("status <> 'sent'") == 0


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_poison_record_retries_goes_dead_and_an_operator_retry_publishes_it(
    any_db: AnyOutboxDB, any_store: OutboxStore, ordered: bool
) -> None:
    db, store = any_db, any_store
    before = db.add_many(_keyed(10, keys=2))
    (poison,) = db.add_many([{"topic": "poison.pill", "payload": {"n": 10}, "key": "k0"}])
    after = db.add_many(
        [{"topic": "orders.state", "payload": {"n": 11 + i}, "key": f"k{i % 2}"} for i in range(10)]
    )
    attempts_at: list[int] = []

    def refuse(event: NewEvent) -> BaseException | None:
        if event.topic == "poison.pill":
            attempts_at.append(now_ms())
            return ValueError("no route for poison.pill")
        return None

    sink = RecordingSink(fail=refuse)
    settings = DrainerSettings(
        batch_size=50,
        max_attempts=3,
        backoff_base_ms=30,
        backoff_max_ms=60,
        backoff_jitter=0.0,
        idle_wait_ms=20,
        ordered_by_key=ordered,
    )
    drainer = Drainer(store, sink, settings)
    await drainer.run_until_idle()

    record = await store.get(poison)
    assert record is not None
    assert (record.status, record.attempts, record.last_err) == (
        "dead",
        3,
        "ValueError: no route for poison.pill",
    )
    # Each retry came only after its backoff had passed (30 ms, then 60 ms: no jitter).
    # With ordered_by_key the later k0 records ride along in each batch (and are released), so every
    # attempt is a batch then the record alone; unordered, only the first attempt had company.
    alone = attempts_at[1::2] if ordered else attempts_at[1:]
    assert len(alone) == 3 and len(attempts_at) == (6 if ordered else 4)
    assert alone[1] - alone[0] >= 30
    assert alone[2] - alone[1] >= 60
    assert (drainer.retried, drainer.dead) == (2, 1)
    blocked = after[0::2]  # the k0 records after the poison one
    if ordered:
        # k0's later records wait behind the dead record; every other record went out.
        assert set(sink.ids) == set(before) | (set(after) - set(blocked))
        assert (await store.stats()).pending == len(blocked)
    else:
        assert set(sink.ids) == set(before) | set(after)
    assert [r.id for r in await store.list_dead()] == [poison]

    sink.fail = None  # the operator fixed the route
    assert await store.retry([poison]) == 1
    await drainer.run_until_idle()
    assert sorted(sink.ids) == sorted([*before, poison, *after])
    assert set(sink.calls.values()) == {1}
    if ordered:
        assert_key_order(sink.log)
    stats = await store.stats()
    assert (stats.pending, stats.claimed, stats.dead) == (0, 0, 0)


async def test_an_unreachable_sink_uses_no_attempts(db: OutboxDB, store: OutboxStore) -> None:
    ids = db.add_many(_keyed(30, keys=3))
    outages = iter(range(3))

    def down(event: NewEvent) -> BaseException | None:
        return ConnectionRefusedError("hub is down") if next(outages, None) is not None else None

    sink = RecordingSink(fail=down)
    drainer = Drainer(
        store, sink, DrainerSettings(batch_size=10, max_attempts=1, backoff_base_ms=5, idle_wait_ms=20)
    )
    await drainer.run_until_idle()
    assert sorted(sink.ids) == sorted(ids)
    assert drainer.sink_errors == 3 and drainer.dead == 0 and drainer.released > 0
    # max_attempts=1 and nothing died: each record was charged only for the claim that published it.
    assert db.query("SELECT DISTINCT attempts FROM {t}") == [(1,)]


async def test_unreadable_topic_is_dead_at_once(db: OutboxDB, store: OutboxStore) -> None:
    if db.kind == "mysql":
        pytest.skip("the plain-SQL insert here is SQLite/PostgreSQL's; MySQL's: tests/test_mysql_outbox.py")
    conn = db.connect()
    placeholder = "?" if db.kind == "sqlite" else "%s"
    conn.execute(
        f"INSERT INTO {outbox.postgres.quote_table(db.table)} (topic, payload) VALUES ({placeholder}, '1')",
        ("bad..topic",),
    )
    conn.commit()
    conn.close()
    good = db.add_many(_keyed(3, keys=1))
    sink = RecordingSink()
    drainer = Drainer(store, sink, FAST)
    await drainer.run_until_idle()
    assert sink.ids == good
    (dead,) = await store.list_dead()
    assert dead.topic == "bad..topic" and "segment 2 is empty" in (dead.last_err or "")
    assert dead.attempts == 1


class _Gate(RecordingSink):
    """A sink that holds every publish until ``opened`` is set."""

    def __init__(self, lanes: int) -> None:
        super().__init__()
        self.lanes = lanes
        self.waiting = 0
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def publish_batch(self, events: list[NewEvent]) -> list[PublishResult]:  # type: ignore[override]
        self.waiting += 1
        if self.waiting == self.lanes:
            self.entered.set()
        await self.opened.wait()
        return await super().publish_batch(events)


async def test_cancelling_a_drainer_releases_its_claims(db: OutboxDB, store: OutboxStore) -> None:
    db.add_many(_keyed(40, keys=4))
    sink = _Gate(lanes=2)
    drainer = Drainer(store, sink, DrainerSettings(batch_size=10, concurrency=2))
    task = asyncio.create_task(drainer.run())
    await asyncio.wait_for(sink.entered.wait(), WAIT_S)
    assert db.count("status = 'claimed'") == 20  # two lanes, one batch each
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.count("status = 'claimed'") == 0
    assert db.query("SELECT DISTINCT status, attempts FROM {t}") == [("pending", 0)]  # attempts refunded
    assert sink.log == []


async def test_stop_finishes_the_batch_in_flight(db: OutboxDB, store: OutboxStore) -> None:
    db.add_many(_keyed(40, keys=4))
    sink = _Gate(lanes=1)
    drainer = Drainer(store, sink, DrainerSettings(batch_size=10, concurrency=1))
    task = asyncio.create_task(drainer.run())
    await asyncio.wait_for(sink.entered.wait(), WAIT_S)
    drainer.stop()
    sink.opened.set()
    await asyncio.wait_for(task, WAIT_S)
    assert len(sink.ids) == 10
    assert (db.count("status = 'sent'"), db.count("status = 'pending'"), db.count("status = 'claimed'")) == (
        10,
        30,
        0,
    )


async def test_run_wakes_on_new_records(db: OutboxDB, store: OutboxStore) -> None:
    sink = RecordingSink()
    drainer = Drainer(store, sink, DrainerSettings(idle_wait_ms=60_000))  # no fallback poll within the test
    task = asyncio.create_task(drainer.run())
    try:
        for round_ in range(3):
            ids = db.add_many(_keyed(5, keys=2))
            async with asyncio.timeout(WAIT_S):
                while drainer.published < 5 * (round_ + 1):  # noqa: ASYNC110 - polling the drainer's counter
                    await asyncio.sleep(0.005)
            assert set(ids) <= set(sink.ids)
    finally:
        drainer.stop()
        await asyncio.wait_for(task, WAIT_S)


async def test_sent_records_are_cleaned_up_after_retention(db: OutboxDB, store: OutboxStore) -> None:
    db.add_many(_keyed(30, keys=3))
    settings = DrainerSettings(batch_size=10, retention_ms=0, cleanup_interval_ms=1, cleanup_batch_size=4)
    drainer = Drainer(store, RecordingSink(), settings)
    await drainer.run_until_idle()
    await asyncio.sleep(0.01)
    await drainer.run_until_idle()  # its first pass runs the cleanup
    assert db.count() == 0
    kept = Drainer(store, RecordingSink(), DrainerSettings(retention_ms=None))
    db.add_many(_keyed(3, keys=1))
    await kept.run_until_idle()
    assert db.count("status = 'sent'") == 3


async def test_run_drainers_drains_every_outbox_until_cancelled(tmp_path: Path) -> None:
    first = sqlite_db(tmp_path, "one")
    fresh = tmp_path / "two.db"  # no table yet: run_drainers creates it
    urls = [first.url, f"sqlite:///{fresh}"]
    first_ids = first.add_many(_keyed(20, keys=2))
    sink = RecordingSink()
    started: list[Drainer] = []
    task = asyncio.create_task(
        outbox.run_drainers(urls, sink, DrainerSettings(idle_wait_ms=20), on_start=started.extend)
    )
    async with asyncio.timeout(WAIT_S):
        while len(started) < 2 or not fresh.exists():  # noqa: ASYNC110 - waiting on another task
            await asyncio.sleep(0.005)
        second = outbox_db_for(fresh)
        second_ids = second.add_many(_keyed(5, keys=1))
        while len(sink.ids) < 25:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(sink.ids) == sorted(first_ids + second_ids)
    assert [d.published for d in started] == [20, 5]


def outbox_db_for(path: Path) -> OutboxDB:
    return OutboxDB("sqlite", str(path), "outbox")


async def test_publish_one_sink_adapter() -> None:
    seen: list[str] = []

    async def publish(event: NewEvent) -> PublishResult:
        assert event.id is not None
        seen.append(event.id)
        await asyncio.sleep(0.001 * (3 - len(seen)))  # replies out of order
        return PublishResult(id=event.id, seq=len(seen))

    sink = outbox.PublishOneSink(publish)
    assert isinstance(sink, outbox.Sink)
    results = await sink.publish_batch([NewEvent(id=str(i), topic="a.b") for i in range(3)])
    assert [r.id for r in results] == ["0", "1", "2"] and seen == ["0", "1", "2"]


def test_settings_are_checked() -> None:
    for field, value in (("batch_size", 0), ("lease_ms", -1), ("concurrency", 0), ("retention_ms", -5)):
        with pytest.raises(ConfigError, match=field):
            DrainerSettings(**{field: value})
    with pytest.raises(ConfigError, match="max_attempts"):
        DrainerSettings(max_attempts=0)
    with pytest.raises(ConfigError, match="jitter"):
        DrainerSettings(backoff_jitter=1.5)


async def test_a_record_that_keeps_crashing_its_drainers_goes_dead(db: OutboxDB, store: OutboxStore) -> None:
    (record_id,) = db.add_many(_keyed(1, keys=1))
    t = now_ms()
    for crash in range(2):  # two drainers claimed it and died: their leases expired
        assert len(await store.claim_batch(10, 100, f"crashed-{crash}", now=t)) == 1
        assert await store.requeue_expired(now=t + 1_000) == 1
    sink = RecordingSink()
    drainer = Drainer(store, sink, DrainerSettings(max_attempts=2))
    await drainer.run_until_idle()
    assert sink.log == [] and drainer.dead == 1
    record = await store.get(record_id)
    assert record is not None and record.status == "dead" and record.attempts == 3
    assert (record.last_err or "").startswith("claimed 3 times without completing")


async def test_ordered_a_key_stops_at_a_record_that_goes_dead_in_the_same_batch(
    db: OutboxDB, store: OutboxStore
) -> None:
    if db.kind == "mysql":
        pytest.skip("the plain-SQL insert here is SQLite/PostgreSQL's; MySQL's: tests/test_mysql_outbox.py")
    first = db.add_many([{"topic": "a.b", "payload": {"n": 0}, "key": "k"}])
    conn = db.connect()
    placeholder = "?" if db.kind == "sqlite" else "%s"
    conn.execute(
        f"INSERT INTO {outbox.postgres.quote_table(db.table)} (topic, payload, key) "
        f"VALUES ({placeholder}, '1', 'k')",
        ("bad..topic",),
    )
    conn.commit()
    conn.close()
    later = db.add_many([{"topic": "a.b", "payload": 2, "key": "k"}, {"topic": "a.b", "payload": 3}])
    sink = RecordingSink()
    await Drainer(store, sink, DrainerSettings(ordered_by_key=True)).run_until_idle()
    assert sink.ids == [first[0], later[1]]  # k's third record waits behind the dead second one
    record = await store.get(later[0])
    assert record is not None and (record.status, record.attempts) == ("pending", 0)
