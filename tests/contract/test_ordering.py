"""Contract: ``ordered_by_key`` — a key's next event waits while an earlier one is pending in the group."""

from __future__ import annotations

from outboxhub.store import Store

from . import EARLIEST, T0, claim, ev, ids_of


async def _keyed(store: Store, *specs: tuple[str, str | None]) -> None:
    await store.publish_batch([ev("o.t", event_id, id=event_id, key=key) for event_id, key in specs])
    await store.ensure_group("o.t", "g", EARLIEST)


async def test_one_event_per_key_in_flight(store: Store) -> None:
    await _keyed(
        store, ("a1", "a"), ("b1", "b"), ("a2", "a"), ("n1", None), ("b2", "b"), ("a3", "a"), ("c1", "c")
    )
    first = await claim(store, "o.t", "g", "m1", ordered_by_key=True)
    assert ids_of(first) == ["a1", "b1", "n1", "c1"]
    # Another member gets nothing: every remaining event waits for its key.
    assert await claim(store, "o.t", "g", "m2", ordered_by_key=True) == []
    await store.ack("o.t", "g", ["a1"])
    assert ids_of(await claim(store, "o.t", "g", "m2", ordered_by_key=True)) == ["a2"]
    await store.ack("o.t", "g", ["b1", "a2"])
    assert ids_of(await claim(store, "o.t", "g", "m1", ordered_by_key=True)) == ["b2", "a3"]
    # Waiting events are pending: the floor stays below them.
    cursor = await store.cursor("o.t", "g")
    assert cursor is not None and cursor.last_id == "a2"
    await store.ack("o.t", "g", ["n1", "b2", "a3", "c1"])
    cursor = await store.cursor("o.t", "g")
    assert cursor is not None and cursor.last_id == "c1"


async def test_timed_out_event_is_redelivered_before_the_next_of_its_key(store: Store) -> None:
    await _keyed(store, ("a1", "a"), ("a2", "a"))
    assert ids_of(await claim(store, "o.t", "g", ordered_by_key=True, ack_timeout_ms=100)) == ["a1"]
    again = await claim(store, "o.t", "g", "m2", ordered_by_key=True, ack_timeout_ms=100, now=T0 + 100)
    assert [(d.event.id, d.attempt) for d in again] == [("a1", 2)]
    await store.ack("o.t", "g", ["a1"])
    assert ids_of(await claim(store, "o.t", "g", "m2", ordered_by_key=True, now=T0 + 100)) == ["a2"]


async def test_nacked_event_keeps_its_key_blocked(store: Store) -> None:
    await _keyed(store, ("a1", "a"), ("a2", "a"), ("b1", "b"))
    assert ids_of(await claim(store, "o.t", "g", ordered_by_key=True)) == ["a1", "b1"]
    assert await store.nack("o.t", "g", "a1", max_deliver=5, delay_ms=1_000, now=T0)
    assert await claim(store, "o.t", "g", ordered_by_key=True, now=T0 + 999) == []
    got = await claim(store, "o.t", "g", ordered_by_key=True, now=T0 + 1_000)
    assert [(d.event.id, d.attempt) for d in got] == [("a1", 2)]


async def test_dead_letter_frees_the_key(store: Store) -> None:
    await _keyed(store, ("a1", "a"), ("a2", "a"))
    await claim(store, "o.t", "g", ordered_by_key=True, ack_timeout_ms=100, max_deliver=1)
    got = await claim(store, "o.t", "g", ordered_by_key=True, ack_timeout_ms=100, max_deliver=1, now=T0 + 100)
    assert ids_of(got) == ["a2"]
    [dead] = await store.scan("dlq.**")
    assert dead.headers is not None and dead.headers["x-original-id"] == "a1"


async def test_released_event_keeps_its_place(store: Store) -> None:
    await _keyed(store, ("a1", "a"), ("a2", "a"))
    await claim(store, "o.t", "g", "m1", ordered_by_key=True)
    assert await store.release("o.t", "g", "m1") == 1
    got = await claim(store, "o.t", "g", "m2", ordered_by_key=True, now=T0 + 1)
    assert [(d.event.id, d.attempt) for d in got] == [("a1", 2)]


async def test_without_ordering_keys_do_not_block(store: Store) -> None:
    await _keyed(store, ("a1", "a"), ("a2", "a"), ("a3", "a"))
    assert ids_of(await claim(store, "o.t", "g")) == ["a1", "a2", "a3"]


async def test_keys_are_blocked_per_group(store: Store) -> None:
    await _keyed(store, ("a1", "a"), ("a2", "a"))
    await store.ensure_group("o.t", "other", EARLIEST)
    assert ids_of(await claim(store, "o.t", "g", ordered_by_key=True)) == ["a1"]
    assert ids_of(await claim(store, "o.t", "other", ordered_by_key=True)) == ["a1"]
    await store.ack("o.t", "other", ["a1"])
    assert await claim(store, "o.t", "g", ordered_by_key=True) == []
    assert ids_of(await claim(store, "o.t", "other", ordered_by_key=True)) == ["a2"]


async def test_a_hot_key_does_not_starve_other_keys(store: Store) -> None:
    await _keyed(store, *[(f"hot{i}", "hot") for i in range(1_200)], ("cold1", "cold"))
    seen: list[str] = []
    for _ in range(50):
        seen += ids_of(await claim(store, "o.t", "g", limit=10, ordered_by_key=True))
        if "cold1" in seen:
            break
    assert seen == ["hot0", "cold1"]
    for i in range(1, 4):
        await store.ack("o.t", "g", [f"hot{i - 1}"])
        assert ids_of(await claim(store, "o.t", "g", limit=10, ordered_by_key=True)) == [f"hot{i}"]
