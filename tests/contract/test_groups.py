"""Contract: consumer groups — start positions, claims, competing members, fan-out, acks, cursor and lag."""

from __future__ import annotations

import pytest

from outboxhub.errors import StoreError
from outboxhub.model import StartPosition
from outboxhub.store import Store

from . import EARLIEST, LATEST, T0, claim, ev, ids_of, seqs_of


async def test_ensure_group_at_earliest_and_latest(store: Store) -> None:
    old = await store.publish_batch([ev("g.a", i) for i in range(3)])
    early = await store.ensure_group("g.*", "early", EARLIEST)
    late = await store.ensure_group("g.*", "late", LATEST)
    assert (early.pattern, early.group, early.ack_floor, early.in_flight, early.dead_letters) == (
        "g.*",
        "early",
        0,
        0,
        0,
    )
    assert late.ack_floor >= old[-1].seq and late.frontier >= late.ack_floor
    new = await store.publish(ev("g.b", "new"))
    assert seqs_of(await claim(store, "g.*", "early")) == [r.seq for r in old] + [new.seq]
    assert seqs_of(await claim(store, "g.*", "late")) == [new.seq]


async def test_ensure_group_at_seq_and_ts(store: Store) -> None:
    results = await store.publish_batch([ev("s.t", i, ts=10_000 + 1000 * i) for i in range(6)])
    await store.ensure_group("s.t", "from-seq", StartPosition(kind="seq", value=results[2].seq))
    await store.ensure_group("s.t", "from-ts", StartPosition(kind="ts", value=13_000))
    await store.ensure_group("s.t", "from-ts-between", StartPosition(kind="ts", value=13_500))
    await store.ensure_group("s.t", "from-ts-future", StartPosition(kind="ts", value=99_000))
    assert [d.event.payload for d in await claim(store, "s.t", "from-seq")] == [3, 4, 5]
    assert [d.event.payload for d in await claim(store, "s.t", "from-ts")] == [3, 4, 5]
    assert [d.event.payload for d in await claim(store, "s.t", "from-ts-between")] == [4, 5]
    assert await claim(store, "s.t", "from-ts-future") == []
    later = await store.publish(ev("s.t", "later"))
    assert seqs_of(await claim(store, "s.t", "from-ts-future")) == [later.seq]


async def test_ensure_group_again_changes_nothing(store: Store) -> None:
    await store.publish_batch([ev("r.t", i) for i in range(4)])
    first = await store.ensure_group("r.t", "g", EARLIEST)
    deliveries = await claim(store, "r.t", "g", limit=2)
    await store.ack("r.t", "g", ids_of(deliveries[:1]))
    before = await store.cursor("r.t", "g")
    again = await store.ensure_group("r.t", "g", LATEST)
    assert before is not None and again.ack_floor == before.seq
    assert again.frontier >= first.frontier
    assert await store.cursor("r.t", "g") == before
    # The group keeps delivering from where it was, not from "latest".
    assert [d.event.payload for d in await claim(store, "r.t", "g")] == [2, 3]


async def test_groups_are_keyed_by_pattern_and_name(store: Store) -> None:
    await store.publish_batch([ev("k.a"), ev("k.b")])
    await store.ensure_group("k.a", "same", EARLIEST)
    await store.ensure_group("k.*", "same", EARLIEST)
    assert len(await claim(store, "k.a", "same")) == 1
    assert len(await claim(store, "k.*", "same")) == 2
    listed = await store.groups()
    assert [(g.pattern, g.group) for g in listed] == [("k.*", "same"), ("k.a", "same")]
    assert [g.in_flight for g in listed] == [2, 1]


async def test_claim_respects_limit_and_order(store: Store) -> None:
    results = await store.publish_batch([ev("l.t", i) for i in range(10)])
    await store.ensure_group("l.*", "g", EARLIEST)
    first = await claim(store, "l.*", "g", limit=4)
    second = await claim(store, "l.*", "g", limit=4)
    third = await claim(store, "l.*", "g", limit=4)
    assert seqs_of(first + second + third) == [r.seq for r in results]
    assert [len(first), len(second), len(third)] == [4, 4, 2]
    assert all(d.attempt == 1 and not d.redelivered and d.deadline == T0 + 30_000 for d in first)
    assert await claim(store, "l.*", "g", limit=4) == []
    assert await claim(store, "l.*", "g", limit=0) == []


async def test_claim_on_a_missing_group_is_an_error(store: Store) -> None:
    with pytest.raises(StoreError, match="ensure_group"):
        await claim(store, "no.*", "such-group")
    assert await store.ack("no.*", "such-group", ["x"]) == 0
    assert await store.nack("no.*", "such-group", "x", max_deliver=3) is False
    assert await store.extend("no.*", "such-group", "x", ack_timeout_ms=10) is False
    assert await store.release("no.*", "such-group", "m") == 0
    assert await store.cursor("no.*", "such-group") is None
    assert await store.lag("no.*", "such-group") is None
    assert await store.next_deadline("no.*", "such-group") is None


async def test_competing_members_never_share_an_event(store: Store) -> None:
    await store.publish_batch([ev("c.t", i) for i in range(30)])
    await store.ensure_group("c.t", "g", EARLIEST)
    one = await claim(store, "c.t", "g", "m1", limit=10)
    two = await claim(store, "c.t", "g", "m2", limit=15)
    three = await claim(store, "c.t", "g", "m3", limit=10)
    all_ids = ids_of(one) + ids_of(two) + ids_of(three)
    assert len(all_ids) == len(set(all_ids)) == 30
    assert [len(one), len(two), len(three)] == [10, 15, 5]


async def test_fan_out_every_group_gets_every_event(store: Store) -> None:
    results = await store.publish_batch([ev("f.t", i) for i in range(5)])
    for group in ("audit", "billing", "search"):
        await store.ensure_group("f.*", group, EARLIEST)
    for group in ("audit", "billing", "search"):
        assert seqs_of(await claim(store, "f.*", group)) == [r.seq for r in results]
    await store.ack("f.*", "audit", [r.id for r in results])
    assert seqs_of(await claim(store, "f.*", "billing", now=T0 + 60_000)) == [r.seq for r in results]


async def test_ack_moves_the_floor_only_past_contiguous_acks(store: Store) -> None:
    results = await store.publish_batch([ev("o.t", i) for i in range(4)])
    await store.ensure_group("o.t", "g", EARLIEST)
    d = await claim(store, "o.t", "g")
    assert await store.ack("o.t", "g", [d[1].event.id, d[2].event.id]) == 2
    cursor = await store.cursor("o.t", "g")
    assert cursor is not None and cursor.seq < results[0].seq and cursor.last_id is None
    assert await store.ack("o.t", "g", [d[0].event.id]) == 1
    cursor = await store.cursor("o.t", "g")
    assert cursor is not None and results[2].seq <= cursor.seq < results[3].seq
    assert (cursor.last_id, cursor.last_ts) == (results[2].id, d[2].event.ts)
    assert await store.ack("o.t", "g", [d[0].event.id, "unknown-id"]) == 0  # already acked: no-op
    assert await store.ack("o.t", "g", [d[3].event.id]) == 1
    cursor = await store.cursor("o.t", "g")
    assert cursor is not None and cursor.seq >= results[3].seq and cursor.last_id == results[3].id
    [info] = await store.groups()
    assert info.ack_floor == cursor.seq and info.in_flight == 0 and info.frontier >= info.ack_floor


async def test_acked_events_are_not_redelivered(store: Store) -> None:
    await store.publish_batch([ev("n.t", i) for i in range(3)])
    await store.ensure_group("n.t", "g", EARLIEST)
    d = await claim(store, "n.t", "g", ack_timeout_ms=1000)
    await store.ack("n.t", "g", ids_of(d[:2]))
    again = await claim(store, "n.t", "g", ack_timeout_ms=1000, now=T0 + 5000)
    assert ids_of(again) == ids_of(d[2:]) and again[0].attempt == 2


async def test_cursor_ignores_events_of_other_topics(store: Store) -> None:
    mine = await store.publish(ev("mine.a", 1))
    await store.publish(ev("theirs.a", 2))
    await store.ensure_group("mine.*", "g", EARLIEST)
    d = await claim(store, "mine.*", "g")
    await store.ack("mine.*", "g", ids_of(d))
    cursor = await store.cursor("mine.*", "g")
    assert cursor is not None and cursor.last_id == mine.id and cursor.seq >= mine.seq


async def test_lag_counts_unacked_events_and_measures_time(store: Store) -> None:
    results = await store.publish_batch([ev("lag.t", i, ts=1_000 + 500 * i) for i in range(5)])
    await store.ensure_group("lag.*", "g", EARLIEST)
    lag = await store.lag("lag.*", "g")
    assert lag is not None
    assert lag.lag_count == 5 and lag.lag_ms is None and lag.cursor.last_ts is None
    assert (lag.tail_id, lag.tail_seq, lag.tail_ts) == (results[4].id, results[4].seq, 3_000)
    d = await claim(store, "lag.*", "g")
    await store.ack("lag.*", "g", ids_of(d[:2]))
    lag = await store.lag("lag.*", "g")
    assert lag is not None and lag.lag_count == 3 and lag.lag_ms == 3_000 - 1_500
    await store.ack("lag.*", "g", ids_of(d[2:]))
    lag = await store.lag("lag.*", "g")
    assert lag is not None and lag.lag_count == 0 and lag.lag_ms == 0
    assert lag.cursor.last_id == results[4].id


async def test_lag_of_a_group_on_an_empty_pattern(store: Store) -> None:
    await store.publish(ev("else.where"))
    await store.ensure_group("quiet.*", "g", LATEST)
    lag = await store.lag("quiet.*", "g")
    assert lag is not None
    assert (lag.tail_id, lag.tail_seq, lag.tail_ts, lag.lag_ms, lag.lag_count) == (None, None, None, None, 0)


async def test_latest_group_is_caught_up(store: Store) -> None:
    results = await store.publish_batch([ev("up.t", i) for i in range(3)])
    await store.ensure_group("up.t", "g", LATEST)
    lag = await store.lag("up.t", "g")
    assert lag is not None and lag.lag_count == 0 and lag.lag_ms == 0
    assert lag.cursor.last_id == results[-1].id


async def test_a_group_gets_events_of_topics_created_after_it(store: Store) -> None:
    await store.ensure_group("new.*", "g", EARLIEST)
    assert await claim(store, "new.*", "g") == []
    first = await store.publish(ev("new.a", 1))
    assert seqs_of(await claim(store, "new.*", "g")) == [first.seq]
    results = await store.publish_batch([ev("new.b", 2), ev("other.x", 0), ev("new.c", 3)])
    assert [d.event.payload for d in await claim(store, "new.*", "g")] == [2, 3]
    assert results[1].seq not in [e.seq for e in await store.scan("new.*")]
