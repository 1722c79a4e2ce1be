"""Contract: ``reset_group`` rewinds (or fast-forwards) a group and releases its in-flight events."""

from __future__ import annotations

from outboxhub.model import StartPosition
from outboxhub.store import Store

from . import EARLIEST, LATEST, claim, ev, ids_of, seqs_of


async def test_reset_to_earliest_rereads_acked_events(store: Store) -> None:
    results = await store.publish_batch([ev("r.a", i) for i in range(4)])
    await store.ensure_group("r.*", "g", EARLIEST)
    first = await claim(store, "r.*", "g")
    assert await store.ack("r.*", "g", ids_of(first)) == 4
    assert await claim(store, "r.*", "g") == []

    info = await store.reset_group("r.*", "g", EARLIEST)
    assert info is not None
    assert (info.ack_floor, info.frontier, info.in_flight) == (0, 0, 0)
    assert seqs_of(await claim(store, "r.*", "g")) == [r.seq for r in results]


async def test_reset_releases_in_flight_and_late_acks_are_noops(store: Store) -> None:
    results = await store.publish_batch([ev("r.b", i) for i in range(3)])
    await store.ensure_group("r.b", "g", EARLIEST)
    held = await claim(store, "r.b", "g", member="old", ack_timeout_ms=600_000)
    assert len(held) == 3

    info = await store.reset_group("r.b", "g", StartPosition(kind="seq", value=results[0].seq))
    assert info is not None and info.in_flight == 0 and info.frontier == results[0].seq
    # The old member's claims are gone: its ACK changes nothing, and the events are handed out again now,
    # to anyone, without waiting for the ack timeout.
    assert await store.ack("r.b", "g", [held[0].event.id]) == 0
    again = await claim(store, "r.b", "g", member="new")
    assert seqs_of(again) == [r.seq for r in results[1:]]
    assert [d.attempt for d in again] == [1, 1]


async def test_reset_to_latest_skips_the_backlog(store: Store) -> None:
    await store.publish_batch([ev("r.c", i) for i in range(3)])
    await store.ensure_group("r.c", "g", EARLIEST)
    await claim(store, "r.c", "g", limit=1)
    info = await store.reset_group("r.c", "g", LATEST)
    assert info is not None and info.in_flight == 0
    assert info.frontier == info.ack_floor == await store.last_seq()
    assert await claim(store, "r.c", "g") == []
    new = await store.publish(ev("r.c", "new"))
    assert seqs_of(await claim(store, "r.c", "g")) == [new.seq]


async def test_reset_to_ts(store: Store) -> None:
    await store.publish_batch([ev("r.t", i, ts=20_000 + 1000 * i) for i in range(5)])
    await store.ensure_group("r.t", "g", LATEST)
    await store.reset_group("r.t", "g", StartPosition(kind="ts", value=22_000))
    assert [d.event.payload for d in await claim(store, "r.t", "g")] == [2, 3, 4]


async def test_reset_keeps_other_groups_and_the_dead_letter_count(store: Store) -> None:
    await store.publish_batch([ev("r.d", i) for i in range(2)])
    await store.ensure_group("r.d", "g", EARLIEST)
    await store.ensure_group("r.d", "other", EARLIEST)
    other = await claim(store, "r.d", "other", ack_timeout_ms=600_000)
    before = {g.group: g for g in await store.groups()}
    await store.reset_group("r.d", "g", LATEST)
    after = {g.group: g for g in await store.groups()}
    assert after["other"] == before["other"] and after["other"].in_flight == len(other) == 2
    assert after["g"].dead_letters == before["g"].dead_letters


async def test_reset_of_a_missing_group_is_none(store: Store) -> None:
    assert await store.reset_group("nope.*", "g", EARLIEST) is None
    assert await store.groups() == []
