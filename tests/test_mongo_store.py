"""What the contract suite cannot show about the MongoDB store: gap-safe reads across writers (a range
committed out of order, an abandoned range and its fence), E11000 duplicates from another process, group
claims and wake-ups across store objects (stand-ins for hub processes), leases of dead processes, exact
payload round trips, URL options. Runs on the nx-27017 stand-in or ``OUTBOXHUB_TEST_MONGO_URL``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from bson.int64 import Int64

from mongo_server import mongo_database
from outboxhub.errors import StoreUnavailable, StoreURLError
from outboxhub.ids import new_id, now_ms
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.codec import prepare
from outboxhub.store.mongo.conn import parse_url
from outboxhub.store.mongo.events import event_doc
from outboxhub.store.mongo.store import MongoStore

pytestmark = pytest.mark.mongo

EARLIEST = StartPosition(kind="earliest")
Opener = Callable[..., Awaitable[MongoStore]]


@pytest.fixture
async def opener() -> AsyncIterator[Opener]:
    """``await opener(**options)``: a store on this test's database (call again: another "process")."""
    stores: list[MongoStore] = []
    async with mongo_database(prefix="hub") as url:

        async def make(**options: Any) -> MongoStore:
            store = await open_store(url, **options)
            assert isinstance(store, MongoStore)
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()


async def _eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.01)


# -- gap safety ----------------------------------------------------------------------------------------------


async def test_a_range_committed_after_a_later_one_is_never_skipped(opener: Opener) -> None:
    slow, fast = await opener(), await opener()
    await fast.ensure_group("gap.*", "g", EARLIEST)
    # The slow writer registered its topic and allocated its seq, as a writer does before inserting (the
    # insert is still on the way); the fast one commits after it.
    await slow._log_._register_topics({"gap.a"})
    allocation = await slow._counter.allocate(1)
    later = await fast.publish(NewEvent(topic="gap.b", payload="later"))
    assert later.seq > allocation.hi
    # Readers stay below the open range: nothing is visible yet, and the group's cursor cannot pass it.
    assert await fast.scan("gap.*") == []
    assert await fast.count("gap.*") == 0 and await fast.last_seq() == 0
    assert await fast.claim("gap.*", "g", "m", limit=10, ack_timeout_ms=1000, max_deliver=3) == []
    [info] = await fast.groups()
    assert info.frontier < allocation.lo
    # The slow writer's insert lands and its range closes: both events appear, in seq order.
    earlier = prepare(NewEvent(topic="gap.a", payload="earlier"))
    await slow._events.insert_one(event_doc(earlier, allocation.lo))
    await slow._counter.release(allocation)
    assert [e.payload for e in await fast.scan("gap.*")] == ["earlier", "later"]
    got = await fast.claim("gap.*", "g", "m", limit=10, ack_timeout_ms=1000, max_deliver=3)
    assert [d.event.payload for d in got] == ["earlier", "later"]


async def test_an_abandoned_range_is_filled_with_holes_and_its_late_writer_is_fenced(opener: Opener) -> None:
    stalled, reader = await opener(lease_ms=1000), await opener(lease_ms=1000)
    allocation = await stalled._counter.allocate(3)
    after = await reader.publish(NewEvent(topic="ab.t", payload="after"))
    assert await reader.scan("ab.*") == []  # held back by the open range
    await asyncio.sleep(1.05)  # the lease passes: the writer is presumed dead
    assert [e.payload for e in await reader.scan("ab.*")] == ["after"]
    assert await reader.last_seq() == after.seq
    holes = await reader._events.count_documents({"hole": True})
    assert holes == 3
    # The stalled writer wakes up and inserts into its old range: the unique seq index refuses it, and
    # the event is reported as fenced (the writer re-allocates it above the horizon).
    late = event_doc(prepare(NewEvent(topic="ab.t", payload="late", id="late-1")), allocation.lo)
    fenced = await stalled._log_._insert([late], {}, set())
    assert fenced == {("late-1", "ab.t")}
    assert await reader.get_event("late-1") is None
    # Published normally, it lands above everything readers have seen.
    again = await stalled.publish(NewEvent(topic="ab.t", payload="late", id="late-1"))
    assert again.seq > after.seq and not again.duplicate
    assert [e.payload for e in await reader.scan("ab.*")] == ["after", "late"]


async def test_a_duplicate_key_from_another_process_is_the_duplicate_result(opener: Opener) -> None:
    one, two = await opener(), await opener()
    original = await one.publish(NewEvent(topic="d.t", payload=1, id="same"))
    # The other process checked before the first insert landed and inserts too: E11000 on (id, topic).
    racing = event_doc(prepare(NewEvent(topic="d.t", payload=2, id="same")), original.seq + 100)
    seq_of: dict[tuple[str, str], int] = {}
    duplicate: set[tuple[str, str]] = set()
    assert await two._log_._insert([racing], seq_of, duplicate) == set()
    assert duplicate == {("same", "d.t")} and seq_of == {("same", "d.t"): original.seq}
    result = await two.publish(NewEvent(topic="d.t", payload=3, id="same"))
    assert result.duplicate and result.seq == original.seq
    results = await asyncio.gather(
        *(s.publish(NewEvent(topic="d.t", id=f"r{i % 7}")) for i, s in enumerate([one, two] * 20))
    )
    assert Counter(r.duplicate for r in results) == Counter({True: 33, False: 7})
    assert await one.count("d.t") == 8


# -- several processes ---------------------------------------------------------------------------------------


async def test_two_processes_share_a_group_without_double_delivery(opener: Opener) -> None:
    nodes = [await opener(), await opener()]
    await nodes[0].ensure_group("mp.**", "g", EARLIEST)
    total = 240
    claimed: Counter[str] = Counter()

    async def member(store: MongoStore, name: str) -> None:
        idle = 0
        while sum(claimed.values()) < total and idle < 2_000:
            got = await store.claim("mp.**", "g", name, limit=7, ack_timeout_ms=60_000, max_deliver=3)
            claimed.update(d.event.id for d in got)
            if got:
                await store.ack("mp.**", "g", [d.event.id for d in got])
            else:
                idle += 1
                await asyncio.sleep(0.002)

    async def publisher(store: MongoStore, p: int) -> None:
        for i in range(0, total // 4, 10):
            await store.publish_batch([NewEvent(topic=f"mp.p{p}", payload=[p, j]) for j in range(i, i + 10)])

    members = [asyncio.create_task(member(s, f"{i}-{k}")) for i, s in enumerate(nodes) for k in range(3)]
    await asyncio.gather(*(publisher(nodes[p % 2], p) for p in range(4)))
    await asyncio.gather(*members)
    assert sum(claimed.values()) == total and set(claimed.values()) == {1}
    lag = await nodes[1].lag("mp.**", "g")
    assert lag is not None and lag.lag_count == 0


async def test_commits_of_another_process_wake_listeners(opener: Opener) -> None:
    listening, writing = await opener(poll_interval_s=5), await opener()
    mode = await listening.wait_watch_detected()
    assert mode in ("change stream", "polling")
    heard: list[int] = []
    listening.add_commit_listener(heard.append)
    result = await writing.publish(NewEvent(topic="w.t"))
    # With a change stream this is immediate; polling would take poll_interval_s (5 s, within the wait).
    await _eventually(lambda: bool(heard) and heard[-1] >= result.seq)


async def test_a_claim_lock_of_a_dead_process_expires(opener: Opener) -> None:
    store = await opener(lease_ms=1000)
    await store.publish(NewEvent(topic="l.t", payload=1))
    await store.ensure_group("l.t", "g", EARLIEST)
    # A process died while holding the group's claim lock.
    await store._groups_coll.update_one(
        {"pattern": "l.t", "name": "g"}, {"$set": {"lock_tok": "dead", "lock_until": Int64(now_ms() + 1000)}}
    )
    got = await store.claim("l.t", "g", "m", limit=5, ack_timeout_ms=1000, max_deliver=3)
    assert [d.event.payload for d in got] == [1]


async def test_half_done_dead_letters_of_a_dead_process_are_finished(opener: Opener) -> None:
    store = await opener(lease_ms=1000)
    await store.publish(NewEvent(topic="h.t", payload="x", id="h-1"))
    await store.ensure_group("h.t", "g", EARLIEST)
    await store.claim("h.t", "g", "m", limit=5, ack_timeout_ms=1000, max_deliver=1)
    # A process marked the event for dead-lettering and died before publishing it.
    await store._pending.update_one(
        {"event_id": "h-1"},
        {"$set": {"dl": new_id(), "dl_at": Int64(0), "dl_reason": "bad", "dl_now": Int64(5)}},
    )
    assert await store.ack("h.t", "g", ["h-1"]) == 0  # being dead-lettered: not ackable
    assert await store._groups.finish_dead_letters() == 1
    [dead] = await store.scan("dlq.**")
    assert dead.headers is not None and (dead.headers["x-original-id"], dead.headers["x-reason"]) == (
        "h-1",
        "bad",
    )
    [info] = await store.groups()
    assert (info.dead_letters, info.in_flight) == (1, 0)


# -- documents -----------------------------------------------------------------------------------------------


async def test_payloads_bson_cannot_hold_are_kept_exactly(opener: Opener) -> None:
    store = await opener()
    deep: Any = "bottom"
    for _ in range(95):
        deep = [deep]
    payloads = [{"plain": [1, 2.5, None, True]}, {"$set": 1}, {"a.b": 2}, 2**70, -(2**64), deep, {"k\x00": 1}]
    results = await store.publish_batch([NewEvent(topic="p.t", payload=p) for p in payloads])
    for result, payload in zip(results, payloads, strict=True):
        event = await store.get_event(result.id)
        assert event is not None and event.payload == payload
    raw = {doc["id"]: doc async for doc in store._events.find({"topic": "p.t"})}
    assert "payload" in raw[results[0].id] and "payload_json" not in raw[results[0].id]
    assert all("payload_json" in raw[r.id] for r in results[1:])


def test_url_options() -> None:
    settings = parse_url(
        "mongodb://u:secret@h1:27017,h2/prom?replicaSet=rs0&prefix=x_&lease_ms=2000", {"max_batch": 5}
    )
    assert (settings.database, settings.prefix, settings.lease_ms, settings.max_batch) == (
        "prom",
        "x_",
        2000,
        5,
    )
    assert "secret" not in settings.url and "prefix" not in settings.client_url
    assert "replicaSet=rs0" in settings.client_url and "serverSelectionTimeoutMS=5000" in settings.client_url
    assert parse_url("mongodb://127.0.0.1:27017", {}).database == "outboxhub"
    bad = {
        "mongodb://h/db?lease_ms=abc": "must be an integer",
        "mongodb://h/db?poll_interval_s=0": "must be between",
        "mongodb://h/db?prefix=a-b": "prefix",
        "mongodb://h/a.b": "not a valid database name",
        "mongodb:///db": "names no host",
    }
    for url, message in bad.items():
        with pytest.raises(StoreURLError, match=message):
            parse_url(url, {})
    with pytest.raises(StoreURLError, match="unknown MongoDB store option"):
        parse_url("mongodb://h/db", {"nope": 1})


async def test_an_unreachable_server_is_store_unavailable_with_the_password_masked() -> None:
    with pytest.raises(StoreUnavailable, match=r"mongodb://u:\*\*\*@127\.0\.0\.1:1/db") as caught:
        await open_store("mongodb://u:hunter2@127.0.0.1:1/db", connect_timeout_s=0.3)
    assert "hunter2" not in str(caught.value)


async def test_without_a_change_stream_the_poll_hears_other_processes(opener: Opener) -> None:
    # The stand-in offers change streams even as a standalone server, so the fallback is shown by
    # stopping the stream: what remains is the poll of the counter that polling mode relies on.
    listening, writing = await opener(poll_interval_s=0.1), await opener()
    await listening._watcher.close()
    heard: list[int] = []
    listening.add_commit_listener(heard.append)
    result = await writing.publish(NewEvent(topic="poll.t"))
    await _eventually(lambda: bool(heard) and heard[-1] >= result.seq)
