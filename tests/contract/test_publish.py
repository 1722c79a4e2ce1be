"""Contract: appending events — seq order, idempotency, what is stored, commit notifications."""

from __future__ import annotations

import asyncio

import msgspec

from outboxhub.ids import now_ms
from outboxhub.model import Event
from outboxhub.store import Store

from . import ev, eventually


async def test_publish_assigns_increasing_seqs_and_fills_id_and_ts(store: Store) -> None:
    before = now_ms()
    first = await store.publish(ev("orders.created", {"n": 1}))
    second = await store.publish(ev("orders.created", {"n": 2}))
    after = now_ms()
    assert not first.duplicate and not second.duplicate
    assert 0 < first.seq < second.seq
    assert first.id and second.id and first.id != second.id
    stored = await store.get_event(first.id)
    assert stored is not None
    assert stored.seq == first.seq and stored.topic == "orders.created" and stored.payload == {"n": 1}
    assert before <= stored.ts <= after
    assert await store.last_seq() == second.seq


async def test_empty_log(store: Store) -> None:
    assert await store.last_seq() == 0
    assert await store.scan("**") == []
    assert await store.tail("**") is None
    assert await store.count("**") == 0
    assert await store.topics() == []
    assert await store.get_event("nope") is None
    assert await store.publish_batch([]) == []


async def test_every_field_round_trips(store: Store) -> None:
    payloads = [None, 0, -7, 2.5, "text", "ünïcødé ✓", True, [1, [2, {"a": None}]], {"nested": {"x": [1, 2]}}]
    results = await store.publish_batch([ev("t.p", p) for p in payloads])
    for result, payload in zip(results, payloads, strict=True):
        got = await store.get_event(result.id)
        assert got is not None and got.payload == payload
    full = ev(
        "t.full",
        {"k": "v"},
        id="evt-1",
        key="customer-7",
        headers={"trace": "abc", "x": "y"},
        tags=["a", "b"],
        caused_by=["evt-0"],
        sid="session-9",
        ts=1_700_000_000_123,
    )
    result = await store.publish(full)
    assert result.id == "evt-1"
    assert await store.get_event("evt-1") == Event(
        id="evt-1",
        topic="t.full",
        seq=result.seq,
        ts=1_700_000_000_123,
        payload={"k": "v"},
        key="customer-7",
        headers={"trace": "abc", "x": "y"},
        tags=["a", "b"],
        caused_by=["evt-0"],
        sid="session-9",
    )


async def test_large_integers_come_back_as_plain_ints_that_encode(store: Store) -> None:
    payload = {"at_ms": 1_700_000_000_000, "ids": [2**40, -(2**62), 7], "nested": {"n": 2**33}}
    await store.publish(ev("big.ints", payload, id="big-1", key="k"))
    for event in (
        *(await store.scan("big.ints")),
        await store.get_event("big-1"),
        *(await store.latest_by_key("big.ints", ["k"])).values(),
    ):
        assert event is not None and event.payload == payload
        assert type(event.payload["at_ms"]) is int and type(event.payload["nested"]["n"]) is int
        assert msgspec.json.decode(msgspec.json.encode(event.payload)) == payload


async def test_batch_results_are_in_order_with_consecutive_increasing_seqs(store: Store) -> None:
    await store.publish(ev("a.x"))
    results = await store.publish_batch([ev("a.y", i, id=f"b{i}") for i in range(50)])
    assert [r.id for r in results] == [f"b{i}" for i in range(50)]
    seqs = [r.seq for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == 50
    scanned = await store.scan("a.y")
    assert [e.payload for e in scanned] == list(range(50))
    assert [e.seq for e in scanned] == seqs


async def test_same_id_is_a_duplicate_with_the_original_seq(store: Store) -> None:
    original = await store.publish(ev("pay.done", {"v": 1}, id="dup-1"))
    await store.publish(ev("pay.done", {"v": 2}))
    again = await store.publish(ev("pay.done", {"v": "changed"}, id="dup-1"))
    assert again.duplicate and again.seq == original.seq and again.id == "dup-1"
    stored = await store.get_event("dup-1")
    assert stored is not None and stored.payload == {"v": 1}
    assert await store.count("pay.done") == 2
    [info] = await store.topics()
    assert info.count == 2


async def test_duplicates_within_and_across_batches(store: Store) -> None:
    existing = await store.publish(ev("x.y", "old", id="e0"))
    results = await store.publish_batch(
        [
            ev("x.y", "first", id="e1"),
            ev("x.y", "again", id="e1"),
            ev("x.y", "known", id="e0"),
            ev("x.y", "second", id="e2"),
            ev("x.y", "third", id="e1"),
        ]
    )
    assert [r.duplicate for r in results] == [False, True, True, False, True]
    assert results[1].seq == results[0].seq == results[4].seq
    assert results[2].seq == existing.seq
    assert existing.seq < results[0].seq < results[3].seq
    assert [e.payload for e in await store.scan("x.y")] == ["old", "first", "second"]
    replay = await store.publish_batch([ev("x.y", id="e2"), ev("x.y", id="e1")])
    assert [(r.seq, r.duplicate) for r in replay] == [(results[3].seq, True), (results[0].seq, True)]


async def test_concurrent_publishes_get_unique_increasing_seqs(store: Store) -> None:
    results = await asyncio.gather(*(store.publish(ev(f"c.t{i % 5}", i)) for i in range(300)))
    seqs = [r.seq for r in results]
    assert len(set(seqs)) == 300
    scanned = await store.scan("c.*", limit=1000)
    assert sorted(seqs) == [e.seq for e in scanned]
    # A publish awaited later commits later.
    later = await store.publish(ev("c.t0"))
    assert later.seq > max(seqs)


async def test_concurrent_duplicates_store_one_event(store: Store) -> None:
    results = await asyncio.gather(*(store.publish(ev("d.t", i, id="same")) for i in range(20)))
    assert len({r.seq for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert await store.count("d.t") == 1


async def test_commit_listeners_hear_the_newest_seq(store: Store) -> None:
    heard: list[int] = []
    store.add_commit_listener(heard.append)
    await store.publish(ev("n.a"))
    batch = await store.publish_batch([ev("n.b"), ev("n.c")])
    await eventually(lambda: bool(heard) and heard[-1] == batch[-1].seq)
    assert heard == sorted(heard)
    store.remove_commit_listener(heard.append)
    count = len(heard)
    await store.publish(ev("n.d"))
    await store.publish(ev("n.e"))
    assert len(heard) == count
    store.remove_commit_listener(heard.append)  # removing twice is harmless


async def test_ping_and_url(store: Store) -> None:
    await store.ping()
    schemes = ("sqlite", "postgresql", "postgres", "mongodb", "mongodb+srv", "nats")
    assert store.url.split(":", 1)[0] in schemes
